// The raw format: the child's bytes as they are, or a window of them
// (offset, size).  The model for format drivers: one "file" child, every
// request translated and passed down.

#include <cerrno>

#include "block/block.hpp"
#include "qapi/error.hpp"

namespace vstord {

namespace {

class RawNode final : public BlockNode {
 public:
  RawNode(qapi::BlockdevOptions options, std::string name)
      : BlockNode(std::move(options), std::move(name)) {}

  void open(std::shared_ptr<BlockNode> file) {
    const auto& o = options_.get<qapi::BlockdevDriver::raw>();
    int64_t child_size = file->size();
    if (o.offset && *o.offset < 0) {
      qapi::fail("Parameter 'offset' expects a non-negative number below 2^64");
    }
    if (o.size && *o.size < 0)
      qapi::fail("Parameter 'size' expects a non-negative number below 2^64");
    offset_ = o.offset.value_or(0);
    has_size_ = o.size.has_value();
    if (offset_ > child_size) {
      qapi::fail("Offset ({}) cannot be greater than size of the containing file ({})", offset_,
                 child_size);
    }
    int64_t size = o.size.value_or(child_size - offset_);
    // QEMU's wording, two spaces included.
    if (offset_ + size > child_size) {
      qapi::fail(
          "The sum of offset ({}) and size ({}) has to be smaller or equal to the  actual "
          "size of the containing file ({})",
          offset_, size, child_size);
    }
    if (has_size_ && size % 512) qapi::fail("Specified size is not multiple of 512");
    set_size(size);
    // Over a read-only child, a raw node stays writable as far as it is
    // concerned (as in QEMU): taking the write permission fails later.
    attach_child(std::move(file), "file");
    file_ = file_child();
  }

  std::optional<MemorySpan> memory_span(uint64_t offset, uint64_t bytes) const override {
    return file_->memory_span(offset + offset_, bytes);
  }

  Task<int> do_read(uint64_t offset, IoVec iov, uint32_t flags) override {
    co_return co_await file_->read(offset + offset_, iov, flags);
  }
  Task<int> do_write(uint64_t offset, IoVec iov, uint32_t flags) override {
    co_return co_await file_->write(offset + offset_, iov, flags);
  }
  Task<int> do_write_zeroes(uint64_t offset, uint64_t bytes, uint32_t flags) override {
    co_return co_await file_->write_zeroes(offset + offset_, bytes, flags);
  }
  Task<int> do_discard(uint64_t offset, uint64_t bytes) override {
    co_return co_await file_->discard(offset + offset_, bytes);
  }
  Task<int> do_flush() override { co_return co_await file_->flush(); }
  Task<int> do_cache(uint64_t offset, uint64_t bytes) override {
    co_return co_await file_->cache(offset + offset_, bytes);
  }
  Task<BlockStatus> do_block_status(uint64_t offset, uint64_t bytes) override {
    BlockStatus st = co_await file_->block_status(offset + offset_, bytes);
    // The data is this node's own: allocated here, depth 1.
    st.flags |= kStatusAllocated;
    st.depth = 1;
    co_return st;
  }
  Task<int> do_truncate(int64_t size) override {
    if (has_size_) qapi::fail("Cannot resize fixed-size raw disks");
    // With an offset, the child grows or shrinks to the window's end.
    co_await file_->truncate(size + offset_);
    co_return 0;
  }

  void child_resized() override {
    if (has_size_) return;
    set_size(file_->size() - offset_);
    resize_bitmaps();
  }

  bool can_discard() const override { return discard_unmap_ && file_->can_discard(); }
  bool can_write_zeroes_fast() const override { return file_->can_write_zeroes_fast(); }
  bool can_multi_conn() const override { return file_->can_multi_conn(); }
  uint32_t request_alignment() const override { return file_->request_alignment(); }
  bool has_dirty_flag() const override { return file_->has_dirty_flag(); }
  std::optional<int64_t> allocated_bytes() const override { return file_->allocated_bytes(); }

  std::string filename() const override {
    // Without a window of its own, raw shows its child's name.
    if (!has_size_ && !offset_) {
      std::string f = file_->filename();
      if (!f.starts_with("json:")) return f;
    }
    return BlockNode::filename();
  }
  qapi::Json json_filename() const override {
    qapi::Json j = qapi::Json::object();
    j["driver"] = "raw";
    const auto& o = options_.get<qapi::BlockdevDriver::raw>();
    if (o.offset) j["offset"] = *o.offset;
    if (o.size) j["size"] = *o.size;
    j["file"] = file_->json_filename();
    return j;
  }

  void child_perm(const BdrvChild& child, uint32_t perm, uint32_t shared, uint32_t& nperm,
                  uint32_t& nshared) const override {
    BlockNode::child_perm(child, perm, shared, nperm, nshared);
    // A window must keep its child's size.
    if (has_size_ || offset_) nshared &= ~perm::resize;
  }

 private:
  BlockNode* file_ = nullptr;
  int64_t offset_ = 0;
  bool has_size_ = false;
};

}  // namespace

std::shared_ptr<BlockNode> open_raw_node(NodeOpenContext& ctx, const qapi::BlockdevOptions& opts) {
  auto node = std::make_shared<RawNode>(opts, ctx.name);
  node->open(ctx.file);
  return node;
}

}  // namespace vstord
