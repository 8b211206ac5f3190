// Runtime support for the generated QAPI types: strict input visiting with
// QEMU's error wording, output marshalling, enums, and the Box used to break
// recursion between types.
//
// The generated code calls Input for every struct, member and list element,
// so that an error names the offending member by its full path
// ("backend.data.addr.data.path", "a[2]"), as QEMU's qobject input visitor
// does.  Input runs in one of two modes: JSON (QMP) where scalars must have
// the right JSON type, and keyval (command line) where every scalar arrives
// as a string and is converted.
#pragma once

#include <nlohmann/json.hpp>

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "qapi/error.hpp"

namespace qapi {

// Object member order is kept as received and as built, so replies read the
// way the schema lists members.
using Json = nlohmann::ordered_json;

// The QAPI 'null' type.
struct Null {
  bool operator==(const Null&) const = default;
};

// Owns a T on the heap with value semantics.  Alternates hold their object
// branches in a Box so that recursive types (BlockdevRef inside
// BlockdevOptions) can be declared before they are complete.
template <class T>
class Box {
 public:
  Box() = default;
  Box(T value) : p_(std::make_unique<T>(std::move(value))) {}  // NOLINT: implicit by design
  Box(const Box& o) : p_(o.p_ ? std::make_unique<T>(*o.p_) : nullptr) {}
  Box(Box&&) noexcept = default;
  Box& operator=(const Box& o) {
    if (this != &o) p_ = o.p_ ? std::make_unique<T>(*o.p_) : nullptr;
    return *this;
  }
  Box& operator=(Box&&) noexcept = default;
  ~Box() = default;

  T& emplace() {
    p_ = std::make_unique<T>();
    return *p_;
  }
  T& operator*() const { return *p_; }
  T* operator->() const { return p_.get(); }
  explicit operator bool() const { return p_ != nullptr; }

 private:
  std::unique_ptr<T> p_;
};

// Specialised by the generator for every enum: the wire names in order.
template <class E>
struct EnumTraits;

template <class E>
std::string_view enum_name(E value) {
  return EnumTraits<E>::names[static_cast<size_t>(value)];
}

template <class E>
std::optional<E> enum_parse(std::string_view name) {
  const auto& names = EnumTraits<E>::names;
  for (size_t i = 0; i < names.size(); ++i) {
    if (names[i] == name) return static_cast<E>(i);
  }
  return std::nullopt;
}

// Walks an input tree, tracking the path for error messages and the
// members each struct consumed (anything left over is unexpected).
class Input {
 public:
  enum class Mode { json, keyval };
  explicit Input(Mode mode = Mode::json) : mode_(mode) {}

  bool keyval() const { return mode_ == Mode::keyval; }

  // Structs: start checks for an object; members mark themselves consumed;
  // end reports the first member nobody consumed.
  void start_struct(const char* name, const Json& j);
  const Json* optional_member(const Json& obj, const char* key);
  const Json& mandatory_member(const Json& obj, const char* key);
  void end_struct(const Json& obj);

  // Lists: start checks for an array; elements are visited with a null
  // name and the index recorded for error paths.
  void start_list(const char* name, const Json& j);
  void set_list_index(size_t index);
  void end_list();

  // QEMU's full member name: the path from the root to 'name'.
  std::string full_name(const char* name) const;

  [[noreturn]] void fail_type(const char* name, std::string_view expected) const;
  [[noreturn]] void fail_value(const char* name, std::string_view expected) const;
  [[noreturn]] void fail_alternate(const char* name, std::string_view type) const;

 private:
  struct Frame {
    const char* name;
    bool is_list;
    size_t index;
    std::vector<std::string_view> consumed;
  };
  Mode mode_;
  std::vector<Frame> stack_;
};

// Built-in scalar visitors, one per QAPI built-in type.
void visit_type_str(Input& in, const char* name, const Json& j, std::string& out);
void visit_type_number(Input& in, const char* name, const Json& j, double& out);
void visit_type_int(Input& in, const char* name, const Json& j, int64_t& out);
void visit_type_int8(Input& in, const char* name, const Json& j, int8_t& out);
void visit_type_int16(Input& in, const char* name, const Json& j, int16_t& out);
void visit_type_int32(Input& in, const char* name, const Json& j, int32_t& out);
void visit_type_int64(Input& in, const char* name, const Json& j, int64_t& out);
void visit_type_uint8(Input& in, const char* name, const Json& j, uint8_t& out);
void visit_type_uint16(Input& in, const char* name, const Json& j, uint16_t& out);
void visit_type_uint32(Input& in, const char* name, const Json& j, uint32_t& out);
void visit_type_uint64(Input& in, const char* name, const Json& j, uint64_t& out);
void visit_type_size(Input& in, const char* name, const Json& j, uint64_t& out);
void visit_type_bool(Input& in, const char* name, const Json& j, bool& out);
void visit_type_any(Input& in, const char* name, const Json& j, Json& out);
void visit_type_null(Input& in, const char* name, const Json& j, Null& out);

// Reads the wire name of an enum value; unknown names are refused the way
// QEMU refuses them.
std::string_view visit_enum_name(Input& in, const char* name, const Json& j);
[[noreturn]] void fail_enum_value(const char* name, std::string_view value);

template <class E>
void visit_enum(Input& in, const char* name, const Json& j, E& out) {
  std::string_view s = visit_enum_name(in, name, j);
  auto v = enum_parse<E>(s);
  if (!v) fail_enum_value(name, s);
  out = *v;
}

template <class T, class ElemVisit>
void visit_list(Input& in, const char* name, const Json& j, std::vector<T>& out,
                ElemVisit visit_elem) {
  in.start_list(name, j);
  out.clear();
  out.reserve(j.size());
  for (size_t i = 0; i < j.size(); ++i) {
    in.set_list_index(i);
    visit_elem(in, nullptr, j[i], out.emplace_back());
  }
  in.end_list();
}

// True when j could be the given JSON kind, for alternates.  In keyval
// mode every scalar is a string, so a string matches any scalar branch.
enum class JsonKind { object, array, string, integer, number, boolean, null };
bool json_matches(const Input& in, const Json& j, JsonKind kind);

// Output.
inline Json marshal(const std::string& v) {
  return v;
}
inline Json marshal(double v) {
  return v;
}
inline Json marshal(bool v) {
  return v;
}
inline Json marshal(int8_t v) {
  return v;
}
inline Json marshal(int16_t v) {
  return v;
}
inline Json marshal(int32_t v) {
  return v;
}
inline Json marshal(int64_t v) {
  return v;
}
inline Json marshal(uint8_t v) {
  return v;
}
inline Json marshal(uint16_t v) {
  return v;
}
inline Json marshal(uint32_t v) {
  return v;
}
inline Json marshal(uint64_t v) {
  return v;
}
inline Json marshal(const Json& v) {
  return v;
}
inline Json marshal(const Null&) {
  return nullptr;
}

template <class E>
requires std::is_enum_v<E> Json marshal(E v) {
  return std::string(enum_name(v));
}

template <class T>
Json marshal(const Box<T>& v) {
  return marshal(*v);
}

template <class T>
Json marshal(const std::vector<T>& v) {
  Json out = Json::array();
  for (const auto& e : v) out.push_back(marshal(e));
  return out;
}

}  // namespace qapi
