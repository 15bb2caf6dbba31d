// What a fleet switch refuses before it claims an epoch (daemon/fleet_member.hpp): a postgres
// rollback, a postgres switch without fence_command, a switch inside a fleet-wide pause.
#include "daemon/fleet_member.hpp"

#include <gtest/gtest.h>

namespace tunneld::daemon {
namespace {

config::service_config service(config::service_kind kind, std::optional<std::string> fence_command = std::nullopt)
{
    config::service_config s;
    s.name = "db";
    s.kind = kind;
    s.fence_command = std::move(fence_command);
    return s;
}

TEST(FleetSwitchRefusal, PostgresRollbackIsRefusedWithTheWayOut)
{
    const auto refused = fleet_switch_refusal(service(config::service_kind::postgres, "fence.sh"), proxy::side::old_side);
    ASSERT_TRUE(refused);
    EXPECT_NE(refused->find("rollback refused: a fleet-wide postgres rollback is not supported"), std::string::npos)
        << *refused;
    EXPECT_NE(refused->find("pg_rewind"), std::string::npos) << *refused;
}

TEST(FleetSwitchRefusal, PostgresNeedsAFenceCommandRedisAndTcpDoNot)
{
    const auto refused = fleet_switch_refusal(service(config::service_kind::postgres), proxy::side::new_side);
    ASSERT_TRUE(refused);
    EXPECT_NE(refused->find("without fence_command"), std::string::npos) << *refused;
    EXPECT_EQ(fleet_switch_refusal(service(config::service_kind::postgres, "fence.sh"), proxy::side::new_side),
              std::nullopt);
    for (const auto kind : {config::service_kind::redis, config::service_kind::tcp})
        for (const auto to : {proxy::side::new_side, proxy::side::old_side})
            EXPECT_EQ(fleet_switch_refusal(service(kind), to), std::nullopt);
}

TEST(PausedRefusal, OnlyWhileTheFleetWidePauseLasts)
{
    const fleet::pause_record pause{100'000, "web-7"};
    EXPECT_EQ(paused_refusal("redis", "switch", std::nullopt, 50'000), std::nullopt);
    EXPECT_EQ(paused_refusal("redis", "switch", pause, 100'000), std::nullopt) << "expired: every member resumed";
    const auto refused = paused_refusal("redis", "switch", pause, 40'500);
    ASSERT_TRUE(refused);
    EXPECT_EQ(*refused, "switch refused: redis is paused fleet-wide (by web-7, 60 s left); a switch holds every "
                        "member's clients itself and cannot start inside a pause. Run `tunnelctl resume redis` "
                        "first, then switch again");
    EXPECT_NE(paused_refusal("redis", "rollback", pause, 99'999)->find("rollback refused:"), std::string::npos);
}

} // namespace
} // namespace tunneld::daemon

namespace tunneld::daemon {
namespace {

fleet::member_entry member(std::string name, fleet::side side, std::int64_t epoch, std::string state)
{
    return {std::move(name), fleet::member_record{side, epoch, std::move(state), 0, 1'000'000}, 7};
}

/// The verdict of the check named `name`, or "missing".
std::string verdict_of(const std::vector<cutover::preflight_check>& checks, const std::string& name)
{
    for (const auto& c : checks)
        if (c.name == name) return c.verdict == cutover::check_verdict::pass ? "pass" : "fail";
    return "missing";
}

TEST(FleetReadiness, EveryMemberIsACheckAndOneThatCannotHoldFails)
{
    fleet::fleet_view view;
    view.reachable = true;
    auto& entry = view.services["redis"];
    entry.epoch = fleet::epoch_state{{2, fleet::side::old_side, "committed", "", std::nullopt}, 40};
    entry.members = {member("a", fleet::side::old_side, 2, "serving"), member("b", fleet::side::old_side, 2, "serving"),
                     member("c", fleet::side::new_side, 1, "serving")};
    const auto redis = service(config::service_kind::redis);
    auto settings = redis;
    settings.name = "redis";
    auto checks = fleet_readiness(view, settings, proxy::side::new_side, 1'004'000);
    for (const auto& c : checks) EXPECT_EQ(c.verdict, cutover::check_verdict::pass) << c.name << ": " << c.detail;
    EXPECT_EQ(verdict_of(checks, "fleet etcd reachable"), "pass");
    EXPECT_EQ(verdict_of(checks, "fleet epoch"), "pass");
    ASSERT_EQ(checks.back().name, "fleet member c");
    EXPECT_EQ(checks.back().detail,
              "on new, epoch 1, serving (behind the fleet), held 0, seen 4 s ago; already on the target: acknowledges "
              "at once");

    entry.members[1].record->state = "paused";
    checks = fleet_readiness(view, settings, proxy::side::new_side, 1'004'000);
    EXPECT_EQ(verdict_of(checks, "fleet member a"), "pass");
    EXPECT_EQ(verdict_of(checks, "fleet member b"), "fail");

    entry.members[1].record.reset(); // a record that does not decode
    EXPECT_EQ(verdict_of(fleet_readiness(view, settings, proxy::side::new_side, 0), "fleet member b"), "fail");
}

TEST(FleetReadiness, EtcdAwayAHeldEpochAPauseAndNoMembersFail)
{
    fleet::fleet_view view;
    view.reachable = false;
    view.last_error = "unreachable: connection refused";
    auto settings = service(config::service_kind::redis);
    settings.name = "redis";
    auto checks = fleet_readiness(view, settings, proxy::side::new_side, 0);
    EXPECT_EQ(verdict_of(checks, "fleet etcd reachable"), "fail");
    EXPECT_EQ(verdict_of(checks, "fleet members"), "fail");

    view.reachable = true;
    auto& entry = view.services["redis"];
    entry.epoch = fleet::epoch_state{{3, fleet::side::old_side, "hold", "web-7", fleet::side::new_side}, 41};
    entry.pause = fleet::pause_record{60'000, "web-2"};
    checks = fleet_readiness(view, settings, proxy::side::new_side, 1'000);
    EXPECT_EQ(verdict_of(checks, "fleet epoch"), "fail");
    EXPECT_EQ(verdict_of(checks, "fleet-wide pause"), "fail");
    EXPECT_EQ(verdict_of(checks, "fleet members"), "fail");
    settings.kind = config::service_kind::postgres;
    EXPECT_EQ(verdict_of(fleet_readiness(view, settings, proxy::side::new_side, 1'000), "fleet postgres rules"),
              "fail");
}

} // namespace
} // namespace tunneld::daemon
