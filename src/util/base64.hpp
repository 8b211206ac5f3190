// Base64 (RFC 4648) for ringbuf-read and ringbuf-write.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace vstord {

std::string base64_encode(std::string_view data);
// Decodes as GLib does, after QEMU's check that only the alphabet, '=' and
// newlines occur; nullopt when another character does.
std::optional<std::string> base64_decode(std::string_view text);

}  // namespace vstord
