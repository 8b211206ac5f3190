#include "daemon/daemon.hpp"

#include <spdlog/spdlog.h>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <chrono>

#include "export/nbd/server.hpp"
#include "monitor/monitor.hpp"
#include "qapi-events.hpp"
#include "qapi/event.hpp"

#ifndef VSTORD_VERSION
#define VSTORD_VERSION "0.0.0"
#endif

namespace vstord {

namespace asio = boost::asio;
using qapi::Json;

const char* DaemonVersion::package() {
  return "vstord " VSTORD_VERSION;
}

openhook::OpenHook& Daemon::enable_open_hook() {
  if (!open_hook_) {
    open_hook_ = std::make_unique<openhook::OpenHook>(open_hook_timeout_);
    // Runs on the hook's thread: the event goes out from the main thread.
    open_hook_->on_lost = [this](const std::string& reason) {
      asio::post(io_, [reason] { qapi::qapi_event_send_open_hook_lost(reason); });
    };
  }
  return *open_hook_;
}

Daemon::Daemon(asio::io_context& io) : io_(io) {
  nbd::register_export_driver(*this);
  qapi::set_event_sink([this](std::string_view name, const std::optional<Json>& data) {
    // One timestamp for every monitor: taken when the event happens.
    auto now = std::chrono::system_clock::now().time_since_epoch();
    int64_t us = std::chrono::duration_cast<std::chrono::microseconds>(now).count();
    Json ev = Json::object();
    ev["event"] = std::string(name);
    if (data) ev["data"] = *data;
    ev["timestamp"] = Json{{"seconds", us / 1000000}, {"microseconds", us % 1000000}};
    for (const auto& mon : monitors_) mon->send_event(ev);
  });
}

Daemon::~Daemon() {
  qapi::set_event_sink(nullptr);
  close_block_layer();
  chardevs_.close_all();
}

void Daemon::close_block_layer() {
  // Sessions first (their threads stop), then exports and nodes.
  if (nbd_server_) nbd_server_->stop();
  exports_.shutdown_all();
  iothreads_.stop_all();
  nbd_server_.reset();
  block_.close_all();
}

void Daemon::add_object(qapi::ObjectOptions opts) {
  using T = qapi::ObjectType;
  T type = opts.qom_type();
  if (type == T::tls_creds_anon || type == T::tls_creds_psk || type == T::tls_creds_x509) {
    qapi::fail("object type '{}' is not supported yet", qapi::enum_name(type));
  }
  if (objects_.contains(opts.id)) {
    qapi::fail("attempt to add duplicate property '{}' to object (type 'container')", opts.id);
  }
  if (type == T::iothread) iothreads_.add(opts.id);
  std::string id = opts.id;
  objects_.emplace(std::move(id), std::move(opts));
}

const qapi::ObjectOptions* Daemon::find_object(const std::string& id) const {
  auto it = objects_.find(id);
  return it == objects_.end() ? nullptr : &it->second;
}

void Daemon::add_monitor(std::shared_ptr<Monitor> mon) {
  monitors_.push_back(std::move(mon));
}

void Daemon::request_shutdown(qapi::ShutdownCause cause) {
  if (shutdown_cause_) return;
  shutdown_cause_ = cause;
  asio::co_spawn(io_, shutdown_sequence(), asio::detached);
}

asio::awaitable<void> Daemon::shutdown_sequence() {
  // Start after the current handler: the reply to 'quit' goes out first.
  co_await asio::post(io_, asio::use_awaitable);
  spdlog::info("shutting down ({})", qapi::enum_name(*shutdown_cause_));
  notifier_.stopping(fmt::format("Shutting down ({})", qapi::enum_name(*shutdown_cause_)));
  qapi::qapi_event_send_shutdown(false, *shutdown_cause_);
  // Give clients their last replies and the SHUTDOWN event, within one
  // deadline for all of them.
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(500);
  for (const auto& [id, chr] : chardevs_.all()) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() > 0) co_await chr->drain(left);
  }
  for (auto it = shutdown_hooks_.rbegin(); it != shutdown_hooks_.rend(); ++it) (*it)();
  if (nbd_server_) nbd_server_->stop();
  chardevs_.close_all();
  io_.stop();
}

}  // namespace vstord
