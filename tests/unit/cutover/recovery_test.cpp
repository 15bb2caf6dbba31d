// Goal: a switch the daemon dies in, at any point, is recovered to one consistent state. The
// switch machine runs against a model of two redis servers (roles, replication ids, fence); the
// daemon "dies" after every effect in turn; a new machine is built from what was on disk (route
// and journal), told what the servers say, and driven to the end. Then the route and the roles
// must agree: the side clients reach is the one writable primary. Plus the decision rules alone.

#include "cutover/recovery.hpp"
#include "cutover/switch_machine.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <vector>

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
        if (const auto* f = std::get_if<follow>(&e)) {
            of(f->which).role = server_role::replica;
            of(f->which).replid = of(proxy::other(f->which)).replid;
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

template <class T> bool has_effect(const std::vector<effect>& effects)
{
    return std::any_of(effects.begin(), effects.end(), [](const effect& e) { return std::holds_alternative<T>(e); });
}

server_observation server(server_role role, std::string replid, std::string replid2, bool fenced)
{
    return {true, "", role, std::move(replid), std::move(replid2), 10, std::nullopt, fenced};
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

TEST(Recovery, ASourceThatJustBeganToFollowThePromotedTargetGoesForward)
{
    // A fleet coordinator killed after it paused old's writes; another member took the switch
    // over (promoted new, made old its replica); the coordinator restarts before old's first sync
    // with new: old still shows the id new continues. That is the switch done, not a mystery.
    switch_journal j{"svc-epoch-1", side::old_side, side::new_side, switch_mode::pause, journal_step::pause_writes,
                     std::nullopt};
    observations seen;
    seen.old_server = {true, "", server_role::replica, "a1", "00", 100, std::nullopt, true};
    seen.new_server = {true, "", server_role::primary, "b2", "a1", 100, 101, false};
    const auto early = decide_recovery(j, seen);
    EXPECT_EQ(early.verdict, recovery_verdict::forward) << early.reason;

    seen.old_server.replid = "b2"; // synced
    EXPECT_EQ(decide_recovery(j, seen).verdict, recovery_verdict::forward);

    seen.old_server.replid = "c3"; // a replica of some third lineage
    const auto other = decide_recovery(j, seen);
    EXPECT_EQ(other.verdict, recovery_verdict::unresolved);
    EXPECT_NE(other.reason.find("follows another primary than new"), std::string::npos) << other.reason;
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

TEST(LocateServers, TheStartTheTargetAndNeitherForASwitchAndARollback)
{
    using enum server_role;
    struct example {
        side to;
        server_observation old_server, new_server;
        servers_at expected;
        const char* what;
    };
    const auto none = server_observation{}; // unreachable
    const std::vector<example> examples{
        {side::new_side, server(primary, "a1", "00", false), server(replica, "a1", "00", false), servers_at::start,
         "new a replica of old"},
        {side::new_side, server(replica, "b2", "00", true), server(primary, "b2", "a1", false), servers_at::target,
         "old follows the promoted new (fence = replicaof)"},
        {side::new_side, server(replica, "a1", "00", true), server(primary, "b2", "a1", false), servers_at::target,
         "old just began to follow: it still shows the id new continues"},
        {side::new_side, server(primary, "a1", "00", true), server(primary, "b2", "a1", false), servers_at::target,
         "old fenced by min-replicas-to-write (fence = min_replicas)"},
        {side::new_side, server(primary, "a1", "00", false), server(primary, "b2", "a1", false), servers_at::neither,
         "two writable primaries"},
        {side::new_side, server(primary, "a1", "00", true), server(primary, "c3", "00", false), servers_at::neither,
         "new emptied (restarted without its data): a lineage of its own"},
        {side::new_side, server(replica, "d4", "00", true), server(primary, "b2", "a1", false), servers_at::neither,
         "old follows a third primary"},
        {side::new_side, server(primary, "a1", "00", false), none, servers_at::neither, "new unreachable"},
        {side::old_side, server(replica, "b2", "00", true), server(primary, "b2", "a1", false), servers_at::start,
         "rollback: old a replica of new"},
        {side::old_side, server(primary, "a1", "00", true), server(primary, "b2", "a1", false), servers_at::start,
         "rollback: old fenced by min-replicas-to-write after the switch"},
        {side::old_side, server(primary, "e5", "b2", false), server(primary, "b2", "a1", true), servers_at::target,
         "rollback: old promoted back, new fenced"},
        {side::old_side, server(primary, "e5", "b2", false), server(replica, "e5", "00", false), servers_at::target,
         "rollback: old promoted back, new its replica (rollback_replicaof)"},
        {side::new_side, server(primary, "", "", false), server(replica, "", "", false), servers_at::start,
         "postgres: new a standby"},
        {side::new_side, server(replica, "", "", false), server(primary, "", "", false), servers_at::target,
         "postgres: old a standby of the promoted new"},
        {side::new_side, server(primary, "", "", false), server(primary, "", "", false), servers_at::neither,
         "postgres: two primaries, no fence or lineage to read"},
    };
    for (const auto& e : examples)
        EXPECT_EQ(locate_servers(e.to, observations{e.old_server, e.new_server}).at, e.expected) << e.what;
}

TEST(KeepFence, OldWritableAgainOnNewIsFencedAgainButAnotherHostsRollbackIsLeftAlone)
{
    switch_machine m(service_kind::redis, proxy::route_to(side::new_side), "svc", true);
    ASSERT_TRUE(m.keeps_fence());
    const auto restarted = server(server_role::primary, "f6", "00", false); // empty, its fence lost
    const auto rolled_back = server(server_role::primary, "b2", "a1", true); // another host fenced new
    EXPECT_TRUE(m.on(fence_lost{{restarted, rolled_back}}, t0).effects.empty()) << "new fenced: a rollback";
    EXPECT_EQ(m.fence_reasserted(), 0u);

    const auto s = m.on(fence_lost{{restarted, server(server_role::primary, "b2", "a1", false)}}, t0);
    ASSERT_TRUE(has_effect<fence>(s.effects));
    EXPECT_TRUE(m.busy()) << "a switch waits until old is fenced again";
    const auto fenced = m.on(step_done{step_kind::fence, true, "old fenced"}, t0);
    EXPECT_TRUE(has_effect<follow>(fenced.effects));
    EXPECT_EQ(m.fence_reasserted(), 1u);
    m.on(step_done{step_kind::follow, true, "old follows new"}, t0);
    EXPECT_FALSE(m.busy());
    EXPECT_EQ(m.current_route(), proxy::route_to(side::new_side));

    switch_machine on_old(service_kind::redis, route{}, "svc");
    EXPECT_FALSE(on_old.keeps_fence());
    EXPECT_TRUE(on_old.on(fence_lost{{restarted, server(server_role::primary, "b2", "a1", false)}}, t0).effects.empty());
}

TEST(Adopt, ASecondHostFindingTheServersSwitchedFlipsAtOnceWithoutForce)
{
    switch_machine m(service_kind::redis, route{}, "svc");
    auto c = command_to_new();
    c.lag = std::nullopt; // the link is "down": new is no replica any more
    c.seen = observations{server(server_role::replica, "b2", "00", true), server(server_role::primary, "b2", "a1", false)};
    const auto s = m.on(c, t0);
    EXPECT_FALSE(s.done);
    EXPECT_FALSE(has_effect<promote>(s.effects) || has_effect<pause_writes>(s.effects) || has_effect<fence>(s.effects))
        << "nothing is changed on the servers";
    EXPECT_TRUE(has_effect<hold_new_clients>(s.effects));
    EXPECT_TRUE(has_effect<quiesce_clients>(s.effects)) << "this host's clients stop at a request boundary";
    ASSERT_TRUE(has_effect<persist>(s.effects));
    EXPECT_FALSE(m.journal()) << "nothing to recover: no server changes";
    const auto done = m.on(step_done{step_kind::persist, true, ""}, t0 + 3ms);
    ASSERT_TRUE(done.done);
    EXPECT_EQ(done.done->result, verdict::done);
    EXPECT_TRUE(done.done->adopted);
    EXPECT_EQ(done.done->message, "svc switched to new (clients held 3ms); adopted: the servers were already switched");
    EXPECT_FALSE(has_effect<follow>(done.effects));
    ASSERT_TRUE(has_effect<move_clients>(done.effects)) << "clients on old move to new, as a pause switch does";
    EXPECT_EQ(m.current_route(), proxy::route_to(side::new_side));
    EXPECT_TRUE(m.fenced());
    EXPECT_FALSE(m.busy());
}

TEST(Adopt, ARollbackFindingOldPromotedAgainFlipsBack)
{
    switch_machine m(service_kind::redis, proxy::route_to(side::new_side), "svc", true);
    auto c = command_to_new();
    c.request.to = side::old_side;
    c.seen = observations{server(server_role::primary, "e5", "b2", false), server(server_role::primary, "b2", "a1", true)};
    const auto s = m.on(c, t0);
    EXPECT_FALSE(has_effect<roll_back>(s.effects));
    const auto done = m.on(step_done{step_kind::persist, true, ""}, t0);
    ASSERT_TRUE(done.done);
    EXPECT_TRUE(done.done->adopted);
    EXPECT_EQ(m.current_route(), route{});
    EXPECT_FALSE(m.fenced());
}

TEST(Adopt, KillModeAdoptsWithoutForceAndCutsTheOldSide)
{
    switch_machine m(service_kind::redis, route{}, "svc");
    auto c = command_to_new();
    c.request.mode = switch_mode::kill;
    c.seen = observations{server(server_role::replica, "b2", "00", true), server(server_role::primary, "b2", "a1", false)};
    const auto s = m.on(c, t0);
    ASSERT_FALSE(s.done) << s.done->message;
    const auto done = m.on(step_done{step_kind::persist, true, ""}, t0);
    ASSERT_TRUE(done.done);
    EXPECT_TRUE(done.done->adopted);
    EXPECT_TRUE(has_effect<cut>(done.effects));
}

TEST(Adopt, NeitherTheStartNorTheTargetIsRefusedWithWhatWasSeen)
{
    switch_machine m(service_kind::redis, route{}, "svc");
    auto c = command_to_new();
    c.seen = observations{server(server_role::primary, "a1", "00", false), server(server_role::primary, "c3", "00", false)};
    const auto s = m.on(c, t0);
    ASSERT_TRUE(s.done);
    EXPECT_EQ(s.done->result, verdict::refused);
    EXPECT_NE(s.done->message.find("neither at the start"), std::string::npos) << s.done->message;
    EXPECT_NE(s.done->message.find("new is a primary (master_replid c3"), std::string::npos) << s.done->message;
    EXPECT_EQ(m.current_route(), route{});

    c.request.force = true; // the operator's override runs the switch as before
    const auto forced = m.on(c, t0);
    EXPECT_FALSE(forced.done);
    EXPECT_TRUE(has_effect<hold_new_clients>(forced.effects));
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
    EXPECT_EQ(fenced.effects.back(), (effect{follow{side::new_side, t0 + 5s}}))
        << "new follows old, as the rollback that died would have made it (rollback_replicaof)";
    const auto followed = m.on(step_done{step_kind::follow, true, "new fenced: read-only replica of old"}, t0);
    EXPECT_EQ(followed.effects.back(), effect{persist{}});
    m.on(step_done{step_kind::persist, true, ""}, t0);
    EXPECT_EQ(m.current_route(), proxy::route_to(side::old_side));
    EXPECT_EQ(m.state(), service_state::serving);
    EXPECT_TRUE(m.new_fenced()) << "kept by the probe from now on";
    EXPECT_TRUE(m.keeps_fence());
}

TEST(KeepFence, NewRestartedWritableAfterARollbackIsFencedAgainAndMadeToFollowOld)
{
    // After a rollback new is fenced (and a replica of old with rollback_replicaof); a restart
    // loses both: it comes back a writable primary while clients go to old.
    switch_machine m(service_kind::redis, route{}, "svc", false, std::nullopt, /*new_fenced=*/true);
    ASSERT_TRUE(m.keeps_fence());
    const auto old_primary = server(server_role::primary, "e5", "b2", false);
    const auto restarted = server(server_role::primary, "f6", "00", false);
    const auto s = m.on(fence_lost{{old_primary, restarted}}, t0);
    ASSERT_EQ(s.effects.size(), 2u);
    EXPECT_EQ(s.effects.back(), (effect{fence{side::new_side, t0 + 5s}}));
    const auto fenced = m.on(step_done{step_kind::fence, true, "new fenced"}, t0);
    EXPECT_EQ(fenced.effects.back(), (effect{follow{side::new_side, t0 + 5s}}));
    EXPECT_EQ(m.fence_reasserted(), 1u);
    m.on(step_done{step_kind::follow, true, "new follows old"}, t0);
    EXPECT_FALSE(m.busy());
    EXPECT_EQ(m.current_route(), proxy::route_to(side::old_side));

    // Fenced, but its REPLICAOF failed: only the follow is retried.
    const auto fenced_master = server(server_role::primary, "b2", "a1", true);
    const auto again = m.on(fence_lost{{old_primary, fenced_master}}, t0);
    ASSERT_EQ(again.effects.size(), 2u);
    EXPECT_EQ(again.effects.back(), (effect{follow{side::new_side, t0 + 5s}}));
    m.on(step_done{step_kind::follow, true, "new follows old"}, t0);
    EXPECT_EQ(m.fence_reasserted(), 1u) << "nothing was unfenced";

    // Old itself fenced (another host's switch under way): not ours to touch.
    EXPECT_TRUE(m.on(fence_lost{{server(server_role::primary, "e5", "b2", true), restarted}}, t0).effects.empty());

    // A switch to new ends what this host keeps.
    switch_machine switched(service_kind::redis, route{}, "svc", false, std::nullopt, true);
    model servers;
    drive(switched, servers, command_to_new(), std::nullopt);
    EXPECT_EQ(switched.current_route(), proxy::route_to(side::new_side));
    EXPECT_FALSE(switched.new_fenced());
}

} // namespace
} // namespace tunneld::cutover
