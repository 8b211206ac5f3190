// I/O threads: each runs its own io_context, where export data paths (NBD
// connections, their block requests) live.  Named ones come from
// `--object iothread,id=X` (an export picks one with its `iothread`
// option); the others form a default pool, sized to the machine, that
// connections are spread over.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>

#include <atomic>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

namespace vstord {

class IoThread {
 public:
  explicit IoThread(std::string name);
  ~IoThread();  // stops the loop and joins the thread
  IoThread(const IoThread&) = delete;
  IoThread& operator=(const IoThread&) = delete;

  const std::string& name() const { return name_; }
  boost::asio::io_context& io() { return io_; }
  boost::asio::any_io_executor executor() { return io_.get_executor(); }
  void stop();

 private:
  std::string name_;
  boost::asio::io_context io_{1};
  boost::asio::executor_work_guard<boost::asio::io_context::executor_type> work_;
  std::thread thread_;
};

class IoThreads {
 public:
  ~IoThreads();
  // --object iothread,id=X.
  IoThread& add(const std::string& id);
  IoThread* find(const std::string& id);
  // Starts the default pool (once).
  void start_default_pool();
  // The next thread of the default pool.
  IoThread& next_default();
  void stop_all();

 private:
  std::map<std::string, std::unique_ptr<IoThread>> named_;
  std::vector<std::unique_ptr<IoThread>> pool_;
  std::atomic<size_t> next_{0};
};

}  // namespace vstord
