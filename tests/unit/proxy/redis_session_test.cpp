// One Redis client as tunneld follows it: outstanding replies and request boundaries across
// pipelines, pushes and attributes; session state recorded only once acknowledged (MULTI at
// EXEC, RESET and QUIT); the pinning rules command by command; the replay a move would send.

#include "proxy/redis_session.hpp"

#include <algorithm>
#include <gtest/gtest.h>
#include <initializer_list>
#include <string>
#include <vector>

namespace tunneld::proxy {
namespace {

/// RESP array of bulk strings, as client libraries send.
std::string command(std::initializer_list<std::string_view> words)
{
    std::string out = "*" + std::to_string(words.size()) + "\r\n";
    for (auto w : words)
        out += "$" + std::to_string(w.size()) + "\r\n" + std::string(w) + "\r\n";
    return out;
}

const std::string ok = "+OK\r\n";
const std::string queued = "+QUEUED\r\n";

TEST(RespSession, CountsOutstandingRepliesAcrossAPipeline)
{
    redis_session s;
    EXPECT_TRUE(s.movable());
    s.observe_client(command({"GET", "a"}) + command({"GET", "b"}) + command({"SET", "c", "1"}));
    EXPECT_EQ(s.outstanding(), 3u);
    EXPECT_FALSE(s.at_request_boundary());
    s.observe_backend("$1\r\n1\r\n$-1\r\n");
    EXPECT_EQ(s.outstanding(), 1u);
    s.observe_backend(ok);
    EXPECT_EQ(s.outstanding(), 0u);
    EXPECT_TRUE(s.at_request_boundary());
    EXPECT_TRUE(s.movable());
}

TEST(RespSession, PartialRequestOrReplyIsNoBoundary)
{
    redis_session s;
    s.observe_client("*2\r\n$3\r\nGET");
    EXPECT_FALSE(s.at_request_boundary());
    s.observe_client("\r\n$1\r\na\r\n");
    s.observe_backend("$5\r\nhel");
    EXPECT_FALSE(s.at_request_boundary());
    s.observe_backend("lo\r\n");
    EXPECT_TRUE(s.at_request_boundary());
}

TEST(RespSession, OnClientBytesStopsAtEachRequestEnd)
{
    // What the hold needs: forward up to a request's end, keep the rest.
    redis_session s;
    const std::string two = command({"PING"}) + command({"GET", "a"});
    const framer_step first = s.on_client_bytes(two);
    EXPECT_TRUE(first.frame_ended);
    EXPECT_EQ(first.consumed, command({"PING"}).size());
    EXPECT_EQ(s.outstanding(), 1u);
    s.observe_backend("+PONG\r\n");
    EXPECT_TRUE(s.movable()) << "the held GET has not been taken";
}

TEST(RespSession, PushesAndAttributesAreNoReplies)
{
    redis_session s;
    s.observe_client(command({"HELLO", "3"}));
    s.observe_backend("%1\r\n$5\r\nproto\r\n:3\r\n");
    EXPECT_EQ(s.state().protocol, 3);
    s.observe_client(command({"GET", "a"}));
    s.observe_backend(">2\r\n$10\r\ninvalidate\r\n*1\r\n$1\r\na\r\n"); // a push: GET still waits
    EXPECT_EQ(s.outstanding(), 1u);
    s.observe_backend("|1\r\n+ttl\r\n:10\r\n"); // an attribute alone: mid reply
    EXPECT_FALSE(s.at_request_boundary());
    s.observe_backend("$1\r\nx\r\n");
    EXPECT_EQ(s.outstanding(), 0u);
    EXPECT_TRUE(s.at_request_boundary());
}

TEST(RespSession, EmptyRequestsAreNotAnswered)
{
    redis_session s;
    s.observe_client("*0\r\n\r\n   \n");
    EXPECT_EQ(s.outstanding(), 0u);
    s.observe_client("PING\r\n");
    EXPECT_EQ(s.outstanding(), 1u);
}

TEST(RespSession, StateIsRecordedOnlyWhenAcknowledged)
{
    redis_session s;
    s.observe_client(command({"AUTH", "wrong"}));
    s.observe_backend("-WRONGPASS invalid username-password pair or user is disabled.\r\n");
    EXPECT_FALSE(s.state().authenticated);
    s.observe_client(command({"SELECT", "99"}));
    s.observe_backend("-ERR DB index is out of range\r\n");
    EXPECT_EQ(s.state().db, 0);
    // A pipeline, as go-redis sends when it connects.
    s.observe_client(command({"AUTH", "app", "pw"}) + command({"SELECT", "3"}) +
                     command({"CLIENT", "SETNAME", "w1"}));
    EXPECT_FALSE(s.state().authenticated);
    EXPECT_EQ(s.state().db, 0);
    s.observe_backend(ok + ok);
    EXPECT_TRUE(s.state().authenticated);
    EXPECT_EQ(s.state().user.view(), "app");
    EXPECT_EQ(s.state().password.view(), "pw");
    EXPECT_EQ(s.state().db, 3);
    EXPECT_TRUE(s.state().name.empty());
    s.observe_backend(ok);
    EXPECT_EQ(s.state().name.view(), "w1");
    EXPECT_TRUE(s.movable());
}

TEST(RespSession, HelloRecordsProtocolAuthAndName)
{
    redis_session s;
    s.observe_client(command({"hello", "3", "auth", "default", "pw", "setname", "n1"}));
    s.observe_backend("%1\r\n$5\r\nproto\r\n:3\r\n");
    EXPECT_EQ(s.state().protocol, 3);
    EXPECT_TRUE(s.state().authenticated);
    EXPECT_EQ(s.state().password.view(), "pw");
    EXPECT_EQ(s.state().name.view(), "n1");

    redis_session refused;
    refused.observe_client(command({"HELLO", "3", "AUTH", "default", "bad"}));
    refused.observe_backend("-WRONGPASS invalid\r\n");
    EXPECT_EQ(refused.state().protocol, 2);
    EXPECT_FALSE(refused.state().authenticated);
}

TEST(RespSession, AllowlistIsRecorded)
{
    redis_session s;
    s.observe_client(command({"CLIENT", "SETINFO", "LIB-NAME", "redis-py"}) +
                     command({"CLIENT", "SETINFO", "lib-ver", "5.0.1"}) +
                     command({"CLIENT", "NO-EVICT", "on"}) + command({"CLIENT", "NO-TOUCH", "ON"}));
    s.observe_backend(ok + ok + ok + ok);
    EXPECT_EQ(s.state().lib_name.view(), "redis-py");
    EXPECT_EQ(s.state().lib_ver.view(), "5.0.1");
    EXPECT_TRUE(s.state().no_evict);
    EXPECT_TRUE(s.state().no_touch);
    s.observe_client(command({"CLIENT", "NO-EVICT", "OFF"}));
    s.observe_backend(ok);
    EXPECT_FALSE(s.state().no_evict);
}

TEST(RespSession, InlineCommandsAreFollowedToo)
{
    redis_session s;
    s.observe_client("SELECT 5\r\nclient setname inline-client\n");
    s.observe_backend(ok + ok);
    EXPECT_EQ(s.state().db, 5);
    EXPECT_EQ(s.state().name.view(), "inline-client");
}

TEST(RespSession, SelectInsideMultiCountsAtExec)
{
    redis_session s;
    s.observe_client(command({"MULTI"}) + command({"SET", "k", "v"}) + command({"SELECT", "3"}) +
                     command({"CLIENT", "SETNAME", "tx"}) + command({"EXEC"}));
    s.observe_backend(ok + queued + queued + queued);
    EXPECT_EQ(s.state().db, 0) << "queued, not run";
    EXPECT_EQ(s.pinned(), pin_reason::transaction);
    s.observe_backend("*3\r\n+OK\r\n+OK\r\n+OK\r\n");
    EXPECT_EQ(s.state().db, 3);
    EXPECT_EQ(s.state().name.view(), "tx");
    EXPECT_EQ(s.pinned(), pin_reason::none);
    EXPECT_TRUE(s.movable());
}

TEST(RespSession, QueuedSelectThatFailedInExecCountsNot)
{
    redis_session s;
    s.observe_client(command({"MULTI"}) + command({"SELECT", "3"}) + command({"SELECT", "4"}) +
                     command({"EXEC"}));
    s.observe_backend(ok + queued + queued + "*2\r\n+OK\r\n-ERR DB index is out of range\r\n");
    EXPECT_EQ(s.state().db, 3);
}

TEST(RespSession, AbortedOrDiscardedTransactionsChangeNothing)
{
    const std::vector<std::string> endings = {
        "*-1\r\n", // a WATCHed key changed (RESP2)
        "_\r\n",   // the same in RESP3
        "-EXECABORT Transaction discarded because of previous errors.\r\n",
    };
    for (const auto& ending : endings) {
        redis_session s;
        s.observe_client(command({"MULTI"}) + command({"SELECT", "3"}) + command({"EXEC"}));
        s.observe_backend(ok + queued + ending);
        EXPECT_EQ(s.state().db, 0) << ending;
        EXPECT_TRUE(s.movable()) << ending;
    }
    redis_session s;
    s.observe_client(command({"MULTI"}) + command({"SELECT", "3"}) + command({"DISCARD"}));
    s.observe_backend(ok + queued + ok);
    EXPECT_EQ(s.state().db, 0);
    EXPECT_TRUE(s.movable());
}

TEST(RespSession, RefusedMultiRunsWhatFollowsAtOnce)
{
    redis_session s;
    s.observe_client(command({"MULTI"}) + command({"SELECT", "2"}));
    s.observe_backend("-NOAUTH Authentication required.\r\n" + ok);
    EXPECT_EQ(s.state().db, 2);
    EXPECT_EQ(s.pinned(), pin_reason::none);
}

TEST(RespSession, ResetClearsStateAndWipesThePassword)
{
    redis_session s;
    s.observe_client(command({"AUTH", "hunter2"}) + command({"SELECT", "3"}) + command({"HELLO", "3"}));
    s.observe_backend(ok + ok + "%1\r\n$5\r\nproto\r\n:3\r\n");
    ASSERT_EQ(s.state().password.view(), "hunter2");
    s.observe_client(command({"SUBSCRIBE", "ch"}));
    s.observe_backend(">3\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n:1\r\n");
    EXPECT_EQ(s.pinned(), pin_reason::subscribed);
    s.observe_client(command({"RESET"}) + command({"GET", "a"}));
    s.observe_backend("+RESET\r\n");
    EXPECT_EQ(s.pinned(), pin_reason::none);
    EXPECT_EQ(s.outstanding(), 1u) << "GET, sent after RESET, is still outstanding";
    EXPECT_FALSE(s.state().authenticated);
    EXPECT_EQ(s.state().db, 0);
    EXPECT_EQ(s.state().protocol, 2);
    const auto buffer = s.state().password.buffer();
    EXPECT_TRUE(std::all_of(buffer.begin(), buffer.end(), [](char c) { return c == 0; }));
    s.observe_backend("$-1\r\n");
    EXPECT_TRUE(s.movable());
}

TEST(RespSession, ResetAfterMonitorResynchronisesCounting)
{
    redis_session s;
    s.observe_client(command({"MONITOR"}));
    s.observe_backend(
        ok + "+1700000000.1 [0 127.0.0.1:1] \"get\" \"a\"\r\n+1700000000.2 [0 127.0.0.1:1] \"ping\"\r\n");
    EXPECT_EQ(s.pinned(), pin_reason::monitor);
    s.observe_client(command({"RESET"}));
    s.observe_backend("+1700000000.3 [0 127.0.0.1:1] \"set\" \"b\"\r\n+RESET\r\n");
    EXPECT_TRUE(s.movable());
    EXPECT_EQ(s.unknown_cause(), unknown_state_cause::none);
}

TEST(RespSession, QuitPinsForGood)
{
    redis_session s;
    s.observe_client(command({"QUIT"}));
    s.observe_backend(ok);
    EXPECT_EQ(s.pinned(), pin_reason::quitting);
}

struct pin_case {
    std::string name;
    std::vector<std::string> requests;
    std::string reply;        ///< the server's answer to all of them
    pin_reason while_waiting; ///< before the answer
    pin_reason after;         ///< once answered
};

TEST(RespSession, PinningRulesCommandByCommand)
{
    using p = pin_reason;
    const std::vector<pin_case> table = {
        {"GET", {command({"GET", "k"})}, "$-1\r\n", p::none, p::none},
        {"MULTI", {command({"MULTI"})}, ok, p::transaction, p::transaction},
        {"MULTI EXEC",
         {command({"MULTI"}), command({"INCR", "k"}), command({"EXEC"})},
         ok + queued + "*1\r\n:1\r\n",
         p::transaction,
         p::none},
        {"WATCH", {command({"WATCH", "k"})}, ok, p::watch, p::watch},
        {"WATCH UNWATCH", {command({"WATCH", "k"}), command({"UNWATCH"})}, ok + ok, p::watch, p::none},
        {"WATCH MULTI EXEC",
         {command({"WATCH", "k"}), command({"MULTI"}), command({"EXEC"})},
         ok + ok + "*0\r\n",
         p::transaction,
         p::none},
        {"SUBSCRIBE",
         {command({"SUBSCRIBE", "a", "b"})},
         "*3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n*3\r\n$9\r\nsubscribe\r\n$1\r\nb\r\n:2\r\n",
         p::subscribed,
         p::subscribed},
        {"PSUBSCRIBE",
         {command({"PSUBSCRIBE", "a*"})},
         "*3\r\n$10\r\npsubscribe\r\n$2\r\na*\r\n:1\r\n",
         p::subscribed,
         p::subscribed},
        {"SSUBSCRIBE",
         {command({"SSUBSCRIBE", "s"})},
         "*3\r\n$10\r\nssubscribe\r\n$1\r\ns\r\n:1\r\n",
         p::subscribed,
         p::subscribed},
        {"MONITOR", {command({"MONITOR"})}, ok, p::monitor, p::monitor},
        {"CLIENT TRACKING ON", {command({"CLIENT", "TRACKING", "on"})}, ok, p::tracking, p::tracking},
        {"CLIENT TRACKING refused",
         {command({"CLIENT", "TRACKING", "ON", "REDIRECT", "99"})},
         "-ERR The client ID you want redirect to does not exist\r\n",
         p::tracking,
         p::none},
        {"CLIENT TRACKING ON OFF",
         {command({"CLIENT", "TRACKING", "ON"}), command({"CLIENT", "TRACKING", "OFF"})},
         ok + ok,
         p::tracking,
         p::none},
        {"BLPOP", {command({"BLPOP", "q", "2"})}, "*-1\r\n", p::blocking_command, p::none},
        {"BRPOP",
         {command({"brpop", "q", "0"})},
         "*2\r\n$1\r\nq\r\n$1\r\nx\r\n",
         p::blocking_command,
         p::none},
        {"BLMOVE",
         {command({"BLMOVE", "a", "b", "LEFT", "RIGHT", "1"})},
         "$-1\r\n",
         p::blocking_command,
         p::none},
        {"BRPOPLPUSH", {command({"BRPOPLPUSH", "a", "b", "1"})}, "$-1\r\n", p::blocking_command, p::none},
        {"BZPOPMIN", {command({"BZPOPMIN", "z", "1"})}, "*-1\r\n", p::blocking_command, p::none},
        {"BZPOPMAX", {command({"BZPOPMAX", "z", "1"})}, "*-1\r\n", p::blocking_command, p::none},
        {"BLMPOP", {command({"BLMPOP", "1", "1", "a", "LEFT"})}, "*-1\r\n", p::blocking_command, p::none},
        {"BZMPOP", {command({"BZMPOP", "1", "1", "z", "MIN"})}, "*-1\r\n", p::blocking_command, p::none},
        {"XREAD BLOCK",
         {command({"XREAD", "COUNT", "1", "BLOCK", "2000", "STREAMS", "s", "$"})},
         "*-1\r\n",
         p::blocking_command,
         p::none},
        {"XREAD", {command({"XREAD", "STREAMS", "s", "0"})}, "*-1\r\n", p::none, p::none},
        {"XREAD BLOCK is a key", {command({"XREAD", "STREAMS", "BLOCK", "0"})}, "*-1\r\n", p::none, p::none},
        {"XREADGROUP BLOCK",
         {command(
             {"XREADGROUP", "GROUP", "g", "c", "COUNT", "1", "NOACK", "BLOCK", "0", "STREAMS", "s", ">"})},
         "*-1\r\n",
         p::blocking_command,
         p::none},
        {"WAIT", {command({"WAIT", "1", "100"})}, ":1\r\n", p::blocking_command, p::none},
        {"WAITAOF",
         {command({"WAITAOF", "1", "0", "100"})},
         "*2\r\n:1\r\n:0\r\n",
         p::blocking_command,
         p::none},
        {"BLPOP inside MULTI",
         {command({"MULTI"}), command({"BLPOP", "q", "0"}), command({"EXEC"})},
         ok + queued + "*1\r\n*-1\r\n",
         p::transaction,
         p::none},
        {"CLIENT REPLY OFF", {command({"CLIENT", "REPLY", "OFF"})}, "", p::reply_off, p::reply_off},
        {"CLIENT REPLY SKIP",
         {command({"CLIENT", "REPLY", "SKIP"}), command({"GET", "k"})},
         "",
         p::reply_off,
         p::reply_off},
        {"CLIENT REPLY ON", {command({"CLIENT", "REPLY", "ON"})}, ok, p::none, p::none},
        {"QUIT", {command({"QUIT"})}, ok, p::quitting, p::quitting},
        {"garbage", {"*1\r\n+GET\r\n"}, "", p::not_resp, p::not_resp},
        {"quoted inline", {"SELECT \"3\"\r\n"}, ok, p::state_unknown, p::state_unknown},
        {"name too long",
         {command({"CLIENT", "SETNAME", std::string(600, 'n')})},
         ok,
         p::state_unknown,
         p::state_unknown},
        {"AUTH inside MULTI",
         {command({"MULTI"}), command({"AUTH", "pw"})},
         ok + queued,
         p::state_unknown,
         p::state_unknown},
    };
    for (const auto& c : table) {
        redis_session s;
        for (const auto& r : c.requests)
            s.observe_client(r);
        EXPECT_EQ(s.pinned(), c.while_waiting) << c.name << ": " << to_string(s.pinned());
        s.observe_backend(c.reply);
        EXPECT_EQ(s.pinned(), c.after) << c.name << ": " << to_string(s.pinned());
        if (c.after == p::none) {
            EXPECT_TRUE(s.movable()) << c.name;
        }
    }
}

TEST(RespSession, CanHoldWhereOnlyRepliesAreAwaited)
{
    // Holding the next request is safe when what pins the client ends by replies alone.
    redis_session s;
    EXPECT_TRUE(s.can_hold());
    s.observe_client(command({"GET", "a"}));
    EXPECT_TRUE(s.can_hold()) << "a plain reply outstanding";
    EXPECT_FALSE(s.movable());
    s.observe_backend("$-1\r\n");

    s.observe_client("*2\r\n$3\r\nGET");
    EXPECT_FALSE(s.can_hold()) << "mid-request";
    s.observe_client("\r\n$1\r\na\r\n");
    s.observe_backend("$-1\r\n");

    s.observe_client(command({"BRPOP", "jobs", "2"}));
    EXPECT_EQ(s.pinned(), pin_reason::blocking_command);
    EXPECT_TRUE(s.can_hold()) << "BRPOP's answer unpins it";
    s.observe_backend("*-1\r\n");
    EXPECT_TRUE(s.movable());
}

TEST(RespSession, CanHoldNotInsideAnOpenTransaction)
{
    redis_session s;
    s.observe_client(command({"MULTI"}) + command({"SET", "a", "1"}));
    EXPECT_FALSE(s.can_hold()) << "holding would keep EXEC from being sent";
    s.observe_backend(ok + queued);
    EXPECT_FALSE(s.can_hold());
    s.observe_client(command({"EXEC"}));
    EXPECT_EQ(s.pinned(), pin_reason::transaction);
    EXPECT_TRUE(s.can_hold()) << "EXEC sent: its answer unpins it";
    s.observe_backend("*1\r\n+OK\r\n");
    EXPECT_TRUE(s.movable());

    s.observe_client(command({"WATCH", "a"}));
    s.observe_backend(ok);
    EXPECT_EQ(s.pinned(), pin_reason::watch);
    EXPECT_FALSE(s.can_hold());
    s.observe_client(command({"MULTI"}) + command({"INCR", "a"}) + command({"EXEC"}));
    EXPECT_TRUE(s.can_hold());
    s.observe_backend(ok + queued + "*1\r\n:2\r\n");
    EXPECT_TRUE(s.movable());
}

TEST(RespSession, LastingPinsAreNotHeld)
{
    redis_session s;
    s.observe_client(command({"SUBSCRIBE", "news"}));
    s.observe_backend("*3\r\n$9\r\nsubscribe\r\n$4\r\nnews\r\n:1\r\n");
    EXPECT_EQ(s.pinned(), pin_reason::subscribed);
    EXPECT_FALSE(s.can_hold());
    EXPECT_TRUE(pin_lasts(pin_reason::subscribed));
    EXPECT_TRUE(pin_lasts(pin_reason::not_resp));
    EXPECT_TRUE(pin_lasts(pin_reason::tracking));
    EXPECT_FALSE(pin_lasts(pin_reason::none));
    EXPECT_FALSE(pin_lasts(pin_reason::transaction));
    EXPECT_FALSE(pin_lasts(pin_reason::watch));
    EXPECT_FALSE(pin_lasts(pin_reason::blocking_command));
}

TEST(RespSession, BackendGarbageIsNotResp)
{
    redis_session s;
    s.observe_client(command({"GET", "a"}));
    s.observe_backend("HTTP/1.1 400 Bad Request\r\n");
    EXPECT_EQ(s.pinned(), pin_reason::not_resp);
    EXPECT_EQ(s.backend_error(), resp_error::bad_type);
    // The pump keeps flowing: every byte is taken.
    EXPECT_EQ(s.on_backend_bytes("more").consumed, 4u);
}

TEST(RespSession, TooManyStateCommandsInFlightLeaveTheStateUnknown)
{
    redis_session s;
    s.observe_client(command({"CLIENT", "SETNAME", "a"}) + command({"CLIENT", "SETNAME", "b"}));
    EXPECT_EQ(s.pinned(), pin_reason::state_unknown);
    EXPECT_EQ(s.unknown_cause(), unknown_state_cause::too_many_in_flight);

    redis_session many;
    for (int i = 0; i < 17; ++i)
        many.observe_client(command({"SELECT", "1"}));
    EXPECT_EQ(many.unknown_cause(), unknown_state_cause::too_many_in_flight);
}

TEST(RespSession, ReplayOfAFollowedClient)
{
    redis_session s;
    s.observe_client(command({"HELLO", "3", "AUTH", "app", "pw"}) + command({"SELECT", "3"}) +
                     command({"CLIENT", "SETNAME", "worker"}));
    s.observe_backend("%1\r\n$5\r\nproto\r\n:3\r\n" + ok + ok);
    const replay r = s.make_replay();
    ASSERT_EQ(r.steps().size(), 3u);
    EXPECT_EQ(r.bytes(), command({"HELLO", "3", "AUTH", "app", "pw"}) + command({"SELECT", "3"}) +
                             command({"CLIENT", "SETNAME", "worker"}));
}

TEST(RespSession, EverySplitGivesTheSameState)
{
    const std::string requests = command({"AUTH", "u", "p"}) + "SELECT 3\r\n" + command({"MULTI"}) +
                                 command({"CLIENT", "SETNAME", "x"}) + command({"EXEC"}) +
                                 command({"GET", "a"});
    const std::string replies = ok + ok + ok + queued + "*1\r\n+OK\r\n" + "|1\r\n+a\r\n+b\r\n$1\r\nv\r\n";
    for (std::size_t cut = 0; cut <= requests.size(); ++cut) {
        redis_session s;
        s.observe_client(std::string_view(requests).substr(0, cut));
        s.observe_client(std::string_view(requests).substr(cut));
        for (std::size_t i = 0; i < replies.size(); ++i)
            s.observe_backend(std::string_view(replies).substr(i, 1));
        EXPECT_TRUE(s.movable()) << cut;
        EXPECT_EQ(s.state().db, 3);
        EXPECT_EQ(s.state().name.view(), "x");
        EXPECT_EQ(s.state().password.view(), "p");
    }
}

} // namespace
} // namespace tunneld::proxy
