// The --chardev option: QEMU's older option syntax ("backend,id=x,key=val,
// flag,noflag") mapped onto ChardevBackend, as qemu-storage-daemon reads it.
#pragma once

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
  // Deprecated forms used: {message, hint} for the caller to print.
  std::vector<std::pair<std::string, std::string>> warnings;
};

// Throws qapi::Error with QEMU's messages.
ChardevCliOptions chardev_parse_cli(std::string_view text);

}  // namespace vstord
