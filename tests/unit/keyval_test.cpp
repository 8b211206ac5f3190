#include "daemon/keyval.hpp"

#include <gtest/gtest.h>

namespace vstord {
namespace {

using qapi::Json;

std::string err(std::string_view text, const char* implied = nullptr) {
  try {
    keyval_parse(text, implied);
  } catch (const qapi::Error& e) {
    return e.what();
  }
  return "<ok>";
}

TEST(Keyval, DottedKeysNest) {
  Json j = keyval_parse("driver=file,cache.direct=on,cache.no-flush=off", nullptr);
  EXPECT_EQ(j, Json::parse(R"({"driver":"file","cache":{"direct":"on","no-flush":"off"}})"));
}

TEST(Keyval, ImpliedKeyOnlyFirst) {
  Json j = keyval_parse("qcow2,node-name=a", "driver");
  EXPECT_EQ(j["driver"], "qcow2");
  EXPECT_EQ(j["node-name"], "a");
  EXPECT_EQ(err("a,b", "driver"), "Expected '=' after parameter 'b'");
}

TEST(Keyval, CommaEscape) {
  Json j = keyval_parse("path=/a,,b,x=1", nullptr);
  EXPECT_EQ(j["path"], "/a,b");
  EXPECT_EQ(j["x"], "1");
}

TEST(Keyval, ListsFromIndexes) {
  Json j = keyval_parse("a.0=x,a.1=y", nullptr);
  EXPECT_EQ(j["a"], Json::parse(R"(["x","y"])"));
  EXPECT_EQ(err("a.1=y"), "Parameter 'a.0' missing");
  EXPECT_EQ(err("a.0=x,a.b=y"), "Parameters 'a.*' used inconsistently");
}

TEST(Keyval, LastValueWins) {
  EXPECT_EQ(keyval_parse("a=1,a=2", nullptr)["a"], "2");
}

TEST(Keyval, Errors) {
  EXPECT_EQ(err("a"), "Expected '=' after parameter 'a'");
  EXPECT_EQ(err(",a=1"), "Invalid parameter ''");
  EXPECT_EQ(err("a..b=1"), "Invalid parameter 'a..b'");
  EXPECT_EQ(err("a=1,a.b=2"), "Parameters 'a.*' used inconsistently");
  EXPECT_EQ(err(std::string(130, 'k') + "=1"),
            "Parameter '" + std::string(130, 'k') + "' is too long");
  EXPECT_EQ(err("help"), "Help is not available for this option");
}

TEST(Keyval, HelpRequested) {
  bool help = false;
  keyval_parse("file,help", "driver", &help);
  EXPECT_TRUE(help);
}

TEST(Keyval, EmptyAndTrailingComma) {
  EXPECT_EQ(keyval_parse("", nullptr), Json::object());
  EXPECT_EQ(keyval_parse("a=1,", nullptr)["a"], "1");
}

TEST(OptionArgument, JsonWhenBraceFirst) {
  bool keyval = true;
  Json j = parse_option_argument(R"({"chardev": "m0", "pretty": true})", "chardev", keyval);
  EXPECT_FALSE(keyval);
  EXPECT_TRUE(j["pretty"].get<bool>());
  j = parse_option_argument("m0,pretty=on", "chardev", keyval);
  EXPECT_TRUE(keyval);
  EXPECT_EQ(j["chardev"], "m0");
}

TEST(OptionArgument, JsonMustBeOneValue) {
  bool keyval;
  EXPECT_THROW(parse_option_argument("{} {}", nullptr, keyval), qapi::Error);
  EXPECT_THROW(parse_option_argument("{", nullptr, keyval), qapi::Error);
}

}  // namespace
}  // namespace vstord
