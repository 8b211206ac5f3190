#include "monitor/json_stream.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdlib>

namespace vstord {

using qapi::Json;

// Lexer states.  Tokens end either on their closing character (strings,
// structural characters) or when a character that cannot continue them
// arrives; that character is then examined again in 'start' (lookahead).
enum class JsonStream::State : uint8_t {
  start,
  recovery,
  dq_string,
  dq_escape,
  sq_string,
  sq_escape,
  neg,
  zero,
  digits,
  mantissa,
  mantissa_digits,
  exp_e,
  exp_sign,
  exp_digits,
  keyword,
};

namespace {

bool is_digit(unsigned ch) {
  return ch >= '0' && ch <= '9';
}

// Characters at which recovery after a lexical error stops: structural
// characters, ASCII control characters other than tab, and the bytes 0xFE
// and 0xFF that can never occur in UTF-8.
bool ends_recovery(unsigned ch) {
  return (ch < 0x20 && ch != '\t') || ch >= 0xFE || ch == '[' || ch == ']' || ch == '{' ||
         ch == '}' || ch == ':' || ch == ',';
}

}  // namespace

void JsonStream::feed(std::string_view data) {
  for (char c : data) feed_char(static_cast<unsigned char>(c), false);
}

void JsonStream::flush() {
  feed_char(0, true);
  if (!tokens_.empty()) {
    Message m;
    try {
      m.value = parse_json_tokens(tokens_);
    } catch (const qapi::Error& e) {
      m.error = e.what();
    }
    clear_value();
    emit(std::move(m));
  }
}

void JsonStream::reset() {
  state_ = State::start;
  token_.clear();
  clear_value();
}

void JsonStream::clear_value() {
  tokens_.clear();
  token_bytes_ = 0;
  brace_ = 0;
  bracket_ = 0;
}

void JsonStream::emit(Message m) {
  sink_(std::move(m));
}

// One character through the lexer.  'flush' marks the end of input: a
// pending number or keyword ends there, anything else open is an error.
void JsonStream::feed_char(unsigned char ch, bool flush) {
  for (;;) {
    auto terminal = [&](TokenType type) {
      emit_token(type);
      state_ = State::start;
    };
    auto error = [&] {
      if (!flush) token_.push_back(static_cast<char>(ch));
      emit_token(TokenType::error);
      state_ = State::recovery;
    };
    auto consume = [&](State next) {
      token_.push_back(static_cast<char>(ch));
      state_ = next;
    };
    if (flush) {
      switch (state_) {
        case State::start:
        case State::recovery: state_ = State::start; return;
        case State::zero:
        case State::digits: terminal(TokenType::integer); return;
        case State::mantissa_digits:
        case State::exp_digits: terminal(TokenType::floating); return;
        case State::keyword: terminal(TokenType::keyword); return;
        default:
          error();
          state_ = State::start;
          return;
      }
    }
    switch (state_) {
      case State::start:
        switch (ch) {
          case '{':
            token_ = "{";
            terminal(TokenType::lcurly);
            return;
          case '}':
            token_ = "}";
            terminal(TokenType::rcurly);
            return;
          case '[':
            token_ = "[";
            terminal(TokenType::lsquare);
            return;
          case ']':
            token_ = "]";
            terminal(TokenType::rsquare);
            return;
          case ':':
            token_ = ":";
            terminal(TokenType::colon);
            return;
          case ',':
            token_ = ",";
            terminal(TokenType::comma);
            return;
          case '"': consume(State::dq_string); return;
          case '\'': consume(State::sq_string); return;
          case '-': consume(State::neg); return;
          case '0': consume(State::zero); return;
          case ' ':
          case '\t':
          case '\r':
          case '\n': return;
          default:
            if (ch >= '1' && ch <= '9') return consume(State::digits);
            if (ch >= 'a' && ch <= 'z') return consume(State::keyword);
            return error();
        }
      case State::recovery:
        if (ends_recovery(ch)) {
          state_ = State::start;
          continue;  // examine ch again from 'start'
        }
        return;
      case State::dq_string:
      case State::sq_string: {
        bool dq = state_ == State::dq_string;
        if (ch == (dq ? '"' : '\'')) {
          token_.push_back(static_cast<char>(ch));
          return terminal(TokenType::string);
        }
        if (ch == '\\') return consume(dq ? State::dq_escape : State::sq_escape);
        if (ch >= 0x20 && ch <= 0xFD) return consume(state_);
        return error();
      }
      case State::dq_escape:
      case State::sq_escape:
        // Which escapes are valid is the parser's business; the lexer only
        // keeps the string together.
        if (ch >= 0x20 && ch <= 0xFD) {
          return consume(state_ == State::dq_escape ? State::dq_string : State::sq_string);
        }
        return error();
      case State::neg:
        if (ch == '0') return consume(State::zero);
        if (ch >= '1' && ch <= '9') return consume(State::digits);
        return error();
      case State::zero:
      case State::digits:
        if (is_digit(ch)) {
          if (state_ == State::zero) return error();
          return consume(State::digits);
        }
        if (ch == '.') return consume(State::mantissa);
        if (ch == 'e' || ch == 'E') return consume(State::exp_e);
        if (ch >= 0x80) return error();
        terminal(TokenType::integer);
        continue;
      case State::mantissa:
        if (is_digit(ch)) return consume(State::mantissa_digits);
        return error();
      case State::mantissa_digits:
        if (is_digit(ch)) return consume(state_);
        if (ch == 'e' || ch == 'E') return consume(State::exp_e);
        if (ch >= 0x80) return error();
        terminal(TokenType::floating);
        continue;
      case State::exp_e:
        if (ch == '+' || ch == '-') return consume(State::exp_sign);
        if (is_digit(ch)) return consume(State::exp_digits);
        return error();
      case State::exp_sign:
        if (is_digit(ch)) return consume(State::exp_digits);
        return error();
      case State::exp_digits:
        if (is_digit(ch)) return consume(state_);
        if (ch >= 0x80) return error();
        terminal(TokenType::floating);
        continue;
      case State::keyword:
        if (ch >= 'a' && ch <= 'z') return consume(state_);
        if (ch >= 0x80) return error();
        terminal(TokenType::keyword);
        continue;
    }
    return;
  }
}

// The streamer: collects tokens until brackets balance, enforcing limits,
// then parses the value.  Any error drops the value being collected.
void JsonStream::emit_token(TokenType type) {
  std::string text = std::move(token_);
  token_.clear();
  Message m;
  switch (type) {
    case TokenType::lcurly: ++brace_; break;
    case TokenType::rcurly: --brace_; break;
    case TokenType::lsquare: ++bracket_; break;
    case TokenType::rsquare: --bracket_; break;
    case TokenType::error:
      m.error = fmt::format("JSON parse error, stray '{}'", text);
      clear_value();
      return emit(std::move(m));
    default: break;
  }
  if (token_bytes_ + text.size() + 1 > limits_.max_token_bytes) {
    m.error = "JSON token size limit exceeded";
  } else if (tokens_.size() + 1 > limits_.max_tokens) {
    m.error = "JSON token count limit exceeded";
  } else if (static_cast<size_t>(std::max(0, brace_) + std::max(0, bracket_)) >
             limits_.max_nesting) {
    m.error = "JSON nesting depth limit exceeded";
  }
  if (!m.error.empty()) {
    clear_value();
    return emit(std::move(m));
  }
  token_bytes_ += text.size();
  tokens_.push_back(Token{type, std::move(text)});
  if ((brace_ > 0 || bracket_ > 0) && brace_ >= 0 && bracket_ >= 0) return;
  try {
    m.value = parse_json_tokens(tokens_);
  } catch (const qapi::Error& e) {
    m.error = e.what();
  }
  clear_value();
  emit(std::move(m));
}

// ---------------------------------------------------------------- parser

namespace {

using TokenType = JsonStream::TokenType;
using Token = JsonStream::Token;

class Parser {
 public:
  explicit Parser(const std::vector<Token>& tokens) : tokens_(tokens) {}

  Json parse() {
    Json v = value();
    if (pos_ != tokens_.size()) error("expecting end of input");
    return v;
  }

 private:
  [[noreturn]] void error(std::string_view msg) { qapi::fail("JSON parse error, {}", msg); }

  const Token* peek() const { return pos_ < tokens_.size() ? &tokens_[pos_] : nullptr; }
  const Token* next() { return pos_ < tokens_.size() ? &tokens_[pos_++] : nullptr; }

  Json value() {
    const Token* t = peek();
    if (!t) error("premature EOI");
    switch (t->type) {
      case TokenType::lcurly: return object();
      case TokenType::lsquare: return array();
      case TokenType::string: ++pos_; return string(t->text);
      case TokenType::integer: ++pos_; return integer(t->text);
      case TokenType::floating: ++pos_; return std::strtod(t->text.c_str(), nullptr);
      case TokenType::keyword:
        ++pos_;
        if (t->text == "true") return true;
        if (t->text == "false") return false;
        if (t->text == "null") return nullptr;
        error(fmt::format("invalid keyword '{}'", t->text));
      default: error("expecting value");
    }
  }

  Json object() {
    ++pos_;  // '{'
    Json obj = Json::object();
    const Token* t = peek();
    if (t && t->type == TokenType::rcurly) {
      ++pos_;
      return obj;
    }
    for (;;) {
      // The key is parsed as any value first, as QEMU does: a missing key
      // ("{"a":1,}") is "expecting value", a number key is not a string.
      t = peek();
      Json key_value = value();
      if (t->type != TokenType::string) error("key is not a string in object");
      std::string key = key_value.get<std::string>();
      t = next();
      if (!t) error("premature EOI");
      if (t->type != TokenType::colon) error("missing : in object pair");
      Json v = value();
      if (obj.contains(key)) error("duplicate key");
      obj[key] = std::move(v);
      t = next();
      if (!t) error("premature EOI");
      if (t->type == TokenType::rcurly) return obj;
      if (t->type != TokenType::comma) error("expected separator in dict");
    }
  }

  Json array() {
    ++pos_;  // '['
    Json arr = Json::array();
    const Token* t = peek();
    if (t && t->type == TokenType::rsquare) {
      ++pos_;
      return arr;
    }
    for (;;) {
      arr.push_back(value());
      t = next();
      if (!t) error("premature EOI");
      if (t->type == TokenType::rsquare) return arr;
      if (t->type != TokenType::comma) error("expected separator in list");
    }
  }

  static Json integer(const std::string& text) {
    errno = 0;
    char* end = nullptr;
    long long v = std::strtoll(text.c_str(), &end, 10);
    if (errno == 0) return static_cast<int64_t>(v);
    if (text[0] != '-') {
      errno = 0;
      unsigned long long u = std::strtoull(text.c_str(), &end, 10);
      if (errno == 0) return static_cast<uint64_t>(u);
    }
    // Too big for 64 bits: keep it as a floating-point number.
    return std::strtod(text.c_str(), nullptr);
  }

  static void append_utf8(std::string& out, uint32_t cp) {
    if (cp < 0x80) {
      out.push_back(static_cast<char>(cp));
    } else if (cp < 0x800) {
      out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
      out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    } else if (cp < 0x10000) {
      out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
      out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
      out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    } else {
      out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
      out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
      out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
      out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    }
  }

  // U+FDD0..U+FDEF and the last two code points of every plane.
  static bool is_noncharacter(uint32_t cp) {
    return (cp >= 0xFDD0 && cp <= 0xFDEF) || (cp & 0xFFFE) == 0xFFFE;
  }

  static int hex4(std::string_view s, size_t i) {
    if (i + 4 > s.size()) return -1;
    int v = 0;
    for (size_t k = i; k < i + 4; ++k) {
      char c = s[k];
      v <<= 4;
      if (c >= '0' && c <= '9')
        v |= c - '0';
      else if (c >= 'a' && c <= 'f')
        v |= c - 'a' + 10;
      else if (c >= 'A' && c <= 'F')
        v |= c - 'A' + 10;
      else
        return -1;
    }
    return v;
  }

  // Decodes one UTF-8 sequence at s[i]; returns its length, or 0 when it is
  // invalid (overlong forms, surrogates and code points past U+10FFFF).
  static size_t utf8_length(std::string_view s, size_t i) {
    auto b = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
    unsigned c = b(i);
    size_t n;
    uint32_t cp;
    if (c < 0x80) return 1;
    // C0 80 is the modified-UTF-8 spelling of U+0000, which QEMU accepts.
    if (c == 0xC0 && i + 1 < s.size() && b(i + 1) == 0x80) return 2;
    if (c >= 0xC2 && c <= 0xDF) {
      n = 2;
      cp = c & 0x1F;
    } else if (c >= 0xE0 && c <= 0xEF) {
      n = 3;
      cp = c & 0x0F;
    } else if (c >= 0xF0 && c <= 0xF4) {
      n = 4;
      cp = c & 0x07;
    } else {
      return 0;
    }
    if (i + n > s.size()) return 0;
    for (size_t k = 1; k < n; ++k) {
      if ((b(i + k) & 0xC0) != 0x80) return 0;
      cp = (cp << 6) | (b(i + k) & 0x3F);
    }
    if ((n == 3 && cp < 0x800) || (n == 4 && (cp < 0x10000 || cp > 0x10FFFF)) ||
        (cp >= 0xD800 && cp <= 0xDFFF) || is_noncharacter(cp)) {
      return 0;
    }
    return n;
  }

  std::string string(std::string_view tok) {
    // tok includes its quotes.
    std::string out;
    std::string_view s = tok.substr(1, tok.size() - 2);
    for (size_t i = 0; i < s.size();) {
      char c = s[i];
      if (c != '\\') {
        size_t n = utf8_length(s, i);
        if (n == 0) error("invalid UTF-8 sequence in string");
        if (n == 2 && static_cast<unsigned char>(c) == 0xC0) {
          out.push_back('\0');
        } else {
          out.append(s.substr(i, n));
        }
        i += n;
        continue;
      }
      if (i + 1 >= s.size()) error("invalid escape sequence in string");
      char e = s[i + 1];
      i += 2;
      switch (e) {
        case '"': out.push_back('"'); break;
        case '\'': out.push_back('\''); break;
        case '\\': out.push_back('\\'); break;
        case '/': out.push_back('/'); break;
        case 'b': out.push_back('\b'); break;
        case 'f': out.push_back('\f'); break;
        case 'n': out.push_back('\n'); break;
        case 'r': out.push_back('\r'); break;
        case 't': out.push_back('\t'); break;
        case 'u': {
          // A bad escape is named by its text, read from the token (so a
          // truncated one shows the closing quote, as in QEMU): the
          // backslash and five more, or the whole surrogate pair.
          auto bad = [&](size_t at, size_t len) {
            error(fmt::format("{} is not a valid Unicode character", tok.substr(at + 1, len)));
          };
          size_t at = i - 2;
          int cp = hex4(s, i);
          if (cp < 0) bad(at, 6);
          i += 4;
          size_t len = 6;
          if (cp >= 0xD800 && cp <= 0xDBFF) {
            int lo = (i + 1 < s.size() && s[i] == '\\' && s[i + 1] == 'u') ? hex4(s, i + 2) : -1;
            if (lo < 0xDC00 || lo > 0xDFFF) bad(at, 6);
            i += 6;
            len = 12;
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
          } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
            bad(at, 6);
          }
          if (is_noncharacter(static_cast<uint32_t>(cp))) bad(at, len);
          append_utf8(out, static_cast<uint32_t>(cp));
          break;
        }
        default: error("invalid escape sequence in string");
      }
    }
    return out;
  }

  const std::vector<Token>& tokens_;
  size_t pos_ = 0;
};

void write_string(std::string& out, std::string_view s) {
  out.push_back('"');
  for (size_t i = 0; i < s.size();) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    switch (c) {
      case '"':
        out += "\\\"";
        ++i;
        continue;
      case '\\':
        out += "\\\\";
        ++i;
        continue;
      case '\b':
        out += "\\b";
        ++i;
        continue;
      case '\f':
        out += "\\f";
        ++i;
        continue;
      case '\n':
        out += "\\n";
        ++i;
        continue;
      case '\r':
        out += "\\r";
        ++i;
        continue;
      case '\t':
        out += "\\t";
        ++i;
        continue;
      default: break;
    }
    if (c >= 0x20 && c < 0x7F) {
      out.push_back(static_cast<char>(c));
      ++i;
      continue;
    }
    // Decode a code point; malformed bytes become U+FFFD.
    uint32_t cp = 0xFFFD;
    size_t n = 1;
    if (c < 0x80) {
      cp = c;
    } else {
      size_t len = (c >= 0xF0) ? 4 : (c >= 0xE0) ? 3 : (c >= 0xC0) ? 2 : 0;
      bool ok = len > 0 && i + len <= s.size();
      uint32_t v = len == 4 ? (c & 0x07) : len == 3 ? (c & 0x0F) : (c & 0x1F);
      for (size_t k = 1; ok && k < len; ++k) {
        unsigned char cc = static_cast<unsigned char>(s[i + k]);
        if ((cc & 0xC0) != 0x80) ok = false;
        v = (v << 6) | (cc & 0x3F);
      }
      if (ok && v <= 0x10FFFF) {
        cp = v;
        n = len;
      }
    }
    i += n;
    if (cp >= 0x10000) {
      cp -= 0x10000;
      out += fmt::format("\\u{:04X}\\u{:04X}", 0xD800 + (cp >> 10), 0xDC00 + (cp & 0x3FF));
    } else {
      out += fmt::format("\\u{:04X}", cp);
    }
  }
  out.push_back('"');
}

void write_value(std::string& out, const Json& v, bool pretty, int level) {
  auto newline = [&](int lvl) {
    if (!pretty) return;
    out += "\n";
    out.append(static_cast<size_t>(lvl) * 4, ' ');
  };
  switch (v.type()) {
    case Json::value_t::object: {
      out.push_back('{');
      bool first = true;
      for (const std::string& key : qapi::qemu_member_order(v)) {
        out += first ? "" : (pretty ? "," : ", ");
        first = false;
        newline(level + 1);
        write_string(out, key);
        out += ": ";
        write_value(out, v[key], pretty, level + 1);
      }
      newline(level);
      out.push_back('}');
      return;
    }
    case Json::value_t::array: {
      out.push_back('[');
      bool first = true;
      for (const auto& e : v) {
        out += first ? "" : (pretty ? "," : ", ");
        first = false;
        newline(level + 1);
        write_value(out, e, pretty, level + 1);
      }
      newline(level);
      out.push_back(']');
      return;
    }
    case Json::value_t::string: write_string(out, v.get_ref<const std::string&>()); return;
    case Json::value_t::number_float: {
      double d = v.get<double>();
      if (std::isfinite(d)) {
        out += fmt::format("{:.17g}", d);
      } else {
        out += d != d ? "nan" : (d > 0 ? "inf" : "-inf");
      }
      return;
    }
    default: out += v.dump(); return;
  }
}

}  // namespace

Json parse_json_tokens(const std::vector<JsonStream::Token>& tokens) {
  return Parser(tokens).parse();
}

std::string to_qmp_text(const Json& value, bool pretty) {
  std::string out;
  write_value(out, value, pretty, 0);
  // Every line a monitor sends ends in CRLF.
  std::string crlf;
  crlf.reserve(out.size() + 8);
  for (char c : out) {
    if (c == '\n') crlf.push_back('\r');
    crlf.push_back(c);
  }
  crlf += "\r\n";
  return crlf;
}

}  // namespace vstord
