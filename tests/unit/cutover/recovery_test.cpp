// Goal: a switch the daemon dies in, at any point, is recovered to one consistent state. The
// switch machine runs against a model of two redis servers (roles, replication ids, fence); the
// daemon "dies" after every effect in turn; a new machine is built from what was on disk (route
// and journal), told what the servers say, and driven to the end. Then the route and the roles
// must agree: the side clients reach is the one writable primary. Plus the decision rules alone.

#include "cutover/recovery.hpp"
#include "cutover/switch_machine.hpp"

#include <gtest/gtest.h>

#include <algorithm>

namespace tunneld::cutover {
namespace {

using namespace std::chrono_literals;
using config::service_kind;
using config::switch_mode;

const time_point t0 = time_point{} + 1000s;

struct model_server {
    server_role role = server_role::primary;
    std::string replid = "a1";
    std::string replid2 = "00";
    bool fenced = false;
    bool writable() const { return role == server_role::primary && !fenced; }
};

struct model {
    model_server old_server;
    model_server new_server{server_role::replica, "a1", "00", false};
    route disk_route{};                    ///< what the state file says
    std::optional<switch_journal> disk_journal;

    model_server& of(side s) { return s == side::old_side ? old_server : new_server; }
    observations observe() const
    {
        const auto seen = [](const model_server& m) {
            server_observation o;
            o.reachable = true;
            o.role = m.role;
            o.replid = m.replid;
            o.replid2 = m.replid2;
            o.fenced = m.fenced;
            return o;
        };
        return {seen(old_server), seen(new_server)};
    }
    /// Carries out one effect; returns the answer if it asks one.
    std::optional<step_done> apply(const effect& e, const switch_machine& m)
    {
        if (const auto* f = std::get_if<fence>(&e)) {
            of(f->which).fenced = true;
            return step_done{step_kind::fence, true, "fenced"};
        }
        if (const auto* u = std::get_if<unfence>(&e)) of(u->which).fenced = false;
        if (std::holds_alternative<promote>(e)) {
            new_server.role = server_role::primary;
            new_server.replid2 = new_server.replid;
            new_server.replid = "b2";
            return step_done{step_kind::promote, true, "promoted"};
        }
        if (std::holds_alternative<follow>(e)) {
            old_server.role = server_role::replica;
            old_server.replid = new_server.replid;
            return step_done{step_kind::follow, true, "follows"};
        }
        if (std::holds_alternative<persist>(e)) {
            disk_route = m.current_route();
            disk_journal = m.journal();
            return step_done{step_kind::persist, true, ""};
        }
        if (answers(e)) return step_done{kind_of_answer(e), true, "ok"};
        return std::nullopt;
    }
};

switch_command command_to_new()
{
    switch_command c;
    c.id = "svc-1";
    c.request = switch_request{side::new_side, switch_mode::pause, false};
    c.limits = switch_limits{.drain_timeout = 30s, .pause_timeout = 5s, .max_lag = 1024,
                             .max_lag_seconds = std::nullopt, .max_lag_age = 10s};
    c.replicated = true;
    lag_reading r;
    r.bytes = 0;
    r.link = link_state::up;
    r.at = t0;
    c.lag = r;
    return c;
}

/// Runs `first` on `m` and every step it leads to, applying effects to `servers`; stops after
/// `crash_after` effects (nullopt: runs to the end). Returns the number of effects applied.
std::size_t drive(switch_machine& m, model& servers, const event& first, std::optional<std::size_t> crash_after)
{
    std::size_t applied = 0;
    auto s = m.on(first, t0);
    for (int guard = 0; guard < 100; ++guard) {
        std::optional<step_done> answer;
        for (const auto& e : s.effects) {
            if (crash_after && applied == *crash_after) return applied;
            answer = servers.apply(e, m);
            ++applied;
        }
        if (!answer) return applied;
        s = m.on(*answer, t0);
    }
    ADD_FAILURE() << "the machine did not settle";
    return applied;
}

TEST(Recovery, CrashAfterEveryEffectOfASwitchRecoversToOneWritablePrimaryThatClientsReach)
{
    model whole;
    switch_machine m(service_kind::redis, route{}, "svc");
    const auto total = drive(m, whole, command_to_new(), std::nullopt);
    ASSERT_GT(total, 8u);
    EXPECT_TRUE(whole.new_server.writable());
    EXPECT_FALSE(whole.old_server.writable());

    for (std::size_t k = 0; k <= total; ++k) {
        model servers;
        switch_machine before(service_kind::redis, route{}, "svc");
        drive(before, servers, command_to_new(), k);
        // Restart: the machine knows only the state file.
        switch_machine after(service_kind::redis, servers.disk_route, "svc", false, servers.disk_journal);
        route reached = servers.disk_route;
        if (servers.disk_journal) {
            EXPECT_EQ(after.state(), service_state::recovering) << "crash after effect " << k;
            EXPECT_TRUE(after.current_route().hold) << "nobody is routed before the servers are asked";
            drive(after, servers, recovered{servers.observe()}, std::nullopt);
            EXPECT_EQ(after.state(), service_state::serving) << "crash after effect " << k << ": " << after.problem();
            EXPECT_FALSE(after.journal()) << "crash after effect " << k;
            reached = after.current_route();
            EXPECT_EQ(servers.disk_route, reached) << "the recovered route is on disk";
        }
        EXPECT_FALSE(reached.hold);
        EXPECT_TRUE(servers.of(reached.active).writable())
            << "crash after effect " << k << ": clients go to " << proxy::to_string(reached.active)
            << " which must take writes";
        EXPECT_FALSE(servers.of(proxy::other(reached.active)).writable())
            << "crash after effect " << k << ": two writable primaries";
    }
}

TEST(Recovery, APromotedReplicaIsToldFromAnEmptiedRestartByItsReplicationIds)
{
    switch_journal j{"svc-1", side::old_side, side::new_side, switch_mode::pause, journal_step::promote, std::nullopt};
    observations seen;
    seen.old_server = {true, "", server_role::primary, "a1", "00", 100, std::nullopt, true};
    seen.new_server = {true, "", server_role::primary, "b2", "a1", 100, 101, false};
    EXPECT_EQ(decide_recovery(j, seen).verdict, recovery_verdict::forward);

    seen.new_server = {true, "", server_role::primary, "c3", "0000", 0, std::nullopt, false}; // restarted empty
    const auto wiped = decide_recovery(j, seen);
    EXPECT_EQ(wiped.verdict, recovery_verdict::unresolved);
    EXPECT_NE(wiped.reason.find("does not continue old's"), std::string::npos) << wiped.reason;

    seen.new_server = {true, "", server_role::replica, "a1", "00", 100, std::nullopt, false};
    EXPECT_EQ(decide_recovery(j, seen).verdict, recovery_verdict::undo);

    seen.new_server = {false, "new 127.0.0.1:1: cannot connect", std::nullopt, "", "", {}, {}, false};
    const auto gone = decide_recovery(j, seen);
    EXPECT_EQ(gone.verdict, recovery_verdict::unresolved);
    EXPECT_NE(gone.reason.find("cannot connect"), std::string::npos) << gone.reason;
}

TEST(Recovery, UnresolvedRefusesClientsAndResolveChecksTheTarget)
{
    switch_journal j{"svc-1", side::old_side, side::new_side, switch_mode::pause, journal_step::promote, std::nullopt};
    switch_machine m(service_kind::redis, route{}, "svc", false, j);
    observations seen;
    seen.old_server = {true, "", server_role::primary, "a1", "00", 100, std::nullopt, false};
    seen.new_server = {true, "", server_role::primary, "c3", "00", 0, std::nullopt, false};
    const auto s = m.on(recovered{seen}, t0);
    EXPECT_EQ(m.state(), service_state::unresolved);
    EXPECT_TRUE(m.current_route().refuse);
    EXPECT_NE(m.problem().find("tunnelctl resolve svc --to old"), std::string::npos) << m.problem();
    EXPECT_EQ(m.on(command_to_new(), t0).done->result, verdict::refused) << "no switch until it is resolved";

    observations gone = seen;
    gone.old_server = {false, "cannot connect", std::nullopt, "", "", {}, {}, false};
    const auto refused = m.on(resolve_command{side::old_side, gone}, t0);
    ASSERT_TRUE(refused.done);
    EXPECT_EQ(refused.done->result, verdict::refused);

    const auto go = m.on(resolve_command{side::old_side, seen}, t0);
    EXPECT_EQ(go.effects.back(), (effect{fence{side::new_side, t0 + 5s}})) << "the other primary is fenced first";
    const auto routed = m.on(step_done{step_kind::fence, true, "new fenced"}, t0);
    EXPECT_EQ(routed.effects.back(), effect{persist{}});
    const auto done = m.on(step_done{step_kind::persist, true, ""}, t0);
    ASSERT_TRUE(done.done);
    EXPECT_EQ(done.done->result, verdict::done);
    EXPECT_EQ(m.current_route(), proxy::route_to(side::old_side));
    EXPECT_EQ(m.state(), service_state::serving);
    EXPECT_FALSE(m.journal());
}

TEST(Recovery, ResolveLiftsOurFenceFromTheSideThatTakesTheClients)
{
    // Died during fence_command: old is fenced by min-replicas-to-write, new unreachable.
    switch_journal j{"svc-1", side::old_side, side::new_side, switch_mode::pause, journal_step::fence, std::nullopt};
    switch_machine m(service_kind::redis, route{}, "svc", false, j);
    observations seen;
    seen.old_server = {true, "", server_role::primary, "a1", "00", 100, std::nullopt, true};
    seen.new_server = {false, "cannot connect", std::nullopt, "", "", {}, {}, false};
    m.on(recovered{seen}, t0);
    ASSERT_EQ(m.state(), service_state::unresolved);

    seen.new_server = {true, "", server_role::replica, "a1", "00", 100, std::nullopt, false};
    const auto go = m.on(resolve_command{side::old_side, seen}, t0);
    EXPECT_NE(std::find(go.effects.begin(), go.effects.end(), effect{unfence{side::old_side}}), go.effects.end())
        << "old takes the clients: its fence is lifted";
    EXPECT_EQ(go.effects.back(), effect{persist{}});
    const auto done = m.on(step_done{step_kind::persist, true, ""}, t0);
    ASSERT_TRUE(done.done);
    EXPECT_EQ(m.current_route(), proxy::route_to(side::old_side));
    EXPECT_FALSE(m.fenced());
}

TEST(Recovery, RollbackFinishedForwardLiftsOldsFenceOnceNewIsFenced)
{
    // Died between old's REPLICAOF NO ONE and restoring its min-replicas-to-write: old is a
    // promoted primary that still refuses writes, new a primary fenced by the rollback.
    switch_journal j{"svc-1", side::new_side, side::old_side, switch_mode::pause, journal_step::roll_back,
                     std::nullopt};
    switch_machine m(service_kind::redis, proxy::route_to(side::new_side), "svc", true, j);
    observations seen;
    seen.new_server = {true, "", server_role::primary, "b2", "a1", 300, std::nullopt, true};
    seen.old_server = {true, "", server_role::primary, "c3", "b2", 300, 301, true};
    const auto forward = m.on(recovered{seen}, t0);
    EXPECT_EQ(forward.effects.back(), (effect{fence{side::new_side, t0 + 5s}}));
    EXPECT_EQ(std::find(forward.effects.begin(), forward.effects.end(), effect{unfence{side::old_side}}),
              forward.effects.end())
        << "old takes writes only once new refuses them";
    const auto fenced = m.on(step_done{step_kind::fence, true, "new fenced"}, t0);
    ASSERT_FALSE(fenced.effects.empty());
    EXPECT_EQ(fenced.effects.front(), effect{unfence{side::old_side}});
    EXPECT_EQ(fenced.effects.back(), effect{persist{}});
    m.on(step_done{step_kind::persist, true, ""}, t0);
    EXPECT_EQ(m.current_route(), proxy::route_to(side::old_side));
    EXPECT_EQ(m.state(), service_state::serving);
}

} // namespace
} // namespace tunneld::cutover
