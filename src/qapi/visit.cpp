#include "qapi/visit.hpp"

#include <algorithm>

#include "qapi/member_order.hpp"

#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <limits>

namespace qapi {

std::string_view error_class_name(ErrorClass cls) {
  switch (cls) {
    case ErrorClass::GenericError: return "GenericError";
    case ErrorClass::CommandNotFound: return "CommandNotFound";
    case ErrorClass::DeviceNotFound: return "DeviceNotFound";
    case ErrorClass::KVMMissingCap: return "KVMMissingCap";
  }
  return "GenericError";
}

// ---------------------------------------------------------------- Input

void Input::start_struct(const char* name, const Json& j) {
  if (!j.is_object()) fail_type(name, "object");
  stack_.push_back(Frame{name, false, 0, {}});
}

const Json* Input::optional_member(const Json& obj, const char* key) {
  auto it = obj.find(key);
  if (it == obj.end()) return nullptr;
  stack_.back().consumed.push_back(it.key());
  return &*it;
}

const Json& Input::mandatory_member(const Json& obj, const char* key) {
  const Json* v = optional_member(obj, key);
  if (!v) fail("Parameter '{}' is missing", full_name(key));
  return *v;
}

void Input::end_struct(const Json& obj) {
  const Frame& f = stack_.back();
  if (f.consumed.size() != obj.size()) {
    // Name the leftover member QEMU would name.
    std::string key = qemu_first_leftover(obj, f.consumed);
    fail("Parameter '{}' is unexpected", full_name(key.c_str()));
  }
  stack_.pop_back();
}

void Input::start_list(const char* name, const Json& j) {
  if (!j.is_array()) fail_type(name, "array");
  stack_.push_back(Frame{name, true, 0, {}});
}

void Input::set_list_index(size_t index) {
  stack_.back().index = index;
}

void Input::end_list() {
  stack_.pop_back();
}

// Builds the path from the root to 'name', innermost container first: a
// struct contributes ".name", a list "[i]" (or ".i" in keyval mode, whose
// keys spell list elements that way).
std::string Input::full_name(const char* name) const {
  // Segments innermost first, joined outermost first (GCC 12 misreads
  // repeated insertions at the front as overflows).
  std::vector<std::string> parts;
  for (auto it = stack_.rbegin(); it != stack_.rend(); ++it) {
    if (!it->is_list) {
      parts.push_back(std::string(".") + (name ? name : "<anonymous>"));
    } else {
      parts.push_back(keyval() ? fmt::format(".{}", it->index) : fmt::format("[{}]", it->index));
    }
    name = it->name;
  }
  std::string out = name ? name : "";
  for (auto p = parts.rbegin(); p != parts.rend(); ++p) out += *p;
  if (!name && !out.empty() && out[0] == '.') out.erase(0, 1);
  if (out.empty()) return "<anonymous>";
  return out;
}

void Input::fail_type(const char* name, std::string_view expected) const {
  fail("Invalid parameter type for '{}', expected: {}", full_name(name), expected);
}

void Input::fail_value(const char* name, std::string_view expected) const {
  fail("Parameter '{}' expects {}", full_name(name), expected);
}

void Input::fail_alternate(const char* name, std::string_view type) const {
  fail("Invalid parameter type for '{}', expected: {}", name ? name : "null", type);
}

// ---------------------------------------------------------------- scalars

namespace {

// Integer text as QEMU's keyval visitor reads it: decimal, 0x hex or 0
// octal, with an optional sign, and nothing after the digits.
bool parse_int64(const std::string& s, int64_t& out) {
  if (s.empty() || std::isspace(static_cast<unsigned char>(s[0]))) return false;
  errno = 0;
  char* end = nullptr;
  long long v = std::strtoll(s.c_str(), &end, 0);
  if (errno != 0 || *end != '\0') return false;
  out = v;
  return true;
}

bool parse_uint64(const std::string& s, uint64_t& out) {
  if (s.empty() || std::isspace(static_cast<unsigned char>(s[0]))) return false;
  // strtoull accepts "-1" and wraps it; QEMU's qemu_strtou64 does too.
  errno = 0;
  char* end = nullptr;
  unsigned long long v = std::strtoull(s.c_str(), &end, 0);
  if (errno != 0 || *end != '\0') return false;
  out = v;
  return true;
}

// Sizes: a number with an optional suffix B, k/K, M, G, T, P, E (powers of
// 1024).  Fractions are allowed with a suffix, as in qemu_strtosz.
bool parse_size(const std::string& s, uint64_t& out) {
  if (s.empty() || s[0] == '-' || std::isspace(static_cast<unsigned char>(s[0]))) return false;
  uint64_t whole = 0;
  if (parse_uint64(s, whole)) {
    out = whole;
    return true;
  }
  errno = 0;
  char* end = nullptr;
  double v = std::strtod(s.c_str(), &end);
  if (errno != 0 || end == s.c_str()) return false;
  uint64_t mul = 1;
  std::string_view suffix(end);
  if (suffix.size() == 1) {
    switch (suffix[0]) {
      case 'B':
      case 'b': mul = 1; break;
      case 'K':
      case 'k': mul = 1ULL << 10; break;
      case 'M':
      case 'm': mul = 1ULL << 20; break;
      case 'G':
      case 'g': mul = 1ULL << 30; break;
      case 'T':
      case 't': mul = 1ULL << 40; break;
      case 'P':
      case 'p': mul = 1ULL << 50; break;
      case 'E':
      case 'e': mul = 1ULL << 60; break;
      default: return false;
    }
  } else if (!suffix.empty()) {
    return false;
  }
  double total = v * static_cast<double>(mul);
  if (v < 0 || total >= 18446744073709551616.0) return false;
  if (mul == 1 && v != std::floor(v)) return false;
  out = static_cast<uint64_t>(total);
  return true;
}

void read_int64(Input& in, const char* name, const Json& j, int64_t& out) {
  if (in.keyval()) {
    if (!j.is_string() || !parse_int64(j.get_ref<const std::string&>(), out)) {
      in.fail_value(name, "integer");
    }
    return;
  }
  if (j.is_number_integer() &&
      !(j.is_number_unsigned() && j.get<uint64_t>() > static_cast<uint64_t>(INT64_MAX))) {
    out = j.get<int64_t>();
    return;
  }
  in.fail_type(name, "integer");
}

void read_uint64(Input& in, const char* name, const Json& j, uint64_t& out) {
  if (in.keyval()) {
    if (!j.is_string() || !parse_uint64(j.get_ref<const std::string&>(), out)) {
      in.fail_value(name, "integer");
    }
    return;
  }
  // Negative values are accepted and wrap, for compatibility with QEMU.
  if (j.is_number_unsigned()) {
    out = j.get<uint64_t>();
  } else if (j.is_number_integer()) {
    out = static_cast<uint64_t>(j.get<int64_t>());
  } else {
    in.fail_type(name, "integer");
  }
}

template <class T>
void read_signed(Input& in, const char* name, const Json& j, T& out, const char* type) {
  int64_t v = 0;
  read_int64(in, name, j, v);
  if (v < std::numeric_limits<T>::min() || v > std::numeric_limits<T>::max()) {
    fail("Parameter '{}' expects {}", name ? name : "null", type);
  }
  out = static_cast<T>(v);
}

template <class T>
void read_unsigned(Input& in, const char* name, const Json& j, T& out, const char* type) {
  uint64_t v = 0;
  read_uint64(in, name, j, v);
  if (v > std::numeric_limits<T>::max()) {
    fail("Parameter '{}' expects {}", name ? name : "null", type);
  }
  out = static_cast<T>(v);
}

}  // namespace

void visit_type_str(Input& in, const char* name, const Json& j, std::string& out) {
  if (!j.is_string()) in.fail_type(name, "string");
  out = j.get<std::string>();
}

void visit_type_number(Input& in, const char* name, const Json& j, double& out) {
  if (in.keyval()) {
    errno = 0;
    char* end = nullptr;
    const std::string* s = j.is_string() ? &j.get_ref<const std::string&>() : nullptr;
    double v = s ? std::strtod(s->c_str(), &end) : 0;
    if (!s || s->empty() || errno != 0 || *end != '\0' || !std::isfinite(v)) {
      in.fail_value(name, "number");
    }
    out = v;
    return;
  }
  if (!j.is_number()) in.fail_type(name, "number");
  out = j.get<double>();
}

void visit_type_int(Input& in, const char* name, const Json& j, int64_t& out) {
  read_int64(in, name, j, out);
}
void visit_type_int64(Input& in, const char* name, const Json& j, int64_t& out) {
  read_int64(in, name, j, out);
}
void visit_type_int8(Input& in, const char* name, const Json& j, int8_t& out) {
  read_signed(in, name, j, out, "int8_t");
}
void visit_type_int16(Input& in, const char* name, const Json& j, int16_t& out) {
  read_signed(in, name, j, out, "int16_t");
}
void visit_type_int32(Input& in, const char* name, const Json& j, int32_t& out) {
  read_signed(in, name, j, out, "int32_t");
}
void visit_type_uint8(Input& in, const char* name, const Json& j, uint8_t& out) {
  read_unsigned(in, name, j, out, "uint8_t");
}
void visit_type_uint16(Input& in, const char* name, const Json& j, uint16_t& out) {
  read_unsigned(in, name, j, out, "uint16_t");
}
void visit_type_uint32(Input& in, const char* name, const Json& j, uint32_t& out) {
  read_unsigned(in, name, j, out, "uint32_t");
}
void visit_type_uint64(Input& in, const char* name, const Json& j, uint64_t& out) {
  read_uint64(in, name, j, out);
}

void visit_type_size(Input& in, const char* name, const Json& j, uint64_t& out) {
  if (in.keyval()) {
    if (!j.is_string() || !parse_size(j.get_ref<const std::string&>(), out)) {
      in.fail_value(name, "a size value");
    }
    return;
  }
  read_uint64(in, name, j, out);
}

void visit_type_bool(Input& in, const char* name, const Json& j, bool& out) {
  if (in.keyval()) {
    const std::string* s = j.is_string() ? &j.get_ref<const std::string&>() : nullptr;
    if (s && (*s == "on" || *s == "yes" || *s == "true" || *s == "y")) {
      out = true;
    } else if (s && (*s == "off" || *s == "no" || *s == "false" || *s == "n")) {
      out = false;
    } else {
      in.fail_value(name, "'on' or 'off'");
    }
    return;
  }
  if (!j.is_boolean()) in.fail_type(name, "boolean");
  out = j.get<bool>();
}

void visit_type_any(Input&, const char*, const Json& j, Json& out) {
  out = j;
}

void visit_type_null(Input& in, const char* name, const Json& j, Null&) {
  if (in.keyval()) {
    if (!j.is_string() || !j.get_ref<const std::string&>().empty()) in.fail_value(name, "null");
    return;
  }
  if (!j.is_null()) in.fail_type(name, "null");
}

std::string_view visit_enum_name(Input& in, const char* name, const Json& j) {
  if (!j.is_string()) in.fail_type(name, "string");
  return j.get_ref<const std::string&>();
}

void fail_enum_value(const char* name, std::string_view value) {
  fail("Parameter '{}' does not accept value '{}'", name ? name : "null", value);
}

bool json_matches(const Input& in, const Json& j, JsonKind kind) {
  if (in.keyval() && j.is_string()) {
    // Every scalar arrives as a string; the string or enum branch (tried
    // first) takes it, otherwise the first scalar branch whose syntax fits.
    const auto& s = j.get_ref<const std::string&>();
    int64_t i;
    switch (kind) {
      case JsonKind::string: return true;
      case JsonKind::integer: return parse_int64(s, i);
      case JsonKind::number: return !s.empty();
      case JsonKind::boolean:
        return s == "on" || s == "off" || s == "true" || s == "false" || s == "yes" || s == "no";
      case JsonKind::null: return s.empty();
      default: return false;
    }
  }
  switch (kind) {
    case JsonKind::object: return j.is_object();
    case JsonKind::array: return j.is_array();
    case JsonKind::string: return j.is_string();
    case JsonKind::integer: return j.is_number_integer();
    case JsonKind::number: return j.is_number();
    case JsonKind::boolean: return j.is_boolean();
    case JsonKind::null: return j.is_null();
  }
  return false;
}

}  // namespace qapi
