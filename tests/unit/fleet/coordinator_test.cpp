// Goal: the fleet switch's machines decide every step of docs/fleet.md without etcd: the
// coordinator claims the epoch, writes each phase before acting on it, switches the servers
// only once every live member acknowledged within ack_timeout, commits or aborts; a member
// holds, releases and flips from the record it sees; a coordinator that dies after any effect
// is taken over and the fleet ends in one consistent state.

#include "fleet/coordinator.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace tunneld::fleet {
namespace {

using namespace std::chrono_literals;
using ::testing::HasSubstr;

const clock::time_point t0{std::chrono::seconds(1000)};

member_entry member(std::string name, std::int64_t epoch, std::string state, side active = side::old_side)
{
    return {std::move(name), member_record{active, epoch, std::move(state), 0, 1}, 1};
}

template <class T> std::vector<T> effects_of(const coordinator_step& step)
{
    std::vector<T> out;
    for (const auto& e : step.effects)
        if (const auto* x = std::get_if<T>(&e)) out.push_back(*x);
    return out;
}

/// The one write_epoch a step asks for.
epoch_record written_record(const coordinator_step& step)
{
    const auto writes = effects_of<write_epoch>(step);
    EXPECT_EQ(writes.size(), 1u);
    return writes.empty() ? epoch_record{} : writes.front().next;
}

epoch_state claimed_state(std::int64_t epoch, std::int64_t revision, side target = side::new_side)
{
    return {{epoch, side::old_side, "claimed", "web-1", target}, revision};
}

/// A coordinator brought to phase hold of epoch 1 at t0 (written at revision 11).
coordinator holding(coordinator_options options = {})
{
    coordinator c("web-1", side::new_side, options);
    c.start(t0);
    c.on(claim_answered{{true, claimed_state(1, 10)}}, t0);
    epoch_record hold{1, side::old_side, "hold", "web-1", side::new_side};
    c.on(epoch_written{{hold, 11}}, t0);
    return c;
}

TEST(Coordinator, WritesEachPhaseBeforeActingAndCommitsWhenAllAcknowledged)
{
    coordinator c("web-1", side::new_side);
    auto step = c.start(t0);
    ASSERT_EQ(effects_of<claim_epoch>(step).size(), 1u);
    EXPECT_EQ(effects_of<claim_epoch>(step)[0].target, side::new_side);

    step = c.on(claim_answered{{true, claimed_state(1, 10)}}, t0);
    auto hold = written_record(step);
    EXPECT_EQ(hold, (epoch_record{1, side::old_side, "hold", "web-1", side::new_side}));
    EXPECT_TRUE(effects_of<switch_servers>(step).empty()) << "nothing is acted on before the phase is written";

    step = c.on(epoch_written{{hold, 11}}, t0);
    EXPECT_EQ(c.deadline(), t0 + 2s) << "acknowledgements are awaited for ack_timeout";
    step = c.on(members_seen{{member("web-1", 1, "held"), member("web-2", 0, "serving")}}, t0 + 5ms);
    EXPECT_TRUE(effects_of<write_epoch>(step).empty()) << "web-2 has not acknowledged yet";
    ASSERT_EQ(effects_of<report>(step).size(), 1u);
    EXPECT_EQ(effects_of<report>(step)[0].line, "epoch 1: web-1 acknowledged after 5 ms (1 of 2)");
    step = c.on(members_seen{{member("web-1", 1, "held"), member("web-2", 0, "serving")}}, t0 + 7ms);
    EXPECT_TRUE(step.effects.empty()) << "an acknowledgement is reported once";

    step = c.on(members_seen{{member("web-1", 1, "held"), member("web-2", 1, "held")}}, t0 + 9ms);
    ASSERT_GE(effects_of<report>(step).size(), 1u);
    EXPECT_EQ(effects_of<report>(step)[0].line, "epoch 1: web-2 acknowledged after 9 ms (2 of 2)");
    auto switching = written_record(step);
    EXPECT_EQ(switching.phase, "switch");
    EXPECT_TRUE(effects_of<switch_servers>(step).empty());

    step = c.on(epoch_written{{switching, 12}}, t0 + 10ms);
    ASSERT_EQ(effects_of<switch_servers>(step).size(), 1u);
    EXPECT_EQ(effects_of<switch_servers>(step)[0].epoch, 1);

    step = c.on(servers_switched{true, {}}, t0 + 30ms);
    auto commit = written_record(step);
    EXPECT_EQ(commit, (epoch_record{1, side::new_side, "committed", "", std::nullopt}));
    EXPECT_FALSE(step.done);

    step = c.on(epoch_written{{commit, 13}}, t0 + 31ms);
    ASSERT_TRUE(step.done);
    EXPECT_EQ(step.done->outcome, fleet_outcome::committed);
    EXPECT_EQ(step.done->epoch, 1);
    EXPECT_TRUE(c.finished());
}

TEST(Coordinator, ASecondSwitchIsRefusedNamingTheHolder)
{
    coordinator c("web-2", side::new_side);
    c.start(t0);
    auto step = c.on(claim_answered{{false, {{4, side::old_side, "hold", "web-1", side::new_side}, 20}}}, t0);
    ASSERT_TRUE(step.done);
    EXPECT_EQ(step.done->outcome, fleet_outcome::refused);
    EXPECT_THAT(step.done->reason, HasSubstr("epoch 4 is held by web-1 (switching to new, phase hold)"));
    EXPECT_TRUE(step.effects.empty());

    coordinator unreachable("web-2", side::new_side);
    unreachable.start(t0);
    step = unreachable.on(claim_failed{false, "unreachable: connection refused"}, t0);
    ASSERT_TRUE(step.done);
    EXPECT_EQ(step.done->outcome, fleet_outcome::refused);
    EXPECT_THAT(step.done->reason, HasSubstr("connection refused"));
}

TEST(Coordinator, AMissingAcknowledgementAbortsWithoutTouchingTheServers)
{
    auto c = holding();
    auto step = c.on(members_seen{{member("web-1", 1, "held"), member("web-2", 0, "serving")}}, t0 + 100ms);
    EXPECT_TRUE(effects_of<write_epoch>(step).empty());
    step = c.on(coordinator_deadline{}, t0 + 1999ms);
    EXPECT_TRUE(step.effects.empty()) << "ack_timeout is not over yet";
    step = c.on(coordinator_deadline{}, t0 + 2s);
    auto abort = written_record(step);
    EXPECT_EQ(abort, (epoch_record{1, side::old_side, "committed", "", std::nullopt}))
        << "aborted: committed with the side unchanged, the epoch used up";
    EXPECT_TRUE(effects_of<switch_servers>(step).empty());
    // An acknowledgement that comes late changes nothing.
    EXPECT_TRUE(c.on(members_seen{{member("web-1", 1, "held"), member("web-2", 1, "held")}}, t0 + 2001ms).effects.empty());
    step = c.on(epoch_written{{abort, 12}}, t0 + 2002ms);
    ASSERT_TRUE(step.done);
    EXPECT_EQ(step.done->outcome, fleet_outcome::aborted);
    EXPECT_EQ(step.done->reason, "web-2 did not acknowledge within 2000ms");
}

TEST(Coordinator, AMemberWhoseLeaseEndedIsNotWaitedFor)
{
    auto c = holding();
    c.on(members_seen{{member("web-1", 1, "held"), member("web-2", 0, "serving")}}, t0);
    const auto step = c.on(members_seen{{member("web-1", 1, "held")}}, t0 + 50ms);
    EXPECT_EQ(written_record(step).phase, "switch");
}

TEST(Coordinator, NoMemberSeenIsNoAcknowledgement)
{
    auto c = holding();
    EXPECT_TRUE(c.on(members_seen{{}}, t0).effects.empty());
    const auto step = c.on(coordinator_deadline{}, t0 + 2s);
    EXPECT_EQ(written_record(step).phase, "committed");
    EXPECT_EQ(written_record(step).committed, side::old_side);
}

TEST(Coordinator, AMalformedMemberRecordDoesNotAcknowledge)
{
    auto c = holding();
    const auto step = c.on(members_seen{{member("web-1", 1, "held"), {"web-2", std::nullopt, 3}}}, t0);
    EXPECT_TRUE(effects_of<write_epoch>(step).empty());
    EXPECT_TRUE(effects_of<switch_servers>(step).empty());
}

TEST(Coordinator, ServersNotSwitchedAbortsToOld)
{
    auto c = holding();
    auto step = c.on(members_seen{{member("web-1", 1, "held")}}, t0);
    c.on(epoch_written{{written_record(step), 12}}, t0);
    step = c.on(servers_switched{false, "lag 3MiB > max_lag 1MiB"}, t0 + 5ms);
    const auto abort = written_record(step);
    EXPECT_EQ(abort.committed, side::old_side);
    step = c.on(epoch_written{{abort, 13}}, t0 + 6ms);
    ASSERT_TRUE(step.done);
    EXPECT_EQ(step.done->outcome, fleet_outcome::aborted);
    EXPECT_THAT(step.done->reason, HasSubstr("lag 3MiB > max_lag 1MiB"));
}

TEST(Coordinator, AWriteWhoseAnswerWasLostIsReadBack)
{
    auto c = holding();
    auto step = c.on(members_seen{{member("web-1", 1, "held")}}, t0);
    const auto switching = written_record(step);
    step = c.on(epoch_not_written{false, true, "outcome unknown"}, t0);
    ASSERT_EQ(effects_of<read_back>(step).size(), 1u);
    EXPECT_TRUE(effects_of<switch_servers>(step).empty());

    // Read back unchanged: it did not apply, so it is written again.
    step = c.on(epoch_read{epoch_state{{1, side::old_side, "hold", "web-1", side::new_side}, 11}}, t0);
    EXPECT_EQ(written_record(step), switching);
    step = c.on(epoch_not_written{false, true, "outcome unknown"}, t0);
    // Read back as written: it applied.
    step = c.on(epoch_read{epoch_state{switching, 12}}, t0);
    ASSERT_EQ(effects_of<switch_servers>(step).size(), 1u);
}

TEST(Coordinator, ARecordChangedByAnotherWriterIsLeftToIt)
{
    auto c = holding();
    auto step = c.on(members_seen{{member("web-1", 1, "held")}}, t0);
    step = c.on(epoch_not_written{true, false, "mod_revision changed"}, t0);
    ASSERT_TRUE(step.done);
    EXPECT_EQ(step.done->outcome, fleet_outcome::unresolved);
    EXPECT_TRUE(effects_of<switch_servers>(step).empty());
}

TEST(Coordinator, TheCommitIsRetriedLongerThanAPhaseWhileEtcdIsAway)
{
    coordinator_options options;
    options.write_budget = 1s;
    auto c = holding(options);
    auto step = c.on(members_seen{{member("web-1", 1, "held")}}, t0);
    c.on(epoch_written{{written_record(step), 12}}, t0);
    step = c.on(servers_switched{true, {}}, t0);
    const auto commit = written_record(step);
    auto now = t0;
    for (int attempt = 0; attempt < 50; ++attempt) {
        step = c.on(epoch_not_written{false, false, "unreachable"}, now);
        ASSERT_FALSE(step.done) << "gave up on the commit after " << attempt << " attempts";
        ASSERT_EQ(c.deadline(), now + 100ms);
        now += 100ms;
        step = c.on(coordinator_deadline{}, now);
        ASSERT_EQ(written_record(step), commit);
    }
    step = c.on(epoch_written{{commit, 14}}, now);
    ASSERT_TRUE(step.done);
    EXPECT_EQ(step.done->outcome, fleet_outcome::committed);

    // A phase before the servers changed is given up after write_budget: nothing was acted on.
    auto early = holding(options);
    early.on(members_seen{{member("web-1", 1, "held")}}, t0);
    early.on(epoch_not_written{false, false, "unreachable"}, t0);
    early.on(coordinator_deadline{}, t0 + 100ms);
    step = early.on(epoch_not_written{false, false, "unreachable"}, t0 + 1s);
    ASSERT_TRUE(step.done);
    EXPECT_EQ(step.done->outcome, fleet_outcome::unresolved);
    EXPECT_THAT(step.done->reason, HasSubstr("the members resume on old"));
}

TEST(Coordinator, AClaimWhoseAnswerWasLostIsOursIfTheRecordNamesUs)
{
    coordinator c("web-1", side::new_side);
    c.start(t0);
    auto step = c.on(claim_failed{true, "outcome unknown"}, t0);
    ASSERT_EQ(effects_of<read_back>(step).size(), 1u);
    step = c.on(epoch_read{claimed_state(1, 10)}, t0);
    EXPECT_EQ(written_record(step).phase, "hold");

    coordinator other("web-3", side::new_side);
    other.start(t0);
    other.on(claim_failed{true, "outcome unknown"}, t0);
    step = other.on(epoch_read{claimed_state(1, 10)}, t0);
    ASSERT_TRUE(step.done);
    EXPECT_EQ(step.done->outcome, fleet_outcome::refused);
}

TEST(Coordinator, ATakeOverAbortsBeforeTheServersChangedAndFinishesAfter)
{
    auto before = coordinator::take_over("web-2", {{3, side::old_side, "hold", "web-1", side::new_side}, 30});
    auto step = before.start(t0);
    EXPECT_EQ(written_record(step), (epoch_record{3, side::old_side, "hold", "web-2", side::new_side}))
        << "the record is taken with a compare-and-swap before anything is done";
    step = before.on(epoch_written{{written_record(step), 31}}, t0);
    EXPECT_EQ(written_record(step), (epoch_record{3, side::old_side, "committed", "", std::nullopt}));
    EXPECT_TRUE(effects_of<switch_servers>(step).empty());

    auto after = coordinator::take_over("web-2", {{3, side::old_side, "switch", "web-1", side::new_side}, 30});
    step = after.start(t0);
    step = after.on(epoch_written{{written_record(step), 31}}, t0);
    ASSERT_EQ(effects_of<switch_servers>(step).size(), 1u) << "every server step is idempotent: run again";
    step = after.on(servers_switched{true, {}}, t0);
    EXPECT_EQ(written_record(step), (epoch_record{3, side::new_side, "committed", "", std::nullopt}));
}

/// The etcd key as a value, for the crash test: writes apply only against the current revision.
struct fake_epoch_key {
    epoch_state state;
    bool servers_switched = false;

    /// Performs `machine`'s effects until it is done or `crash_after` effects have run.
    void run(coordinator& machine, int crash_after, const std::vector<member_entry>& members)
    {
        auto now = t0;
        std::vector<coordinator_effect> queue = machine.start(now).effects;
        int performed = 0;
        while (!machine.finished()) {
            if (queue.empty()) {
                // Waiting for acknowledgements: every member acknowledges the held epoch.
                std::vector<member_entry> acked = members;
                for (auto& m : acked)
                    m.record->epoch = state.record.epoch, m.record->state = "held";
                auto step = machine.on(members_seen{acked}, now);
                if (step.effects.empty()) return;
                queue = step.effects;
                continue;
            }
            const auto effect = queue.front();
            queue.erase(queue.begin());
            if (std::holds_alternative<report>(effect)) continue;
            if (performed++ == crash_after) return; // the coordinator dies before this effect
            coordinator_step step;
            if (const auto* c = std::get_if<claim_epoch>(&effect)) {
                if (state.record.held()) {
                    step = machine.on(claim_answered{{false, state}}, now);
                } else {
                    state = {{state.record.epoch + 1, state.record.committed, "claimed", "web-1", c->target},
                             state.mod_revision + 1};
                    step = machine.on(claim_answered{{true, state}}, now);
                }
            } else if (const auto* w = std::get_if<write_epoch>(&effect)) {
                if (machine.state().mod_revision != state.mod_revision) {
                    step = machine.on(epoch_not_written{true, false, "changed"}, now);
                } else {
                    state = {w->next, state.mod_revision + 1};
                    step = machine.on(epoch_written{state}, now);
                }
            } else if (std::holds_alternative<switch_servers>(effect)) {
                servers_switched = true;
                step = machine.on(tunneld::fleet::servers_switched{true, {}}, now);
            }
            queue.insert(queue.end(), step.effects.begin(), step.effects.end());
        }
    }
};

TEST(Coordinator, ACoordinatorDeadAfterAnyEffectIsResolvedByATakeOverToOneState)
{
    const std::vector<member_entry> members{member("web-1", 0, "serving"), member("web-2", 0, "serving")};
    for (int crash_after = 0; crash_after < 7; ++crash_after) {
        SCOPED_TRACE("coordinator dies before effect " + std::to_string(crash_after));
        fake_epoch_key key;
        coordinator first("web-1", side::new_side);
        key.run(first, crash_after, members);
        if (key.state.record.held()) {
            auto second = coordinator::take_over("web-2", key.state);
            key.run(second, 1000, members);
            EXPECT_TRUE(second.finished());
        }
        EXPECT_EQ(key.state.record.phase, "committed");
        // One primary: the fleet is committed on new exactly when the servers were switched.
        EXPECT_EQ(key.state.record.committed == side::new_side, key.servers_switched);
        if (crash_after >= 5) {
            EXPECT_EQ(key.state.record.committed, side::new_side) << "no crash: the switch went through";
        }
    }
}

TEST(MemberReaction, HoldsReleasesAndFlips)
{
    using kind = member_action::kind;
    const member_local serving_old{side::old_side, 0, std::nullopt};
    const epoch_state hold{{1, side::old_side, "hold", "web-1", side::new_side}, 11};
    EXPECT_EQ(react(hold, serving_old), (member_action{kind::hold, 1, side::old_side}));
    EXPECT_EQ(react(hold, {side::old_side, 1, 1}), member_action{}) << "already holding epoch 1";
    EXPECT_EQ(react(epoch_state{{1, side::old_side, "claimed", "web-1", side::new_side}, 10}, serving_old),
              member_action{})
        << "claimed: nobody is asked yet";
    const epoch_state switching{{1, side::old_side, "switch", "web-1", side::new_side}, 12};
    EXPECT_EQ(react(switching, serving_old), (member_action{kind::hold, 1, side::old_side}))
        << "a member that joins while the servers switch holds too";

    const epoch_state committed_new{{1, side::new_side, "committed", "", std::nullopt}, 13};
    EXPECT_EQ(react(committed_new, {side::old_side, 0, 1}), (member_action{kind::release, 1, side::new_side}));
    const epoch_state aborted{{1, side::old_side, "committed", "", std::nullopt}, 13};
    EXPECT_EQ(react(aborted, {side::old_side, 0, 1}), (member_action{kind::release, 1, side::old_side}));
    EXPECT_EQ(react(committed_new, serving_old), (member_action{kind::flip, 1, side::new_side}))
        << "back after the fleet switched: flips at once";
    EXPECT_EQ(react(committed_new, {side::new_side, 1, std::nullopt}), member_action{});
    EXPECT_EQ(react(std::nullopt, serving_old), member_action{});
}

TEST(TakeoverWait, IsTheLeaseTtlPlusTheLongestStepsDeadline)
{
    // The defaults: a 10 s lease and a 5 s pause budget (the deadline of catch-up, fence, promote).
    EXPECT_EQ(takeover_wait(10s, 5s), 15s);
    // etcd granted a longer lease than asked for; a service with a longer budget waits longer.
    EXPECT_EQ(takeover_wait(60s, 5s), 65s);
    EXPECT_EQ(takeover_wait(10s, 30s), 40s);
    EXPECT_EQ(takeover_wait(10s, 1500ms), 11500ms);
}

/// Member records as read at `at`, at a revision after every record write in these tests.
members_read read_at(clock::time_point at, std::int64_t revision = 40)
{
    return {false, revision, 0, at};
}

TEST(TakeoverWatch, ANewWaitAppliesToTheWaitUnderWay)
{
    takeover_watch watch(takeover_wait(10s, 5s));
    const std::optional<epoch_state> held = epoch_state{{3, side::old_side, "hold", "web-1", side::new_side}, 30};
    const std::vector<member_entry> without{member("web-2", 3, "held")};
    EXPECT_FALSE(watch.due(held, without, read_at(t0)));
    EXPECT_FALSE(watch.due(held, without, read_at(t0 + 15s - 1ms)));
    // A reload raised the service's pause_timeout to 30 s: the coordinator may still be in a step.
    watch.set_wait(takeover_wait(10s, 30s));
    EXPECT_FALSE(watch.due(held, without, read_at(t0 + 15s)));
    EXPECT_FALSE(watch.due(held, without, read_at(t0 + 40s - 1ms)));
    EXPECT_TRUE(watch.due(held, without, read_at(t0 + 40s)));
}

TEST(TakeoverWatch, WaitsTheLeaseAndTheLongestStepAfterTheCoordinatorWent)
{
    takeover_watch watch(12s);
    const std::optional<epoch_state> held = epoch_state{{3, side::old_side, "switch", "web-1", side::new_side}, 30};
    const std::vector<member_entry> with{member("web-1", 3, "held"), member("web-2", 3, "held")};
    const std::vector<member_entry> without{member("web-2", 3, "held")};
    EXPECT_FALSE(watch.due(held, with, read_at(t0)));
    EXPECT_FALSE(watch.due(held, without, read_at(t0 + 1s)));
    EXPECT_FALSE(watch.due(held, without, read_at(t0 + 12999ms)));
    EXPECT_TRUE(watch.due(held, without, read_at(t0 + 13s)));

    // A write to the record restarts the wait; so does the coordinator coming back.
    const std::optional<epoch_state> rewritten = epoch_state{held->record, 31};
    EXPECT_FALSE(watch.due(rewritten, without, read_at(t0 + 14s)));
    EXPECT_FALSE(watch.due(rewritten, without, read_at(t0 + 25s)));
    EXPECT_TRUE(watch.due(rewritten, without, read_at(t0 + 26s)));
    EXPECT_FALSE(watch.due(rewritten, with, read_at(t0 + 27s)));
    const std::optional<epoch_state> committed = epoch_state{{3, side::new_side, "committed", "", std::nullopt}, 32};
    EXPECT_FALSE(watch.due(committed, without, read_at(t0 + 60s)));
}

TEST(TakeoverWatch, AReadOlderThanTheRecordsLastWriteTellsNothing)
{
    takeover_watch watch(12s);
    const std::optional<epoch_state> held = epoch_state{{3, side::old_side, "hold", "web-1", side::new_side}, 30};
    const std::vector<member_entry> without{member("web-2", 3, "held")};
    // Reads made before phase hold was written (revision 29) miss the coordinator: not counted.
    EXPECT_FALSE(watch.due(held, without, read_at(t0, 29)));
    EXPECT_FALSE(watch.due(held, without, read_at(t0 + 20s, 29)));
    // The first read after the write starts the wait.
    EXPECT_FALSE(watch.due(held, without, read_at(t0 + 21s, 30)));
    EXPECT_FALSE(watch.due(held, without, read_at(t0 + 33s - 1ms, 31)));
    EXPECT_TRUE(watch.due(held, without, read_at(t0 + 33s, 31)));
}

TEST(TakeoverWatch, OnlyReadsMoveTheWaitOn)
{
    takeover_watch watch(12s);
    const std::optional<epoch_state> held = epoch_state{{3, side::old_side, "hold", "web-1", side::new_side}, 30};
    const std::vector<member_entry> with{member("web-1", 3, "held"), member("web-2", 3, "held")};
    const std::vector<member_entry> without{member("web-2", 3, "held")};
    EXPECT_FALSE(watch.due(held, without, read_at(t0)));
    // Asked again and again without a newer read (the clock goes on, the read does not): not due.
    for (int i = 0; i < 3; ++i)
        EXPECT_FALSE(watch.due(held, without, read_at(t0)));
    EXPECT_TRUE(watch.due(held, without, read_at(t0 + 12s)));
    // A read that shows the coordinator again restarts it; the next one that misses it starts anew.
    EXPECT_FALSE(watch.due(held, with, read_at(t0 + 14s)));
    EXPECT_FALSE(watch.due(held, without, read_at(t0 + 16s)));
    EXPECT_FALSE(watch.due(held, without, read_at(t0 + 28s - 1ms)));
    EXPECT_TRUE(watch.due(held, without, read_at(t0 + 28s)));
}

TEST(MembersRead, AReadIsNewsUnlessWatchedLiveOrOlderThanTheView)
{
    const auto at = clock::time_point{};
    EXPECT_TRUE(newer_members_read(members_read{}, 1));              // never read
    EXPECT_TRUE(newer_members_read(members_read{false, 10, 0, at}, 10)); // the same revision: read again, no harm
    EXPECT_TRUE(newer_members_read(members_read{false, 10, 0, at}, 11));
    EXPECT_FALSE(newer_members_read(members_read{false, 10, 0, at}, 9)); // a slow read overtaken by a later one
    EXPECT_FALSE(newer_members_read(members_read{true, 10, 0, at}, 12)); // watched live: the watch is newer
}

} // namespace
} // namespace tunneld::fleet
