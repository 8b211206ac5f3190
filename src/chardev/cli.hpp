// The --chardev option: QEMU's older option syntax ("backend,id=x,key=val,
// flag,noflag") mapped onto ChardevBackend, as qemu-storage-daemon reads it.
#pragma once

#include <string>
#include <string_view>

#include "qapi-types.hpp"

namespace vstord {

struct ChardevCliOptions {
  std::string id;
  qapi::ChardevBackend backend;
  bool mux = false;
};

// Throws qapi::Error with QEMU's messages.  Warnings for deprecated forms
// go to the log.
ChardevCliOptions chardev_parse_cli(std::string_view text);

// The backend names --chardev accepts, for "--chardev help".
std::vector<std::string> chardev_cli_backends();

}  // namespace vstord
