#include "monitor/monitor.hpp"

#include <spdlog/spdlog.h>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <chrono>

#include "daemon/daemon.hpp"
#include "monitor/qmp_dispatch.hpp"
#include "qapi/error.hpp"

namespace vstord {

namespace asio = boost::asio;
using qapi::Json;

Monitor::Monitor(Daemon& daemon, std::shared_ptr<Chardev> chr, qapi::MonitorOptions opts)
    : daemon_(daemon),
      chr_(std::move(chr)),
      opts_(std::move(opts)),
      stream_([this](JsonStream::Message m) { on_message(std::move(m)); }),
      queue_wake_(daemon.io()) {
  queue_wake_.expires_at(asio::steady_timer::time_point::max());
}

Monitor::~Monitor() {
  stopped_ = true;
  if (chr_ && chr_->frontend() == this) chr_->detach();
}

void Monitor::start() {
  chr_->attach(this);
  asio::co_spawn(
      daemon_.io(), [self = shared_from_this()] { return self->dispatch_loop(); }, asio::detached);
  if (chr_->connected()) chr_event(ChrEvent::opened);
}

void Monitor::reset_session() {
  command_mode_ = false;
  oob_enabled_ = false;
  stream_.reset();
  queue_.clear();
}

void Monitor::chr_event(ChrEvent event) {
  reset_session();
  if (event != ChrEvent::opened) return;
  Json version = Json::object();
  version["qemu"] = Json{{"major", DaemonVersion::qemu_major},
                         {"minor", DaemonVersion::qemu_minor},
                         {"micro", DaemonVersion::qemu_micro}};
  version["package"] = DaemonVersion::package();
  Json greeting = Json::object();
  greeting["QMP"] = Json{{"version", version}, {"capabilities", Json::array({"oob"})}};
  send(greeting);
}

void Monitor::enter_command_mode(bool oob) {
  command_mode_ = true;
  oob_enabled_ = oob;
}

bool Monitor::chr_can_read() {
  return queue_.size() < kMaxQueued && chr_->pending_output() < kMaxPendingOutput;
}

void Monitor::chr_read(std::string_view data) {
  stream_.feed(data);
}

void Monitor::on_message(JsonStream::Message m) {
  if (m.value && qmp_is_oob(*m.value)) {
    // Out of band: run now, ahead of anything queued.  Commands that allow
    // it are synchronous, so the reply is ready at once.
    Json request = std::move(*m.value);
    asio::co_spawn(
        daemon_.io(),
        [self = shared_from_this(), request = std::move(request)]() -> asio::awaitable<void> {
          DispatchMode mode{!self->command_mode_, self->oob_enabled_};
          auto reply = co_await qmp_dispatch(self->daemon_, self.get(), request, mode);
          if (reply) self->send(*reply);
        },
        asio::detached);
    return;
  }
  queue_.push_back(std::move(m));
  queue_wake_.cancel_one();
}

asio::awaitable<void> Monitor::dispatch_loop() {
  auto self = shared_from_this();
  while (!stopped_) {
    if (queue_.empty()) {
      co_await queue_wake_.async_wait(asio::as_tuple(asio::use_awaitable));
      queue_wake_.expires_at(asio::steady_timer::time_point::max());
      continue;
    }
    JsonStream::Message m = std::move(queue_.front());
    queue_.pop_front();
    busy_ = true;
    bool was_full = queue_.size() + 1 >= kMaxQueued;
    std::optional<Json> reply;
    if (!m.value) {
      reply = qmp_error_reply(qapi::Error(std::move(m.error)));
    } else {
      bool negotiation = !command_mode_;
      reply = co_await qmp_dispatch(daemon_, this, *m.value, {negotiation, oob_enabled_});
      if (negotiation && reply && reply->contains("error") &&
          (*reply)["error"]["class"] == "CommandNotFound") {
        (*reply)["error"]["desc"] = "Expecting capabilities negotiation with 'qmp_capabilities'";
      }
    }
    if (reply) send(*reply);
    busy_ = false;
    if (was_full) chr_->accept_input();
    // Let the reader and other monitors run between commands.
    co_await asio::post(daemon_.io(), asio::use_awaitable);
  }
}

void Monitor::send(const Json& message) {
  chr_->write(to_qmp_text(message, opts_.pretty.value_or(false)));
}

void Monitor::send_event(const Json& event) {
  if (command_mode_ && chr_->connected()) send(event);
}

void Monitor::store_fd(const std::string& name, UniqueFd fd) {
  named_fds_[name] = std::move(fd);  // replacing closes the old one
}

UniqueFd Monitor::take_fd(const std::string& name) {
  auto it = named_fds_.find(name);
  if (it == named_fds_.end()) qapi::fail("File descriptor named '{}' has not been found", name);
  UniqueFd fd = std::move(it->second);
  named_fds_.erase(it);
  return fd;
}

void Monitor::close_fd(const std::string& name) {
  auto it = named_fds_.find(name);
  if (it == named_fds_.end()) qapi::fail("File descriptor named '{}' not found", name);
  named_fds_.erase(it);
}

UniqueFd Monitor::take_received_fd() {
  return chr_->take_msgfd();
}

}  // namespace vstord
