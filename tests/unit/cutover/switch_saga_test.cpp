// Goal: the switch machine's whole life (switch, rollback, pause, split, drain) driven through
// switch_machine::on() with scripted answers and an injected clock: every transition, every
// deadline, the failure of every answering effect, and the undo after an ambiguous promotion.
// No sockets, no servers: the effects are compared as data.

#include "cutover/switch_machine.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <deque>
#include <map>

namespace tunneld::cutover {
namespace {

using namespace std::chrono_literals;
using config::service_kind;
using config::switch_mode;

const time_point t0 = time_point{} + 1000s;

lag_reading in_sync(time_point at)
{
    lag_reading r;
    r.bytes = 0;
    r.link = link_state::up;
    r.detail = "in sync";
    r.at = at;
    return r;
}

switch_command command(side to, switch_mode mode, bool replicated = true, bool force = false)
{
    switch_command c;
    c.request = switch_request{to, mode, force};
    c.limits = switch_limits{.drain_timeout = 30s, .pause_timeout = 5s, .max_lag = 1024,
                             .max_lag_seconds = std::nullopt, .max_lag_age = 10s};
    c.replicated = replicated;
    c.lag = in_sync(t0);
    return c;
}

template <class T> std::vector<T> all_of(const std::vector<effect>& effects)
{
    std::vector<T> out;
    for (const auto& e : effects)
        if (const auto* t = std::get_if<T>(&e)) out.push_back(*t);
    return out;
}

template <class T> bool has(const std::vector<effect>& effects)
{
    return !all_of<T>(effects).empty();
}

/// Plays the executor: performs nothing, answers each asking effect from a script (default ok),
/// advances the clock by `step_time` per answer, and keeps every effect and the outcome.
struct driver {
    switch_machine machine;
    time_point now = t0;
    std::map<step_kind, std::deque<bool>> script; ///< answers in order; missing: ok
    std::vector<effect> effects;
    std::optional<command_outcome> done;
    std::optional<effect> outstanding; ///< the asking effect left unanswered by run_until
    std::chrono::milliseconds step_time = 10ms;

    explicit driver(service_kind kind, route initial = {}) : machine(kind, initial, "svc") {}

    /// Feeds `e`, then answers asking effects until nothing is asked or `stop_at` is asked.
    void run(const event& e, std::optional<step_kind> stop_at = std::nullopt)
    {
        auto s = machine.on(e, now);
        for (;;) {
            effects.insert(effects.end(), s.effects.begin(), s.effects.end());
            if (s.done) {
                EXPECT_FALSE(done) << "a command is answered once";
                done = s.done;
            }
            if (s.effects.empty() || !answers(s.effects.back())) return;
            const auto which = kind_of_answer(s.effects.back());
            if (std::holds_alternative<watch_drain>(s.effects.back()) ||
                std::holds_alternative<wait_fleet>(s.effects.back()) || which == stop_at) {
                outstanding = s.effects.back();
                return;
            }
            bool ok = true;
            if (auto it = script.find(which); it != script.end() && !it->second.empty()) {
                ok = it->second.front();
                it->second.pop_front();
            }
            now += step_time;
            s = machine.on(step_done{which, ok, ok ? "step ok" : "step failed"}, now);
        }
    }
    void answer(step_kind which, bool ok)
    {
        outstanding.reset();
        run_step(step_done{which, ok, ok ? "step ok" : "step failed"});
    }
    void run_step(const event& e) { run(e); }
};

std::vector<std::string> progress_lines(const std::vector<effect>& effects)
{
    std::vector<std::string> lines;
    for (const auto& p : all_of<progress>(effects)) lines.push_back(p.line);
    return lines;
}

// ---- a member's part in a fleet switch (docs/fleet.md) ----

switch_command fleet_command(side to)
{
    auto c = command(to, switch_mode::pause);
    c.fleet = true;
    c.lag.reset(); // the lag gate is the coordinator's: a member holds without a reading
    return c;
}

bool touches_servers(const std::vector<effect>& effects)
{
    return has<pause_writes>(effects) || has<fence>(effects) || has<promote>(effects) || has<roll_back>(effects) ||
           has<follow>(effects) || has<wait_caught_up>(effects);
}

TEST(FleetHold, HoldsAndQuiescesThenWaitsForTheFleetWithoutTouchingAServer)
{
    driver d(service_kind::redis);
    d.run(fleet_command(side::new_side));
    EXPECT_FALSE(d.done) << d.done->message;
    ASSERT_TRUE(d.outstanding && std::holds_alternative<wait_fleet>(*d.outstanding));
    EXPECT_EQ(std::get<wait_fleet>(*d.outstanding).until, t0 + 5s) << "the pause budget bounds the wait";
    EXPECT_TRUE(has<hold_new_clients>(d.effects));
    EXPECT_TRUE(has<quiesce_clients>(d.effects));
    EXPECT_FALSE(touches_servers(d.effects));
    EXPECT_EQ(d.machine.state(), service_state::switching);
    EXPECT_TRUE(d.machine.busy());
}

TEST(FleetHold, RunHereRunsTheServerStepsOfAPauseSwitch)
{
    driver d(service_kind::redis);
    d.run(fleet_command(side::new_side));
    d.run_step(fleet_decision{fleet_go::run_here, {}});
    ASSERT_TRUE(d.done);
    EXPECT_EQ(d.done->result, verdict::done) << d.done->message;
    EXPECT_FALSE(d.done->adopted);
    EXPECT_TRUE(has<pause_writes>(d.effects) && has<fence>(d.effects) && has<promote>(d.effects));
    EXPECT_EQ(d.machine.current_route().active, side::new_side);
    EXPECT_TRUE(d.machine.fenced());
}

/// Index of the first effect of type T in `effects` at or after `from` (effects.size(): none).
template <class T> std::size_t index_of(const std::vector<effect>& effects, std::size_t from = 0)
{
    for (std::size_t i = from; i < effects.size(); ++i)
        if (std::holds_alternative<T>(effects[i])) return i;
    return effects.size();
}

TEST(FleetHold, RunHereSaysSwitchedOnceTheRouteIsOnDiskBeforeOldFollowsAndClientsGo)
{
    for (const side to : {side::new_side, side::old_side}) {
        driver d(service_kind::redis, proxy::route_to(proxy::other(to)));
        d.run(fleet_command(to));
        d.run_step(fleet_decision{fleet_go::run_here, {}});
        ASSERT_TRUE(d.done);
        EXPECT_EQ(d.done->result, verdict::done) << d.done->message;
        const auto& e = d.effects;
        ASSERT_EQ(all_of<fleet_switched>(e).size(), 1u) << "said once";
        const auto said = index_of<fleet_switched>(e);
        // The last server step that makes `to` the primary, then the route's persist, then the signal.
        const auto server_step = to == side::new_side ? index_of<promote>(e) : index_of<roll_back>(e);
        ASSERT_LT(server_step, said);
        EXPECT_LT(index_of<persist>(e, server_step), said) << "the route reaches the disk first";
        EXPECT_GT(index_of<release>(e, server_step), said) << "this host's clients go after it";
        EXPECT_GT(index_of<move_clients>(e), said);
        if (to == side::new_side) {
            EXPECT_GT(index_of<follow>(e), said) << "old follows new meanwhile";
        }
    }
}

TEST(FleetHold, OnlyTheMemberThatRunsTheServerStepsSaysSwitched)
{
    driver adopted(service_kind::redis);
    adopted.run(fleet_command(side::new_side));
    adopted.run_step(fleet_decision{fleet_go::adopt, "fleet bed committed epoch 1 on new"});
    EXPECT_FALSE(has<fleet_switched>(adopted.effects));

    driver failed(service_kind::redis);
    failed.script[step_kind::promote] = {false};
    failed.script[step_kind::check_roles] = {false};
    failed.run(fleet_command(side::new_side));
    failed.run_step(fleet_decision{fleet_go::run_here, {}});
    ASSERT_TRUE(failed.done);
    EXPECT_EQ(failed.done->result, verdict::failed);
    EXPECT_FALSE(has<fleet_switched>(failed.effects)) << "undone: the fleet must not commit";

    driver plain(service_kind::redis);
    plain.run(command(side::new_side, switch_mode::pause));
    EXPECT_FALSE(has<fleet_switched>(plain.effects)) << "a single host's switch";
}

TEST(FleetHold, AdoptReleasesOntoTheTargetAndChangesNoServer)
{
    driver d(service_kind::redis);
    d.run(fleet_command(side::new_side));
    d.run_step(fleet_decision{fleet_go::adopt, "fleet bed committed epoch 1 on new"});
    ASSERT_TRUE(d.done);
    EXPECT_EQ(d.done->result, verdict::done) << d.done->message;
    EXPECT_TRUE(d.done->adopted);
    EXPECT_FALSE(touches_servers(d.effects));
    const auto moves = all_of<move_clients>(d.effects);
    ASSERT_EQ(moves.size(), 1u);
    EXPECT_EQ(moves[0].from, side::old_side);
    EXPECT_EQ(moves[0].to, side::new_side);
    EXPECT_EQ(d.machine.current_route().active, side::new_side);
    EXPECT_TRUE(d.machine.fenced()) << "the probe keeps old fenced, as after any switch to new";
    EXPECT_FALSE(d.machine.journal());
}

TEST(FleetHold, AbortOrTheBudgetReleasesOntoOldAndALateDecisionIsIgnored)
{
    for (const bool by_budget : {false, true}) {
        driver d(service_kind::redis);
        d.run(fleet_command(side::new_side));
        if (by_budget) {
            d.now = t0 + 5s;
            d.run_step(deadline_reached{});
        } else {
            d.run_step(fleet_decision{fleet_go::abort, "fleet bed aborted epoch 1"});
        }
        ASSERT_TRUE(d.done);
        EXPECT_EQ(d.done->result, verdict::failed);
        EXPECT_NE(d.done->message.find(by_budget ? "before the fleet decided" : "fleet bed aborted epoch 1"),
                  std::string::npos)
            << d.done->message;
        EXPECT_FALSE(touches_servers(d.effects));
        EXPECT_EQ(d.machine.current_route().active, side::old_side);
        EXPECT_FALSE(d.machine.current_route().hold);
        EXPECT_EQ(d.machine.state(), service_state::serving);
        const auto late = d.machine.on(fleet_decision{fleet_go::adopt, "late"}, d.now);
        EXPECT_TRUE(late.effects.empty());
        EXPECT_FALSE(late.done);
        EXPECT_EQ(d.machine.current_route().active, side::old_side);
    }
}

TEST(FleetHold, ARollbackAdoptsOntoOldAndLeavesNothingFenced)
{
    driver d(service_kind::redis, proxy::route_to(side::new_side));
    d.run(fleet_command(side::old_side));
    d.run_step(fleet_decision{fleet_go::adopt, "fleet bed committed epoch 2 on old"});
    ASSERT_TRUE(d.done);
    EXPECT_EQ(d.done->result, verdict::done) << d.done->message;
    EXPECT_FALSE(touches_servers(d.effects));
    EXPECT_EQ(d.machine.current_route().active, side::old_side);
    EXPECT_FALSE(d.machine.fenced());
}

// ---- pause switch to new, redis ----

TEST(SwitchSaga, RedisPauseSwitchRunsEveryStepInOrder)
{
    driver d(service_kind::redis);
    d.run(command(side::new_side, switch_mode::pause));
    ASSERT_TRUE(d.done);
    EXPECT_EQ(d.done->result, verdict::done) << d.done->message;
    EXPECT_EQ(d.done->message, "svc switched to new (clients held 100ms)");

    std::vector<std::string> order;
    for (const auto& e : d.effects)
        std::visit([&](const auto& v) {
            using T = std::decay_t<decltype(v)>;
            if constexpr (std::is_same_v<T, hold_new_clients>) order.push_back("hold");
            else if constexpr (std::is_same_v<T, pause_writes>) order.push_back("pause_writes");
            else if constexpr (std::is_same_v<T, wait_caught_up>) order.push_back("wait_caught_up");
            else if constexpr (std::is_same_v<T, promote>) order.push_back("promote");
            else if constexpr (std::is_same_v<T, persist>) order.push_back("persist");
            else if constexpr (std::is_same_v<T, fence>) order.push_back("fence");
            else if constexpr (std::is_same_v<T, follow>) order.push_back("follow");
            else if constexpr (std::is_same_v<T, unfence>) order.push_back("unfence");
            else if constexpr (std::is_same_v<T, cut>) order.push_back("cut");
            else if constexpr (std::is_same_v<T, release>) order.push_back("release");
            else if constexpr (std::is_same_v<T, unpause>) order.push_back("unpause");
            else if constexpr (std::is_same_v<T, quiesce_clients>) order.push_back("quiesce");
            else if constexpr (std::is_same_v<T, move_clients>) order.push_back("move");
        }, e);
    EXPECT_EQ(order, (std::vector<std::string>{"hold", "quiesce", "persist", "pause_writes", "wait_caught_up",
                                               "persist", "fence", "persist", "promote", "persist", "follow",
                                               "persist", "release", "unpause", "move"}))
        << "fence first: old refuses writes before new takes any; the journal is written before each "
           "step that changes a server; this host's clients are held at a request boundary before "
           "old's writes pause, and moved (not cut) once new is the primary; old is unpaused first, "
           "for an EXEC still inside it";
    EXPECT_EQ(all_of<pause_writes>(d.effects).at(0), (pause_writes{side::old_side, 10s}))
        << "the write pause outlives the budget by the fence's 5s";
    EXPECT_EQ(all_of<quiesce_clients>(d.effects).at(0), (quiesce_clients{side::old_side, t0 + 3s}))
        << "the quiesce has three fifths of the budget";
    EXPECT_EQ(all_of<move_clients>(d.effects).at(0), (move_clients{side::old_side, side::new_side, t0 + 5s}))
        << "pinned clients have until the budget's end to unpin";
    EXPECT_FALSE(has<cut>(d.effects));
    EXPECT_EQ(all_of<release>(d.effects).at(0), (release{proxy::route_to(side::new_side)}));
    EXPECT_EQ(all_of<promote>(d.effects).at(0).deadline, t0 + 5s) << "promotion is bounded by the budget";
    const auto lines = progress_lines(d.effects);
    EXPECT_EQ(lines.front(), "lag gate passed: lag 0B within max_lag 1KiB, link up");
    EXPECT_EQ(lines.at(1), "holding new clients of svc (budget 5s)");
    EXPECT_EQ(lines.back(), "released held clients to new after 100ms");
    EXPECT_TRUE(d.machine.fenced());
    EXPECT_FALSE(d.machine.busy());
    EXPECT_EQ(d.machine.state(), service_state::serving);
    EXPECT_EQ(d.machine.current_route(), proxy::route_to(side::new_side));
    EXPECT_FALSE(d.machine.deadline());
}

TEST(SwitchSaga, TheJournalNamesEachServerChangingStepBeforeItIsTaken)
{
    switch_machine m(service_kind::redis, route{}, "svc");
    auto c = command(side::new_side, switch_mode::pause);
    c.id = "svc-1";
    auto s = m.on(c, t0);
    std::vector<std::string> journaled;  // the journal's step each time the state file is written
    std::vector<std::string> taken;      // the server-changing steps, in order
    for (int i = 0; i < 30 && !s.effects.empty(); ++i) {
        for (const auto& e : s.effects) {
            if (std::holds_alternative<pause_writes>(e)) taken.push_back("pause_writes");
            if (std::holds_alternative<fence>(e)) taken.push_back("fence");
            if (std::holds_alternative<promote>(e)) taken.push_back("promote");
            if (std::holds_alternative<follow>(e)) taken.push_back("follow");
        }
        if (!answers(s.effects.back())) break;
        const auto which = kind_of_answer(s.effects.back());
        if (which == step_kind::persist) {
            const auto& j = m.journal();
            journaled.push_back(j ? std::string(to_string(j->step)) : "-");
            if (j) {
                EXPECT_EQ(j->id, "svc-1");
                EXPECT_EQ(j->from, side::old_side);
                EXPECT_EQ(j->to, side::new_side);
                EXPECT_EQ(j->pause_hold, std::optional<config::duration>(10s));
            }
        }
        s = m.on(step_done{which, true, "ok"}, t0);
    }
    EXPECT_EQ(taken, (std::vector<std::string>{"pause_writes", "fence", "promote", "follow"}));
    EXPECT_EQ(journaled, (std::vector<std::string>{"pause_writes", "fence", "promote", "follow", "-"}))
        << "each step is on disk before it is taken; the route and `follow` go together; done clears it";
}

TEST(SwitchSaga, HoldingStateAndDeadlineWhileTheStepsRun)
{
    driver d(service_kind::redis);
    d.run(command(side::new_side, switch_mode::pause), step_kind::wait_caught_up);
    EXPECT_EQ(d.machine.state(), service_state::switching);
    EXPECT_TRUE(d.machine.current_route().hold);
    EXPECT_EQ(d.machine.deadline(), t0 + 5s) << "the budget is armed while switching";
    EXPECT_TRUE(d.machine.busy());
    const auto again = d.machine.on(command(side::new_side, switch_mode::pause), d.now);
    ASSERT_TRUE(again.done);
    EXPECT_EQ(again.done->result, verdict::busy);
    EXPECT_FALSE(again.done->recorded);
    EXPECT_TRUE(again.effects.empty());
}

TEST(SwitchSaga, PostgresDrainsOldClientsInsteadOfPausingWrites)
{
    driver d(service_kind::postgres);
    d.run(command(side::new_side, switch_mode::pause));
    ASSERT_TRUE(d.done);
    EXPECT_EQ(d.done->result, verdict::done);
    EXPECT_FALSE(has<pause_writes>(d.effects));
    EXPECT_FALSE(has<unpause>(d.effects));
    ASSERT_EQ(all_of<drain_clients>(d.effects).size(), 1u);
    EXPECT_EQ(all_of<drain_clients>(d.effects)[0], (drain_clients{side::old_side, t0 + 5s, 30s}))
        << "bounded by the budget when it is shorter than drain_timeout";
    const auto cuts = all_of<cut>(d.effects);
    ASSERT_EQ(cuts.size(), 2u);
    EXPECT_EQ(cuts[0], (cut{side::old_side, proxy::close_reason::drain_timeout}));
    EXPECT_EQ(cuts[1], (cut{side::old_side, proxy::close_reason::cut_by_switch}));
    EXPECT_TRUE(has<fence>(d.effects));
}

TEST(SwitchSaga, TcpPauseSwitchHoldsFlipsAndReleases)
{
    driver d(service_kind::tcp);
    d.run(command(side::new_side, switch_mode::pause, false));
    ASSERT_TRUE(d.done);
    EXPECT_EQ(d.done->result, verdict::done);
    EXPECT_FALSE(has<pause_writes>(d.effects));
    EXPECT_FALSE(has<fence>(d.effects));
    EXPECT_TRUE(has<hold_new_clients>(d.effects));
    EXPECT_EQ(all_of<persist>(d.effects).size(), 1u);
    EXPECT_FALSE(d.machine.fenced());
    EXPECT_EQ(d.machine.current_route(), proxy::route_to(side::new_side));
    EXPECT_FALSE(has<quiesce_clients>(d.effects)) << "kind = \"tcp\" is untouched: no request boundaries";
    EXPECT_EQ(all_of<cut>(d.effects).at(0), (cut{side::old_side, proxy::close_reason::cut_by_switch}));
}

TEST(SwitchSaga, ReplicatedKindWithoutReplicationFlipsWithoutServerSteps)
{
    driver d(service_kind::redis);
    auto c = command(side::new_side, switch_mode::pause, false);
    d.run(c);
    ASSERT_TRUE(d.done);
    EXPECT_EQ(d.done->result, verdict::done);
    EXPECT_FALSE(has<promote>(d.effects));
}

// ---- the gate and refusals ----

TEST(SwitchSaga, GateRefusesALinkDownAndLogsIt)
{
    driver d(service_kind::redis);
    auto c = command(side::new_side, switch_mode::pause);
    c.lag->link = link_state::down;
    c.lag->detail = "new is not a replica";
    d.run(c);
    ASSERT_TRUE(d.done);
    EXPECT_EQ(d.done->result, verdict::refused);
    EXPECT_TRUE(d.done->recorded);
    EXPECT_EQ(d.done->message, "switch refused: replication link is down (new is not a replica)");
    EXPECT_EQ(all_of<log_line>(d.effects).at(0), (log_line{true, d.done->message}));
    EXPECT_FALSE(has<hold_new_clients>(d.effects));
    EXPECT_FALSE(d.machine.busy());
}

TEST(SwitchSaga, GateWithoutAReadingSaysWhy)
{
    driver d(service_kind::redis);
    switch_command c;
    c.request = switch_request{side::new_side, switch_mode::pause, false};
    c.replicated = true;
    d.run(c);
    EXPECT_NE(d.done->message.find("no probe has answered yet"), std::string::npos) << d.done->message;
    driver none(service_kind::redis);
    c.replicated = false;
    none.run(c);
    EXPECT_NE(none.done->message.find("no probe configured"), std::string::npos) << none.done->message;
}

TEST(SwitchSaga, ForceOverridesTheGateAndSaysSo)
{
    driver d(service_kind::redis);
    auto c = command(side::new_side, switch_mode::pause, true, true);
    c.lag->link = link_state::down;
    d.run(c);
    ASSERT_TRUE(d.done);
    EXPECT_EQ(d.done->result, verdict::done);
    EXPECT_EQ(progress_lines(d.effects).front().rfind("forced: ", 0), 0u);
    EXPECT_EQ(all_of<log_line>(d.effects).front().line.rfind("switch to new forced by operator", 0), 0u);
}

TEST(SwitchSaga, KillOrDrainOnAReplicatedKindIsRefusedWithoutForce)
{
    for (auto mode : {switch_mode::kill, switch_mode::drain}) {
        driver d(service_kind::redis);
        d.run(command(side::new_side, mode));
        ASSERT_TRUE(d.done);
        EXPECT_EQ(d.done->result, verdict::refused);
        EXPECT_NE(d.done->message.find("would let both sides take writes"), std::string::npos);
    }
}

TEST(SwitchSaga, PausedServiceRefusesASwitch)
{
    driver d(service_kind::tcp);
    d.run(pause_command{2s});
    d.done.reset();
    d.run(command(side::new_side, switch_mode::kill, false));
    EXPECT_EQ(d.done->result, verdict::refused);
    EXPECT_EQ(d.done->message, "switch refused: the service is paused; run `tunnelctl resume` first");
}

TEST(SwitchSaga, SwitchToTheActiveSideIsDoneAndNotRecorded)
{
    driver d(service_kind::tcp);
    d.run(command(side::old_side, switch_mode::kill, false));
    ASSERT_TRUE(d.done);
    EXPECT_EQ(d.done->result, verdict::done);
    EXPECT_FALSE(d.done->recorded);
    EXPECT_EQ(progress_lines(d.effects), std::vector<std::string>{"svc is already on old"});
}

// ---- failure of each step before the commit: undo, nothing changed ----

TEST(SwitchSaga, PauseWritesFailingReleasesToOldWithoutUnpause)
{
    driver d(service_kind::redis);
    d.script[step_kind::pause_writes] = {false};
    d.run(command(side::new_side, switch_mode::pause));
    ASSERT_TRUE(d.done);
    EXPECT_EQ(d.done->result, verdict::failed);
    EXPECT_EQ(d.done->message, "switch failed: step failed; clients released to old after 20ms, nothing changed");
    EXPECT_FALSE(has<unpause>(d.effects)) << "nothing was paused";
    EXPECT_EQ(all_of<release>(d.effects).back(), (release{route{}}));
    EXPECT_FALSE(has<promote>(d.effects));
    EXPECT_EQ(d.machine.state(), service_state::serving);
    EXPECT_FALSE(d.machine.busy());
}

TEST(SwitchSaga, CatchUpFailingUnpausesOld)
{
    driver d(service_kind::redis);
    d.script[step_kind::wait_caught_up] = {false};
    d.run(command(side::new_side, switch_mode::pause));
    EXPECT_EQ(d.done->result, verdict::failed);
    EXPECT_EQ(all_of<unpause>(d.effects), std::vector<unpause>{unpause{side::old_side}});
    EXPECT_FALSE(has<promote>(d.effects));
    EXPECT_EQ(d.machine.current_route(), route{});
}

TEST(SwitchSaga, CatchUpAnsweringAfterTheBudgetIsUndone)
{
    driver d(service_kind::redis);
    d.step_time = 3s; // pause_writes at +3s, catch-up answers at +6s: past the 5s budget
    d.run(command(side::new_side, switch_mode::pause));
    EXPECT_EQ(d.done->result, verdict::failed);
    EXPECT_NE(d.done->message.find("pause budget 5s ran out"), std::string::npos) << d.done->message;
    EXPECT_FALSE(has<promote>(d.effects));
    EXPECT_TRUE(has<unpause>(d.effects));
}

TEST(SwitchSaga, PromoteFailingAsksTheRolesBeforeRouting)
{
    driver d(service_kind::redis);
    d.script[step_kind::promote] = {false};
    d.run(command(side::new_side, switch_mode::pause), step_kind::check_roles);
    ASSERT_TRUE(d.outstanding);
    EXPECT_EQ(*d.outstanding, (effect{check_roles{side::new_side, t0 + 5s}}))
        << "a new that does not answer is asked again until the pause budget ends";
    EXPECT_FALSE(d.done);
    EXPECT_EQ(all_of<release>(d.effects).size(), 0u) << "nobody is routed while the roles are unknown";
    EXPECT_TRUE(d.machine.current_route().hold);
}

TEST(SwitchSaga, PromoteFailedAndNewIsNoPrimaryUndoes)
{
    driver d(service_kind::redis);
    d.script[step_kind::promote] = {false};
    d.script[step_kind::check_roles] = {false};
    d.run(command(side::new_side, switch_mode::pause));
    EXPECT_EQ(d.done->result, verdict::failed);
    EXPECT_EQ(d.done->message.rfind("switch failed: step failed; clients released to old", 0), 0u);
    EXPECT_TRUE(has<unpause>(d.effects));
    EXPECT_EQ(all_of<unfence>(d.effects), std::vector<unfence>{unfence{side::old_side}})
        << "the fence taken before the promotion is lifted";
    EXPECT_FALSE(has<follow>(d.effects));
    EXPECT_EQ(d.machine.current_route(), route{});
    EXPECT_FALSE(d.machine.fenced());
}

TEST(SwitchSaga, PromoteFailedAndNewNeverAnsweredKeepsOldFencedAndIsUnresolved)
{
    // New promoted, then gone before it said so (killed, restarting): lifting old's fence now
    // would make two primaries once new is back (campaign seed 8, cycle 3).
    driver d(service_kind::redis);
    d.script[step_kind::promote] = {false};
    d.run(command(side::new_side, switch_mode::pause), step_kind::check_roles);
    ASSERT_TRUE(d.outstanding);
    d.outstanding.reset();
    d.run_step(step_done{step_kind::check_roles, false, "verify promotion: cannot connect", false, true});
    ASSERT_TRUE(d.done);
    EXPECT_EQ(d.done->result, verdict::failed);
    EXPECT_NE(d.done->message.find("old stays fenced"), std::string::npos) << d.done->message;
    EXPECT_NE(d.done->message.find("tunnelctl resolve svc --to old"), std::string::npos) << d.done->message;
    EXPECT_FALSE(has<unfence>(d.effects)) << "old's fence stays while new may be a primary";
    EXPECT_FALSE(has<unpause>(d.effects));
    EXPECT_EQ(d.machine.state(), service_state::unresolved);
    EXPECT_TRUE(d.machine.current_route().refuse) << "clients are refused, never sent to a side that may be stale";
    EXPECT_FALSE(d.machine.current_route().hold);
    EXPECT_TRUE(d.machine.fenced());
    ASSERT_TRUE(d.machine.journal()) << "the journal stays: a restart recovers it like a crash at this step";
    EXPECT_EQ(d.machine.journal()->step, journal_step::promote);

    // The operator resolves to new once it answers as a primary: old is a fenced primary.
    d.done.reset();
    observations seen;
    seen.old_server = {true, "", server_role::primary, "a1", "00", 100, std::nullopt, true};
    seen.new_server = {true, "", server_role::primary, "c3", "a1", 100, std::nullopt, false};
    d.run(resolve_command{side::new_side, seen});
    ASSERT_TRUE(d.done);
    EXPECT_EQ(d.machine.state(), service_state::serving);
    EXPECT_EQ(d.machine.current_route(), proxy::route_to(side::new_side));
    EXPECT_FALSE(d.machine.journal());
}

TEST(SwitchSaga, PromoteFailedButNewIsAPrimaryGoesForward)
{
    driver d(service_kind::redis);
    d.script[step_kind::promote] = {false};
    d.script[step_kind::check_roles] = {true};
    d.run(command(side::new_side, switch_mode::pause));
    EXPECT_EQ(d.done->result, verdict::done) << d.done->message;
    EXPECT_TRUE(has<fence>(d.effects)) << "old is fenced: two primaries never stay reachable";
    EXPECT_EQ(d.machine.current_route(), proxy::route_to(side::new_side));
    EXPECT_TRUE(d.machine.fenced());
    const auto logs = all_of<log_line>(d.effects);
    EXPECT_TRUE(std::any_of(logs.begin(), logs.end(), [](const log_line& l) {
        return l.warning && l.line.find("but new is a primary") != std::string::npos;
    }));
}

TEST(SwitchSaga, PromoteFailedButNewIsAPrimaryLiftsTheFenceARollbackLeftOnNew)
{
    // Back to new after a rollback fenced it; the promotion's reply was lost after REPLICAOF NO
    // ONE and before new's fence was lifted: new must take writes before clients reach it.
    switch_machine machine(service_kind::redis, route{}, "svc", false, std::nullopt, true);
    driver d(service_kind::redis);
    d.machine = machine;
    d.script[step_kind::promote] = {false};
    d.script[step_kind::check_roles] = {true};
    d.run(command(side::new_side, switch_mode::pause));
    ASSERT_TRUE(d.done);
    EXPECT_EQ(d.done->result, verdict::done) << d.done->message;
    const auto lifted = std::find(d.effects.begin(), d.effects.end(), effect{unfence{side::new_side}});
    ASSERT_NE(lifted, d.effects.end());
    const auto routed = std::find_if(d.effects.begin(), d.effects.end(), [](const effect& e) {
        const auto* r = std::get_if<release>(&e);
        return r && r->to.active == side::new_side;
    });
    EXPECT_LT(lifted, routed) << "new's fence goes before any client reaches it";
}

// ---- failure of each step after the commit: the switch stands, the outcome says what is wrong ----

TEST(SwitchSaga, FenceFailingUndoesBeforeAnyPromotion)
{
    driver d(service_kind::redis);
    d.script[step_kind::fence] = {false};
    d.run(command(side::new_side, switch_mode::pause));
    EXPECT_EQ(d.done->result, verdict::failed);
    EXPECT_EQ(d.done->message.rfind("switch failed: step failed; clients released to old", 0), 0u) << d.done->message;
    EXPECT_FALSE(has<promote>(d.effects)) << "new is never promoted while old may take writes";
    EXPECT_TRUE(has<unfence>(d.effects)) << "a fence that half worked is lifted";
    EXPECT_TRUE(has<unpause>(d.effects));
    EXPECT_FALSE(d.machine.fenced());
    EXPECT_EQ(d.machine.current_route(), route{});
}

TEST(SwitchSaga, NoFenceConfiguredSaysOldIsNotFenced)
{
    driver d(service_kind::postgres);
    auto s = d.machine.on(command(side::new_side, switch_mode::pause), d.now);
    for (int i = 0; i < 20 && !s.done; ++i) {
        d.effects.insert(d.effects.end(), s.effects.begin(), s.effects.end());
        if (s.effects.empty() || !answers(s.effects.back())) break;
        const auto which = kind_of_answer(s.effects.back());
        step_done answer{which, true, which == step_kind::fence ? "no fence_command is set" : "ok"};
        answer.no_op = which == step_kind::fence;
        s = d.machine.on(answer, d.now);
    }
    ASSERT_TRUE(s.done);
    d.effects.insert(d.effects.end(), s.effects.begin(), s.effects.end());
    EXPECT_EQ(s.done->result, verdict::done) << s.done->message;
    const auto lines = progress_lines(d.effects);
    EXPECT_NE(std::find(lines.begin(), lines.end(), "old is not fenced: no fence_command is set"), lines.end());
    EXPECT_FALSE(d.machine.fenced());
}

TEST(SwitchSaga, FollowFailingStillSwitchesAndReportsIt)
{
    driver d(service_kind::redis);
    d.script[step_kind::follow] = {false};
    d.run(command(side::new_side, switch_mode::pause));
    EXPECT_EQ(d.done->result, verdict::failed);
    EXPECT_EQ(d.done->message, "svc switched to new, but making old a replica of new failed: step failed; old "
                               "still refuses writes (fenced before the promotion)");
    EXPECT_TRUE(d.machine.fenced());
    EXPECT_EQ(d.machine.current_route(), proxy::route_to(side::new_side));
    EXPECT_TRUE(has<unpause>(d.effects));
    EXPECT_EQ(all_of<persist>(d.effects).size(), 5u);
    EXPECT_FALSE(d.machine.journal()) << "done: nothing left to recover";
}

TEST(SwitchSaga, JournalThatCannotBeWrittenStopsBeforeAnyServerChanges)
{
    driver d(service_kind::redis);
    d.script[step_kind::persist] = {false};
    d.run(command(side::new_side, switch_mode::pause));
    EXPECT_EQ(d.done->result, verdict::failed);
    EXPECT_EQ(d.done->message.rfind("switch failed: cannot write the journal to the state file: step failed", 0), 0u)
        << d.done->message;
    EXPECT_FALSE(has<pause_writes>(d.effects));
    EXPECT_EQ(d.machine.current_route(), route{});
}

TEST(SwitchSaga, CommitPersistFailingSkipsTheLastAndReportsIt)
{
    driver d(service_kind::redis);
    d.script[step_kind::persist] = {true, true, true, false};
    d.run(command(side::new_side, switch_mode::pause));
    EXPECT_EQ(d.done->result, verdict::failed);
    EXPECT_EQ(d.done->message, "svc switched to new but the state file could not be written: step failed");
    EXPECT_EQ(all_of<persist>(d.effects).size(), 4u);
    EXPECT_TRUE(has<fence>(d.effects)) << "old is fenced even when the state file cannot be written";
    EXPECT_TRUE(d.machine.fenced());
}

TEST(SwitchSaga, SecondPersistFailingIsReported)
{
    driver d(service_kind::redis);
    d.script[step_kind::persist] = {true, true, true, true, false};
    d.run(command(side::new_side, switch_mode::pause));
    EXPECT_EQ(d.done->result, verdict::failed);
    EXPECT_NE(d.done->message.find("state file could not be written"), std::string::npos);
}

// ---- rollback ----

TEST(SwitchSaga, RollbackHoldsNewsClientsThenRollsBackTheServersThenMovesThem)
{
    driver d(service_kind::redis, proxy::route_to(side::new_side));
    d.run(command(side::old_side, switch_mode::pause));
    ASSERT_TRUE(d.done);
    EXPECT_EQ(d.done->result, verdict::done) << d.done->message;
    EXPECT_FALSE(has<pause_writes>(d.effects));
    EXPECT_FALSE(has<fence>(d.effects));
    EXPECT_FALSE(has<cut>(d.effects)) << "redis clients are moved, not cut";
    const auto rb = all_of<roll_back>(d.effects);
    ASSERT_EQ(rb.size(), 1u);
    EXPECT_EQ(rb[0], (roll_back{5s, false, t0 + 5s}));
    const auto quiesce = std::find(d.effects.begin(), d.effects.end(), effect{quiesce_clients{side::new_side, t0 + 3s}});
    const auto roll = std::find_if(d.effects.begin(), d.effects.end(),
                                   [](const effect& e) { return std::holds_alternative<roll_back>(e); });
    EXPECT_LT(quiesce, roll) << "new's clients are held at a request boundary before new is fenced";
    EXPECT_EQ(all_of<move_clients>(d.effects).at(0), (move_clients{side::new_side, side::old_side, t0 + 5s}));
    EXPECT_EQ(d.machine.current_route(), route{});
    EXPECT_FALSE(d.machine.fenced());
    EXPECT_TRUE(d.machine.new_fenced()) << "the rollback fenced new: the probe keeps it so";
    EXPECT_TRUE(d.machine.keeps_fence());
}

TEST(SwitchSaga, PostgresRollbackStillCutsNewsClients)
{
    driver d(service_kind::postgres, proxy::route_to(side::new_side));
    d.run(command(side::old_side, switch_mode::pause));
    ASSERT_TRUE(d.done);
    EXPECT_EQ(all_of<cut>(d.effects).front(), (cut{side::new_side, proxy::close_reason::cut_by_switch}))
        << "new's clients are cut before new is fenced";
    EXPECT_FALSE(has<quiesce_clients>(d.effects));
    EXPECT_FALSE(has<move_clients>(d.effects));
    EXPECT_FALSE(d.machine.new_fenced()) << "a postgres rollback fences nothing: the state file must not say so";
}

TEST(SwitchSaga, FailedRedisSwitchReleasesTheHeldClientsToOld)
{
    // The held clients go on with old: release names the side they stay on, and nothing moves.
    driver d(service_kind::redis);
    d.script[step_kind::wait_caught_up] = {false};
    d.run(command(side::new_side, switch_mode::pause));
    ASSERT_TRUE(d.done);
    EXPECT_EQ(d.done->result, verdict::failed);
    EXPECT_TRUE(has<quiesce_clients>(d.effects));
    EXPECT_FALSE(has<move_clients>(d.effects));
    EXPECT_EQ(all_of<release>(d.effects).back(), (release{proxy::route_to(side::old_side)}));
}

TEST(SwitchSaga, MovePinnedClientsGetAtLeastASecond)
{
    // A switch that used up its budget on the server steps still gives pinned clients a second.
    driver d(service_kind::redis);
    d.step_time = 500ms;
    d.run(command(side::new_side, switch_mode::pause));
    ASSERT_TRUE(d.done);
    ASSERT_EQ(d.done->result, verdict::done) << d.done->message;
    const auto move = all_of<move_clients>(d.effects).at(0);
    EXPECT_EQ(move.until, d.now + 1s);
}

TEST(SwitchSaga, RollbackFailingStaysOnNew)
{
    driver d(service_kind::redis, proxy::route_to(side::new_side));
    d.script[step_kind::roll_back] = {false};
    d.run(command(side::old_side, switch_mode::pause));
    EXPECT_EQ(d.done->result, verdict::failed);
    EXPECT_EQ(d.machine.current_route(), proxy::route_to(side::new_side));
    EXPECT_EQ(d.done->message.rfind("switch failed: step failed; clients released to new", 0), 0u);
    EXPECT_FALSE(d.machine.new_fenced());
}

TEST(SwitchSaga, RollbackWhoseOldNeverAnsweredAfterItsPromotionKeepsNewFencedAndIsUnresolved)
{
    // REPLICAOF NO ONE sent to old, its reply lost and old gone (restarting): old may be a
    // primary, so new's fence stays and nobody is routed anywhere.
    driver d(service_kind::redis, proxy::route_to(side::new_side));
    d.run(command(side::old_side, switch_mode::pause), step_kind::roll_back);
    ASSERT_TRUE(d.outstanding);
    d.outstanding.reset();
    d.run_step(step_done{step_kind::roll_back, false,
                         "rollback: promote old: connection reset, and old has not answered since (cannot connect)",
                         false, true});
    ASSERT_TRUE(d.done);
    EXPECT_EQ(d.done->result, verdict::failed);
    EXPECT_NE(d.done->message.find("old may be a primary, so new stays fenced"), std::string::npos)
        << d.done->message;
    EXPECT_EQ(d.machine.state(), service_state::unresolved);
    EXPECT_TRUE(d.machine.current_route().refuse);
    EXPECT_FALSE(has<unfence>(d.effects));
    ASSERT_TRUE(d.machine.journal());
    EXPECT_EQ(d.machine.journal()->step, journal_step::roll_back);
}

// ---- the pause budget: the deadline fires while switching ----

TEST(SwitchSaga, BudgetExhaustedDuringCatchUpReleasesAtOnceAndUnpausesAfterTheStep)
{
    driver d(service_kind::redis);
    d.run(command(side::new_side, switch_mode::pause), step_kind::wait_caught_up);
    ASSERT_EQ(d.machine.deadline(), t0 + 5s);
    EXPECT_TRUE(d.machine.on(deadline_reached{}, t0 + 4999ms).effects.empty()) << "not yet";

    const auto fired = d.machine.on(deadline_reached{}, t0 + 5s);
    ASSERT_TRUE(fired.done);
    EXPECT_EQ(fired.done->result, verdict::failed);
    EXPECT_EQ(fired.done->message,
              "switch failed: pause budget 5s ran out; clients released to old after 5000ms, nothing changed");
    EXPECT_EQ(all_of<release>(fired.effects), (std::vector<release>{release{route{}}}));
    EXPECT_FALSE(has<unpause>(fired.effects)) << "the catch-up step still has the servers: one call at a time";
    EXPECT_EQ(d.machine.state(), service_state::serving);
    EXPECT_FALSE(d.machine.current_route().hold);
    EXPECT_TRUE(d.machine.busy()) << "no other switch until the last step is back";

    const auto late = d.machine.on(step_done{step_kind::wait_caught_up, true, "caught up"}, t0 + 5100ms);
    EXPECT_EQ(late.effects, (std::vector<effect>{unpause{side::old_side}, persist{}}))
        << "then the journal is cleared";
    EXPECT_FALSE(late.done) << "answered once, by the deadline";
    EXPECT_FALSE(d.machine.journal());
    EXPECT_TRUE(d.machine.on(step_done{step_kind::persist, true, ""}, t0 + 5110ms).effects.empty());
    EXPECT_FALSE(d.machine.busy());
    EXPECT_FALSE(d.machine.deadline());
}

TEST(SwitchSaga, BudgetExhaustedWhileFencingLiftsTheFenceAfterTheStep)
{
    driver d(service_kind::redis);
    d.run(command(side::new_side, switch_mode::pause), step_kind::fence);
    const auto fired = d.machine.on(deadline_reached{}, t0 + 5s);
    ASSERT_TRUE(fired.done);
    EXPECT_EQ(fired.done->result, verdict::failed);
    EXPECT_EQ(all_of<release>(fired.effects), (std::vector<release>{release{route{}}}));
    EXPECT_FALSE(has<unfence>(fired.effects)) << "one call on the servers at a time";
    const auto late = d.machine.on(step_done{step_kind::fence, true, "fenced"}, t0 + 5100ms);
    EXPECT_EQ(late.effects, (std::vector<effect>{unfence{side::old_side}, unpause{side::old_side}, persist{}}));
    EXPECT_FALSE(d.machine.fenced());
    d.machine.on(step_done{step_kind::persist, true, ""}, t0 + 5110ms);
    EXPECT_FALSE(d.machine.busy());
}

TEST(SwitchSaga, BudgetExhaustedWhilePausingWritesUnpausesOnlyIfThePauseTookHold)
{
    for (bool paused : {true, false}) {
        driver d(service_kind::redis);
        d.run(command(side::new_side, switch_mode::pause), step_kind::pause_writes);
        const auto fired = d.machine.on(deadline_reached{}, t0 + 6s);
        ASSERT_TRUE(fired.done);
        const auto late = d.machine.on(step_done{step_kind::pause_writes, paused, ""}, t0 + 7s);
        EXPECT_EQ(has<unpause>(late.effects), paused);
        d.machine.on(step_done{step_kind::persist, true, ""}, t0 + 7s);
        EXPECT_FALSE(d.machine.busy());
    }
}

TEST(SwitchSaga, BudgetExhaustedWhilePostgresDrainsOldClients)
{
    driver d(service_kind::postgres);
    d.run(command(side::new_side, switch_mode::pause), step_kind::drain_clients);
    const auto fired = d.machine.on(deadline_reached{}, t0 + 5s);
    ASSERT_TRUE(fired.done);
    EXPECT_EQ(fired.done->result, verdict::failed);
    const auto late = d.machine.on(step_done{step_kind::drain_clients, true, ""}, t0 + 5s);
    EXPECT_TRUE(late.effects.empty());
    EXPECT_FALSE(d.machine.busy());
}

TEST(SwitchSaga, BudgetExhaustedDuringPromotionWaitsForItsAnswer)
{
    driver d(service_kind::redis);
    d.run(command(side::new_side, switch_mode::pause), step_kind::promote);
    const auto fired = d.machine.on(deadline_reached{}, t0 + 5s);
    EXPECT_FALSE(fired.done) << "a promotion under way may have promoted new: never release to old blind";
    EXPECT_FALSE(has<release>(fired.effects));
    EXPECT_TRUE(has<log_line>(fired.effects));
    EXPECT_FALSE(d.machine.deadline()) << "fired once; the executor does not spin on it";
    EXPECT_TRUE(d.machine.current_route().hold);
    d.now = t0 + 5100ms;
    d.answer(step_kind::promote, true);
    ASSERT_TRUE(d.done);
    EXPECT_EQ(d.done->result, verdict::done);
    EXPECT_EQ(d.machine.current_route(), proxy::route_to(side::new_side));
}

TEST(SwitchSaga, BudgetExhaustedDuringRollbackWaitsForItsAnswer)
{
    driver d(service_kind::redis, proxy::route_to(side::new_side));
    d.run(command(side::old_side, switch_mode::pause), step_kind::roll_back);
    EXPECT_FALSE(d.machine.on(deadline_reached{}, t0 + 5s).done);
    d.answer(step_kind::roll_back, false);
    EXPECT_EQ(d.done->result, verdict::failed);
    EXPECT_EQ(d.machine.current_route(), proxy::route_to(side::new_side));
}

TEST(SwitchSaga, TcpPauseSwitchWithAnEmptyBudgetIsUndone)
{
    driver d(service_kind::tcp);
    auto c = command(side::new_side, switch_mode::pause, false);
    c.limits.pause_timeout = 0ms;
    d.run(c);
    EXPECT_EQ(d.done->result, verdict::failed);
    EXPECT_NE(d.done->message.find("pause budget 0s ran out"), std::string::npos) << d.done->message;
    EXPECT_EQ(d.machine.current_route(), route{});
}

TEST(SwitchSaga, AnswersNotAskedForAreIgnored)
{
    driver d(service_kind::redis);
    EXPECT_TRUE(d.machine.on(step_done{step_kind::promote, true, ""}, t0).effects.empty());
    d.run(command(side::new_side, switch_mode::pause), step_kind::wait_caught_up);
    const auto wrong = d.machine.on(step_done{step_kind::fence, true, ""}, t0);
    EXPECT_TRUE(wrong.effects.empty());
    EXPECT_FALSE(wrong.done);
    EXPECT_TRUE(d.machine.busy());
}

// ---- kill and drain ----

TEST(SwitchSaga, KillFlipsPersistsThenCuts)
{
    driver d(service_kind::tcp);
    d.run(command(side::new_side, switch_mode::kill, false));
    ASSERT_TRUE(d.done);
    EXPECT_EQ(d.done->result, verdict::done);
    EXPECT_EQ(d.done->message, "svc switched to new");
    ASSERT_GE(d.effects.size(), 4u);
    EXPECT_EQ(all_of<release>(d.effects).at(0), (release{proxy::route_to(side::new_side)}));
    EXPECT_EQ(all_of<cut>(d.effects), (std::vector<cut>{cut{side::old_side, proxy::close_reason::cut_by_switch}}));
    EXPECT_EQ(progress_lines(d.effects), std::vector<std::string>{"new clients go to new; cutting clients on old"});
}

TEST(SwitchSaga, KillWhosePersistFailsSaysSo)
{
    driver d(service_kind::tcp);
    d.script[step_kind::persist] = {false};
    d.run(command(side::new_side, switch_mode::kill, false));
    EXPECT_EQ(d.done->result, verdict::failed);
    EXPECT_EQ(d.done->message, "switched svc to new but could not persist it: step failed");
    EXPECT_FALSE(d.machine.busy());
}

TEST(SwitchSaga, DrainWatchesThenCutsAtDrainTimeoutThenEnds)
{
    driver d(service_kind::tcp);
    d.run(command(side::new_side, switch_mode::drain, false));
    ASSERT_TRUE(d.outstanding);
    EXPECT_EQ(*d.outstanding, (effect{watch_drain{side::old_side, 30s}}));
    EXPECT_EQ(d.machine.state(), service_state::draining);
    EXPECT_EQ(d.machine.deadline(), t0 + 30s);
    EXPECT_FALSE(d.done);

    const auto at_timeout = d.machine.on(deadline_reached{}, t0 + 30s);
    EXPECT_EQ(at_timeout.effects, (std::vector<effect>{cut{side::old_side, proxy::close_reason::drain_timeout}}));
    EXPECT_FALSE(at_timeout.done);
    EXPECT_FALSE(d.machine.deadline());

    d.run(side_empty{});
    ASSERT_TRUE(d.done);
    EXPECT_EQ(d.done->result, verdict::done);
    EXPECT_EQ(progress_lines(d.effects).back(), "drained old");
    EXPECT_EQ(d.machine.state(), service_state::serving);
    EXPECT_FALSE(d.machine.busy());
}

TEST(SwitchSaga, DrainEndingEarlyNeedsNoDeadline)
{
    driver d(service_kind::tcp);
    d.run(command(side::new_side, switch_mode::drain, false));
    d.run(side_empty{});
    EXPECT_EQ(d.done->result, verdict::done);
    EXPECT_TRUE(d.machine.on(deadline_reached{}, t0 + 31s).effects.empty());
}

// ---- pause, resume, split ----

TEST(SwitchSaga, ManualPauseAutoResumesAtItsDeadline)
{
    driver d(service_kind::tcp);
    d.run(pause_command{2s});
    ASSERT_TRUE(d.done);
    EXPECT_EQ(d.done->result, verdict::done);
    EXPECT_TRUE(has<hold_new_clients>(d.effects));
    EXPECT_EQ(d.machine.deadline(), t0 + 2s);
    const auto fired = d.machine.on(deadline_reached{}, t0 + 2s);
    EXPECT_EQ(all_of<release>(fired.effects), (std::vector<release>{release{route{}}}));
    EXPECT_EQ(all_of<log_line>(fired.effects).at(0).line, "pause reached its timeout; clients released to old");
    EXPECT_EQ(d.machine.state(), service_state::serving);
}

TEST(SwitchSaga, ResumeReleasesAndRefusesWhenNotPaused)
{
    driver d(service_kind::tcp);
    const auto refused = d.machine.on(resume_command{}, t0);
    EXPECT_EQ(refused.done->result, verdict::refused);
    EXPECT_EQ(refused.done->message, "resume refused: the service is not paused");
    d.machine.on(pause_command{2s}, t0);
    const auto resumed = d.machine.on(resume_command{}, t0);
    EXPECT_EQ(resumed.done->result, verdict::done);
    EXPECT_EQ(all_of<release>(resumed.effects), (std::vector<release>{release{route{}}}));
    EXPECT_FALSE(d.machine.deadline());
}

TEST(SwitchSaga, PauseDuringASwitchIsBusy)
{
    driver d(service_kind::redis);
    d.run(command(side::new_side, switch_mode::pause), step_kind::wait_caught_up);
    const auto paused = d.machine.on(pause_command{2s}, t0);
    EXPECT_EQ(paused.done->result, verdict::busy);
    EXPECT_EQ(paused.done->message, "a switch of svc is under way");
}

TEST(SwitchSaga, SplitAppliesThenPersists)
{
    driver d(service_kind::tcp);
    d.run(split_command{25, true});
    ASSERT_TRUE(d.done);
    EXPECT_EQ(d.done->result, verdict::done);
    EXPECT_FALSE(d.done->recorded);
    EXPECT_EQ(d.machine.current_route().split_percent, 25);
    EXPECT_TRUE(has<persist>(d.effects));

    driver failing(service_kind::tcp);
    failing.script[step_kind::persist] = {false};
    failing.run(split_command{25, false});
    EXPECT_EQ(failing.done->result, verdict::failed);
    EXPECT_EQ(failing.done->message, "split applied but could not be persisted: step failed");

    driver redis(service_kind::redis);
    redis.run(split_command{25, false});
    EXPECT_EQ(redis.done->result, verdict::refused);
    EXPECT_FALSE(has<persist>(redis.effects));
}

} // namespace
} // namespace tunneld::cutover
