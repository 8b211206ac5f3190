// Control-plane errors: a QMP error class plus a one-phrase description.
//
// Every failure that can reach a QMP client is a qapi::Error.  The dispatcher
// converts it to {"error": {"class", "desc"}} in one place; nothing else
// builds error replies.  The hint is for humans on the command line only and
// is never sent over QMP.
#pragma once

#include <fmt/format.h>

#include <stdexcept>
#include <string>
#include <string_view>

namespace qapi {

// The wire names of these classes come from QapiErrorClass in
// qapi/error.json; a unit test checks that the two lists agree.
enum class ErrorClass { GenericError, CommandNotFound, DeviceNotFound, KVMMissingCap };

std::string_view error_class_name(ErrorClass cls);

class Error : public std::runtime_error {
 public:
  Error(ErrorClass cls, std::string desc, std::string hint = {})
      : std::runtime_error(std::move(desc)), cls_(cls), hint_(std::move(hint)) {}
  explicit Error(std::string desc) : Error(ErrorClass::GenericError, std::move(desc)) {}

  ErrorClass error_class() const { return cls_; }
  std::string_view desc() const { return what(); }
  const std::string& hint() const { return hint_; }

 private:
  ErrorClass cls_;
  std::string hint_;
};

// Throws a GenericError with a formatted description.
template <typename... Args>
[[noreturn]] void fail(fmt::format_string<Args...> f, Args&&... args) {
  throw Error(fmt::format(f, std::forward<Args>(args)...));
}

template <typename... Args>
[[noreturn]] void fail(ErrorClass cls, fmt::format_string<Args...> f, Args&&... args) {
  throw Error(cls, fmt::format(f, std::forward<Args>(args)...));
}

}  // namespace qapi
