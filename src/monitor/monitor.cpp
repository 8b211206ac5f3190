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
  if (chr_) chr_->detach(this);
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
  arrived_fds_.clear();
}

void Monitor::chr_event(ChrEvent event) {
  if (event == ChrEvent::break_) return;  // QMP has no use for a break
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

void Monitor::chr_read(std::string_view data, std::vector<UniqueFd> fds) {
  if (!fds.empty()) arrived_fds_ = std::move(fds);  // replaces unclaimed ones, as QEMU does
  stream_.feed(data);
}

void Monitor::on_message(JsonStream::Message m) {
  // Once the daemon is shutting down, nothing more runs.
  if (daemon_.shutting_down()) return;
  Request req{std::move(m), std::move(arrived_fds_)};
  arrived_fds_.clear();
  if (req.message.value && qmp_is_oob(*req.message.value)) {
    // Out of band: run now, ahead of anything queued.
    asio::co_spawn(
        daemon_.io(),
        [self = shared_from_this(), req = std::move(req)]() mutable -> asio::awaitable<void> {
          auto reply = co_await self->execute(req);
          if (reply) self->send(*reply);
        },
        asio::detached);
    return;
  }
  queue_.push_back(std::move(req));
  queue_wake_.cancel_one();
}

asio::awaitable<std::optional<Json>> Monitor::execute(Request& req) {
  if (!req.message.value) co_return qmp_error_reply(qapi::Error(std::move(req.message.error)));
  bool negotiation = !command_mode_;
  // An out-of-band command may run while an in-band one waits: restore.
  auto* outer_fds = std::exchange(current_fds_, &req.fds);
  auto reply =
      co_await qmp_dispatch(daemon_, this, *req.message.value, {negotiation, oob_enabled_});
  current_fds_ = outer_fds;
  req.fds.clear();  // descriptors the command did not claim close now
  if (negotiation && reply && reply->contains("error") &&
      (*reply)["error"]["class"] == "CommandNotFound") {
    (*reply)["error"]["desc"] = "Expecting capabilities negotiation with 'qmp_capabilities'";
  }
  co_return reply;
}

asio::awaitable<void> Monitor::dispatch_loop() {
  auto self = shared_from_this();
  asio::steady_timer backoff(daemon_.io());
  while (!stopped_) {
    // Requests queued behind 'quit' are dropped, as in QEMU.
    if (daemon_.shutting_down()) queue_.clear();
    if (queue_.empty()) {
      co_await queue_wake_.async_wait(asio::as_tuple(asio::use_awaitable));
      queue_wake_.expires_at(asio::steady_timer::time_point::max());
      continue;
    }
    if (chr_->pending_output() >= kMaxPendingOutput) {
      // The client is not reading its replies: produce no more until it
      // does, so that replies cannot pile up without bound.
      backoff.expires_after(std::chrono::milliseconds(2));
      co_await backoff.async_wait(asio::as_tuple(asio::use_awaitable));
      continue;
    }
    Request req = std::move(queue_.front());
    queue_.pop_front();
    busy_ = true;
    bool was_full = queue_.size() + 1 >= kMaxQueued;
    std::optional<Json> reply = co_await execute(req);
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
  if (!current_fds_ || current_fds_->empty()) return {};
  // A command takes the first descriptor; the others sent with it close
  // when it finishes.
  UniqueFd fd = std::move(current_fds_->front());
  current_fds_->erase(current_fds_->begin());
  return fd;
}

FdContext monitor_fd_context(qapi::CommandContext& ctx) {
  FdContext fds;
  if (Monitor* mon = ctx.monitor) {
    fds.take_named = [mon](const std::string& name) { return mon->take_fd(name); };
  }
  return fds;
}

}  // namespace vstord
