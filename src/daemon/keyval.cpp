#include "daemon/keyval.hpp"

#include <fmt/format.h>

#include <cctype>
#include <climits>
#include <map>
#include <optional>
#include <vector>

#include "monitor/json_stream.hpp"
#include "qapi/error.hpp"

namespace vstord {

using qapi::Json;

namespace {

// A QAPI name: optional "__RFQDN_" prefix, then a letter, then letters,
// digits, '-' and '_'.  Returns its length, or 0.
size_t qapi_name_length(std::string_view s) {
  size_t i = 0;
  if (s.starts_with("__")) {
    i = 2;
    while (i < s.size() &&
           (std::isalnum(static_cast<unsigned char>(s[i])) || s[i] == '.' || s[i] == '-'))
      ++i;
    if (i >= s.size() || s[i] != '_') return 0;
    ++i;
  }
  if (i >= s.size() || !std::isalpha(static_cast<unsigned char>(s[i]))) return 0;
  ++i;
  while (i < s.size() &&
         (std::isalnum(static_cast<unsigned char>(s[i])) || s[i] == '-' || s[i] == '_'))
    ++i;
  return i;
}

size_t index_length(std::string_view s) {
  size_t i = 0;
  while (i < s.size() && std::isdigit(static_cast<unsigned char>(s[i]))) ++i;
  return i;
}

bool is_index(const std::string& key) {
  return !key.empty() && index_length(key) == key.size();
}

// Puts a value (or, with value null, an intermediate object) at key prefix
// 'frag' of 'cur'.  Returns the child.
Json* put(Json& cur, const std::string& frag, const std::optional<std::string>& value,
          std::string_view key_so_far) {
  auto it = cur.find(frag);
  if (it != cur.end()) {
    if (value ? it->is_object() : !it->is_object()) {
      qapi::fail("Parameters '{}.*' used inconsistently", key_so_far);
    }
    if (value) *it = *value;
    return &*it;
  }
  cur[frag] = value ? Json(*value) : Json::object();
  return &cur[frag];
}

// Turns objects whose keys are all indexes into arrays, depth first.
void listify(Json& node, const std::string& path) {
  if (!node.is_object()) return;
  bool has_index = false, has_member = false;
  for (auto it = node.begin(); it != node.end(); ++it) {
    listify(it.value(), path + it.key() + ".");
    (is_index(it.key()) ? has_index : has_member) = true;
  }
  if (has_index && has_member) qapi::fail("Parameters '{}*' used inconsistently", path);
  if (!has_index) return;
  std::map<long, Json*> elems;
  for (auto it = node.begin(); it != node.end(); ++it) {
    long idx = std::min<long>(std::strtol(it.key().c_str(), nullptr, 10), INT_MAX);
    elems[idx] = &it.value();
  }
  Json list = Json::array();
  long expect = 0;
  for (auto& [idx, v] : elems) {
    if (idx >= static_cast<long>(node.size())) break;
    if (idx != expect) qapi::fail("Parameter '{}{}' missing", path, expect);
    list.push_back(std::move(*v));
    ++expect;
  }
  if (elems.empty() || elems.begin()->first != 0) qapi::fail("Parameter '{}0' missing", path);
  node = std::move(list);
}

}  // namespace

Json keyval_parse(std::string_view text, const char* implied_key, bool* help) {
  Json root = Json::object();
  bool want_help = false;
  size_t pos = 0;
  while (pos < text.size()) {
    std::string_view rest = text.substr(pos);
    size_t len = rest.find_first_of("=,");
    if (len == std::string_view::npos) len = rest.size();
    std::string key;
    std::optional<std::string> value;
    if (len > 0 && (len == rest.size() || rest[len] != '=')) {
      std::string_view elem = rest.substr(0, len);
      if (elem == "help" || elem == "?") {
        want_help = true;
        pos += len + (len < rest.size() ? 1 : 0);
        implied_key = nullptr;
        continue;
      }
      if (implied_key) {
        key = implied_key;
        value = std::string(elem);
        pos += len + (len < rest.size() ? 1 : 0);
      }
    }
    std::string_view key_text = value ? std::string_view(key) : rest.substr(0, len);
    // Walk the key's fragments.
    Json* cur = &root;
    size_t k = 0;
    size_t nfrag = 0;
    std::vector<std::string> frags;
    for (;;) {
      std::string_view f = key_text.substr(k);
      size_t flen =
          nfrag == 0 ? qapi_name_length(f) : std::max(index_length(f), qapi_name_length(f));
      bool ends = k + flen == key_text.size() || key_text[k + flen] == '.';
      if (flen == 0 || !ends) qapi::fail("Invalid parameter '{}'", key_text);
      if (flen >= 128) {
        bool multi = key_text.find('.') != std::string_view::npos;
        qapi::fail("Parameter{} '{}' is too long", multi ? " fragment" : "", f.substr(0, flen));
      }
      frags.emplace_back(f.substr(0, flen));
      ++nfrag;
      k += flen;
      if (k == key_text.size()) break;
      ++k;  // '.'
    }
    if (!value) {
      pos += len;
      if (pos >= text.size() || text[pos] != '=') {
        qapi::fail("Expected '=' after parameter '{}'", key_text);
      }
      ++pos;
      std::string v;
      while (pos < text.size()) {
        if (text[pos] == ',') {
          if (pos + 1 < text.size() && text[pos + 1] == ',') {
            v.push_back(',');
            pos += 2;
            continue;
          }
          ++pos;
          break;
        }
        v.push_back(text[pos++]);
      }
      value = std::move(v);
    }
    std::string so_far;
    for (size_t i = 0; i < frags.size(); ++i) {
      so_far += (i ? "." : "") + frags[i];
      bool last = i + 1 == frags.size();
      cur = put(*cur, frags[i], last ? value : std::nullopt, so_far);
    }
    implied_key = nullptr;
  }
  if (want_help) {
    if (!help) qapi::fail("Help is not available for this option");
    *help = true;
  }
  listify(root, "");
  return root;
}

Json parse_single_json(std::string_view text) {
  std::vector<JsonStream::Message> msgs;
  JsonStream stream([&](JsonStream::Message m) { msgs.push_back(std::move(m)); });
  stream.feed(text);
  stream.flush();
  if (msgs.empty()) qapi::fail("Expecting a JSON value");
  if (!msgs[0].value) throw qapi::Error(msgs[0].error);
  if (msgs.size() > 1) qapi::fail("Expecting at most one JSON value");
  return std::move(*msgs[0].value);
}

Json parse_option_argument(std::string_view text, const char* implied_key, bool& keyval) {
  keyval = !text.starts_with('{');
  if (!keyval) return parse_single_json(text);
  return keyval_parse(text, implied_key);
}

}  // namespace vstord
