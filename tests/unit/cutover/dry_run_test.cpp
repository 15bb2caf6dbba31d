// The dry-run report: which guardrails decide "would proceed", the plan of steps per kind and
// mode, and the hold estimate against pause_timeout. Pure: probe answers are made up here.

#include "cutover/dry_run.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace tunneld::cutover {
namespace {

using namespace std::chrono_literals;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

config::service_config redis_settings()
{
    config::service_config s;
    s.name = "redis";
    s.kind = config::service_kind::redis;
    s.mode = config::switch_mode::pause;
    s.pause_timeout = 5s;
    s.fence = config::redis_fence::replicaof;
    s.fence_replicaof = config::endpoint{"10.8.1.20", 6379};
    return s;
}

lag_reading in_sync(std::uint64_t bytes = 0)
{
    lag_reading r;
    r.bytes = bytes;
    r.link = link_state::up;
    return r;
}

std::vector<preflight_check> healthy_servers(std::chrono::milliseconds rtt = 2ms)
{
    return {{"old reachable, credentials accepted", check_verdict::pass, "PONG", rtt},
            {"new reachable, credentials accepted", check_verdict::pass, "PONG", rtt},
            {"new accepts REPLICAOF NO ONE (promote)", check_verdict::pass, "permitted", {}}};
}

dry_run_input healthy(const config::service_config& s)
{
    dry_run_input in;
    in.settings = &s;
    in.gate = gate_verdict{true, false, "lag 0B within 1MiB"};
    in.lag = in_sync();
    in.server_checks = healthy_servers();
    in.state_file = "/var/lib/tunneld/state.json";
    in.clients_old = 4;
    return in;
}

const preflight_check* find(const dry_run_report& r, std::string_view name)
{
    for (const auto& c : r.checks)
        if (c.name == name) return &c;
    return nullptr;
}

TEST(DryRun, HealthyRedisPairWouldProceedWithAPlanAndAnEstimate)
{
    const auto s = redis_settings();
    const auto report = make_dry_run_report(healthy(s));
    EXPECT_TRUE(report.would_proceed);
    ASSERT_TRUE(report.estimated_hold);
    EXPECT_EQ(*report.estimated_hold, 2ms * redis_round_trips_in_hold);
    // In the order the switch takes them: old is fenced before new is promoted.
    EXPECT_THAT(report.plan, ElementsAre(HasSubstr("hold new clients of redis"),
                                         HasSubstr("hold the 4 clients on old at their next request boundary"),
                                         HasSubstr("CLIENT PAUSE WRITE"), HasSubstr("replication offset"),
                                         HasSubstr("fence old: CONFIG SET min-replicas-to-write"),
                                         HasSubstr("promote new: REPLICAOF NO ONE"), HasSubstr("persist the choice"),
                                         HasSubstr("old follows new: REPLICAOF 10.8.1.20:6379"),
                                         HasSubstr("move the 4 clients from old to new")));
}

TEST(DryRun, PostgresPlanFencesOldWithItsCommandBeforeThePromotion)
{
    config::service_config s;
    s.name = "pg";
    s.kind = config::service_kind::postgres;
    s.mode = config::switch_mode::pause;
    s.fence_command = "/usr/local/bin/fence-old";
    auto in = healthy(s);
    const auto report = make_dry_run_report(in);
    EXPECT_THAT(report.plan, ElementsAre(HasSubstr("hold new clients of pg"), HasSubstr("let the 4 clients on old finish"),
                                         HasSubstr("WAL insert position"), HasSubstr("fence old: run fence_command"),
                                         HasSubstr("promote new: pg_promote()"), HasSubstr("persist the choice"),
                                         HasSubstr("release held clients to new")));
}

TEST(DryRun, AFailedGateOrServerCheckStopsIt)
{
    const auto s = redis_settings();
    auto lagging = healthy(s);
    lagging.gate = gate_verdict{false, false, "lag 4MiB above max_lag 1MiB"};
    auto report = make_dry_run_report(lagging);
    EXPECT_FALSE(report.would_proceed);
    ASSERT_TRUE(find(report, "lag gate"));
    EXPECT_EQ(find(report, "lag gate")->verdict, check_verdict::fail);

    auto refusing = healthy(s);
    refusing.server_checks[2].verdict = check_verdict::fail;
    report = make_dry_run_report(refusing);
    EXPECT_FALSE(report.would_proceed);
}

TEST(DryRun, UncheckedStepsDoNotStopIt)
{
    auto s = redis_settings();
    s.promote_command = "/usr/local/bin/promote";
    auto in = healthy(s);
    in.server_checks.push_back({"promote_command", check_verdict::unchecked, "a dry run does not run hooks", {}});
    const auto report = make_dry_run_report(in);
    EXPECT_TRUE(report.would_proceed);
    EXPECT_THAT(report.plan[5], HasSubstr("promote_command"));
}

TEST(DryRun, StateFileThatCannotBeWrittenStopsIt)
{
    const auto s = redis_settings();
    auto in = healthy(s);
    in.state_file_problem = "cannot write /var/lib/tunneld/state.json.tmp: Permission denied";
    const auto report = make_dry_run_report(in);
    EXPECT_FALSE(report.would_proceed);
    EXPECT_THAT(find(report, "state file writable")->detail, HasSubstr("Permission denied"));
}

TEST(DryRun, HoldEstimateBeyondTheBudgetStopsIt)
{
    auto s = redis_settings();
    s.pause_timeout = 100ms;
    auto in = healthy(s);
    in.server_checks = healthy_servers(20ms); // 9 x 20ms = 180ms > 100ms
    const auto report = make_dry_run_report(in);
    EXPECT_FALSE(report.would_proceed);
    EXPECT_EQ(find(report, "estimated hold within pause_timeout")->verdict, check_verdict::fail);
}

TEST(DryRun, LagIsReplayedAtTheObservedRate)
{
    const auto s = redis_settings();
    auto in = healthy(s);
    in.lag = in_sync(1000 * 1000);
    in.catch_up_bytes_per_second = 1000.0 * 1000; // 1s of replay
    auto report = make_dry_run_report(in);
    ASSERT_TRUE(report.estimated_hold);
    EXPECT_EQ(*report.estimated_hold, 1000ms + 2ms * redis_round_trips_in_hold);
    EXPECT_TRUE(report.would_proceed);

    in.catch_up_bytes_per_second.reset(); // behind, with no rate: the estimate is unknown, not zero
    report = make_dry_run_report(in);
    EXPECT_FALSE(report.estimated_hold);
    EXPECT_EQ(find(report, "estimated hold within pause_timeout")->verdict, check_verdict::unchecked);
}

TEST(DryRun, KillOnAReplicatedServiceIsRefusedUnlessForced)
{
    const auto s = redis_settings();
    auto in = healthy(s);
    in.mode = config::switch_mode::kill;
    EXPECT_FALSE(make_dry_run_report(in).would_proceed);
    in.force = true;
    EXPECT_TRUE(make_dry_run_report(in).would_proceed);
}

TEST(DryRun, SameSideIsNothingToDo)
{
    const auto s = redis_settings();
    auto in = healthy(s);
    in.from = proxy::side::new_side;
    const auto report = make_dry_run_report(in);
    EXPECT_TRUE(report.would_proceed);
    EXPECT_TRUE(report.plan.empty());
}

TEST(DryRun, TcpDrainPlanHasNoHold)
{
    config::service_config s;
    s.name = "app";
    s.kind = config::service_kind::tcp;
    s.drain_timeout = 30s;
    dry_run_input in;
    in.settings = &s;
    in.mode = config::switch_mode::drain;
    in.clients_old = 2;
    in.state_file = "/x/state.json";
    const auto report = make_dry_run_report(in);
    EXPECT_TRUE(report.would_proceed);
    EXPECT_FALSE(report.estimated_hold);
    EXPECT_THAT(report.plan.back(), HasSubstr("let the 2 clients on old finish, cut what is left after 30s"));
}

} // namespace
} // namespace tunneld::cutover
