// 'mux' shares one backend between up to four frontends, and 'hub' joins
// up to four backends behind one frontend.
//
// Mux: input goes to the focused frontend; output from every frontend goes
// to the backend.  The escape character C-a introduces commands, as in
// QEMU: C-a c switches focus, C-a b sends a break, C-a t toggles
// timestamps on output, C-a h prints help, C-a x shuts the daemon down,
// C-a s does nothing here, and C-a C-a sends one C-a.

#include <fmt/chrono.h>

#include <algorithm>
#include <chrono>

#include "chardev/backends.hpp"
#include "daemon/daemon.hpp"
#include "qapi/error.hpp"

namespace vstord {

namespace {

constexpr size_t kMaxFrontends = 4;
constexpr char kEscape = 0x01;  // C-a

class MuxChardev final : public Chardev, public ChardevFrontend {
 public:
  MuxChardev(Daemon& daemon, const std::string& id, std::shared_ptr<Chardev> base)
      : Chardev(id), daemon_(daemon), base_(std::move(base)) {}
  ~MuxChardev() override { close(); }

  boost::asio::awaitable<void> open() override {
    base_->attach(this);
    co_return;
  }

  void attach(ChardevFrontend* fe) override {
    if (std::find(fes_.begin(), fes_.end(), fe) != fes_.end()) return;
    if (fes_.size() >= kMaxFrontends) qapi::fail("Too many uses of multiplexed chardev '{}'", id());
    fes_.push_back(fe);
    focus_ = fes_.size() - 1;  // a new frontend gets the focus, as in QEMU
    frontend_ = fe;
    base_->accept_input();
  }

  void detach(ChardevFrontend* fe) override {
    fes_.erase(std::remove(fes_.begin(), fes_.end(), fe), fes_.end());
    focus_ = fes_.empty() ? 0 : std::min(focus_, fes_.size() - 1);
    frontend_ = fes_.empty() ? nullptr : fes_[focus_];
  }

  std::string filename() const override { return "mux"; }
  bool replaceable() const override { return false; }
  bool connected() const override { return base_->connected(); }
  size_t pending_output() const override { return base_->pending_output(); }
  void accept_input() override { base_->accept_input(); }
  boost::asio::awaitable<void> drain(std::chrono::milliseconds limit) override {
    co_await base_->drain(limit);
  }
  void close_backend() override {
    if (base_ && base_->frontend() == this) base_->detach(this);
  }

  // ChardevFrontend, towards the base.
  void chr_event(ChrEvent event) override {
    for (auto* fe : std::vector<ChardevFrontend*>(fes_)) fe->chr_event(event);
  }
  bool chr_can_read() override { return frontend_ && frontend_->chr_can_read(); }
  bool chr_be_change(const std::shared_ptr<Chardev>& chr) override {
    if (chr) base_ = chr;
    return true;
  }
  bool chr_fe_open() const override { return !fes_.empty(); }
  bool chr_idle() override {
    return std::all_of(fes_.begin(), fes_.end(),
                       [](ChardevFrontend* fe) { return fe->chr_idle(); });
  }
  void chr_read(std::string_view data, std::vector<UniqueFd> fds) override {
    std::string out;
    for (char c : data) {
      if (!got_escape_) {
        if (c == kEscape) {
          got_escape_ = true;
        } else {
          out.push_back(c);
        }
        continue;
      }
      got_escape_ = false;
      switch (c) {
        case kEscape: out.push_back(c); break;
        case 'h':
          base_->write(
              "\n\rC-a h    print this help\n\rC-a x    shut the daemon down\n\r"
              "C-a s    (nothing: there are no snapshots)\n\rC-a t    toggle timestamps\n\r"
              "C-a b    send break\n\rC-a c    switch to the next frontend\n\r"
              "C-a C-a  sends C-a\n\r");
          break;
        case 'x':
          base_->write("vstord: terminated\n\r");
          daemon_.request_shutdown(qapi::ShutdownCause::host_ui);
          break;
        case 'b':
          if (frontend_) frontend_->chr_event(ChrEvent::break_);
          break;
        case 'c':
          deliver(out, fds);
          if (!fes_.empty()) {
            focus_ = (focus_ + 1) % fes_.size();
            frontend_ = fes_[focus_];
          }
          break;
        case 't':
          timestamps_ = !timestamps_;
          start_ = std::chrono::steady_clock::now();
          break;
        default: break;  // unknown escapes are dropped
      }
    }
    deliver(out, fds);
  }

 protected:
  void backend_write(std::string data) override {
    if (timestamps_) {
      // Every line starts with the time since timestamps were turned on.
      auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                    std::chrono::steady_clock::now() - start_)
                    .count();
      std::string stamp = fmt::format("[{:02}:{:02}:{:02}.{:03}] ", ms / 3600000, ms / 60000 % 60,
                                      ms / 1000 % 60, ms % 1000);
      std::string out;
      for (char c : data) {
        if (line_start_) out += stamp;
        out.push_back(c);
        line_start_ = c == '\n';
      }
      data = std::move(out);
    }
    base_->write(std::move(data));
  }

 private:
  void deliver(std::string& out, std::vector<UniqueFd>& fds) {
    if ((out.empty() && fds.empty()) || !frontend_) return;
    frontend_->chr_read(out, std::move(fds));
    out.clear();
    fds.clear();
  }

  Daemon& daemon_;
  std::shared_ptr<Chardev> base_;
  std::vector<ChardevFrontend*> fes_;
  size_t focus_ = 0;
  bool got_escape_ = false;
  bool timestamps_ = false;
  bool line_start_ = true;
  std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
};

class HubChardev final : public Chardev {
 public:
  HubChardev(const std::string& id, std::vector<std::shared_ptr<Chardev>> backends)
      : Chardev(id), backends_(std::move(backends)) {
    for (size_t i = 0; i < backends_.size(); ++i) ports_.push_back(std::make_unique<Port>(this));
  }
  ~HubChardev() override { close(); }

  boost::asio::awaitable<void> open() override {
    for (size_t i = 0; i < backends_.size(); ++i) backends_[i]->attach(ports_[i].get());
    co_return;
  }
  std::string filename() const override { return "hub"; }
  bool connected() const override {
    return std::any_of(backends_.begin(), backends_.end(), [](auto& b) { return b->connected(); });
  }
  size_t pending_output() const override {
    size_t most = 0;
    for (auto& b : backends_) most = std::max(most, b->pending_output());
    return most;
  }
  void accept_input() override {
    for (auto& b : backends_) b->accept_input();
  }
  boost::asio::awaitable<void> drain(std::chrono::milliseconds limit) override {
    for (auto& b : backends_) co_await b->drain(limit);
  }
  void close_backend() override {
    for (size_t i = 0; i < backends_.size(); ++i) {
      if (backends_[i]->frontend() == ports_[i].get()) backends_[i]->detach(ports_[i].get());
    }
  }

 protected:
  void backend_write(std::string data) override {
    for (auto& b : backends_) b->write(data);
  }

 private:
  // The hub's face towards one of its backends.
  struct Port : ChardevFrontend {
    explicit Port(HubChardev* hub) : hub(hub) {}
    // Only the first backend to open and the last to close are news to
    // the frontend, as in QEMU.
    void chr_event(ChrEvent e) override {
      if (e == ChrEvent::opened && open) return;
      if (e == ChrEvent::closed && !open) return;
      if (e != ChrEvent::break_) open = e == ChrEvent::opened;
      int& n = hub->open_count_;
      if (e == ChrEvent::opened && n++ > 0) return;
      if (e == ChrEvent::closed && --n > 0) return;
      hub->send_event(e);
    }
    void chr_read(std::string_view d, std::vector<UniqueFd> fds) override {
      if (hub->frontend_) hub->frontend_->chr_read(d, std::move(fds));
    }
    bool chr_can_read() override { return hub->frontend_ && hub->frontend_->chr_can_read(); }
    bool chr_idle() override { return !hub->frontend_ || hub->frontend_->chr_idle(); }
    HubChardev* hub;
    bool open = false;
  };
  int open_count_ = 0;

  std::vector<std::shared_ptr<Chardev>> backends_;
  std::vector<std::unique_ptr<Port>> ports_;
};

}  // namespace

std::shared_ptr<Chardev> chardev_mux_new(Daemon& daemon, const std::string& id,
                                         const qapi::ChardevMux& opts) {
  auto base = daemon.chardevs().find(opts.chardev);
  if (!base) qapi::fail("mux: base chardev {} not found", opts.chardev);
  if (base->frontend()) qapi::fail("Device '{}' is in use", opts.chardev);
  return std::make_shared<MuxChardev>(daemon, id, std::move(base));
}

std::shared_ptr<Chardev> chardev_hub_new(Daemon& daemon, const std::string& id,
                                         const qapi::ChardevHub& opts) {
  if (opts.chardevs.empty()) qapi::fail("hub: 'chardevs' list is empty");
  if (opts.chardevs.size() > kMaxFrontends) {
    qapi::fail("hub: too many backends, at most {}", kMaxFrontends);
  }
  std::vector<std::shared_ptr<Chardev>> backends;
  for (const auto& name : opts.chardevs) {
    auto chr = daemon.chardevs().find(name);
    if (!chr) qapi::fail("hub: chardev '{}' not found", name);
    if (chr->frontend()) qapi::fail("hub: chardev '{}' is already in use", name);
    if (std::find(backends.begin(), backends.end(), chr) != backends.end()) {
      qapi::fail("hub: chardev '{}' is listed twice", name);
    }
    backends.push_back(std::move(chr));
  }
  return std::make_shared<HubChardev>(id, std::move(backends));
}

}  // namespace vstord
