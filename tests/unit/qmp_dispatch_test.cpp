// The dispatcher without sockets: requests in, replies out.
#include "monitor/qmp_dispatch.hpp"

#include <gtest/gtest.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>

#include "daemon/daemon.hpp"

namespace vstord {
namespace {

using qapi::Json;

class Dispatch : public ::testing::Test {
 protected:
  std::optional<Json> run(const char* text, DispatchMode mode = {}) {
    std::optional<Json> reply;
    boost::asio::co_spawn(
        io_,
        [&]() -> boost::asio::awaitable<void> {
          reply = co_await qmp_dispatch(daemon_, nullptr, Json::parse(text), mode);
        },
        boost::asio::detached);
    io_.run();
    io_.restart();
    return reply;
  }
  std::string desc(const char* text, DispatchMode mode = {}) {
    auto r = run(text, mode);
    return r && r->contains("error") ? (*r)["error"]["desc"].get<std::string>() : "<no error>";
  }

  boost::asio::io_context io_;
  Daemon daemon_{io_};
};

TEST_F(Dispatch, ReturnsAndEchoesId) {
  auto r = run(R"({"execute": "query-version", "id": {"x": [1]}})");
  ASSERT_TRUE(r);
  EXPECT_EQ((*r)["return"]["qemu"]["major"], DaemonVersion::qemu_major);
  EXPECT_EQ((*r)["id"], Json::parse(R"({"x": [1]})"));
}

TEST_F(Dispatch, EnvelopeErrors) {
  EXPECT_EQ(desc("42"), "QMP input must be a JSON object");
  EXPECT_EQ(desc("{}"), "QMP input lacks member 'execute'");
  EXPECT_EQ(desc(R"({"execute": 1})"), "QMP input member 'execute' must be a string");
  EXPECT_EQ(desc(R"({"execute": "quit", "arguments": []})"),
            "QMP input member 'arguments' must be an object");
  EXPECT_EQ(desc(R"({"execute": "quit", "foo": 1})"), "QMP input member 'foo' is unexpected");
  EXPECT_EQ(desc(R"({"exec-oob": "quit"})"), "QMP input member 'exec-oob' is unexpected");
  EXPECT_EQ(desc(R"({"execute": "quit", "exec-oob": "quit"})", {false, true}),
            "QMP input member 'execute' clashes with 'exec-oob'");
}

TEST_F(Dispatch, LookupAndOob) {
  auto r = run(R"({"execute": "nope"})");
  EXPECT_EQ((*r)["error"]["class"], "CommandNotFound");
  EXPECT_EQ((*r)["error"]["desc"], "The command nope has not been found");
  EXPECT_EQ(desc(R"({"exec-oob": "query-version"})", {false, true}),
            "The command query-version does not support OOB");
  r = run(R"({"exec-oob": "query-yank", "id": 1})", {false, true});
  EXPECT_EQ((*r)["return"], Json::array());
  // In negotiation mode only qmp_capabilities exists.
  r = run(R"({"execute": "query-version"})", {true, false});
  EXPECT_EQ((*r)["error"]["class"], "CommandNotFound");
}

TEST_F(Dispatch, ArgumentErrors) {
  EXPECT_EQ(desc(R"({"execute": "query-version", "arguments": {"a": 1}})"),
            "Parameter 'a' is unexpected");
  EXPECT_EQ(desc(R"({"execute": "remove-fd", "arguments": {}})"),
            "Parameter 'fdset-id' is missing");
  EXPECT_EQ(
      desc(R"({"execute": "yank", "arguments": {"instances": [{"type": "chardev", "id": "x"}]}})"),
      "Instance not found");
}

TEST_F(Dispatch, CommandsNeedingAMonitorRefuseTheCommandLine) {
  EXPECT_EQ(desc(R"({"execute": "getfd", "arguments": {"fdname": "x"}})"),
            "This command is only available in a QMP monitor");
}

}  // namespace
}  // namespace vstord
