// Block nodes: the asynchronous byte-range interface every driver serves,
// the node graph (children, parents) and its permission checks.
//
// A request flows  export -> BlockNode::write() (the generic layer:
// read-only refused, detect-zeroes, dirty bitmaps marked) -> the driver's
// do_write() -> maybe a child's write().  Ranges are the caller's to check
// (the NBD server validates every request against the export's size).
//
// Threads: the data-path calls (read ... block_status) run on any iothread
// and must be thread-safe in every driver.  Graph changes (open, attach,
// detach, permissions, bitmaps added or removed, resize) happen on the main
// thread only.  Data-path calls return 0 or a negative errno; they never
// throw.
#pragma once

#include <sys/uio.h>

#include <boost/asio/awaitable.hpp>

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <shared_mutex>
#include <span>
#include <string>
#include <vector>

#include "net/socket_address.hpp"
#include "qapi-types.hpp"
#include "util/unique_fd.hpp"

namespace vstord {

class Daemon;
class DirtyBitmap;
class IoThread;
class BlockNode;
class BlockGraph;

template <class T>
using Task = boost::asio::awaitable<T>;

using IoVec = std::span<const iovec>;

// Flags of a data-path request.
enum ReqFlags : uint32_t {
  kReqFua = 1u << 0,         // write: durable before completion
  kReqMayUnmap = 1u << 1,    // write_zeroes: may free the space
  kReqNoFallback = 1u << 2,  // write_zeroes: fail with -ENOTSUP unless fast
};

// What block_status() says about a range.  Bits as in QEMU's BDRV_BLOCK_*.
enum StatusFlags : uint32_t {
  kStatusData = 1u << 0,       // reads come from this node's data
  kStatusZero = 1u << 1,       // reads return zeroes
  kStatusAllocated = 1u << 2,  // allocated in this node (not a backing file)
};

struct BlockStatus {
  uint32_t flags = 0;
  uint64_t bytes = 0;  // length of the run with these flags, >= 1
  uint32_t depth = 0;  // qemu:allocation-depth: 0 unallocated, 1 here
};

// Permissions, with QEMU's bit values (its file locks use them).
namespace perm {
constexpr uint32_t consistent_read = 1u << 0;
constexpr uint32_t write = 1u << 1;
constexpr uint32_t write_unchanged = 1u << 2;
constexpr uint32_t resize = 1u << 3;
constexpr uint32_t all = (1u << 4) - 1;
// "write, resize": the permission names in QEMU's messages.
std::string names(uint32_t perms);
// As BlockPermission values, in QEMU's (reversed) order.
std::vector<qapi::BlockPermission> to_qapi(uint32_t perms);
}  // namespace perm

// An edge of the graph: a parent using a node as its child.  The parent is
// another node or a root user (an export, a running command), which QEMU
// calls a block backend.
struct BdrvChild {
  BlockNode* parent_node = nullptr;  // null for root users
  std::string user_name;             // root users: "" (unnamed) or an id
  std::string role;                  // "file", "root"
  std::shared_ptr<BlockNode> node;
  uint32_t perm = 0;
  uint32_t shared = perm::all;
  uint64_t seq = 0;  // root users: creation order, as QEMU lists its backends
  // The description in QEMU's permission messages.
  std::string describe() const;
};

// A root user's hold on a node, released on destruction.
class BlockUser {
 public:
  BlockUser() = default;
  BlockUser(BlockUser&&) noexcept;
  BlockUser& operator=(BlockUser&&) noexcept;
  ~BlockUser();
  // Attaches a root user to node with the permissions it needs and those
  // it lets others have; throws qapi::Error on a conflict.
  static BlockUser attach(std::shared_ptr<BlockNode> node, std::string user_name, uint32_t perm,
                          uint32_t shared);
  BlockNode& node() const { return *edge_->node; }
  const std::shared_ptr<BlockNode>& node_ptr() const { return edge_->node; }
  explicit operator bool() const { return edge_ != nullptr; }
  void reset();

 private:
  std::unique_ptr<BdrvChild> edge_;
};

class BlockNode : public std::enable_shared_from_this<BlockNode> {
 public:
  virtual ~BlockNode();

  // ---- identity --------------------------------------------------------
  const std::string& name() const { return name_; }
  const char* driver_name() const;
  qapi::BlockdevDriver driver() const { return options_.driver(); }
  const qapi::BlockdevOptions& options() const { return options_; }
  bool read_only() const { return read_only_; }
  bool monitor_owned() const { return monitor_owned_; }

  // ---- data path (any iothread) -----------------------------------------
  Task<int> read(uint64_t offset, IoVec iov, uint32_t flags = 0);
  Task<int> write(uint64_t offset, IoVec iov, uint32_t flags = 0);
  Task<int> write_zeroes(uint64_t offset, uint64_t bytes, uint32_t flags = 0);
  Task<int> discard(uint64_t offset, uint64_t bytes);
  Task<int> flush();
  Task<int> cache(uint64_t offset, uint64_t bytes);
  // Status of the run that starts at offset, at most bytes long.
  Task<BlockStatus> block_status(uint64_t offset, uint64_t bytes);
  int64_t size() const { return size_.load(std::memory_order_relaxed); }

  // What the node can do; fixed once open.
  virtual bool can_discard() const { return false; }
  virtual bool can_write_zeroes_fast() const { return false; }
  virtual bool can_multi_conn() const { return true; }
  virtual bool is_rotational() const { return false; }
  // Smallest request size the node handles without read-modify-write.
  virtual uint32_t request_alignment() const { return 1; }

  // Where [offset, offset + bytes) lies unchanged in a file held in memory
  // (tmpfs), so that an export can hand the file's pages to its socket
  // (sendfile) instead of copying them, without blocking its thread.  The
  // fd stays valid while the span is held, even if the node reopens or
  // closes.  Nodes that transform data, or whose file may wait for a disk,
  // have no span.
  struct MemorySpan {
    std::shared_ptr<const UniqueFd> fd;
    uint64_t offset;
  };
  virtual std::optional<MemorySpan> memory_span(uint64_t /*offset*/, uint64_t /*bytes*/) const {
    return std::nullopt;
  }

  // ---- control (main thread) ---------------------------------------------
  // Changes the size; needs the resize permission, taken by the caller.
  Task<void> truncate(int64_t size);

  // The graph.
  const std::vector<std::unique_ptr<BdrvChild>>& children() const { return children_; }
  const std::vector<BdrvChild*>& parents() const { return parents_; }
  BlockNode* file_child() const;

  // Dirty bitmaps on this node.
  std::shared_ptr<DirtyBitmap> find_bitmap(const std::string& name) const;
  std::vector<std::shared_ptr<DirtyBitmap>> bitmaps() const;
  void add_bitmap(std::shared_ptr<DirtyBitmap> bitmap);
  void remove_bitmap(const std::string& name);

  // query-named-block-nodes.
  qapi::BlockDeviceInfo info() const;
  // The name QEMU shows for the node: its path, or a "json:" description.
  virtual std::string filename() const;
  virtual qapi::Json json_filename() const;
  virtual std::optional<int64_t> allocated_bytes() const { return std::nullopt; }
  virtual bool has_dirty_flag() const { return false; }

  // The permissions this node needs on a child given what its own parents
  // need (perm) and share (shared), as QEMU's bdrv_child_perm.
  virtual void child_perm(const BdrvChild& child, uint32_t perm, uint32_t shared, uint32_t& nperm,
                          uint32_t& nshared) const;
  // Called when this node's cumulative permissions change (a file node
  // takes or drops its locks here).  Throws qapi::Error to refuse.
  virtual void set_perm(uint32_t perm, uint32_t shared);
  // A writer came to a read-only node: an auto-read-only node tries to
  // become writable, anything else refuses (throws qapi::Error).
  virtual void make_writable();

  // A node with a connection of its own (nbd) can be yanked: the
  // connection is dropped at once.
  virtual bool yankable() const { return false; }
  virtual void yank() {}

  // A child changed its size (a format without a size of its own
  // follows it).
  virtual void child_resized() {}

  // Closes the node's resources; it stays in memory until the last
  // reference goes.
  virtual void close() {}

  // The iothread the node's users run on (QEMU's AioContext of the node),
  // or null for the default threads.  Exports move it (export/export.cpp);
  // any thread may read it.
  IoThread* home_iothread() const { return home_iothread_.load(std::memory_order_acquire); }
  void set_home_iothread(IoThread* t) { home_iothread_.store(t, std::memory_order_release); }

 protected:
  BlockNode(qapi::BlockdevOptions options, std::string name);

  virtual Task<int> do_read(uint64_t offset, IoVec iov, uint32_t flags) = 0;
  virtual Task<int> do_write(uint64_t offset, IoVec iov, uint32_t flags);
  virtual Task<int> do_write_zeroes(uint64_t offset, uint64_t bytes, uint32_t flags);
  virtual Task<int> do_discard(uint64_t offset, uint64_t bytes);
  virtual Task<int> do_flush();
  virtual Task<int> do_cache(uint64_t offset, uint64_t bytes);
  virtual Task<BlockStatus> do_block_status(uint64_t offset, uint64_t bytes);
  virtual Task<int> do_truncate(int64_t size);

  // Adds a child edge (during open) with the permissions child_perm gives.
  void attach_child(std::shared_ptr<BlockNode> child, std::string role);
  // Sizes are whole 512-byte sectors, as in QEMU: a 1000-byte node shows
  // (and reads) as 1024 bytes.
  void set_size(int64_t size) {
    size_.store((size + 511) & ~int64_t(511), std::memory_order_relaxed);
  }

  qapi::BlockdevOptions options_;
  std::string name_;
  bool read_only_ = false;
  bool monitor_owned_ = false;
  bool discard_unmap_ = false;
  bool no_flush_ = false;
  bool cache_direct_ = false;
  qapi::BlockdevDetectZeroesOptions detect_zeroes_ = qapi::BlockdevDetectZeroesOptions::off;

 private:
  friend class BlockGraph;
  friend class BlockUser;
  void mark_dirty(uint64_t offset, uint64_t bytes);

 protected:
  void resize_bitmaps();

 private:
  std::atomic<int64_t> size_{0};
  std::atomic<IoThread*> home_iothread_{nullptr};
  BlockGraph* graph_ = nullptr;  // set once the node is in the graph
  std::vector<std::unique_ptr<BdrvChild>> children_;
  std::vector<BdrvChild*> parents_;
  // Guards bitmaps_: the data path takes it shared to mark bitmaps, the
  // main thread exclusively to add or remove one.
  mutable std::shared_mutex bitmaps_lock_;
  std::vector<std::shared_ptr<DirtyBitmap>> bitmaps_;
};

// The daemon's nodes by name, and the graph operations that keep
// permissions consistent.  Main thread only.
class BlockGraph {
 public:
  explicit BlockGraph(Daemon& daemon) : daemon_(daemon) {}
  ~BlockGraph();

  // blockdev-add: opens the node and its inline children.
  // fds resolves 'fd' socket addresses (a monitor's names, or numbers on
  // the command line).
  Task<std::shared_ptr<BlockNode>> add(const qapi::BlockdevOptions& opts, const FdContext& fds);
  // blockdev-del.
  void del(const std::string& node_name);

  // A bitmap of a named node; throws with QEMU's texts ("Node 'X' not
  // found", "Dirty bitmap 'Y' not found").
  std::shared_ptr<DirtyBitmap> find_bitmap(const std::string& node, const std::string& name) const;

  // Drops node and the inline children only it used.
  void remove_tree(const std::shared_ptr<BlockNode>& node);

  std::shared_ptr<BlockNode> find(const std::string& name) const;
  std::shared_ptr<BlockNode> find_or_fail(const std::string& name) const;
  // Newest first, as QEMU lists them.
  std::vector<std::shared_ptr<BlockNode>> nodes() const;

  // Re-derives every edge's permissions from the root users down and
  // checks them; throws qapi::Error (and changes nothing) on a conflict.
  static void refresh_permissions(BlockNode& node);

  void close_all();

 private:
  Task<std::shared_ptr<BlockNode>> open_node(const qapi::BlockdevOptions& opts, bool root,
                                             const FdContext& fds);
  std::string generate_name();

  Daemon& daemon_;
  std::vector<std::shared_ptr<BlockNode>> nodes_;  // oldest first
  uint64_t name_counter_ = 0;
};

// Refreshes permissions after a user or child went away (cannot fail).
void restore_permissions(BlockNode& node);

// Driver constructors (each in its own file).  They open the node or
// throw qapi::Error.  children: the resolved "file" child, if any.
struct NodeOpenContext {
  Daemon& daemon;
  std::string name;
  std::shared_ptr<BlockNode> file;
  // How 'fd' socket addresses are found: names in a monitor command,
  // numbers on the command line.
  const FdContext& fds;
};
Task<std::shared_ptr<BlockNode>> open_file_node(NodeOpenContext& ctx,
                                                const qapi::BlockdevOptions& opts);
std::shared_ptr<BlockNode> open_null_node(NodeOpenContext& ctx, const qapi::BlockdevOptions& opts);
std::shared_ptr<BlockNode> open_raw_node(NodeOpenContext& ctx, const qapi::BlockdevOptions& opts);
Task<std::shared_ptr<BlockNode>> open_nbd_node(NodeOpenContext& ctx,
                                               const qapi::BlockdevOptions& opts);

}  // namespace vstord
