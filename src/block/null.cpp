// null-co and null-aio: a node of a given size whose writes vanish and
// whose reads return zeroes (with read-zeroes) or leave the buffer as it
// is, optionally after a delay.  Useful to measure everything but the disk.

#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <cstring>

#include "block/block.hpp"
#include "qapi/error.hpp"

namespace vstord {

namespace {

class NullNode final : public BlockNode {
 public:
  NullNode(qapi::BlockdevOptions options, std::string name)
      : BlockNode(std::move(options), std::move(name)) {
    const auto& o = options_.driver() == qapi::BlockdevDriver::null_co
                        ? options_.get<qapi::BlockdevDriver::null_co>()
                        : options_.get<qapi::BlockdevDriver::null_aio>();
    int64_t size = o.size.value_or(int64_t(1) << 30);
    if (size < 0) qapi::fail("Parameter 'size' expects a non-negative number below 2^64");
    set_size(size);
    latency_ns_ = o.latency_ns.value_or(0);
    read_zeroes_ = o.read_zeroes.value_or(false);
  }

  Task<int> do_read(uint64_t, IoVec iov, uint32_t) override {
    co_await delay();
    if (read_zeroes_) {
      for (const auto& v : iov) std::memset(v.iov_base, 0, v.iov_len);
    }
    co_return 0;
  }
  Task<int> do_write(uint64_t, IoVec, uint32_t) override {
    co_await delay();
    co_return 0;
  }
  Task<int> do_write_zeroes(uint64_t, uint64_t, uint32_t) override {
    co_await delay();
    co_return 0;
  }
  Task<int> do_flush() override {
    co_await delay();
    co_return 0;
  }
  Task<BlockStatus> do_block_status(uint64_t, uint64_t bytes) override {
    // As QEMU: with read-zeroes the data is known to be zero.
    co_return BlockStatus{read_zeroes_ ? (kStatusZero | kStatusAllocated) : kStatusAllocated, bytes,
                          1};
  }
  bool can_write_zeroes_fast() const override { return true; }

  qapi::Json json_filename() const override {
    // Without options that change what it reads, QEMU calls it "null-co://".
    qapi::Json j = qapi::Json::object();
    j["driver"] = driver_name();
    const auto& o = options_.driver() == qapi::BlockdevDriver::null_co
                        ? options_.get<qapi::BlockdevDriver::null_co>()
                        : options_.get<qapi::BlockdevDriver::null_aio>();
    if (o.size) j["size"] = *o.size;
    if (o.read_zeroes) j["read-zeroes"] = *o.read_zeroes;
    return j;
  }
  std::string filename() const override {
    const auto& o = options_.driver() == qapi::BlockdevDriver::null_co
                        ? options_.get<qapi::BlockdevDriver::null_co>()
                        : options_.get<qapi::BlockdevDriver::null_aio>();
    if (!o.size && !o.read_zeroes) return std::string(driver_name()) + "://";
    return BlockNode::filename();
  }

 private:
  Task<void> delay() {
    if (latency_ns_ == 0) co_return;
    boost::asio::steady_timer t(co_await boost::asio::this_coro::executor,
                                std::chrono::nanoseconds(latency_ns_));
    co_await t.async_wait(boost::asio::use_awaitable);
  }

  uint64_t latency_ns_ = 0;
  bool read_zeroes_ = false;
};

}  // namespace

std::shared_ptr<BlockNode> open_null_node(NodeOpenContext& ctx, const qapi::BlockdevOptions& opts) {
  return std::make_shared<NullNode>(opts, ctx.name);
}

}  // namespace vstord
