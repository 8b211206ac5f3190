// Strict input visiting through the generated code of the real schema.
#include <gtest/gtest.h>

#include "qapi-types.hpp"

namespace qapi {
namespace {

template <class T, class V>
std::string err(V visit, const char* text, Input::Mode mode = Input::Mode::json) {
  Input in(mode);
  T out;
  try {
    visit(in, nullptr, Json::parse(text), out);
  } catch (const Error& e) {
    return e.what();
  }
  return "<ok>";
}

TEST(Visit, FlatUnionBranchMembers) {
  Input in;
  SocketAddress a;
  visit_type_SocketAddress(in, nullptr,
                           Json::parse(R"({"type":"inet","host":"h","port":"1","to":5})"), a);
  ASSERT_EQ(a.type(), SocketAddressType::inet);
  EXPECT_EQ(a.get<SocketAddressType::inet>().host, "h");
  EXPECT_EQ(a.get<SocketAddressType::inet>().to, 5);
  EXPECT_EQ(marshal(a), Json::parse(R"({"type":"inet","host":"h","port":"1","to":5})"));
}

TEST(Visit, SimpleUnionWrapsData) {
  Input in;
  SocketAddressLegacy a;
  visit_type_SocketAddressLegacy(in, nullptr,
                                 Json::parse(R"({"type":"unix","data":{"path":"/p"}})"), a);
  EXPECT_EQ(a.type(), SocketAddressLegacyKind::q_unix);
  EXPECT_EQ(a.get<SocketAddressLegacyKind::q_unix>().data.path, "/p");
}

TEST(Visit, ErrorsNameTheFullPath) {
  EXPECT_EQ(err<ChardevBackend>(visit_type_ChardevBackend,
                                R"({"type":"socket","data":{"addr":{"type":"unix","data":{}}}})"),
            "Parameter 'data.addr.data.path' is missing");
  EXPECT_EQ(err<SocketAddress>(visit_type_SocketAddress, R"({"type":"inet","host":"h"})"),
            "Parameter 'port' is missing");
  EXPECT_EQ(err<SocketAddress>(visit_type_SocketAddress, R"({"type":"unix","path":"p","x":1})"),
            "Parameter 'x' is unexpected");
  EXPECT_EQ(err<SocketAddress>(visit_type_SocketAddress, R"({"type":"bogus"})"),
            "Parameter 'type' does not accept value 'bogus'");
  EXPECT_EQ(err<SocketAddress>(visit_type_SocketAddress, R"({"path":"p"})"),
            "Parameter 'type' is missing");
  EXPECT_EQ(err<SocketAddress>(visit_type_SocketAddress, R"({"type":"unix","path":1})"),
            "Invalid parameter type for 'path', expected: string");
  EXPECT_EQ(err<SocketAddress>(visit_type_SocketAddress, R"([])"),
            "Invalid parameter type for '<anonymous>', expected: object");
}

TEST(Visit, IntegerRanges) {
  const char* base = R"({"type":"inet","host":"h","port":"1","to":%s})";
  auto with = [&](const char* v) {
    static std::string s;
    s = std::string(base);
    s.replace(s.find("%s"), 2, v);
    return err<SocketAddress>(visit_type_SocketAddress, s.c_str());
  };
  EXPECT_EQ(with("65535"), "<ok>");
  EXPECT_EQ(with("65536"), "Parameter 'to' expects uint16_t");
  EXPECT_EQ(with("-1"), "Parameter 'to' expects uint16_t");
  EXPECT_EQ(with("1.5"), "Invalid parameter type for 'to', expected: integer");
  EXPECT_EQ(with("\"1\""), "Invalid parameter type for 'to', expected: integer");
}

TEST(Visit, ListElementPaths) {
  EXPECT_EQ(err<YankInstance>(visit_type_YankInstance, R"({"type":"chardev"})"),
            "Parameter 'id' is missing");
  Input in;
  std::vector<YankInstance> out;
  try {
    visit_list(in, "instances", Json::parse(R"([{"type":"chardev","id":"a"},{"type":"chardev"}])"),
               out, visit_type_YankInstance);
    FAIL();
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "Parameter 'instances[1].id' is missing");
  }
}

TEST(Visit, KeyvalConvertsStrings) {
  Input in(Input::Mode::keyval);
  MonitorOptions m;
  visit_type_MonitorOptions(in, nullptr, Json::parse(R"({"chardev":"c","pretty":"on"})"), m);
  EXPECT_TRUE(*m.pretty);
  EXPECT_EQ(err<MonitorOptions>(visit_type_MonitorOptions, R"({"chardev":"c","pretty":"maybe"})",
                                Input::Mode::keyval),
            "Parameter 'pretty' expects 'on' or 'off'");
  EXPECT_EQ(
      err<SocketAddress>(visit_type_SocketAddress,
                         R"({"type":"inet","host":"h","port":"1","to":"x"})", Input::Mode::keyval),
      "Parameter 'to' expects integer");
}

TEST(Visit, AlternateBranches) {
  Input in;
  StrOrNull v;
  visit_type_StrOrNull(in, nullptr, Json("x"), v);
  EXPECT_EQ(v.kind(), StrOrNull::Kind::s);
  visit_type_StrOrNull(in, nullptr, Json(nullptr), v);
  EXPECT_EQ(v.kind(), StrOrNull::Kind::n);
  EXPECT_EQ(marshal(v), Json(nullptr));
  EXPECT_EQ(err<StrOrNull>(visit_type_StrOrNull, "1"),
            "Invalid parameter type for 'null', expected: StrOrNull");
}

TEST(Visit, EnumNamesRoundTrip) {
  for (size_t i = 0; i < EnumTraits<ShutdownCause>::names.size(); ++i) {
    auto v = static_cast<ShutdownCause>(i);
    EXPECT_EQ(enum_parse<ShutdownCause>(enum_name(v)), v);
  }
  EXPECT_EQ(enum_name(ShutdownCause::host_qmp_quit), "host-qmp-quit");
}

TEST(Visit, ErrorClassesMatchTheSchema) {
  const auto& names = EnumTraits<QapiErrorClass>::names;
  for (size_t i = 0; i < names.size(); ++i) {
    EXPECT_EQ(error_class_name(static_cast<ErrorClass>(i)), names[i]);
  }
}

}  // namespace
}  // namespace qapi
