// Handlers for the block node commands of qapi/block-core.json.

#include "block/bitmap.hpp"
#include "block/block.hpp"
#include "daemon/daemon.hpp"
#include "monitor/monitor.hpp"
#include "qapi-commands.hpp"
#include "qapi/error.hpp"

namespace qapi {

namespace {

std::shared_ptr<vstord::BlockNode> node_for_bitmap(CommandContext& ctx, const std::string& node) {
  auto n = ctx.daemon.block().find(node);
  if (!n) fail("Node '{}' not found", node);
  return n;
}

std::shared_ptr<vstord::DirtyBitmap> find_bitmap(CommandContext& ctx, const std::string& node,
                                                 const std::string& name) {
  return ctx.daemon.block().find_bitmap(node, name);
}

}  // namespace

std::vector<BlockInfo> qmp_query_block(CommandContext&) {
  return {};
}

std::vector<BlockDeviceInfo> qmp_query_named_block_nodes(CommandContext& ctx, std::optional<bool>) {
  // No node has a backing chain yet, so 'flat' changes nothing.
  std::vector<BlockDeviceInfo> out;
  for (const auto& n : ctx.daemon.block().nodes()) out.push_back(n->info());
  return out;
}

boost::asio::awaitable<void> qmp_blockdev_add(CommandContext& ctx, BlockdevOptions arg) {
  // A named local: GCC 12 destroys temporaries inside co_await twice.
  vstord::FdContext fds = vstord::monitor_fd_context(ctx);
  co_await ctx.daemon.block().add(arg, fds);
}

void qmp_blockdev_del(CommandContext& ctx, std::string node_name) {
  ctx.daemon.block().del(node_name);
}

boost::asio::awaitable<void> qmp_block_resize(CommandContext& ctx,
                                              std::optional<std::string> device,
                                              std::optional<std::string> node_name, int64_t size) {
  std::shared_ptr<vstord::BlockNode> node;
  if (node_name) node = ctx.daemon.block().find(*node_name);
  if (!node) {
    // There are no block backends (devices) in a storage daemon.
    fail("Cannot find device='{}' nor node-name='{}'", device.value_or(""), node_name.value_or(""));
  }
  if (size < 0) fail("Parameter 'size' expects a >0 size");
  if (node->read_only()) fail("Image is read-only");
  // A user that needs to resize, as QEMU's temporary block backend.
  auto user = vstord::BlockUser::attach(node, "", vstord::perm::resize, vstord::perm::all);
  co_await node->truncate(size);
}

XDbgBlockGraph qmp_x_debug_query_block_graph(CommandContext& ctx) {
  // QEMU's walk: every user (block backend) with its root node, then every
  // node oldest first with its children.  Ids go up as things are first
  // met; both lists come out newest first.
  XDbgBlockGraph g;
  auto nodes = ctx.daemon.block().nodes();
  std::reverse(nodes.begin(), nodes.end());
  // An id is given when a thing is first met (an edge's child may come
  // before its own entry); entries are listed by the walk itself.
  std::map<const void*, uint64_t> ids;
  auto id_of = [&](const void* key) {
    auto [it, added] = ids.emplace(key, ids.size() + 1);
    return it->second;
  };
  auto add_node = [&](const void* key, XDbgBlockGraphNodeType type, const std::string& name) {
    g.nodes.insert(g.nodes.begin(), XDbgBlockGraphNode{id_of(key), type, name});
  };
  auto add_edge = [&](const void* parent, const vstord::BdrvChild& c) {
    id_of(c.node.get());
    g.edges.insert(g.edges.begin(), XDbgBlockGraphEdge{ids[parent], ids[c.node.get()], c.role,
                                                       vstord::perm::to_qapi(c.perm),
                                                       vstord::perm::to_qapi(c.shared)});
  };
  std::vector<const vstord::BdrvChild*> users;
  for (const auto& n : nodes) {
    for (const auto* p : n->parents()) {
      if (!p->parent_node) users.push_back(p);
    }
  }
  std::sort(users.begin(), users.end(), [](auto* a, auto* b) { return a->seq < b->seq; });
  for (const auto* u : users) {
    add_node(u, XDbgBlockGraphNodeType::block_backend, u->user_name);
    add_edge(u, *u);
  }
  for (const auto& n : nodes) {
    add_node(n.get(), XDbgBlockGraphNodeType::block_driver, n->name());
    for (const auto& c : n->children()) add_edge(n.get(), *c);
  }
  return g;
}

void qmp_block_dirty_bitmap_add(CommandContext& ctx, std::string node, std::string name,
                                std::optional<uint32_t> granularity, std::optional<bool> persistent,
                                std::optional<bool> disabled) {
  auto n = ctx.daemon.block().find(node);
  if (!n) fail("Cannot find device='{}' nor node-name='{}'", node, node);
  if (name.empty()) fail("Bitmap name cannot be empty");
  if (name.size() > 1023) fail("Bitmap name too long: {}", name);
  uint32_t g = granularity.value_or(65536);
  if (g < 512 || (g & (g - 1))) fail("Granularity must be power of 2 and at least 512");
  if (n->find_bitmap(name)) fail("Bitmap already exists: {}", name);
  if (persistent.value_or(false)) {
    fail("Can't store persistent bitmaps to {}: Operation not supported", node);
  }
  n->add_bitmap(std::make_shared<vstord::DirtyBitmap>(name, g, uint64_t(n->size()),
                                                      !disabled.value_or(false)));
}

void qmp_block_dirty_bitmap_remove(CommandContext& ctx, std::string node, std::string name) {
  auto bm = find_bitmap(ctx, node, name);
  bm->check_modifiable();
  node_for_bitmap(ctx, node)->remove_bitmap(name);
}

void qmp_block_dirty_bitmap_clear(CommandContext& ctx, std::string node, std::string name) {
  auto bm = find_bitmap(ctx, node, name);
  bm->check_modifiable();
  bm->clear();
}

void qmp_block_dirty_bitmap_enable(CommandContext& ctx, std::string node, std::string name) {
  auto bm = find_bitmap(ctx, node, name);
  bm->check_modifiable();
  bm->set_recording(true);
}

void qmp_block_dirty_bitmap_disable(CommandContext& ctx, std::string node, std::string name) {
  auto bm = find_bitmap(ctx, node, name);
  bm->check_modifiable();
  bm->set_recording(false);
}

void qmp_block_dirty_bitmap_merge(CommandContext& ctx, std::string node, std::string target,
                                  std::vector<BlockDirtyBitmapOrStr> bitmaps) {
  auto dst = find_bitmap(ctx, node, target);
  dst->check_modifiable();
  // Resolve every source first: nothing changes if one is missing.
  std::vector<std::shared_ptr<vstord::DirtyBitmap>> srcs;
  for (const auto& b : bitmaps) {
    if (b.kind() == BlockDirtyBitmapOrStr::Kind::local) {
      srcs.push_back(find_bitmap(ctx, node, std::get<0>(b.u)));
    } else {
      const auto& ext = *std::get<1>(b.u);
      srcs.push_back(find_bitmap(ctx, ext.node, ext.name));
    }
  }
  for (const auto& s : srcs) {
    if (s != dst && s->busy()) s->check_modifiable();
  }
  int64_t dst_size = node_for_bitmap(ctx, node)->size();
  for (size_t i = 0; i < srcs.size(); ++i) {
    const auto& b = bitmaps[i];
    const std::string& src_node =
        b.kind() == BlockDirtyBitmapOrStr::Kind::local ? node : std::get<1>(b.u)->node;
    int64_t src_size = node_for_bitmap(ctx, src_node)->size();
    if (src_size != dst_size) {
      fail(
          "Bitmaps are of different sizes (destination size is {}, source size is {}) and can't "
          "be merged",
          dst_size, src_size);
    }
  }
  for (const auto& s : srcs) {
    if (s != dst) dst->merge_from(*s);
  }
}

BlockDirtyBitmapSha256 qmp_x_debug_block_dirty_bitmap_sha256(CommandContext& ctx, std::string node,
                                                             std::string name) {
  return BlockDirtyBitmapSha256{find_bitmap(ctx, node, name)->sha256()};
}

}  // namespace qapi
