// The replay of a Redis session state: HELLO 3 first, then AUTH, SELECT, CLIENT SETNAME and the
// allowlist, RESP-encoded; the password never shows in to_string and its buffers are wiped.

#include "proxy/redis_state.hpp"

#include <algorithm>
#include <gtest/gtest.h>
#include <new>
#include <vector>

namespace tunneld::proxy {
namespace {

std::vector<std::string> commands_of(const replay& r)
{
    std::vector<std::string> out;
    for (const auto& step : r.steps())
        out.emplace_back(r.bytes(step));
    return out;
}

bool all_zero(std::span<const char> bytes)
{
    return std::all_of(bytes.begin(), bytes.end(), [](char c) { return c == 0; });
}

TEST(RespReplay, FreshConnectionReplaysNothing)
{
    session_state state;
    const replay r = make_replay(state);
    EXPECT_TRUE(r.empty());
    EXPECT_EQ(r.bytes(), "");
}

TEST(RespReplay, Resp2OrderAuthSelectNameThenAllowlist)
{
    session_state state;
    state.authenticated = true;
    state.password.assign("s3cret");
    state.db = 3;
    state.name.assign("worker-1");
    state.lib_name.assign("redis-py");
    state.lib_ver.assign("5.0.1");
    state.no_evict = true;
    state.no_touch = true;
    const replay r = make_replay(state);
    EXPECT_EQ(commands_of(r),
              (std::vector<std::string>{
                  "*2\r\n$4\r\nAUTH\r\n$6\r\ns3cret\r\n",
                  "*2\r\n$6\r\nSELECT\r\n$1\r\n3\r\n",
                  "*3\r\n$6\r\nCLIENT\r\n$7\r\nSETNAME\r\n$8\r\nworker-1\r\n",
                  "*4\r\n$6\r\nCLIENT\r\n$7\r\nSETINFO\r\n$8\r\nLIB-NAME\r\n$8\r\nredis-py\r\n",
                  "*4\r\n$6\r\nCLIENT\r\n$7\r\nSETINFO\r\n$7\r\nLIB-VER\r\n$5\r\n5.0.1\r\n",
                  "*3\r\n$6\r\nCLIENT\r\n$8\r\nNO-EVICT\r\n$2\r\nON\r\n",
                  "*3\r\n$6\r\nCLIENT\r\n$8\r\nNO-TOUCH\r\n$2\r\nON\r\n",
              }));
    std::string all;
    for (const auto& c : commands_of(r))
        all += c;
    EXPECT_EQ(r.bytes(), all);
    EXPECT_EQ(r.steps()[0].command, replay_command::auth);
    EXPECT_EQ(r.steps()[2].command, replay_command::client_setname);
}

TEST(RespReplay, TwoArgumentAuthKeepsTheUser)
{
    session_state state;
    state.authenticated = true;
    state.auth_with_user = true;
    state.user.assign("app");
    state.password.assign("pw");
    EXPECT_EQ(commands_of(make_replay(state)),
              std::vector<std::string>{"*3\r\n$4\r\nAUTH\r\n$3\r\napp\r\n$2\r\npw\r\n"});
}

TEST(RespReplay, EmptyValuesAreEncodedToo)
{
    session_state state;
    state.authenticated = true; // a server whose password is "" accepted AUTH ""
    EXPECT_EQ(commands_of(make_replay(state)), std::vector<std::string>{"*2\r\n$4\r\nAUTH\r\n$0\r\n\r\n"});
}

TEST(RespReplay, Hello3ComesFirstAndAuthenticates)
{
    session_state state;
    state.protocol = 3;
    state.authenticated = true;
    state.password.assign("pw"); // AUTH pw: the default user
    state.db = -1;               // whatever the server accepted is replayed as it was
    const replay r = make_replay(state);
    ASSERT_EQ(r.steps().size(), 2u);
    EXPECT_EQ(r.steps()[0].command, replay_command::hello);
    EXPECT_EQ(r.bytes(r.steps()[0]),
              "*5\r\n$5\r\nHELLO\r\n$1\r\n3\r\n$4\r\nAUTH\r\n$7\r\ndefault\r\n$2\r\npw\r\n");
    EXPECT_EQ(r.bytes(r.steps()[1]), "*2\r\n$6\r\nSELECT\r\n$2\r\n-1\r\n");

    session_state anonymous;
    anonymous.protocol = 3;
    EXPECT_EQ(commands_of(make_replay(anonymous)),
              std::vector<std::string>{"*2\r\n$5\r\nHELLO\r\n$1\r\n3\r\n"});
}

reply_view answer(resp_type type, std::string_view head = {})
{
    reply_view r;
    r.type = type;
    r.head = head;
    return r;
}

TEST(RespReplay, AcceptedAnswers)
{
    const replay_step hello{replay_command::hello, 0, 0};
    const replay_step select{replay_command::select, 0, 0};
    EXPECT_TRUE(replay_accepted(hello, answer(resp_type::map)));
    EXPECT_FALSE(replay_accepted(hello, answer(resp_type::simple_error, "NOAUTH x")));
    EXPECT_TRUE(replay_accepted(select, answer(resp_type::simple_string, "OK")));
    EXPECT_FALSE(replay_accepted(select, answer(resp_type::simple_error, "ERR DB index")));
    EXPECT_FALSE(replay_accepted(select, answer(resp_type::simple_string, "QUEUED")));
}

TEST(RespReplay, MovedReplayLeavesAnEmptyOne)
{
    session_state state;
    state.db = 2;
    replay a = make_replay(state);
    replay b = std::move(a);
    EXPECT_EQ(b.steps().size(), 1u);
    EXPECT_TRUE(a.empty());   // NOLINT(bugprone-use-after-move): moved-from is empty by contract
    EXPECT_EQ(a.bytes(), ""); // NOLINT(bugprone-use-after-move)
}

TEST(RespSessionState, ToStringNeverShowsThePassword)
{
    session_state state;
    state.authenticated = true;
    state.auth_with_user = true;
    state.user.assign("app");
    state.password.assign("hunter2-very-secret");
    state.name.assign("worker");
    const std::string text = to_string(state);
    EXPECT_EQ(text.find("hunter2"), std::string::npos) << text;
    EXPECT_NE(text.find("auth=yes"), std::string::npos) << text;
    EXPECT_NE(text.find("user=app"), std::string::npos) << text;
    EXPECT_NE(text.find("name=\"worker\""), std::string::npos) << text;
}

TEST(RespSessionState, ResetWipesThePassword)
{
    session_state state;
    state.authenticated = true;
    state.password.assign("hunter2");
    state.db = 4;
    state.name.assign("n");
    state.lib_name.assign("redis-py");
    state.reset();
    EXPECT_TRUE(all_zero(state.password.buffer()));
    EXPECT_FALSE(state.authenticated);
    EXPECT_EQ(state.db, 0);
    EXPECT_TRUE(state.name.empty());
    EXPECT_EQ(state.lib_name.view(), "redis-py"); // RESET keeps the library's name, as Redis does
}

TEST(RespSecretText, ReplacedOrTakenIsWiped)
{
    secret_text<16> a;
    a.assign("0123456789abcdef");
    a.assign("xy");
    EXPECT_EQ(a.view(), "xy");
    EXPECT_TRUE(all_zero(a.buffer().subspan(2))) << "the longer old secret is gone";
    EXPECT_FALSE(a.assign("this is longer than sixteen"));
    EXPECT_EQ(a.view(), "xy");

    secret_text<16> b;
    b.take(a);
    EXPECT_EQ(b.view(), "xy");
    EXPECT_TRUE(all_zero(a.buffer()));
}

TEST(RespSecretText, DestroyedIsWiped)
{
    // The object lives in storage this test owns, so its bytes can be read after its destructor.
    alignas(secret_text<32>) unsigned char storage[sizeof(secret_text<32>)];
    auto* secret = new (storage) secret_text<32>();
    secret->assign("hunter2hunter2");
    secret->~secret_text();
    // The bytes come first in the object; its length field may keep its value (a dead store the
    // compiler may drop, and no secret).
    EXPECT_TRUE(
        std::all_of(std::begin(storage), std::begin(storage) + 32, [](unsigned char c) { return c == 0; }));
}

} // namespace
} // namespace tunneld::proxy
