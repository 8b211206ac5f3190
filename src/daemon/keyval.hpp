// QEMU's key=value option syntax, as qemu-storage-daemon's options take it.
//
//   key=value[,key=value...]   dotted keys nest (cache.direct=on); numeric
//                              fragments make lists (a.0=x,a.1=y); ",," is
//                              a literal comma in a value
//   value[,key=value...]       with an implied first key (driver, type, ...)
//
// Every leaf is a string; the keyval mode of qapi::Input converts it to the
// member's type.  Errors carry QEMU's messages.
#pragma once

#include <string_view>

#include "qapi/visit.hpp"

namespace vstord {

// Parses 'text'.  'implied_key' names the key of a first element written
// without "key=" (null: none).  'help' is set when the text asks for help
// ("help" or "?"); pass null to refuse help.
qapi::Json keyval_parse(std::string_view text, const char* implied_key, bool* help = nullptr);

// An option argument in either form: JSON when it starts with '{', else
// key=value.  Sets 'keyval' to tell the caller which visitor mode to use.
qapi::Json parse_option_argument(std::string_view text, const char* implied_key, bool& keyval);

// Parses text that must hold exactly one JSON value (QEMU's dialect).
qapi::Json parse_single_json(std::string_view text);

}  // namespace vstord
