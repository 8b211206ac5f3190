#include "daemon/startup.hpp"

#include "chardev/cli.hpp"
#include "daemon/daemon.hpp"
#include "daemon/keyval.hpp"
#include "export/nbd/server.hpp"
#include "monitor/monitor.hpp"
#include "qapi/error.hpp"

namespace vstord {

namespace asio = boost::asio;

namespace {

// Command-line options name descriptors by number, or a socket systemd
// passed by its FileDescriptorName.
FdContext cli_fd_context(Daemon& daemon) {
  FdContext ctx;
  ctx.take_activated = [&daemon](const std::string& name) { return daemon.activated().take(name); };
  return ctx;
}

template <class T, class Visit>
T parse_typed(const std::string& text, const char* implied_key, Visit visit) {
  bool keyval = false;
  qapi::Json j = parse_option_argument(text, implied_key, keyval);
  qapi::Input in(keyval ? qapi::Input::Mode::keyval : qapi::Input::Mode::json);
  T out;
  visit(in, nullptr, j, out);
  return out;
}

asio::awaitable<void> add_chardev(Daemon& daemon, const CliOption& cli) {
  const std::string& arg = cli.arg;
  if (arg == "help" || arg == "?") {
    fmt::print("Available chardev backend types: \n");
    for (const auto& name : chardev_backends_available()) fmt::print("  {}\n", name);
    std::exit(0);
  }
  // qemu-storage-daemon takes only the key=value form; the JSON form (the
  // arguments of chardev-add) reaches every backend option, vsock
  // addresses included.
  ChardevCliOptions opts;
  if (arg.starts_with('{')) {
    auto json = parse_typed<qapi::ChardevOptions>(arg, nullptr, qapi::visit_type_ChardevOptions);
    opts.id = std::move(json.id);
    opts.backend = std::move(json.backend);
  } else {
    opts = chardev_parse_cli(arg, [&](const std::string& message, const std::string& hint) {
      print_warning(cli.as_given, message, hint);
    });
  }
  if (daemon.chardevs().contains(opts.id)) {
    qapi::fail("attempt to add duplicate property '{}' to object (type 'container')", opts.id);
  }
  // mux=on: the backend gets the id "ID-base" and a mux named ID shares
  // it, as in QEMU.
  std::string id = opts.mux ? opts.id + "-base" : opts.id;
  if (daemon.chardevs().contains(id)) qapi::fail("Duplicate ID '{}' for chardev", id);
  auto chr = chardev_new(daemon, id, opts.backend, cli_fd_context(daemon));
  daemon.chardevs().add(chr);
  co_await chr->open();
  if (opts.mux) {
    qapi::ChardevBackend mux;
    mux.emplace<qapi::ChardevBackendKind::mux>().data.chardev = id;
    auto m = chardev_new(daemon, opts.id, mux, cli_fd_context(daemon));
    daemon.chardevs().add(m);
    co_await m->open();
  }
}

void add_monitor(Daemon& daemon, const std::string& arg) {
  auto opts = parse_typed<qapi::MonitorOptions>(arg, "chardev", qapi::visit_type_MonitorOptions);
  auto chr = daemon.chardevs().find(opts.chardev);
  if (!chr) qapi::fail("chardev \"{}\" not found", opts.chardev);
  if (opts.mode.value_or(qapi::MonitorMode::control) != qapi::MonitorMode::control) {
    qapi::fail("Only QMP is supported");
  }
  auto mon = std::make_shared<Monitor>(daemon, chr, std::move(opts));
  mon->start();
  daemon.add_monitor(std::move(mon));
}

void add_object(Daemon& daemon, const std::string& arg) {
  bool help = false;
  if (!arg.starts_with('{')) keyval_parse(arg, "qom-type", &help);
  if (help) {
    // "--object help" lists the types; "--object TYPE,help" too, since
    // each type's properties are in the QMP reference.
    fmt::print("List of user creatable objects:\n");
    for (auto name : qapi::EnumTraits<qapi::ObjectType>::names) fmt::print("  {}\n", name);
    std::exit(0);
  }
  auto opts = parse_typed<qapi::ObjectOptions>(arg, "qom-type", qapi::visit_type_ObjectOptions);
  daemon.add_object(std::move(opts));
}

}  // namespace

asio::awaitable<void> run_option(Daemon& daemon, const CliOption& opt) {
  if (opt.name == "chardev") {
    co_await add_chardev(daemon, opt);
  } else if (opt.name == "monitor") {
    add_monitor(daemon, opt.arg);
  } else if (opt.name == "object") {
    add_object(daemon, opt.arg);
  } else if (opt.name == "blockdev") {
    auto opts =
        parse_typed<qapi::BlockdevOptions>(opt.arg, "driver", qapi::visit_type_BlockdevOptions);
    FdContext fds = cli_fd_context(daemon);
    co_await daemon.block().add(opts, fds);
  } else if (opt.name == "export") {
    auto opts =
        parse_typed<qapi::BlockExportOptions>(opt.arg, "type", qapi::visit_type_BlockExportOptions);
    co_await daemon.exports().add(opts);
  } else if (opt.name == "nbd-server") {
    auto opts =
        parse_typed<qapi::NbdServerOptions>(opt.arg, nullptr, qapi::visit_type_NbdServerOptions);
    nbd::server_start(daemon, opts, cli_fd_context(daemon));
  } else {
    qapi::fail("unknown option --{}", opt.name);
  }
}

}  // namespace vstord
