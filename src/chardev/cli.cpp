#include "chardev/cli.hpp"

#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <map>
#include <set>

#include <fmt/format.h>

#include "qapi/error.hpp"

namespace vstord {

using qapi::Json;

namespace {

// Keys QEMU's chardev option list knows, shared by every backend.
const std::set<std::string, std::less<>> kKeys = {
    "backend",   "path",      "input-path", "host",         "port",         "fd",
    "localaddr", "localport", "to",         "ipv4",         "ipv6",         "wait",
    "server",    "delay",     "nodelay",    "reconnect",    "reconnect-ms", "telnet",
    "tn3270",    "tls-creds", "tls-authz",  "websocket",    "width",        "height",
    "cols",      "rows",      "mux",        "signal",       "name",         "debug",
    "size",      "chardev",   "chardevs.0", "chardevs.1",   "chardevs.2",   "chardevs.3",
    "append",    "logfile",   "logappend",  "logtimestamp", "mouse",        "clipboard",
    "tight",     "abstract",  "id"};

const std::set<std::string, std::less<>> kBoolKeys = {
    "ipv4",      "ipv6",         "wait",      "server",   "delay",  "nodelay",
    "telnet",    "tn3270",       "websocket", "mux",      "signal", "append",
    "logappend", "logtimestamp", "tight",     "abstract", "mouse",  "clipboard"};

// Keys QEMU's option parser reads as numbers, and as sizes.
const std::set<std::string, std::less<>> kNumberKeys = {
    "to", "reconnect", "reconnect-ms", "width", "height", "cols", "rows"};
const std::set<std::string, std::less<>> kSizeKeys = {"size"};

bool valid_id(const std::string& id) {
  if (id.empty() || !std::isalpha(static_cast<unsigned char>(id[0]))) return false;
  for (char c : id) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '.' && c != '_') {
      return false;
    }
  }
  return true;
}

bool parse_bool(const std::string& key, const std::string& v) {
  if (v == "on" || v == "yes" || v == "true" || v == "y") return true;
  if (v == "off" || v == "no" || v == "false" || v == "n") return false;
  qapi::fail("Parameter '{}' expects 'on' or 'off'", key);
}

// Option values, checked as QEMU's option parser checks them: booleans
// are on/off (and their synonyms), numbers are unsigned integers.
struct Opts {
  std::map<std::string, std::string, std::less<>> values;
  std::vector<std::pair<std::string, std::string>> warnings;

  bool has(std::string_view k) const { return values.find(k) != values.end(); }
  const std::string* get(std::string_view k) const {
    auto it = values.find(k);
    return it == values.end() ? nullptr : &it->second;
  }
  bool flag(std::string_view k, bool def) const {
    const std::string* v = get(k);
    return v ? parse_bool(std::string(k), *v) : def;
  }
  // The value as the JSON type the schema wants.
  Json typed(std::string_view k) const {
    const std::string& v = *get(k);
    if (kBoolKeys.contains(k)) return parse_bool(std::string(k), v);
    if (kNumberKeys.contains(k)) return parse_number(std::string(k), v);
    if (kSizeKeys.contains(k)) return parse_size(std::string(k), v);
    return v;
  }
  // A size with an optional suffix (k, M, G, T, P, E: powers of 1024).
  static uint64_t parse_size(const std::string& key, const std::string& v) {
    auto bad = [&]() -> uint64_t {
      throw qapi::Error(qapi::ErrorClass::GenericError,
                        fmt::format("Parameter '{}' expects a non-negative number below 2^64", key),
                        "Optional suffix k, M, G, T, P or E means kilo-, mega-, giga-, tera-, "
                        "peta-\nand exabytes, respectively.");
    };
    if (v.empty() || v[0] == '-' || !std::isdigit(static_cast<unsigned char>(v[0]))) return bad();
    errno = 0;
    char* end = nullptr;
    double d = std::strtod(v.c_str(), &end);
    unsigned shift = 0;
    switch (*end) {
      case '\0': break;
      case 'b':
      case 'B':
        shift = 0;
        ++end;
        break;
      case 'k':
      case 'K':
        shift = 10;
        ++end;
        break;
      case 'm':
      case 'M':
        shift = 20;
        ++end;
        break;
      case 'g':
      case 'G':
        shift = 30;
        ++end;
        break;
      case 't':
      case 'T':
        shift = 40;
        ++end;
        break;
      case 'p':
      case 'P':
        shift = 50;
        ++end;
        break;
      case 'e':
      case 'E':
        shift = 60;
        ++end;
        break;
      default: return bad();
    }
    if (*end != '\0') return bad();
    double total = d * static_cast<double>(uint64_t{1} << shift);
    if (errno == ERANGE || total >= 18446744073709551616.0) {
      qapi::fail("Value '{}' is out of range for parameter '{}'", v, key);
    }
    if (shift == 0 && v.find_first_of(".eE") == std::string::npos) {
      // Plain integers are exact beyond double precision.
      return std::strtoull(v.c_str(), nullptr, 10);
    }
    return static_cast<uint64_t>(total);
  }
  static uint64_t parse_number(const std::string& key, const std::string& v) {
    errno = 0;
    char* end = nullptr;
    unsigned long long n = std::strtoull(v.c_str(), &end, 0);
    if (v.empty() || *end != '\0') qapi::fail("Parameter '{}' expects a number", key);
    if (errno == ERANGE) qapi::fail("Value '{}' is too large for parameter '{}'", v, key);
    return n;
  }
};

Opts parse_opts(std::string_view text) {
  Opts o;
  size_t pos = 0;
  bool first = true;
  while (pos < text.size()) {
    // One element: up to a single ',' (",," is a literal comma).
    std::string elem;
    while (pos < text.size()) {
      if (text[pos] == ',') {
        if (pos + 1 < text.size() && text[pos + 1] == ',') {
          elem.push_back(',');
          pos += 2;
          continue;
        }
        ++pos;
        break;
      }
      elem.push_back(text[pos++]);
    }
    size_t eq = elem.find('=');
    std::string key, value;
    if (eq != std::string::npos) {
      key = elem.substr(0, eq);
      value = elem.substr(eq + 1);
    } else if (first) {
      key = "backend";
      value = elem;
    } else if (elem == "help" || elem == "?") {
      qapi::fail("Help is not available for this option");
    } else {
      // A short-form boolean: "flag" is flag=on, "noflag" is flag=off.
      bool negated =
          elem.starts_with("no") && kBoolKeys.contains(elem.substr(2)) && !kBoolKeys.contains(elem);
      key = negated ? elem.substr(2) : elem;
      value = negated ? "off" : "on";
      o.warnings.emplace_back(fmt::format("short-form boolean option '{}' deprecated", elem),
                              fmt::format("Please use {}={} instead", key, value));
    }
    first = false;
    if (!kKeys.contains(key)) qapi::fail("Invalid parameter '{}'", key);
    o.values[key] = value;  // the last occurrence wins
    (void)o.typed(key);     // checked now, in option order, as QEMU does
  }
  return o;
}

void copy(const Opts& o, Json& data, std::string_view from, const char* to) {
  if (o.has(from)) data[to] = o.typed(from);
}

void common(const Opts& o, Json& data) {
  copy(o, data, "logfile", "logfile");
  copy(o, data, "logappend", "logappend");
  copy(o, data, "logtimestamp", "logtimestamp");
}

Json socket_address(const Opts& o, bool udp) {
  Json addr = Json::object();
  if (const std::string* path = o.get("path")) {
    Json u = {{"path", *path}};
    copy(o, u, "tight", "tight");
    copy(o, u, "abstract", "abstract");
    addr["type"] = "unix";
    addr["data"] = u;
  } else if (const std::string* host = o.get("host"); host || udp) {
    const std::string* port = o.get("port");
    if (!port) {
      if (udp) qapi::fail("chardev: udp: remote port not specified");
      qapi::fail("chardev: socket: no port given");
    }
    Json in = {{"host", host ? *host : "localhost"}, {"port", *port}};
    copy(o, in, "to", "to");
    copy(o, in, "ipv4", "ipv4");
    copy(o, in, "ipv6", "ipv6");
    addr["type"] = "inet";
    addr["data"] = in;
  } else {
    addr["type"] = "fd";
    addr["data"] = Json{{"str", o.get("fd") ? *o.get("fd") : ""}};
  }
  return addr;
}

}  // namespace

ChardevCliOptions chardev_parse_cli(std::string_view text, const ChardevCliWarn& warn) {
  Opts o = parse_opts(text);
  for (const auto& [message, hint] : o.warnings) warn(message, hint);
  ChardevCliOptions out;
  const std::string* id = o.get("id");
  if (!id) qapi::fail("chardev: no id specified");
  if (!valid_id(*id)) {
    throw qapi::Error(qapi::ErrorClass::GenericError, "Parameter 'id' expects an identifier",
                      "Identifiers consist of letters, digits, '-', '.', '_', starting with a "
                      "letter.");
  }
  out.id = *id;
  const std::string* backend = o.get("backend");
  if (!backend) qapi::fail("chardev: \"{}\" missing backend", *id);
  out.mux = o.flag("mux", false);
  std::string type = *backend;
  // Legacy aliases for the socket backend.
  if (type == "tcp" || type == "unix") type = "socket";
  if (type == "tty" || type == "parport") {
    std::string modern = type == "tty" ? "serial" : "parallel";
    warn(fmt::format("The alias '{}' is deprecated, use '{}' instead", type, modern), "");
  }
  Json data = Json::object();
  common(o, data);
  if (type == "socket") {
    int n = o.has("path") + o.has("host") + o.has("fd");
    if (n > 1) qapi::fail("None or one of 'path', 'fd' or 'host' option required.");
    if (o.has("delay") && o.has("nodelay")) {
      qapi::fail("'delay' and 'nodelay' are mutually exclusive");
    }
    data["addr"] = socket_address(o, false);
    bool server = o.flag("server", false);
    data["server"] = server;
    if (o.has("delay") || o.has("nodelay")) {
      data["nodelay"] = !o.flag("delay", true) || o.flag("nodelay", false);
    }
    if (server || o.has("wait")) data["wait"] = o.flag("wait", true);
    copy(o, data, "telnet", "telnet");
    copy(o, data, "tn3270", "tn3270");
    copy(o, data, "websocket", "websocket");
    copy(o, data, "reconnect", "reconnect");
    copy(o, data, "reconnect-ms", "reconnect-ms");
    copy(o, data, "tls-creds", "tls-creds");
    copy(o, data, "tls-authz", "tls-authz");
  } else if (type == "udp") {
    Json remote = socket_address(o, true);
    data["remote"] = remote;
    if (o.has("localaddr") || o.has("localport")) {
      Json in = {{"host", o.get("localaddr") ? *o.get("localaddr") : ""},
                 {"port", o.get("localport") ? *o.get("localport") : "0"}};
      data["local"] = Json{{"type", "inet"}, {"data", in}};
    }
  } else if (type == "file") {
    const std::string* path = o.get("path");
    if (!path) qapi::fail("chardev: file: no filename given");
    data["out"] = *path;
    copy(o, data, "input-path", "in");
    copy(o, data, "append", "append");
  } else if (type == "pipe" || type == "serial" || type == "parallel" || type == "tty" ||
             type == "parport") {
    if (type == "tty") type = "serial";
    if (type == "parport") type = "parallel";
    const std::string* path = o.get("path");
    if (!path) {
      qapi::fail("chardev: {}: no device path given", type == "serial" ? "serial/tty" : type);
    }
    data["device"] = *path;
  } else if (type == "ringbuf" || type == "memory") {
    copy(o, data, "size", "size");
  } else if (type == "mux") {
    if (!o.has("chardev")) qapi::fail("chardev: mux: no chardev given");
    copy(o, data, "chardev", "chardev");
  } else if (type == "hub") {
    Json list = Json::array();
    for (int i = 0; i < 4; ++i) {
      if (const std::string* c = o.get(fmt::format("chardevs.{}", i))) list.push_back(*c);
    }
    data["chardevs"] = list;
  } else if (type == "stdio") {
    copy(o, data, "signal", "signal");
  } else if (type == "pty") {
    copy(o, data, "path", "path");
  } else if (type == "vc") {
    for (const char* k : {"width", "height", "cols", "rows"}) copy(o, data, k, k);
  } else {
    if (!qapi::enum_parse<qapi::ChardevBackendKind>(type)) {
      qapi::fail("'{}' is not a valid char driver name", *backend);
    }
  }
  // The values are typed already; the schema checks ranges and the rest.
  Json backend_json = {{"type", type}, {"data", data}};
  qapi::Input in;
  qapi::visit_type_ChardevBackend(in, nullptr, backend_json, out.backend);
  return out;
}

}  // namespace vstord
