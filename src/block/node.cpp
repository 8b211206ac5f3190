// The generic layer of every node (what QEMU's block/io.c does around a
// driver call), the graph edges and the permission checks.

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <mutex>

#include "block/bitmap.hpp"
#include "block/block.hpp"
#include "block/io_buffer.hpp"
#include "monitor/json_stream.hpp"
#include "qapi/error.hpp"

namespace vstord {

namespace {

constexpr uint32_t kPassthrough =
    perm::consistent_read | perm::write | perm::write_unchanged | perm::resize;

const char* const kPermNames[] = {"consistent read", "write", "write unchanged", "resize"};

bool all_zero(IoVec iov) {
  for (const auto& v : iov) {
    const auto* p = static_cast<const unsigned char*>(v.iov_base);
    size_t n = v.iov_len;
    // Word at a time, then the tail.
    while (n >= 8) {
      uint64_t w;
      std::memcpy(&w, p, 8);
      if (w) return false;
      p += 8;
      n -= 8;
    }
    while (n--) {
      if (*p++) return false;
    }
  }
  return true;
}

}  // namespace

void restore_permissions(BlockNode& node);

// ---- permissions -------------------------------------------------------------

std::string perm::names(uint32_t perms) {
  std::string out;
  for (int bit = 0; bit < 4; ++bit) {
    if (!(perms & (1u << bit))) continue;
    if (!out.empty()) out += ", ";
    out += kPermNames[bit];
  }
  return out;
}

std::vector<qapi::BlockPermission> perm::to_qapi(uint32_t perms) {
  // QEMU prepends each permission to its list, so the highest bit comes
  // first.
  std::vector<qapi::BlockPermission> out;
  for (int bit = 3; bit >= 0; --bit) {
    if (perms & (1u << bit)) out.push_back(static_cast<qapi::BlockPermission>(bit));
  }
  return out;
}

std::string BdrvChild::describe() const {
  std::string who = parent_node         ? fmt::format("node '{}'", parent_node->name())
                    : user_name.empty() ? std::string("an unnamed block device")
                                        : fmt::format("block device '{}'", user_name);
  return fmt::format("{} (uses node '{}' as '{}' child)", who, node->name(), role);
}

// ---- BlockNode: generic layer ------------------------------------------------

BlockNode::BlockNode(qapi::BlockdevOptions options, std::string name)
    : options_(std::move(options)), name_(std::move(name)) {
  read_only_ = options_.read_only.value_or(false);
  discard_unmap_ = options_.discard.value_or(qapi::BlockdevDiscardOptions::ignore) ==
                   qapi::BlockdevDiscardOptions::unmap;
  if (options_.cache) {
    no_flush_ = options_.cache->no_flush.value_or(false);
    cache_direct_ = options_.cache->direct.value_or(false);
  }
  detect_zeroes_ = options_.detect_zeroes.value_or(qapi::BlockdevDetectZeroesOptions::off);
  if (detect_zeroes_ == qapi::BlockdevDetectZeroesOptions::unmap && !discard_unmap_) {
    qapi::fail(
        "setting detect-zeroes to unmap is not allowed without setting discard operation "
        "to unmap");
  }
}

BlockNode::~BlockNode() {
  for (auto& c : children_) {
    auto& ps = c->node->parents_;
    ps.erase(std::find(ps.begin(), ps.end(), c.get()));
  }
}

const char* BlockNode::driver_name() const {
  return qapi::enum_name(options_.driver()).data();
}

Task<int> BlockNode::read(uint64_t offset, IoVec iov, uint32_t flags) {
  co_return co_await do_read(offset, iov, flags);
}

Task<int> BlockNode::write(uint64_t offset, IoVec iov, uint32_t flags) {
  if (read_only_) co_return -EPERM;
  uint64_t bytes = 0;
  for (const auto& v : iov) bytes += v.iov_len;
  int ret;
  if (detect_zeroes_ != qapi::BlockdevDetectZeroesOptions::off && all_zero(iov)) {
    uint32_t zflags = flags & kReqFua;
    if (detect_zeroes_ == qapi::BlockdevDetectZeroesOptions::unmap) zflags |= kReqMayUnmap;
    ret = co_await do_write_zeroes(offset, bytes, zflags);
  } else {
    ret = co_await do_write(offset, iov, flags);
  }
  // Marked whatever the outcome: a failed write may have changed part of
  // the range, and a backup must not miss it.
  mark_dirty(offset, bytes);
  co_return ret;
}

Task<int> BlockNode::write_zeroes(uint64_t offset, uint64_t bytes, uint32_t flags) {
  if (read_only_) co_return -EPERM;
  if (!discard_unmap_) flags &= ~kReqMayUnmap;
  int ret = co_await do_write_zeroes(offset, bytes, flags);
  mark_dirty(offset, bytes);
  co_return ret;
}

Task<int> BlockNode::discard(uint64_t offset, uint64_t bytes) {
  if (read_only_) co_return -EPERM;
  if (!discard_unmap_) co_return 0;
  int ret = co_await do_discard(offset, bytes);
  mark_dirty(offset, bytes);
  co_return ret;
}

Task<int> BlockNode::flush() {
  if (no_flush_) co_return 0;
  co_return co_await do_flush();
}

Task<int> BlockNode::cache(uint64_t offset, uint64_t bytes) {
  co_return co_await do_cache(offset, bytes);
}

Task<BlockStatus> BlockNode::block_status(uint64_t offset, uint64_t bytes) {
  BlockStatus st = co_await do_block_status(offset, bytes);
  st.bytes = std::clamp<uint64_t>(st.bytes, 1, bytes);
  co_return st;
}

Task<void> BlockNode::truncate(int64_t size) {
  int ret = co_await do_truncate(size);
  if (ret < 0) qapi::fail("Could not resize: {}", std::strerror(-ret));
  set_size(size);
  {
    std::unique_lock lock(bitmaps_lock_);
    for (auto& bm : bitmaps_) bm->resize(size);
  }
  for (BdrvChild* p : parents_) {
    if (p->parent_node) p->parent_node->child_resized();
  }
}

void BlockNode::resize_bitmaps() {
  std::unique_lock lock(bitmaps_lock_);
  for (auto& bm : bitmaps_) bm->resize(size());
}

void BlockNode::mark_dirty(uint64_t offset, uint64_t bytes) {
  std::shared_lock lock(bitmaps_lock_);
  for (auto& bm : bitmaps_) bm->mark(offset, bytes);
}

// Defaults for drivers that lack an operation.
Task<int> BlockNode::do_write(uint64_t, IoVec, uint32_t) {
  co_return -EPERM;
}

Task<int> BlockNode::do_write_zeroes(uint64_t offset, uint64_t bytes, uint32_t flags) {
  // Emulated with writes of a zeroed buffer, as QEMU does.
  if (flags & kReqNoFallback) co_return -ENOTSUP;
  // Aligned, so that an O_DIRECT file takes it without a bounce.
  constexpr size_t kZeroes = 1 << 20;
  static const IoBuffer zeroes = [] {
    IoBuffer b = make_io_buffer(kZeroes);
    std::memset(b.get(), 0, kZeroes);
    return b;
  }();
  while (bytes > 0) {
    uint64_t n = std::min<uint64_t>(bytes, kZeroes);
    iovec v{zeroes.get(), n};
    int ret = co_await do_write(offset, IoVec(&v, 1), flags & kReqFua);
    if (ret < 0) co_return ret;
    offset += n;
    bytes -= n;
  }
  co_return 0;
}

Task<int> BlockNode::do_discard(uint64_t, uint64_t) {
  co_return 0;
}

Task<int> BlockNode::do_flush() {
  co_return 0;
}

Task<int> BlockNode::do_cache(uint64_t, uint64_t) {
  co_return 0;
}

Task<BlockStatus> BlockNode::do_block_status(uint64_t, uint64_t bytes) {
  co_return BlockStatus{kStatusData | kStatusAllocated, bytes, 1};
}

Task<int> BlockNode::do_truncate(int64_t) {
  qapi::fail("Image format driver does not support resize");
  co_return 0;
}

// ---- graph ---------------------------------------------------------------------

BlockNode* BlockNode::file_child() const {
  for (const auto& c : children_) {
    if (c->role == "file") return c->node.get();
  }
  return nullptr;
}

void BlockNode::attach_child(std::shared_ptr<BlockNode> child, std::string role) {
  auto edge = std::make_unique<BdrvChild>();
  edge->parent_node = this;
  edge->role = std::move(role);
  edge->node = std::move(child);
  // A new node joins its child's iothread, as QEMU opens it in the
  // child's AioContext.
  if (!home_iothread()) set_home_iothread(edge->node->home_iothread());
  edge->perm = 0;
  edge->shared = perm::all;
  // Newest parent first, as QEMU keeps them (its messages depend on it).
  auto& parents = edge->node->parents_;
  parents.insert(parents.begin(), edge.get());
  children_.push_back(std::move(edge));
  try {
    BlockGraph::refresh_permissions(*this);
  } catch (...) {
    auto child = children_.back()->node;
    auto& ps = child->parents_;
    ps.erase(std::find(ps.begin(), ps.end(), children_.back().get()));
    children_.pop_back();
    restore_permissions(*child);
    throw;
  }
}

void BlockNode::child_perm(const BdrvChild&, uint32_t perm, uint32_t shared, uint32_t& nperm,
                           uint32_t& nshared) const {
  // A filter's default: pass the parents' needs down unchanged.
  nperm = perm & kPassthrough;
  nshared = shared & kPassthrough;
}

void BlockNode::set_perm(uint32_t, uint32_t) {}

void BlockNode::make_writable() {
  qapi::fail("Block node is read-only");
}

std::shared_ptr<DirtyBitmap> BlockNode::find_bitmap(const std::string& name) const {
  std::shared_lock lock(bitmaps_lock_);
  for (const auto& bm : bitmaps_) {
    if (bm->name() == name) return bm;
  }
  return nullptr;
}

std::vector<std::shared_ptr<DirtyBitmap>> BlockNode::bitmaps() const {
  std::shared_lock lock(bitmaps_lock_);
  return bitmaps_;
}

void BlockNode::add_bitmap(std::shared_ptr<DirtyBitmap> bitmap) {
  std::unique_lock lock(bitmaps_lock_);
  // QEMU lists the newest bitmap first.
  bitmaps_.insert(bitmaps_.begin(), std::move(bitmap));
}

void BlockNode::remove_bitmap(const std::string& name) {
  std::unique_lock lock(bitmaps_lock_);
  std::erase_if(bitmaps_, [&](const auto& bm) { return bm->name() == name; });
}

std::string BlockNode::filename() const {
  std::string text = to_qmp_text(json_filename(), false);
  while (!text.empty() && (text.back() == '\n' || text.back() == '\r')) text.pop_back();
  return "json:" + text;
}

qapi::Json BlockNode::json_filename() const {
  qapi::Json j = qapi::marshal(options_);
  j.erase("node-name");
  return j;
}

qapi::BlockDeviceInfo BlockNode::info() const {
  qapi::BlockDeviceInfo out;
  out.file = filename();
  out.node_name = name_;
  out.ro = read_only_;
  out.drv = driver_name();
  out.backing_file_depth = 0;
  out.encrypted = false;
  out.detect_zeroes = detect_zeroes_;
  out.bps = out.bps_rd = out.bps_wr = out.iops = out.iops_rd = out.iops_wr = 0;
  out.image.filename = out.file;
  out.image.format = out.drv;
  if (has_dirty_flag()) out.image.dirty_flag = false;
  out.image.actual_size = allocated_bytes().value_or(0);
  out.image.virtual_size = size();
  auto bms = bitmaps();
  if (!bms.empty()) {
    out.dirty_bitmaps.emplace();
    for (const auto& bm : bms) out.dirty_bitmaps->push_back(bm->info());
  }
  out.cache.writeback = true;
  out.cache.direct = cache_direct_;
  out.cache.no_flush = no_flush_;
  out.write_threshold = 0;
  return out;
}

// Refreshes after a user went away: dropping permissions cannot conflict,
// and a lock that cannot be dropped is the driver's to log.
void restore_permissions(BlockNode& node) {
  try {
    BlockGraph::refresh_permissions(node);
  } catch (const std::exception&) {
  }
}

// ---- BlockUser -----------------------------------------------------------------

BlockUser BlockUser::attach(std::shared_ptr<BlockNode> node, std::string user_name, uint32_t perm,
                            uint32_t shared) {
  BlockUser user;
  user.edge_ = std::make_unique<BdrvChild>();
  auto* edge = user.edge_.get();
  static uint64_t next_seq = 0;  // main thread only
  edge->seq = ++next_seq;
  edge->user_name = std::move(user_name);
  edge->role = "root";
  edge->node = std::move(node);
  edge->perm = perm;
  edge->shared = shared;
  auto& parents = edge->node->parents_;
  parents.insert(parents.begin(), edge);
  try {
    BlockGraph::refresh_permissions(*edge->node);
  } catch (...) {
    auto n = edge->node;
    parents.erase(std::find(parents.begin(), parents.end(), edge));
    user.edge_.reset();
    restore_permissions(*n);
    throw;
  }
  return user;
}

BlockUser::BlockUser(BlockUser&&) noexcept = default;

BlockUser& BlockUser::operator=(BlockUser&& other) noexcept {
  if (this != &other) {
    reset();
    edge_ = std::move(other.edge_);
  }
  return *this;
}

BlockUser::~BlockUser() {
  reset();
}

void BlockUser::reset() {
  if (!edge_) return;
  auto node = edge_->node;
  auto& parents = node->parents_;
  parents.erase(std::find(parents.begin(), parents.end(), edge_.get()));
  edge_.reset();
  restore_permissions(*node);
  // A node a parent defined inline goes with its last user.
  if (node->parents_.empty() && !node->monitor_owned_ && node->graph_ &&
      node->graph_->find(node->name())) {
    node->graph_->remove_tree(node);
  }
}

// ---- permission refresh --------------------------------------------------------

namespace {

struct SavedEdge {
  BdrvChild* edge;
  uint32_t perm, shared;
};

void cumulative(const BlockNode& node, uint32_t& perm, uint32_t& shared) {
  perm = 0;
  shared = perm::all;
  for (const BdrvChild* p : node.parents()) {
    perm |= p->perm;
    shared &= p->shared;
  }
}

void check_parents(BlockNode& node) {
  // QEMU's pairing: for each parent a, is any other parent b requiring
  // what a does not share?
  for (const BdrvChild* a : node.parents()) {
    for (const BdrvChild* b : node.parents()) {
      if (a == b) continue;
      uint32_t conflict = b->perm & ~a->shared;
      if (conflict) {
        qapi::fail(
            "Permission conflict on node '{}': permissions '{}' are both required by {} "
            "and unshared by {}.",
            node.name(), perm::names(conflict), b->describe(), a->describe());
      }
    }
  }
  uint32_t perm, shared;
  cumulative(node, perm, shared);
  if ((perm & (perm::write | perm::write_unchanged)) && node.read_only()) node.make_writable();
}

void update(BlockNode& node, std::vector<SavedEdge>& saved, std::vector<BlockNode*>& visited) {
  check_parents(node);
  visited.push_back(&node);
  uint32_t perm, shared;
  cumulative(node, perm, shared);
  for (const auto& c : node.children()) {
    uint32_t nperm, nshared;
    node.child_perm(*c, perm, shared, nperm, nshared);
    saved.push_back({c.get(), c->perm, c->shared});
    c->perm = nperm;
    c->shared = nshared;
    update(*c->node, saved, visited);
  }
}

void apply(const std::vector<BlockNode*>& visited) {
  for (BlockNode* n : visited) {
    uint32_t perm, shared;
    cumulative(*n, perm, shared);
    n->set_perm(perm, shared);
  }
}

}  // namespace

void BlockGraph::refresh_permissions(BlockNode& node) {
  std::vector<SavedEdge> saved;
  std::vector<BlockNode*> visited;
  try {
    update(node, saved, visited);
    apply(visited);
  } catch (...) {
    // The caller undoes its change and refreshes again, which puts every
    // lock back as it was.
    for (auto it = saved.rbegin(); it != saved.rend(); ++it) {
      it->edge->perm = it->perm;
      it->edge->shared = it->shared;
    }
    throw;
  }
}

}  // namespace vstord
