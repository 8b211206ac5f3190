#include "qapi/dispatch.hpp"

#include <string>
#include <unordered_map>

#include "qapi-commands.hpp"
#include "qapi/event.hpp"

namespace qapi {

const CommandDef* find_command(std::string_view name) {
  static const auto index = [] {
    std::unordered_map<std::string, const CommandDef*> m;
    for (const auto& def : qmp_command_table()) m.emplace(std::string(def.name), &def);
    return m;
  }();
  auto it = index.find(std::string(name));
  return it == index.end() ? nullptr : it->second;
}

namespace {
EventSink& sink() {
  static EventSink s;
  return s;
}
}  // namespace

void set_event_sink(EventSink s) {
  sink() = std::move(s);
}

void emit_event(std::string_view name, const std::optional<Json>& data) {
  if (sink()) sink()(name, data);
}

}  // namespace qapi
