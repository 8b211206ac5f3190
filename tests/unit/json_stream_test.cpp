#include "monitor/json_stream.hpp"

#include <gtest/gtest.h>

namespace vstord {
namespace {

using qapi::Json;

std::vector<JsonStream::Message> feed(std::string_view in, JsonStream::Limits limits = {}) {
  std::vector<JsonStream::Message> out;
  JsonStream s([&](JsonStream::Message m) { out.push_back(std::move(m)); }, limits);
  s.feed(in);
  return out;
}

std::string error_of(std::string_view in) {
  auto m = feed(in);
  if (m.empty()) return "<nothing>";
  return m[0].value ? "<value>" : m[0].error;
}

TEST(JsonStream, ParsesObjectsWithoutSeparators) {
  auto m = feed(R"({"a":1}{"b":[true,null]})");
  ASSERT_EQ(m.size(), 2u);
  EXPECT_EQ((*m[0].value)["a"], 1);
  EXPECT_TRUE((*m[1].value)["b"][0].get<bool>());
  EXPECT_TRUE((*m[1].value)["b"][1].is_null());
}

TEST(JsonStream, ValueSplitAcrossEveryByteBoundary) {
  std::string text = R"({"execute": "x", "arguments": {"s": "a\"b\u00e9", "n": -12.5e3}})";
  for (size_t cut = 0; cut <= text.size(); ++cut) {
    std::vector<JsonStream::Message> out;
    JsonStream s([&](JsonStream::Message m) { out.push_back(std::move(m)); });
    s.feed(std::string_view(text).substr(0, cut));
    s.feed(std::string_view(text).substr(cut));
    ASSERT_EQ(out.size(), 1u) << "cut at " << cut;
    ASSERT_TRUE(out[0].value) << out[0].error;
    EXPECT_EQ((*out[0].value)["arguments"]["s"], "a\"b\xc3\xa9");
    EXPECT_EQ((*out[0].value)["arguments"]["n"], -12500.0);
  }
}

TEST(JsonStream, SingleQuotedStrings) {
  auto m = feed(R"({'a': 'it\'s "x"'})");
  ASSERT_EQ(m.size(), 1u);
  EXPECT_EQ((*m[0].value)["a"], "it's \"x\"");
}

TEST(JsonStream, TopLevelScalarIsAMessage) {
  auto m = feed("42 \"s\" [1]");
  ASSERT_EQ(m.size(), 3u);
  EXPECT_EQ(*m[0].value, 42);
  EXPECT_EQ(*m[1].value, "s");
  EXPECT_TRUE(m[2].value->is_array());
}

TEST(JsonStream, IntegerRanges) {
  auto m = feed("[9223372036854775807, 18446744073709551615, 18446744073709551616, -0]");
  ASSERT_EQ(m.size(), 1u);
  const Json& a = *m[0].value;
  EXPECT_TRUE(a[0].is_number_integer());
  EXPECT_TRUE(a[1].is_number_unsigned());
  EXPECT_TRUE(a[2].is_number_float());
  EXPECT_TRUE(a[3].is_number_integer());
}

TEST(JsonStream, SyntaxErrorsUseQemuWording) {
  EXPECT_EQ(error_of("{\"a\": }"), "JSON parse error, expecting value");
  EXPECT_EQ(error_of("{\"a\": 1,}"), "JSON parse error, expecting value");
  EXPECT_EQ(error_of("{1: 2}"), "JSON parse error, key is not a string in object");
  EXPECT_EQ(error_of("{\"a\" 1}"), "JSON parse error, missing : in object pair");
  EXPECT_EQ(error_of("{\"a\": 1 \"b\": 2}"), "JSON parse error, expected separator in dict");
  EXPECT_EQ(error_of("[1 2]"), "JSON parse error, expected separator in list");
  EXPECT_EQ(error_of("{\"a\":1,\"a\":2}"), "JSON parse error, duplicate key");
  EXPECT_EQ(error_of("{\"a\": tru}"), "JSON parse error, invalid keyword 'tru'");
  EXPECT_EQ(error_of("{\"a\": \"\\q\"}"), "JSON parse error, invalid escape sequence in string");
  EXPECT_EQ(error_of("{\"a\": \"\\uD800\"}"),
            "JSON parse error, \\uD800 is not a valid Unicode character");
  EXPECT_EQ(error_of("{\"a\": \"\xc3\x28\"}"),
            "JSON parse error, invalid UTF-8 sequence in string");
  EXPECT_EQ(error_of("}"), "JSON parse error, expecting value");
  EXPECT_EQ(error_of("@"), "JSON parse error, stray '@'");
  EXPECT_EQ(error_of("{\"a\": 01}"), "JSON parse error, stray '01'");
}

TEST(JsonStream, ControlCharacterRecoversFromLexicalError) {
  // The stray '@' is one error; the control character that ends recovery
  // is itself a lexical error in the start state (as in QEMU); then the
  // next object parses.
  auto m = feed("{\"a\": @garbage\x01{\"ok\": 1}");
  ASSERT_EQ(m.size(), 3u);
  EXPECT_EQ(m[0].error, "JSON parse error, stray '@'");
  EXPECT_FALSE(m[1].value);
  ASSERT_TRUE(m[2].value);
  EXPECT_EQ((*m[2].value)["ok"], 1);
}

TEST(JsonStream, NestingLimit) {
  std::string ok(1024, '['), bad(1025, '[');
  ok += std::string(1024, ']');
  bad += std::string(1025, ']');
  auto m = feed(ok);
  ASSERT_EQ(m.size(), 1u);
  EXPECT_TRUE(m[0].value);
  m = feed(bad);
  ASSERT_GE(m.size(), 1u);
  EXPECT_EQ(m[0].error, "JSON nesting depth limit exceeded");
}

TEST(JsonStream, TokenLimits) {
  JsonStream::Limits small;
  small.max_token_bytes = 64;
  std::string text = "[\"";
  text.append(100, 'x');
  text += "\"]";
  auto m = feed(text, small);
  ASSERT_GE(m.size(), 1u);
  EXPECT_EQ(m[0].error, "JSON token size limit exceeded");
  JsonStream::Limits few;
  few.max_tokens = 10;
  m = feed("[1,2,3,4,5,6,7,8]", few);
  ASSERT_GE(m.size(), 1u);
  EXPECT_EQ(m[0].error, "JSON token count limit exceeded");
}

TEST(JsonStream, ResetDropsPartialInput) {
  std::vector<JsonStream::Message> out;
  JsonStream s([&](JsonStream::Message m) { out.push_back(std::move(m)); });
  s.feed("{\"a\": [1, 2");
  s.reset();
  s.feed("{\"b\": 3}");
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ((*out[0].value)["b"], 3);
}

TEST(QmpText, CompactAsciiCrlf) {
  Json j = Json::object();
  j["return"] = Json::object();
  j["id"] = "\xc3\xa9\xf0\x9f\x98\x80\n";
  EXPECT_EQ(to_qmp_text(j, false), "{\"return\": {}, \"id\": \"\\u00E9\\uD83D\\uDE00\\n\"}\r\n");
}

TEST(QmpText, PrettyLinesEndInCrlf) {
  Json j = Json::object();
  j["return"] = Json::array({1});
  EXPECT_EQ(to_qmp_text(j, true), "{\r\n    \"return\": [\r\n        1\r\n    ]\r\n}\r\n");
}

TEST(QmpText, MembersInQemuOrder) {
  // QEMU's greeting lists micro, minor, major (hash order), whatever the
  // insertion order.
  Json v = Json::object();
  v["major"] = 9;
  v["minor"] = 2;
  v["micro"] = 0;
  EXPECT_EQ(to_qmp_text(v, false), "{\"micro\": 0, \"minor\": 2, \"major\": 9}\r\n");
}

}  // namespace
}  // namespace vstord
