// The generator's output for tests/unit/qapi/test-schema.json, compiled
// and driven through its own command table: every construct round-trips
// and every command kind dispatches.
#include <gtest/gtest.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "daemon/daemon.hpp"
#include "qapi/event.hpp"
#include "test-qapi-commands.hpp"
#include "test-qapi-events.hpp"

namespace qapi_test {

using qapi::Json;

// ---- stub handlers --------------------------------------------------------

TestStruct qmp_test_plain(qapi::CommandContext&, std::string a,
                          std::optional<std::vector<TestFlat>> b) {
  TestStruct s;
  s.base_member = b ? static_cast<int64_t>(b->size()) : -1;
  s.s = a;
  s.en = TestEnum::three;
  s.list = {"x", "y"};
  s.anything = Json::parse(R"({"k": [1]})");
  s.q_default = 7;
  return s;
}

std::vector<TestFlat> qmp_test_boxed(qapi::CommandContext&, TestFlat arg) {
  return {arg, arg};
}

boost::asio::awaitable<void> qmp_test_coroutine(qapi::CommandContext&, uint32_t ms) {
  boost::asio::steady_timer t(co_await boost::asio::this_coro::executor);
  t.expires_after(std::chrono::milliseconds(ms));
  co_await t.async_wait(boost::asio::use_awaitable);
}

void qmp_test_oob(qapi::CommandContext&) {}

int64_t qmp_test_returns_int(qapi::CommandContext&) {
  return 42;
}

const Json& qmp_schema_introspection();

namespace {

const qapi::CommandDef* find(std::string_view name) {
  for (const auto& def : qmp_command_table()) {
    if (def.name == name) return &def;
  }
  return nullptr;
}

Json call(const char* name, const char* args) {
  const qapi::CommandDef* def = find(name);
  EXPECT_NE(def, nullptr) << name;
  boost::asio::io_context io;
  vstord::Daemon daemon(io);
  qapi::CommandContext ctx{daemon, nullptr};
  Json result;
  if (def->fn) return def->fn(ctx, Json::parse(args));
  boost::asio::co_spawn(
      io,
      [&]() -> boost::asio::awaitable<void> {
        result = co_await def->coro(ctx, Json::parse(args));
      },
      [](std::exception_ptr e) {
        if (e) std::rethrow_exception(e);
      });
  io.run();
  return result;
}

std::string error_of(const char* name, const char* args) {
  try {
    call(name, args);
  } catch (const qapi::Error& e) {
    return e.what();
  }
  return "<ok>";
}

TEST(Generated, ConditionsDropDefinitionsMembersAndValues) {
  EXPECT_EQ(find("test-conditional"), nullptr);
  EXPECT_EQ(qapi::EnumTraits<TestEnum>::names.size(), 3u);
  EXPECT_EQ(qapi::enum_name(TestEnum::three), "three");
  EXPECT_EQ(error_of("test-plain", R"({"a": "x", "if-member": "y"})"),
            "Parameter 'if-member' is unexpected");
}

TEST(Generated, CommandTableFlags) {
  EXPECT_TRUE(find("test-oob")->allow_oob());
  EXPECT_TRUE(find("test-oob")->flags & qapi::CommandDef::kUnstable);
  EXPECT_FALSE(find("test-plain")->allow_oob());
  EXPECT_NE(find("test-coroutine")->coro, nullptr);
  EXPECT_EQ(find("test-coroutine")->fn, nullptr);
}

TEST(Generated, UnpackedArgumentsAndStructReturn) {
  Json r = call("test-plain", R"({"a": "hi", "b": [{"kind": "c"}, {"kind": "a", "x": 1}]})");
  EXPECT_EQ(r["base-member"], 2);
  EXPECT_EQ(r["s"], "hi");
  EXPECT_EQ(r["en"], "three");
  EXPECT_EQ(r["list"], Json::parse(R"(["x", "y"])"));
  EXPECT_EQ(r["anything"], Json::parse(R"({"k": [1]})"));
  EXPECT_TRUE(r["nothing"].is_null());
  EXPECT_EQ(r["default"], 7);
  EXPECT_FALSE(r.contains("opt"));
}

TEST(Generated, BoxedUnionArgument) {
  Json r = call("test-boxed", R"({"kind": "a", "x": 5, "common": "c"})");
  EXPECT_EQ(r, Json::parse(R"([{"kind": "a", "common": "c", "x": 5},
                                {"kind": "a", "common": "c", "x": 5}])"));
  EXPECT_EQ(error_of("test-boxed", R"({"kind": "a"})"), "Parameter 'x' is missing");
  EXPECT_EQ(error_of("test-boxed", R"({"kind": "c", "x": 1})"), "Parameter 'x' is unexpected");
  EXPECT_EQ(error_of("test-boxed", R"({"kind": "b", "y": 1})"),
            "Invalid parameter type for 'y', expected: string");
}

TEST(Generated, CoroutineCommand) {
  auto t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(call("test-coroutine", R"({"ms": 20})"), Json::object());
  EXPECT_GE(std::chrono::steady_clock::now() - t0, std::chrono::milliseconds(20));
  EXPECT_EQ(error_of("test-coroutine", R"({"ms": -1})"), "Parameter 'ms' expects uint32_t");
}

TEST(Generated, BuiltinReturn) {
  EXPECT_EQ(call("test-returns-int", "{}"), 42);
}

TEST(Generated, NoArgumentsMeansEmptyObject) {
  EXPECT_EQ(call("test-oob", "{}"), Json::object());
  EXPECT_EQ(error_of("test-oob", R"({"x": 1})"), "Parameter 'x' is unexpected");
}

TEST(Generated, StructScalarsAreStrict) {
  qapi::Input in;
  TestStruct s;
  const char* good =
      R"({"base-member": 1, "s": "", "i8": -128, "u8": 255, "u64": 18446744073709551615,
                         "sz": 4096, "num": 1, "flag": false, "anything": [null], "nothing": null,
                         "list": [], "en": "two"})";
  visit_type_TestStruct(in, nullptr, Json::parse(good), s);
  EXPECT_EQ(s.i8, -128);
  EXPECT_EQ(s.u64, UINT64_MAX);
  EXPECT_EQ(s.num, 1.0);
  EXPECT_EQ(s.en, TestEnum::two);
  Json j = Json::parse(good);
  j["i8"] = 128;
  EXPECT_THROW(visit_type_TestStruct(in, nullptr, j, s), qapi::Error);
  j = Json::parse(good);
  j["nothing"] = 0;
  try {
    qapi::Input in2;
    visit_type_TestStruct(in2, nullptr, j, s);
    FAIL();
  } catch (const qapi::Error& e) {
    EXPECT_STREQ(e.what(), "Invalid parameter type for 'nothing', expected: null");
  }
}

TEST(Generated, SimpleUnionWrapsBranches) {
  qapi::Input in;
  TestSimple u;
  visit_type_TestSimple(in, nullptr, Json::parse(R"({"type": "str", "data": {"str": "v"}})"), u);
  EXPECT_EQ(u.type(), TestSimpleKind::str);
  EXPECT_EQ(u.get<TestSimpleKind::str>().data.str, "v");
  EXPECT_EQ(marshal(u), Json::parse(R"({"type": "str", "data": {"str": "v"}})"));
}

TEST(Generated, AlternatePicksBranchByJsonType) {
  auto kind = [](const char* text) {
    qapi::Input in;
    TestAlt a;
    visit_type_TestAlt(in, nullptr, Json::parse(text), a);
    EXPECT_EQ(marshal(a), Json::parse(text));
    return a.kind();
  };
  EXPECT_EQ(kind(R"({"name": "n", "child": {"name": "m", "child": "ref"}})"), TestAlt::Kind::o);
  EXPECT_EQ(kind(R"("s")"), TestAlt::Kind::s);
  EXPECT_EQ(kind("3"), TestAlt::Kind::i);
  EXPECT_EQ(kind("true"), TestAlt::Kind::b);
  EXPECT_EQ(kind("null"), TestAlt::Kind::n);
  EXPECT_EQ(kind("[1, 2]"), TestAlt::Kind::l);
  qapi::Input in;
  TestAlt a;
  EXPECT_THROW(visit_type_TestAlt(in, nullptr, Json(1.5), a), qapi::Error);
}

TEST(Generated, RecursiveTypesCopyDeeply) {
  qapi::Input in;
  TestNode n;
  visit_type_TestNode(in, nullptr, Json::parse(R"({"name": "a", "child": {"name": "b"}})"), n);
  TestNode copy = n;
  std::get<0>(n.child->u)->name = "changed";
  EXPECT_EQ(marshal(copy), Json::parse(R"({"name": "a", "child": {"name": "b"}})"));
}

TEST(Generated, KeyvalAlternatePrefersString) {
  qapi::Input in(qapi::Input::Mode::keyval);
  TestAlt a;
  visit_type_TestAlt(in, nullptr, Json("12"), a);
  EXPECT_EQ(a.kind(), TestAlt::Kind::s);
}

TEST(Generated, EventsReachTheSink) {
  std::vector<std::pair<std::string, std::optional<Json>>> seen;
  qapi::set_event_sink([&](std::string_view name, const std::optional<Json>& data) {
    seen.emplace_back(std::string(name), data);
  });
  TestNode node;
  node.name = "n";
  qapi_event_send_test_event(node, 3);
  TestFlat f;
  f.emplace<TestTag::c>();
  qapi_event_send_test_boxed_event(f);
  qapi_event_send_test_no_data();
  qapi::set_event_sink(nullptr);
  ASSERT_EQ(seen.size(), 3u);
  EXPECT_EQ(seen[0].first, "TEST_EVENT");
  EXPECT_EQ(*seen[0].second, Json::parse(R"({"node": {"name": "n"}, "opt": 3})"));
  EXPECT_EQ(*seen[1].second, Json::parse(R"({"kind": "c"})"));
  EXPECT_FALSE(seen[2].second);
}

TEST(Generated, IntrospectionOfTheTestSchema) {
  const Json& schema = qmp_schema_introspection();
  bool found = false;
  for (const auto& e : schema) {
    if (e["name"] == "test-oob") {
      found = true;
      EXPECT_EQ(e["allow-oob"], true);
      EXPECT_EQ(e["features"], Json::parse(R"(["unstable"])"));
    }
    EXPECT_NE(e["name"], "test-conditional");
  }
  EXPECT_TRUE(found);
}

}  // namespace
}  // namespace qapi_test
