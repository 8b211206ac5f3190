// The --chardev option: QEMU's older option syntax ("backend,id=x,key=val,
// flag,noflag") mapped onto ChardevBackend, as qemu-storage-daemon reads it.
#pragma once

#include <functional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "qapi-types.hpp"

namespace vstord {

struct ChardevCliOptions {
  std::string id;
  qapi::ChardevBackend backend;
  bool mux = false;
};

// Throws qapi::Error with QEMU's messages.  'warn' is told of deprecated
// forms as they are met, also when the option fails later.
using ChardevCliWarn = std::function<void(const std::string& message, const std::string& hint)>;
ChardevCliOptions chardev_parse_cli(std::string_view text, const ChardevCliWarn& warn);

}  // namespace vstord
