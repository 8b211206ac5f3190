// Exports: a block node served to clients over some protocol.  One
// BlockExport interface and one registry for every type, so that ids are
// unique across types and block-export-add/-del/query-block-exports and
// BLOCK_EXPORT_DELETED behave the same for all of them (as QEMU's
// block/export/export.c).
//
// Life of an export: created by block-export-add (or --export, or the
// deprecated nbd-server-add); block-export-del asks it to shut down
// (safe: refused while clients are connected; hard: clients dropped);
// when the last client has gone, it tells the registry, which removes it
// and emits BLOCK_EXPORT_DELETED.  Registry calls run on the main thread.
#pragma once

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "block/block.hpp"
#include "qapi-types.hpp"

namespace vstord {

class Daemon;
class IoThread;
class ExportRegistry;

class BlockExport : public std::enable_shared_from_this<BlockExport> {
 public:
  virtual ~BlockExport();

  const std::string& id() const { return id_; }
  qapi::BlockExportType type() const { return type_; }
  const std::string& node_name() const { return node_name_; }
  // The node stays in memory as long as the export object does (sessions
  // hold it), even after teardown has released its permissions.
  BlockNode& node() const { return *node_; }
  std::shared_ptr<BlockNode> node_ptr() const { return node_; }
  bool writable() const { return writable_; }
  bool writethrough() const { return writethrough_; }
  // Where the export's clients run: its node's iothread, or null for the
  // default pool.  An export that is not fixed-iothread follows its node
  // when another export moves it.
  IoThread* iothread() const { return node_->home_iothread(); }
  bool fixed_iothread() const { return fixed_iothread_; }
  bool shutting_down() const { return shutting_down_; }

  // Clients connected now.
  virtual size_t clients() const = 0;
  // Stops taking clients and drops the connected ones; calls finished()
  // (on the main thread) when the last is gone.
  virtual void shutdown() = 0;

 protected:
  BlockExport(ExportRegistry& registry, const qapi::BlockExportOptions& opts, BlockUser user);
  // The export's teardown has ended: the registry forgets it.
  void finished();

  ExportRegistry& registry_;

 private:
  friend class ExportRegistry;
  std::string id_;
  qapi::BlockExportType type_;
  std::string node_name_;
  std::shared_ptr<BlockNode> node_;
  BlockUser user_;
  bool writable_;
  bool writethrough_;
  bool fixed_iothread_;
  bool shutting_down_ = false;
};

// What an export type provides: a check and a constructor.
struct ExportDriver {
  qapi::BlockExportType type;
  // Creates and starts the export; throws qapi::Error.
  std::function<Task<std::shared_ptr<BlockExport>>(Daemon&, const qapi::BlockExportOptions&,
                                                   BlockUser)>
      create;
  // The permissions the export needs beyond read (and write if writable)
  // and what it does not share (NBD: resize).
  uint32_t unshared = 0;
};

class ExportRegistry {
 public:
  explicit ExportRegistry(Daemon& daemon) : daemon_(daemon) {}

  void register_driver(ExportDriver driver);

  // block-export-add.
  Task<std::shared_ptr<BlockExport>> add(const qapi::BlockExportOptions& opts);
  // block-export-del.
  void del(const std::string& id, qapi::BlockExportRemoveMode mode);
  std::shared_ptr<BlockExport> find(const std::string& id) const;
  std::vector<qapi::BlockExportInfo> query() const;
  // Every export of one type, shut down hard (nbd-server-stop, exit).
  void shutdown_all(std::optional<qapi::BlockExportType> type = std::nullopt);
  bool empty() const { return exports_.empty(); }

 private:
  friend class BlockExport;
  void finished(BlockExport& exp);
  // The nodes that share an iothread with node: everything connected to
  // it through parent and child edges, as QEMU moves AioContexts.
  static std::vector<BlockNode*> connected_nodes(BlockNode& node);
  bool has_fixed_export(const std::vector<BlockNode*>& nodes) const;
  bool has_export(const std::vector<BlockNode*>& nodes) const;

  Daemon& daemon_;
  std::vector<ExportDriver> drivers_;
  std::vector<std::shared_ptr<BlockExport>> exports_;  // in creation order
};

}  // namespace vstord
