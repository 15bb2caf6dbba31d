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
