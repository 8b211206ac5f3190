// Where generated event emitters deliver their events.
#pragma once

#include <functional>
#include <optional>
#include <string_view>

#include "qapi/visit.hpp"

namespace qapi {

// Receives every event: its name and, when the event has data, the data.
// The monitor subsystem installs one sink that timestamps the event and
// broadcasts it to every monitor in command mode.
using EventSink = std::function<void(std::string_view name, const std::optional<Json>& data)>;

void set_event_sink(EventSink sink);
void emit_event(std::string_view name, const std::optional<Json>& data);

}  // namespace qapi
