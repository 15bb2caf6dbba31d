#include "tools/tunnelctl_format.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace tunneld::tools {
namespace {

using json = nlohmann::json;
using ::testing::HasSubstr;
using ::testing::Not;

json service(std::string name, std::string active, json lag, std::string old_via = "",
             std::string new_via = "vpc")
{
    return {
        {"name", name},
        {"kind", "redis"},
        {"listen", "127.0.0.1:6379"},
        {"active", active},
        {"split_percent", 0},
        {"sticky", false},
        {"state", "serving"},
        {"connections", {{"old", 3}, {"new", 0}}},
        {"old", {{"address", "10.0.1.20:6379"}, {"via", old_via.empty() ? json(nullptr) : json(old_via)}}},
        {"new", {{"address", "10.8.1.20:6379"}, {"via", new_via.empty() ? json(nullptr) : json(new_via)}}},
        {"lag", lag},
        {"fenced", false}};
}

json tunnel(std::string name, unsigned sessions, unsigned up)
{
    return {{"name", name},           {"address", "203.0.113.10:22"},
            {"sessions", sessions},   {"sessions_up", up},
            {"channels", 5},          {"bytes_up", 1536},
            {"bytes_down", 5u << 20}, {"reconnects", 1},
            {"last_error", ""},       {"since_last_receive_ms", 1200}};
}

json lag(std::uint64_t bytes, std::string link = "up")
{
    return {{"bytes", bytes}, {"seconds", 0.0}, {"link", link}};
}

TEST(HumanSize, BinaryUnitsWithOneDecimal)
{
    EXPECT_EQ(human_size(0), "0B");
    EXPECT_EQ(human_size(1023), "1023B");
    EXPECT_EQ(human_size(1024), "1.0KiB");
    EXPECT_EQ(human_size(1536), "1.5KiB");
    EXPECT_EQ(human_size(4404019), "4.2MiB");
    EXPECT_EQ(human_size(3ull << 30), "3.0GiB");
    EXPECT_EQ(human_size(~0ull), "16.0EiB");
}

TEST(HumanAge, PicksAUnit)
{
    EXPECT_EQ(human_age(120), "120ms");
    EXPECT_EQ(human_age(3400), "3.4s");
    EXPECT_EQ(human_age(312'000), "5m12s");
    EXPECT_EQ(human_age(7'380'000), "2h3m");
}

TEST(FormatTable, AlignsColumnsWithoutTrailingBlanks)
{
    EXPECT_EQ(format_table({{"A", "BB", "C"}, {"aaa", "b", ""}}), "A    BB  C\naaa  b\n");
}

TEST(FormatServices, OneRowPerService)
{
    auto split = service("app", "split", lag(0));
    split["split_percent"] = 30;
    split["sticky"] = true;
    split["kind"] = "tcp";
    split["lag"] = {{"bytes", nullptr}, {"seconds", nullptr}, {"link", "unknown"}};
    const auto text = format_services(json::array({service("redis", "old", lag(2 << 20)), split}));
    EXPECT_EQ(text,
              "SERVICE  KIND   LISTEN          ACTIVE            STATE    OLD  NEW  LAG     LINK     FENCED\n"
              "redis    redis  127.0.0.1:6379  old               serving  3    0    2.0MiB  up       no\n"
              "app      tcp    127.0.0.1:6379  split 30% sticky  serving  3    0    -       unknown  no\n");
}

TEST(FormatServices, SurvivesMissingFields)
{
    EXPECT_EQ(format_services(json::array({json::object(), 5})),
              "SERVICE  KIND  LISTEN  ACTIVE  STATE  OLD  NEW  LAG  LINK  FENCED\n"
              "-        -     -       -       -      -    -    -    -     -\n"
              "-        -     -       -       -      -    -    -    -     -\n");
    EXPECT_EQ(format_services("junk"), "SERVICE  KIND  LISTEN  ACTIVE  STATE  OLD  NEW  LAG  LINK  FENCED\n");
}

TEST(FormatTunnels, OneRowPerTunnel)
{
    auto broken = tunnel("dc2", 2, 0);
    broken["last_error"] = "connect: Connection refused";
    broken.erase("since_last_receive_ms");
    EXPECT_EQ(
        format_tunnels(json::array({tunnel("vpc", 2, 2), broken})),
        "TUNNEL  ADDRESS          SESSIONS  CHANNELS  BYTES_UP  BYTES_DOWN  RECONNECTS  LAST_RX  LAST_ERROR\n"
        "vpc     203.0.113.10:22  2/2       5         1.5KiB    5.0MiB      1           1.2s     -\n"
        "dc2     203.0.113.10:22  0/2       5         1.5KiB    5.0MiB      1           -        connect: "
        "Connection refused\n");
}

TEST(FormatTunnels, ChannelsShowHowTheyFallOnSessions)
{
    auto vpc = tunnel("vpc", 2, 2);
    vpc["channels"] = 9;
    vpc["by_session"] = json::array({{{"gateway", "203.0.113.10:22"}, {"up", true}, {"channels", 5}, {"loop", 0}},
                                     {{"gateway", "203.0.113.10:22"}, {"up", true}, {"channels", 4}, {"loop", 1}}});
    EXPECT_THAT(format_tunnels(json::array({vpc})), HasSubstr("  2/2       9 (5+4)   "));
    vpc["by_session"].erase(1);
    vpc["channels"] = 5;
    EXPECT_THAT(format_tunnels(json::array({vpc})), HasSubstr("  2/2       5         "));
}

health_report judge(json services, json tunnels, health_thresholds limits = {})
{
    // `{}` in a test means "none".
    if (services.is_null()) services = json::array();
    if (tunnels.is_null()) tunnels = json::array();
    return evaluate_health({{"services", services}, {"tunnels", tunnels}}, limits);
}

TEST(Health, AllWellIsOkWithPerfdata)
{
    auto app = service("app", "new", {{"bytes", nullptr}, {"seconds", nullptr}, {"link", "unknown"}});
    const auto report = judge({service("redis", "old", lag(0)), app}, {tunnel("vpc", 2, 2)});
    EXPECT_EQ(report.state, health_state::ok);
    EXPECT_EQ(report.line, "TUNNELD OK - 2 services serving, 1 tunnel 2/2 sessions | "
                           "redis_lag_bytes=0;1048576;4194304 vpc_sessions_up=2;;;0;2");
}

TEST(Health, LagLevelsAreInclusiveAndOnlyBeforeNew)
{
    EXPECT_EQ(judge({service("redis", "old", lag(1048575))}, {}).state, health_state::ok);
    const auto warning = judge({service("redis", "old", lag(1048576))}, {});
    EXPECT_EQ(warning.state, health_state::warning);
    EXPECT_THAT(warning.line, HasSubstr("TUNNELD WARNING - redis lag 1.0MiB >= 1.0MiB; 1 service serving"));
    EXPECT_EQ(judge({service("redis", "old", lag(4 << 20))}, {}).state, health_state::critical);
    EXPECT_EQ(judge({service("redis", "new", lag(4 << 20))}, {}).state, health_state::ok);
    EXPECT_EQ(judge({service("redis", "old", lag(100))}, {}, {.lag_warning = 10, .lag_critical = 1000}).state,
              health_state::warning);
}

TEST(Health, LinkDownOrUnknownBeforeTheSwitchWarns)
{
    EXPECT_EQ(judge({service("redis", "old", lag(0, "down"))}, {}).state, health_state::warning);
    auto unknown = service("redis", "old", {{"bytes", nullptr}, {"seconds", nullptr}, {"link", "unknown"},
                                            {"detail", "AUTH failed"}});
    const auto warning = judge({unknown}, {});
    EXPECT_EQ(warning.state, health_state::warning);
    EXPECT_THAT(warning.line, HasSubstr("redis lag unknown: AUTH failed"));
}

TEST(Health, AfterTheSwitchTheNewPrimaryHasNoReplicationLink)
{
    // new was promoted: its probe no longer sees a link to old, and that is the healthy state.
    EXPECT_EQ(judge({service("redis", "new", lag(0, "down"))}, {}).state, health_state::ok);
}

TEST(Health, AfterTheSwitchOldThatShouldFollowNewAndDoesNotWarnRollbackNotReady)
{
    auto following = lag(0);
    following["replica"] = "old";
    EXPECT_EQ(judge({service("redis", "new", following)}, {}).state, health_state::ok);
    auto broken = lag(0, "down");
    broken["replica"] = "old";
    broken["detail"] = "old is not a replica";
    const auto warning = judge({service("redis", "new", broken)}, {});
    EXPECT_EQ(warning.state, health_state::warning);
    EXPECT_THAT(warning.line, HasSubstr("redis rollback not ready: old does not follow new (old is not a replica)"));
}

TEST(Health, ActiveTunnelWithoutSessionsIsCritical)
{
    const auto critical = judge({service("redis", "new", lag(0))}, {tunnel("vpc", 2, 0)});
    EXPECT_EQ(critical.state, health_state::critical);
    EXPECT_THAT(critical.line, HasSubstr("tunnel vpc 0/2 sessions up and carries an active side"));
    // A tunnel only the inactive side needs is a warning.
    EXPECT_EQ(judge({service("redis", "old", lag(0))}, {tunnel("vpc", 2, 0)}).state, health_state::warning);
    // Split sends some clients each way.
    auto split = service("app", "split", lag(0));
    split["split_percent"] = 10;
    EXPECT_EQ(judge({split}, {tunnel("vpc", 2, 0)}).state, health_state::critical);
    split["split_percent"] = 0;
    EXPECT_EQ(judge({split}, {tunnel("vpc", 2, 0)}).state, health_state::warning);
}

TEST(Health, SessionsDownLevels)
{
    EXPECT_EQ(judge({}, {tunnel("vpc", 4, 3)}).state, health_state::warning);
    EXPECT_EQ(judge({}, {tunnel("vpc", 4, 3)}, {.sessions_down_warning = 2}).state, health_state::ok);
    EXPECT_EQ(
        judge({}, {tunnel("vpc", 4, 2)}, {.sessions_down_warning = 0, .sessions_down_critical = 2}).state,
        health_state::critical);
}

json two_gateways(std::string first_state, unsigned first_up, unsigned second_up)
{
    auto t = tunnel("vpc", 4, first_up + second_up);
    t["gateways"] = json::array(
        {{{"address", "203.0.113.10:22"}, {"state", first_state}, {"sessions", 2}, {"sessions_up", first_up},
          {"channels", 0}, {"failures", 3}, {"last_error", first_up ? "" : "connection refused"}},
         {{"address", "203.0.113.11:22"}, {"state", "up"}, {"sessions", 2}, {"sessions_up", second_up},
          {"channels", 5}, {"failures", 0}, {"last_error", ""}}});
    return t;
}

TEST(Health, AGatewayDownIsAWarningWhileAnotherCarries)
{
    const auto report = judge({service("redis", "new", lag(0))}, {two_gateways("down", 0, 2)},
                              {.sessions_down_warning = 0});
    EXPECT_EQ(report.state, health_state::warning);
    EXPECT_THAT(report.line, HasSubstr("tunnel vpc gateway 203.0.113.10:22 down (connection refused)"));
    EXPECT_THAT(report.line, HasSubstr("vpc_gateways_up=1;;;0;2"));
    EXPECT_EQ(judge({service("redis", "new", lag(0))}, {two_gateways("up", 2, 2)}).state, health_state::ok);
    // No gateway up while the tunnel carries the active side: CRITICAL as with one gateway.
    auto none = two_gateways("down", 0, 0);
    none["gateways"][1]["state"] = "down";
    EXPECT_EQ(judge({service("redis", "new", lag(0))}, {none}).state, health_state::critical);
}

TEST(FormatTunnels, SeveralGatewaysGetARowEach)
{
    const auto text = format_tunnels(json::array({tunnel("dc2", 2, 2), two_gateways("down", 0, 2)}));
    EXPECT_THAT(text, HasSubstr("TUNNEL  GATEWAY          STATE  SESSIONS  CHANNELS  FAILURES  LAST_ERROR\n"
                                "vpc     203.0.113.10:22  down   0/2       0         3         connection refused\n"
                                "vpc     203.0.113.11:22  up     2/2       5         0         -\n"));
    EXPECT_THAT(text, Not(HasSubstr("dc2     203.0.113.10:22  up")));
}

TEST(Health, MalformedStatusIsUnknown)
{
    EXPECT_EQ(evaluate_health(json::array(), {}).state, health_state::unknown);
    EXPECT_EQ(evaluate_health({{"services", 1}}, {}).state, health_state::unknown);
    EXPECT_EQ(unknown_health("cannot connect").line, "TUNNELD UNKNOWN - cannot connect");
}

TEST(Health, NotServingIsCounted)
{
    auto paused = service("redis", "old", lag(0));
    paused["state"] = "paused";
    EXPECT_THAT(judge({paused, service("app", "old", lag(0))}, {}).line, HasSubstr("1/2 services serving"));
}

TEST(Health, AnUnresolvedSwitchIsCriticalAndARecoveryAWarning)
{
    auto redis = service("redis", "old", lag(0));
    redis["state"] = "unresolved";
    redis["problem"] = "old is unreachable; tunnelctl resolve redis --to old|new";
    const auto critical = judge({redis}, {});
    EXPECT_EQ(critical.state, health_state::critical);
    EXPECT_THAT(critical.line, HasSubstr("redis switch unresolved, clients refused: old is unreachable; "
                                         "tunnelctl resolve redis --to old|new"));
    redis["state"] = "recovering";
    redis["problem"] = nullptr;
    const auto warning = judge({redis}, {});
    EXPECT_EQ(warning.state, health_state::warning);
    EXPECT_THAT(warning.line, HasSubstr("redis recovering an interrupted switch"));
}

TEST(Health, AFleetCutOffFromEtcdIsAWarningNamingItsServices)
{
    auto redis = service("redis", "old", lag(0));
    auto app = service("app", "old", lag(0));
    redis["fleet"] = "unreachable";
    app["fleet"] = "ok";
    const auto report = judge({redis, app}, {});
    EXPECT_EQ(report.state, health_state::warning);
    EXPECT_THAT(report.line, HasSubstr("fleet etcd unreachable (redis)"));
    redis["fleet"] = nullptr; // a single host
    EXPECT_EQ(judge({redis, app}, {}).state, health_state::ok);
}

TEST(FormatFleet, OneRowPerMemberWithWhoIsBehind)
{
    const json result = json::parse(R"({"fleet": "legacy-eu1", "member": "web-1", "etcd": "ok", "error": null,
        "services": [{"name": "redis", "epoch": 2, "side": "new", "phase": "committed", "coordinator": null,
                      "target": null, "members": [
            {"name": "web-1", "malformed": false, "side": "new", "epoch": 2, "state": "serving", "held": 0,
             "last_seen": 1700000000000, "behind": false},
            {"name": "web-2", "malformed": false, "side": "old", "epoch": 1, "state": "paused", "held": 3,
             "last_seen": 1699999996600, "behind": true},
            {"name": "web-3", "malformed": true, "side": null, "epoch": null, "state": null, "held": null,
             "last_seen": null, "behind": null}]},
                     {"name": "pg", "epoch": 5, "side": "old", "phase": "hold", "coordinator": "web-2",
                      "target": "new", "members": []}]})");
    EXPECT_EQ(format_fleet(result, 1700000000120),
              "fleet legacy-eu1, this member web-1, etcd ok\n"
              "redis: epoch 2 committed on new; behind: web-2\n"
              "pg: epoch 5 held by web-2 towards new (phase hold); committed on old\n"
              "SERVICE  MEMBER  SIDE  EPOCH  STATE             HELD  LAST_SEEN  BEHIND\n"
              "redis    web-1   new   2      serving           0     120ms ago  -\n"
              "redis    web-2   old   1      paused            3     3.5s ago   yes\n"
              "redis    web-3   -     -      record malformed  -     -          -\n");
}

TEST(FormatFleet, SaysHowOldTheMemberRecordsAreWhenTheyWereNotReadJustNow)
{
    const json result = json::parse(R"({"fleet": "f", "member": "m", "etcd": "ok", "error": null,
        "services": [{"name": "redis", "epoch": 0, "side": "old", "phase": "committed", "coordinator": null,
                      "target": null, "members": [],
                      "members_read": {"live": false, "revision": 7, "at": 1700000000000}}]})");
    EXPECT_THAT(format_fleet(result, 1700000003000), HasSubstr("redis: epoch 0 committed on old\n"));
    EXPECT_THAT(format_fleet(result, 1700000012000),
                HasSubstr("redis: epoch 0 committed on old (members as read 12.0s ago)\n"));
}

TEST(FormatFleet, SaysWhenEtcdDoesNotAnswer)
{
    const json result = {{"fleet", "f"}, {"member", "m"}, {"etcd", "unreachable"},
                         {"error", "unreachable: connection refused"}, {"services", json::array()}};
    EXPECT_THAT(format_fleet(result, 0),
                HasSubstr("etcd unreachable (unreachable: connection refused); showing what was last seen\n"));
}

TEST(FormatCheck, ListsEveryGuardrailThePlanAndTheVerdict)
{
    const json report = {
        {"service", "redis"},
        {"from", "old"},
        {"to", "new"},
        {"mode", "pause"},
        {"would_proceed", false},
        {"estimated_hold_ms", 18},
        {"checks",
         {{{"name", "lag gate"}, {"verdict", "pass"}, {"detail", "lag 0B"}},
          {{"name", "new accepts REPLICAOF NO ONE (promote)"}, {"verdict", "fail"}, {"detail", "no permissions"}},
          {{"name", "promote_command"}, {"verdict", "unchecked"}, {"detail", "a dry run does not run hooks"}}}},
        {"plan", {"hold new clients of redis", "promote new"}}};
    const auto text = format_check(report);
    EXPECT_THAT(text, HasSubstr("check redis: old -> new, mode pause\n"));
    EXPECT_THAT(text, HasSubstr("  PASS       lag gate: lag 0B\n"));
    EXPECT_THAT(text, HasSubstr("  FAIL       new accepts REPLICAOF NO ONE (promote): no permissions\n"));
    EXPECT_THAT(text, HasSubstr("  UNCHECKED  promote_command"));
    EXPECT_THAT(text, HasSubstr("estimated hold: 18ms\n"));
    EXPECT_THAT(text, HasSubstr("  2. promote new\n"));
    EXPECT_THAT(text, HasSubstr("result: the switch would be refused (1 check failed); nothing was changed\n"));
}

TEST(FormatCheck, SaysWhenItWouldProceed)
{
    EXPECT_THAT(format_check({{"would_proceed", true}, {"checks", json::array()}}),
                HasSubstr("result: the switch would proceed; nothing was changed"));
}

TEST(FormatHistory, OneRowPerEntryWithTheOperator)
{
    const json entries = {{{"time", "2026-11-30T08:00:00Z"},
                           {"service", "redis"},
                           {"action", "switch"},
                           {"from", "old"},
                           {"to", "new"},
                           {"mode", "pause"},
                           {"uid", 0},
                           {"user", "root"},
                           {"held_ms", 42},
                           {"cut", 4},
                           {"result", "done"},
                           {"reason", "redis switched to new"}},
                          {{"time", "2026-11-30T08:01:00Z"},
                           {"service", "redis"},
                           {"action", "pause"},
                           {"uid", 1000},
                           {"user", ""},
                           {"held_ms", nullptr},
                           {"cut", nullptr},
                           {"result", "refused"},
                           {"reason", "busy"}}};
    const auto text = format_history(entries);
    EXPECT_THAT(text, HasSubstr("WHEN"));
    EXPECT_THAT(text, HasSubstr("root (0)"));
    EXPECT_THAT(text, HasSubstr("42ms"));
    EXPECT_THAT(text, HasSubstr("uid 1000"));
    EXPECT_THAT(text, HasSubstr("redis switched to new"));
}

} // namespace
} // namespace tunneld::tools
