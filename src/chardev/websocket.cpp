#include "chardev/websocket.hpp"

#include <sys/socket.h>

#include <spdlog/spdlog.h>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/generic/stream_protocol.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/websocket.hpp>

#include <deque>

namespace vstord {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace websocket = beast::websocket;
using asio::use_awaitable;

namespace {

using Socket = asio::generic::stream_protocol::socket;

class WebsocketStream final : public ByteStream,
                              public std::enable_shared_from_this<WebsocketStream> {
 public:
  WebsocketStream(asio::io_context& io, UniqueFd fd, FdStream::Options opts)
      : io_(io),
        opts_(std::move(opts)),
        ws_(make_socket(io, std::move(fd))),
        write_wake_(io),
        input_wake_(io) {
    write_wake_.expires_at(asio::steady_timer::time_point::max());
    input_wake_.expires_at(asio::steady_timer::time_point::max());
  }

  void start() override { asio::co_spawn(io_, run(shared_from_this()), asio::detached); }
  void set_on_end(std::function<void()> fn) override { opts_.on_end = std::move(fn); }
  void write(std::string data) override {
    if (closed_) return;
    out_bytes_ += data.size();
    out_.push_back(std::move(data));
    write_wake_.cancel_one();
  }
  size_t pending_output() const override { return out_bytes_; }
  void accept_input() override { input_wake_.cancel(); }
  bool closed() const override { return closed_; }
  void close() override {
    if (closed_) return;
    closed_ = true;
    beast::get_lowest_layer(ws_).close();
    write_wake_.cancel();
    input_wake_.cancel();
    if (opts_.on_end) asio::post(io_, [self = shared_from_this()] { self->opts_.on_end(); });
  }
  asio::awaitable<void> drain(std::chrono::milliseconds limit) override {
    asio::steady_timer t(io_);
    auto deadline = std::chrono::steady_clock::now() + limit;
    while (!closed_ && !out_.empty() && std::chrono::steady_clock::now() < deadline) {
      t.expires_after(std::chrono::milliseconds(5));
      co_await t.async_wait(asio::as_tuple(use_awaitable));
    }
  }

 private:
  static Socket make_socket(asio::io_context& io, UniqueFd fd) {
    sockaddr_storage ss{};
    socklen_t len = sizeof(ss);
    getsockname(fd.get(), reinterpret_cast<sockaddr*>(&ss), &len);
    return Socket(io, asio::generic::stream_protocol(ss.ss_family, 0), fd.release());
  }

  static asio::awaitable<void> run(std::shared_ptr<WebsocketStream> self) {
    // The upgrade request: a client that names subprotocols must offer
    // "binary", as QEMU requires.
    beast::flat_buffer buf;
    http::request<http::string_body> req;
    auto [ec, nread] = co_await http::async_read(beast::get_lowest_layer(self->ws_), buf, req,
                                                 asio::as_tuple(use_awaitable));
    std::string protocols(req[http::field::sec_websocket_protocol]);
    (void)nread;
    if (ec || !websocket::is_upgrade(req) ||
        (!protocols.empty() && protocols.find("binary") == std::string::npos)) {
      spdlog::info("websocket: refused a client that did not ask for a binary WebSocket");
      self->close();
      co_return;
    }
    self->ws_.set_option(websocket::stream_base::decorator(
        [offer = !protocols.empty()](websocket::response_type& res) {
          if (offer) res.set(http::field::sec_websocket_protocol, "binary");
          res.set(http::field::server, "vstord");
        }));
    self->ws_.binary(true);
    self->ws_.read_message_max(1 << 20);
    auto [aec] = co_await self->ws_.async_accept(req, asio::as_tuple(use_awaitable));
    if (aec) {
      self->close();
      co_return;
    }
    asio::co_spawn(self->io_, writer(self), asio::detached);
    while (!self->closed_) {
      ChardevFrontend* fe = self->opts_.frontend ? self->opts_.frontend() : nullptr;
      if (!fe || !fe->chr_can_read()) {
        co_await self->input_wake_.async_wait(asio::as_tuple(use_awaitable));
        self->input_wake_.expires_at(asio::steady_timer::time_point::max());
        continue;
      }
      beast::flat_buffer msg;
      auto [rec, n] = co_await self->ws_.async_read(msg, asio::as_tuple(use_awaitable));
      if (rec || self->closed_) break;
      fe = self->opts_.frontend ? self->opts_.frontend() : nullptr;
      auto data = msg.cdata();
      if (fe)
        fe->chr_read(std::string_view(static_cast<const char*>(data.data()), data.size()), {});
    }
    self->close();
  }

  static asio::awaitable<void> writer(std::shared_ptr<WebsocketStream> self) {
    while (!self->closed_) {
      if (self->out_.empty()) {
        co_await self->write_wake_.async_wait(asio::as_tuple(use_awaitable));
        self->write_wake_.expires_at(asio::steady_timer::time_point::max());
        continue;
      }
      auto [ec, n] = co_await self->ws_.async_write(asio::buffer(self->out_.front()),
                                                    asio::as_tuple(use_awaitable));
      if (ec) break;
      self->out_bytes_ -= self->out_.front().size();
      self->out_.pop_front();
      self->input_wake_.cancel();
    }
    self->close();
  }

  asio::io_context& io_;
  FdStream::Options opts_;
  websocket::stream<Socket> ws_;
  asio::steady_timer write_wake_;
  asio::steady_timer input_wake_;
  std::deque<std::string> out_;
  size_t out_bytes_ = 0;
  bool closed_ = false;
};

}  // namespace

std::shared_ptr<ByteStream> websocket_stream_new(asio::io_context& io, UniqueFd fd,
                                                 FdStream::Options opts) {
  return std::make_shared<WebsocketStream>(io, std::move(fd), std::move(opts));
}

}  // namespace vstord
