// A streaming reader for QMP input in QEMU's JSON dialect.
//
// Bytes arrive in arbitrary pieces; every complete top-level value, and
// every error, is handed to the callback in input order.  The dialect is
// QEMU's: single-quoted strings and the escape \' are accepted, no
// separator is needed between values, and after a lexical error input is
// skipped up to a structural character or an ASCII control character (a
// client sends one, or 0xFF, to reset the reader).  The same limits as
// QEMU bound memory: 64 MiB of tokens, 2M tokens and 1024 levels of
// nesting per value.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "qapi/member_order.hpp"
#include "qapi/visit.hpp"

namespace vstord {

class JsonStream {
 public:
  // Exactly one of value and error is set.
  struct Message {
    std::optional<qapi::Json> value;
    std::string error;
  };
  using Sink = std::function<void(Message)>;

  struct Limits {
    size_t max_token_bytes = 64ull << 20;
    size_t max_tokens = 2ull << 20;
    size_t max_nesting = 1024;
  };

  explicit JsonStream(Sink sink) : JsonStream(std::move(sink), Limits{}) {}
  JsonStream(Sink sink, Limits limits) : sink_(std::move(sink)), limits_(limits) {}

  void feed(std::string_view data);
  // Ends the input: a value still open is reported as an error.
  void flush();
  // Drops partial input, as after a client disconnects.
  void reset();

  enum class TokenType : uint8_t {
    lcurly,
    rcurly,
    lsquare,
    rsquare,
    colon,
    comma,
    integer,
    floating,
    keyword,
    string,
    error
  };
  struct Token {
    TokenType type;
    std::string text;
  };

 private:
  enum class State : uint8_t;

  void feed_char(unsigned char ch, bool flush);
  void emit_token(TokenType type);
  void emit(Message m);
  void clear_value();

  Sink sink_;
  Limits limits_;
  State state_{};
  std::string token_;
  std::vector<Token> tokens_;
  size_t token_bytes_ = 0;
  int brace_ = 0;
  int bracket_ = 0;
};

// Parses one complete value from its tokens; throws qapi::Error with
// QEMU's "JSON parse error, ..." wording.
qapi::Json parse_json_tokens(const std::vector<JsonStream::Token>& tokens);

// Serialises a reply or event as QEMU does: ASCII only (everything else as
// \uXXXX), and, when pretty, indented with every line ending in CRLF.
std::string to_qmp_text(const qapi::Json& value, bool pretty);

}  // namespace vstord
