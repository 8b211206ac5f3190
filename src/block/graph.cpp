// BlockGraph: the daemon's nodes by name; blockdev-add and blockdev-del.

#include <algorithm>
#include <cctype>
#include <random>

#include "block/bitmap.hpp"
#include "block/block.hpp"
#include "qapi/error.hpp"
#include "util/id.hpp"

namespace vstord {

BlockGraph::~BlockGraph() {
  close_all();
}

std::string BlockGraph::generate_name() {
  // As QEMU's id_generate: a counter and two random digits, so that nobody
  // comes to rely on the names.
  static thread_local std::mt19937 rng{std::random_device{}()};
  std::string name;
  do {
    name = fmt::format("#block{}{:02}", name_counter_++, rng() % 100);
  } while (find(name));
  return name;
}

std::shared_ptr<BlockNode> BlockGraph::find(const std::string& name) const {
  for (const auto& n : nodes_) {
    if (n->name() == name) return n;
  }
  return nullptr;
}

std::shared_ptr<BlockNode> BlockGraph::find_or_fail(const std::string& name) const {
  auto n = find(name);
  if (!n) qapi::fail("Cannot find device='' nor node-name='{}'", name);
  return n;
}

std::vector<std::shared_ptr<BlockNode>> BlockGraph::nodes() const {
  return {nodes_.rbegin(), nodes_.rend()};
}

Task<std::shared_ptr<BlockNode>> BlockGraph::add(const qapi::BlockdevOptions& opts,
                                                 const FdContext& fds) {
  if (!opts.node_name) qapi::fail("'node-name' must be specified for the root node");
  auto node = co_await open_node(opts, true, fds);
  co_return node;
}

Task<std::shared_ptr<BlockNode>> BlockGraph::open_node(const qapi::BlockdevOptions& opts, bool root,
                                                       const FdContext& fds) {
  std::string name;
  if (opts.node_name) {
    name = *opts.node_name;
    if (!id_wellformed(name)) qapi::fail("Invalid node-name: '{}'", name);
    if (name.size() >= 32) qapi::fail("Node name too long");
    if (find(name)) qapi::fail("Duplicate nodes with node-name='{}'", name);
  }
  if (opts.force_share.value_or(false) && !opts.read_only.value_or(false)) {
    qapi::fail("force-share=on can only be used with read-only images");
  }

  // Children first: a format node's "file", inline or by reference.
  std::shared_ptr<BlockNode> file;
  std::vector<std::shared_ptr<BlockNode>> created;
  if (opts.driver() == qapi::BlockdevDriver::raw) {
    const auto& ref = opts.get<qapi::BlockdevDriver::raw>().file;
    if (ref.kind() == qapi::BlockdevRef::Kind::reference) {
      const auto& child_name = std::get<1>(ref.u);
      file = find(child_name);
      if (!file) qapi::fail("Cannot find device='{}' nor node-name='{}'", child_name, child_name);
    } else {
      file = co_await open_node(*std::get<0>(ref.u), false, fds);
      created.push_back(file);
    }
  }
  if (name.empty()) name = generate_name();

  NodeOpenContext ctx{daemon_, name, file, fds};
  std::shared_ptr<BlockNode> node;
  try {
    switch (opts.driver()) {
      case qapi::BlockdevDriver::file:
      case qapi::BlockdevDriver::host_device: node = co_await open_file_node(ctx, opts); break;
      case qapi::BlockdevDriver::null_co:
      case qapi::BlockdevDriver::null_aio: node = open_null_node(ctx, opts); break;
      case qapi::BlockdevDriver::raw: node = open_raw_node(ctx, opts); break;
      case qapi::BlockdevDriver::nbd: node = co_await open_nbd_node(ctx, opts); break;
    }
    // A child defined inline may have taken the parent's name.
    if (opts.node_name && find(name)) qapi::fail("Duplicate nodes with node-name='{}'", name);
  } catch (...) {
    // An inline child dies with its failed parent, and its own inline
    // children with it.
    node.reset();
    for (auto& c : created) remove_tree(c);
    throw;
  }
  // Every node starts with no users: take the locks that implies.
  try {
    refresh_permissions(*node);
  } catch (...) {
    node->close();
    node.reset();
    for (auto& c : created) remove_tree(c);
    throw;
  }
  node->graph_ = this;
  node->monitor_owned_ = root;
  nodes_.push_back(node);
  co_return node;
}

std::shared_ptr<DirtyBitmap> BlockGraph::find_bitmap(const std::string& node,
                                                     const std::string& name) const {
  auto n = find(node);
  if (!n) qapi::fail("Node '{}' not found", node);
  auto bm = n->find_bitmap(name);
  if (!bm) qapi::fail("Dirty bitmap '{}' not found", name);
  return bm;
}

void BlockGraph::del(const std::string& node_name) {
  auto node = find(node_name);
  if (!node) qapi::fail("Failed to find node with node-name='{}'", node_name);
  bool has_user = std::any_of(node->parents().begin(), node->parents().end(),
                              [](const BdrvChild* p) { return p->parent_node == nullptr; });
  if (has_user) qapi::fail("Node {} is in use", node_name);
  if (!node->monitor_owned()) qapi::fail("Node {} is not owned by the monitor", node_name);
  if (!node->parents().empty()) qapi::fail("Block device {} is in use", node_name);
  for (const auto& bm : node->bitmaps()) {
    if (bm->busy()) {
      qapi::fail("Bitmap '{}' is currently in use by another operation and cannot be used",
                 bm->name());
    }
  }

  remove_tree(node);
}

void BlockGraph::remove_tree(const std::shared_ptr<BlockNode>& root) {
  // Remove the node, then each child that nobody else uses and that the
  // monitor did not create.
  std::vector<std::shared_ptr<BlockNode>> dead{root};
  while (!dead.empty()) {
    auto n = dead.back();
    dead.pop_back();
    std::erase(nodes_, n);
    for (auto& c : n->children_) {
      auto child = c->node;
      auto& ps = child->parents_;
      ps.erase(std::find(ps.begin(), ps.end(), c.get()));
      if (child->parents().empty() && !child->monitor_owned()) {
        dead.push_back(child);
      } else {
        restore_permissions(*child);
      }
    }
    n->children_.clear();
    n->graph_ = nullptr;
    n->close();
  }
}

void BlockGraph::close_all() {
  for (auto it = nodes_.rbegin(); it != nodes_.rend(); ++it) {
    (*it)->graph_ = nullptr;
    (*it)->close();
  }
  nodes_.clear();
}

}  // namespace vstord
