// Handlers for the character device commands of qapi/char.json.

#include "chardev/backends.hpp"
#include "chardev/chardev.hpp"
#include "daemon/daemon.hpp"
#include "monitor/monitor.hpp"
#include "qapi-commands.hpp"
#include "qapi/error.hpp"
#include "util/base64.hpp"

namespace qapi {

std::vector<ChardevInfo> qmp_query_chardev(CommandContext& ctx) {
  std::vector<ChardevInfo> out;
  for (const auto& chr : ctx.daemon.chardevs().qemu_order()) {
    bool open = chr->frontend() && chr->frontend()->chr_fe_open();
    out.push_back(ChardevInfo{chr->id(), chr->filename(), open});
  }
  return out;
}

std::vector<ChardevBackendInfo> qmp_query_chardev_backends(CommandContext&) {
  std::vector<ChardevBackendInfo> out;
  for (auto& name : vstord::chardev_backends_available()) out.push_back(ChardevBackendInfo{name});
  return out;
}

namespace {

std::shared_ptr<vstord::Chardev> find_chardev(CommandContext& ctx, const std::string& id,
                                              const char* missing) {
  auto chr = ctx.daemon.chardevs().find(id);
  if (!chr) fail(fmt::runtime(missing), id);
  return chr;
}

std::shared_ptr<vstord::RingbufChardev> find_ringbuf(CommandContext& ctx,
                                                     const std::string& device) {
  auto chr = find_chardev(ctx, device, "Device '{}' not found");
  auto rb = std::dynamic_pointer_cast<vstord::RingbufChardev>(chr);
  if (!rb) fail("{} is not a ringbuf device", device);
  return rb;
}

// Starts a new backend; its error, or empty.  (No co_await inside a
// catch block: the language forbids it.)
boost::asio::awaitable<std::string> open_backend(vstord::Chardev& chr) {
  std::string error;
  try {
    co_await chr.open();
  } catch (const Error& e) {
    error = e.what();
  }
  co_return error;
}

}  // namespace

boost::asio::awaitable<ChardevReturn> qmp_chardev_add(CommandContext& ctx, std::string id,
                                                      ChardevBackend backend) {
  if (ctx.daemon.chardevs().contains(id)) fail("Chardev with id '{}' already exists", id);
  std::shared_ptr<vstord::Chardev> chr;
  try {
    chr = vstord::chardev_new(ctx.daemon, id, backend, vstord::monitor_fd_context(ctx));
  } catch (const Error& e) {
    fail("Failed to add chardev '{}': {}", id, e.what());
  }
  ctx.daemon.chardevs().add(chr);
  std::string error = co_await open_backend(*chr);
  if (!error.empty()) {
    if (ctx.daemon.chardevs().find(id) == chr) ctx.daemon.chardevs().remove(id);
    fail("Failed to add chardev '{}': {}", id, error);
  }
  if (ctx.daemon.chardevs().find(id) != chr) {
    fail("Failed to add chardev '{}': it was removed while waiting for a client", id);
  }
  co_return chr->info();
}

boost::asio::awaitable<ChardevReturn> qmp_chardev_change(CommandContext& ctx, std::string id,
                                                         ChardevBackend backend) {
  auto old = find_chardev(ctx, id, "Chardev '{}' does not exist");
  if (!old->replaceable()) fail("Mux device hotswap not supported yet");
  vstord::ChardevFrontend* fe = old->frontend();
  if (fe && !fe->chr_be_change(nullptr)) fail("Chardev user does not support chardev hotswap");
  // The new backend is made and started first: if that fails, the old one
  // stays as it was.
  std::shared_ptr<vstord::Chardev> chr =
      vstord::chardev_new(ctx.daemon, id, backend, vstord::monitor_fd_context(ctx));
  std::string error = co_await open_backend(*chr);
  if (!error.empty()) {
    chr->close();
    fail("{}", error);
  }
  if (ctx.daemon.chardevs().find(id) != old || old->frontend() != fe) {
    chr->close();  // the device changed while the new backend started
    fail("Chardev '{}' changed while its new backend started", id);
  }
  if (fe) {
    old->detach(fe);
    fe->chr_be_change(chr);
    chr->attach(fe);
  }
  old->close();
  ctx.daemon.chardevs().replace(chr);
  // A peer that arrived while the new backend started is greeted now.
  if (fe && chr->connected()) fe->chr_event(vstord::ChrEvent::opened);
  co_return chr->info();
}

void qmp_chardev_send_break(CommandContext& ctx, std::string id) {
  find_chardev(ctx, id, "Chardev '{}' not found")->send_event(vstord::ChrEvent::break_);
}

void qmp_ringbuf_write(CommandContext& ctx, std::string device, std::string data,
                       std::optional<DataFormat> format) {
  auto rb = find_ringbuf(ctx, device);
  if (format == DataFormat::base64) {
    auto bytes = vstord::base64_decode(data);
    if (!bytes) fail("Base64 data contains invalid characters");
    rb->ring_write(*bytes);
    return;
  }
  // U+0000 is written as C0 80, the way QEMU stores it.
  std::string bytes;
  bytes.reserve(data.size());
  for (char c : data) {
    if (c == '\0') {
      bytes += "\xC0\x80";
    } else {
      bytes.push_back(c);
    }
  }
  rb->ring_write(bytes);
}

std::string qmp_ringbuf_read(CommandContext& ctx, std::string device, int64_t size,
                             std::optional<DataFormat> format) {
  auto rb = find_ringbuf(ctx, device);
  if (size <= 0) fail("size must be greater than zero");
  bool text = format != DataFormat::base64;
  std::string bytes = rb->ring_read(static_cast<size_t>(size), text);
  return text ? bytes : vstord::base64_encode(bytes);
}

void qmp_chardev_remove(CommandContext& ctx, std::string id) {
  auto chr = find_chardev(ctx, id, "Chardev '{}' not found");
  if (chr->frontend()) fail("Chardev '{}' is busy", id);
  ctx.daemon.chardevs().remove(id);
}

}  // namespace qapi
