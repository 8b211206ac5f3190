#include "daemon/iothread.hpp"

#include <pthread.h>
#include <spdlog/spdlog.h>
#include <boost/asio/steady_timer.hpp>

namespace vstord {

IoThread::IoThread(std::string name)
    : name_(std::move(name)), work_(boost::asio::make_work_guard(io_)) {
  // Asio makes a loop's epoll, eventfd and timerfd on first use: make them
  // now, so that the thread's descriptors exist from its start.
  { boost::asio::steady_timer warm_up(io_); }
  thread_ = std::thread([this] {
    // Thread names show in top and gdb (at most 15 characters).
    pthread_setname_np(pthread_self(), ("io-" + name_).substr(0, 15).c_str());
    for (;;) {
      try {
        io_.run();
        return;
      } catch (const std::exception& e) {
        // Handlers do not throw; if one does, log it and keep serving.
        spdlog::error("iothread {}: {}", name_, e.what());
      }
    }
  });
}

IoThread::~IoThread() {
  stop();
}

void IoThread::stop() {
  work_.reset();
  io_.stop();
  if (thread_.joinable()) thread_.join();
}

IoThreads::~IoThreads() {
  stop_all();
}

IoThread& IoThreads::add(const std::string& id) {
  auto& t = named_[id];
  t = std::make_unique<IoThread>(id);
  return *t;
}

IoThread* IoThreads::find(const std::string& id) {
  auto it = named_.find(id);
  return it == named_.end() ? nullptr : it->second.get();
}

void IoThreads::start_default_pool() {
  if (!pool_.empty()) return;
  unsigned n = std::max(1u, std::thread::hardware_concurrency());
  for (unsigned i = 0; i < n; ++i) pool_.push_back(std::make_unique<IoThread>(std::to_string(i)));
}

IoThread& IoThreads::next_default() {
  start_default_pool();
  return *pool_[next_++ % pool_.size()];
}

void IoThreads::stop_all() {
  for (auto& [id, t] : named_) t->stop();
  for (auto& t : pool_) t->stop();
}

}  // namespace vstord
