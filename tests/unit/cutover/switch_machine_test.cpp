#include "cutover/switch_machine.hpp"

#include <gtest/gtest.h>

namespace tunneld::cutover {
namespace {

using namespace std::chrono_literals;
using config::service_kind;
using config::switch_mode;

const time_point t0 = time_point{} + 1000s;

switch_request to_new(switch_mode mode)
{
    return switch_request{side::new_side, mode, false};
}

action action_of(const outcome& o)
{
    EXPECT_TRUE(std::holds_alternative<action>(o)) << std::get<refusal>(o).reason;
    return std::holds_alternative<action>(o) ? std::get<action>(o) : action::none;
}

TEST(SwitchMachine, KillFlipsAtOnceAndCutsTheOldSide)
{
    switch_machine m(service_kind::tcp, route{});
    EXPECT_EQ(action_of(m.start_switch(to_new(switch_mode::kill), t0, 30s, 5s)), action::cut_other_side);
    EXPECT_EQ(m.current_route().active, side::new_side);
    EXPECT_EQ(m.state(), service_state::serving);
    EXPECT_FALSE(m.deadline());
}

TEST(SwitchMachine, DrainFlipsAndCutsWhatIsLeftAtDrainTimeout)
{
    switch_machine m(service_kind::tcp, route{});
    EXPECT_EQ(action_of(m.start_switch(to_new(switch_mode::drain), t0, 30s, 5s)), action::none);
    EXPECT_EQ(m.current_route().active, side::new_side);
    EXPECT_EQ(m.state(), service_state::draining);
    EXPECT_EQ(m.draining_side(), side::old_side);
    EXPECT_EQ(m.tick(t0 + 29999ms), action::none);
    EXPECT_EQ(m.tick(t0 + 30s), action::drain_deadline);
    m.drained();
    EXPECT_EQ(m.state(), service_state::serving);
}

TEST(SwitchMachine, DrainEndsEarlyWhenTheOldSideIsEmpty)
{
    switch_machine m(service_kind::tcp, route{});
    m.start_switch(to_new(switch_mode::drain), t0, 30s, 5s);
    m.drained();
    EXPECT_EQ(m.state(), service_state::serving);
    EXPECT_EQ(m.tick(t0 + 31s), action::none);
}

TEST(SwitchMachine, PauseSwitchHoldsThenCompletesOnTheNewSide)
{
    switch_machine m(service_kind::redis, route{});
    EXPECT_EQ(action_of(m.start_switch(to_new(switch_mode::pause), t0, 30s, 5s)), action::run_pause_switch);
    EXPECT_TRUE(m.current_route().hold);
    EXPECT_EQ(m.current_route().active, side::old_side) << "nothing flips before promotion";
    EXPECT_EQ(m.state(), service_state::switching);
    EXPECT_EQ(action_of(m.complete_pause_switch()), action::cut_other_side);
    EXPECT_FALSE(m.current_route().hold);
    EXPECT_EQ(m.current_route().active, side::new_side);
    EXPECT_EQ(m.state(), service_state::serving);
}

TEST(SwitchMachine, PauseBudgetExhaustedReleasesToTheOldSide)
{
    switch_machine m(service_kind::redis, route{});
    m.start_switch(to_new(switch_mode::pause), t0, 30s, 5s);
    EXPECT_EQ(m.tick(t0 + 4999ms), action::none);
    EXPECT_EQ(m.tick(t0 + 5s), action::pause_budget_exhausted);
    EXPECT_FALSE(m.current_route().hold);
    EXPECT_EQ(m.current_route().active, side::old_side);
    EXPECT_EQ(m.state(), service_state::serving);
    EXPECT_TRUE(std::holds_alternative<refusal>(m.complete_pause_switch())) << "too late to complete";
}

TEST(SwitchMachine, AbortReleasesHeldClientsUnchanged)
{
    switch_machine m(service_kind::redis, route{});
    m.start_switch(to_new(switch_mode::pause), t0, 30s, 5s);
    m.abort_pause_switch();
    EXPECT_EQ(m.current_route(), route{});
    EXPECT_EQ(m.state(), service_state::serving);
}

TEST(SwitchMachine, ConcurrentSwitchesAreRefusedAsBusy)
{
    switch_machine m(service_kind::tcp, route{});
    m.start_switch(to_new(switch_mode::pause), t0, 30s, 5s);
    const auto second = m.start_switch(switch_request{side::old_side, switch_mode::kill, false}, t0, 30s, 5s);
    ASSERT_TRUE(std::holds_alternative<refusal>(second));
    EXPECT_TRUE(std::get<refusal>(second).busy);

    switch_machine draining(service_kind::tcp, route{});
    draining.start_switch(to_new(switch_mode::drain), t0, 30s, 5s);
    const auto third =
        draining.start_switch(switch_request{side::old_side, switch_mode::kill, false}, t0, 30s, 5s);
    ASSERT_TRUE(std::holds_alternative<refusal>(third));
    EXPECT_TRUE(std::get<refusal>(third).busy);
}

TEST(SwitchMachine, SwitchToTheActiveSideIsANoOp)
{
    switch_machine m(service_kind::tcp, route{});
    EXPECT_EQ(
        action_of(m.start_switch(switch_request{side::old_side, switch_mode::kill, false}, t0, 30s, 5s)),
        action::none);
    EXPECT_EQ(m.state(), service_state::serving);
}

TEST(SwitchMachine, ManualPauseAutoResumesAtItsTimeout)
{
    switch_machine m(service_kind::tcp, route{});
    EXPECT_EQ(action_of(m.pause(t0, 2s)), action::none);
    EXPECT_TRUE(m.current_route().hold);
    EXPECT_EQ(m.state(), service_state::paused);
    EXPECT_EQ(m.tick(t0 + 1999ms), action::none);
    EXPECT_EQ(m.tick(t0 + 2s), action::auto_resumed);
    EXPECT_FALSE(m.current_route().hold);
    EXPECT_EQ(m.state(), service_state::serving);
}

TEST(SwitchMachine, ResumeReleasesAndOnlyWhenPaused)
{
    switch_machine m(service_kind::tcp, route{});
    EXPECT_TRUE(std::holds_alternative<refusal>(m.resume()));
    m.pause(t0, 2s);
    EXPECT_TRUE(std::holds_alternative<refusal>(m.pause(t0, 2s))) << "already paused";
    EXPECT_TRUE(std::holds_alternative<refusal>(m.start_switch(to_new(switch_mode::kill), t0, 30s, 5s)));
    EXPECT_EQ(action_of(m.resume()), action::none);
    EXPECT_FALSE(m.current_route().hold);
    EXPECT_EQ(m.tick(t0 + 10s), action::none) << "a resumed pause has no deadline left";
}

TEST(SwitchMachine, SplitOnlyForTcp)
{
    switch_machine tcp(service_kind::tcp, route{});
    EXPECT_EQ(action_of(tcp.split(25, true)), action::none);
    EXPECT_EQ(tcp.current_route().split_percent, 25);
    EXPECT_TRUE(tcp.current_route().sticky);
    EXPECT_TRUE(std::holds_alternative<refusal>(tcp.split(101, false)));

    for (auto kind : {service_kind::redis, service_kind::postgres}) {
        switch_machine m(kind, route{});
        const auto refused = m.split(10, false);
        ASSERT_TRUE(std::holds_alternative<refusal>(refused));
        EXPECT_NE(std::get<refusal>(refused).reason.find("only for kind = \"tcp\""), std::string::npos);
        EXPECT_FALSE(m.current_route().split_percent);
    }
}

TEST(SwitchMachine, SwitchFromASplitEndsTheSplit)
{
    route split;
    split.split_percent = 50;
    switch_machine m(service_kind::tcp, split);
    EXPECT_EQ(action_of(m.start_switch(to_new(switch_mode::kill), t0, 30s, 5s)), action::cut_other_side);
    EXPECT_FALSE(m.current_route().split_percent);
    EXPECT_EQ(m.current_route().active, side::new_side);
    EXPECT_EQ(m.draining_side(), side::old_side);
}

TEST(SwitchMachine, AHeldRouteIsNeverRestoredFromTheInitialRoute)
{
    route held;
    held.hold = true;
    switch_machine m(service_kind::tcp, held);
    EXPECT_FALSE(m.current_route().hold) << "a restart never starts holding clients";
}

} // namespace
} // namespace tunneld::cutover
