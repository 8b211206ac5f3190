#include "monitor/json_stream.hpp"

#include <gtest/gtest.h>

namespace vstord {
namespace {

std::vector<JsonStream::Message> feed(std::string_view in) {
  std::vector<JsonStream::Message> out;
  JsonStream s([&](JsonStream::Message m) { out.push_back(std::move(m)); });
  s.feed(in);
  return out;
}

TEST(JsonStream, ParsesObjectsWithoutSeparators) {
  auto m = feed(R"({"a":1}{"b":[true,null]})");
  ASSERT_EQ(m.size(), 2u);
  EXPECT_EQ((*m[0].value)["a"], 1);
  EXPECT_TRUE((*m[1].value)["b"][0].get<bool>());
}

}  // namespace
}  // namespace vstord
