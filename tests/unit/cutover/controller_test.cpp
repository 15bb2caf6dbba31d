// Goal: the controller carries out what the switch machine decides, on fake servers (a fake
// replication; no redis, no postgres, no listener bound): the steps in the machine's order, the
// state file written, the pause budget firing through the deadline timer while a step hangs,
// and a promotion whose reply was lost resolved by asking new's role.

#include "cutover/controller.hpp"

#include <boost/asio/co_spawn.hpp>
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <mutex>
#include <thread>
#include <unistd.h>

namespace tunneld::cutover {
namespace {

using namespace std::chrono_literals;
using steady = std::chrono::steady_clock;

/// The two servers as the fake replications see them, shared by the probe's and the switch's.
struct fake_servers {
    std::mutex mutex;
    std::vector<std::string> calls; ///< switch steps in the order they ran
    bool promote_answers = true;    ///< false: the reply to promote is lost
    bool promote_promotes = true;   ///< false: the promotion itself failed (new stays a replica)
    /// True: wait_caught_up hangs (a replica that stopped answering, SIGSTOP) until the test
    /// lets it go, so the budget runs out inside that step however slow the machine is.
    std::atomic<bool> catch_up_hangs{false};
    bool new_is_primary = false;
    /// What observe() answers (adopt, recovery, resolve): by default old a primary, new its replica.
    observations seen_by_observe{{true, "", server_role::primary, "a1", "00", 0, std::nullopt, false},
                                 {true, "", server_role::replica, "a1", "00", 0, std::nullopt, false}};

    void record(std::string call)
    {
        std::lock_guard lock(mutex);
        calls.push_back(std::move(call));
    }
    std::vector<std::string> seen()
    {
        std::lock_guard lock(mutex);
        return calls;
    }
};

class fake_replication : public replication {
public:
    explicit fake_replication(std::shared_ptr<fake_servers> servers) : servers_(std::move(servers)) {}

    lag_reading probe(side) override
    {
        lag_reading r;
        r.bytes = 0;
        r.link = link_state::up;
        r.at = clock::now();
        r.replica = side::new_side;
        return r;
    }
    step_result pause_writes(duration) override { return done("pause_writes"); }
    step_result wait_caught_up(clock::time_point) override
    {
        servers_->record("wait_caught_up");
        const auto give_up = steady::now() + 30s; // a failing test must not hang the suite
        while (servers_->catch_up_hangs && steady::now() < give_up)
            std::this_thread::sleep_for(5ms);
        return step_result::success("wait_caught_up ok");
    }
    step_result promote(clock::time_point) override
    {
        servers_->record("promote");
        servers_->new_is_primary = servers_->promote_promotes;
        if (!servers_->promote_answers) return step_result::failure("promote: connection lost");
        return step_result::success("promote ok");
    }
    step_result verify_promoted(clock::time_point) override
    {
        servers_->record("verify_promoted");
        return servers_->new_is_primary ? step_result::success("new is a primary")
                                        : step_result::failure("new is a replica");
    }
    step_result fence(side, clock::time_point) override { return done("fence"); }
    step_result unfence(side) override { return done("unfence"); }
    observations observe(clock::time_point) override
    {
        servers_->record("observe");
        return servers_->seen_by_observe;
    }
    step_result follow(proxy::side, clock::time_point) override { return done("follow"); }
    step_result unpause(side) override { return done("unpause"); }
    step_result rollback(const rollback_options&, clock::time_point) override { return done("rollback"); }
    std::vector<preflight_check> preflight(clock::time_point) override
    {
        return {{"old reachable, credentials accepted", check_verdict::pass, "fake", std::chrono::milliseconds(1)}};
    }

private:
    step_result done(std::string call)
    {
        servers_->record(call);
        return step_result::success(call + " ok");
    }
    std::shared_ptr<fake_servers> servers_;
};

struct harness {
    explicit harness(config::duration pause_timeout = 5s)
    {
        settings->name = "redis";
        settings->kind = config::service_kind::redis;
        settings->mode = config::switch_mode::pause;
        settings->listen = {"127.0.0.1", 0};
        settings->old_backend.address = {"127.0.0.1", 1};
        settings->new_backend.address = {"127.0.0.1", 2};
        settings->pause_timeout = pause_timeout;
        settings->probe_interval = 20ms;
        svc = std::make_shared<proxy::service>(settings, std::vector<asio::io_context*>{&loop}, proxy::tunnel_lookup{},
                                               route{});
        ctl.add_service(svc, probe_endpoints{settings->old_backend.address, settings->new_backend.address});
        run_until([&] { return ctl.snapshot().at(0).lag.has_value(); });
    }
    ~harness()
    {
        ctl.stop();
        std::filesystem::remove_all(dir);
    }

    template <class Done> void run_until(Done done, std::chrono::milliseconds limit = 10s)
    {
        const auto give_up = steady::now() + limit;
        while (!done() && steady::now() < give_up)
            loop.run_one_for(5ms);
        ASSERT_TRUE(done()) << "not reached within the limit";
    }
    void start_switch(side to)
    {
        progress_fn report = [this](const std::string& line) { progress.push_back(line); };
        asio::co_spawn(loop, ctl.switch_side("redis", to, std::nullopt, false, report),
                       [this](std::exception_ptr, command_result r) { result = std::move(r); });
    }
    command_result finish()
    {
        run_until([&] { return result.has_value(); });
        return result.value_or(command_result{});
    }

    std::filesystem::path dir = [] {
        auto d = std::filesystem::temp_directory_path() / ("controller_test." + std::to_string(::getpid()) + "." +
                                                           std::to_string(steady::now().time_since_epoch().count()));
        std::filesystem::create_directories(d);
        return d;
    }();
    std::shared_ptr<fake_servers> servers = std::make_shared<fake_servers>();
    std::shared_ptr<config::service_config> settings = std::make_shared<config::service_config>();
    asio::io_context loop;
    std::shared_ptr<proxy::service> svc;
    controller ctl{loop, dir / "state.json", state{},
                   [s = servers](const config::service_config&, const config::endpoint&, const config::endpoint&) {
                       return std::make_unique<fake_replication>(s);
                   }};
    std::vector<std::string> progress;
    std::optional<command_result> result;
};

TEST(ClientPoll, FirstLooksComeSoonThenEveryTwoMilliseconds)
{
    // A held or moved client is usually there within a round trip: the switch looks again soon
    // (each member's acknowledgement and release wait for this), then settles at 2 ms.
    EXPECT_EQ(client_poll_after(0), 250us);
    EXPECT_EQ(client_poll_after(1), 500us);
    EXPECT_EQ(client_poll_after(2), 1000us);
    EXPECT_EQ(client_poll_after(3), 2000us);
    EXPECT_EQ(client_poll_after(40), 2000us) << "never longer than 2 ms apart, never overflowing";
}

TEST(Controller, PauseSwitchPerformsTheStepsInTheMachinesOrderAndPersists)
{
    harness h;
    h.start_switch(side::new_side);
    const auto r = h.finish();
    ASSERT_TRUE(r.ok()) << r.error;
    EXPECT_EQ(h.servers->seen(),
              (std::vector<std::string>{"observe", "pause_writes", "wait_caught_up", "fence", "promote", "follow",
                                        "unpause"}))
        << "the servers are looked at first; old is fenced before new is promoted";
    EXPECT_EQ(h.svc->current_route(), proxy::route_to(side::new_side));
    ASSERT_TRUE(r.service);
    EXPECT_TRUE(r.service->fenced);
    EXPECT_EQ(r.service->switches.at("done"), 1u);
    const auto saved = load_state(h.dir / "state.json");
    ASSERT_TRUE(std::holds_alternative<state>(saved));
    const auto& record = std::get<state>(saved).services.at("redis");
    EXPECT_EQ(record.active, "new");
    EXPECT_TRUE(record.fenced);
    ASSERT_FALSE(h.progress.empty());
    EXPECT_EQ(h.progress.back().rfind("released held clients to new after ", 0), 0u) << h.progress.back();
}

TEST(Controller, PauseBudgetFiresThroughTheTimerWhileAStepHangs)
{
    // Long enough that observe, the journal's fsync and pause_writes end well inside it on a
    // loaded CI machine: the budget is to run out in catch-up, the step that hangs.
    harness h(2s);
    h.servers->catch_up_hangs = true;
    h.start_switch(side::new_side);
    h.run_until([&] {
        const auto seen = h.servers->seen();
        return !h.svc->current_route().hold && std::find(seen.begin(), seen.end(), "wait_caught_up") != seen.end();
    });
    EXPECT_FALSE(h.svc->current_route().hold) << "held clients go back to old when the budget runs out";
    EXPECT_EQ(h.svc->current_route().active, side::old_side);
    EXPECT_EQ(h.ctl.snapshot().at(0).state, service_state::serving);
    EXPECT_FALSE(h.result) << "the answer waits for the step still out (then unpause)";
    h.servers->catch_up_hangs = false;

    const auto r = h.finish();
    EXPECT_EQ(r.result, verdict::failed);
    EXPECT_NE(r.error.find("pause budget 2s ran out"), std::string::npos) << r.error;
    EXPECT_EQ(h.servers->seen(), (std::vector<std::string>{"observe", "pause_writes", "wait_caught_up", "unpause"}));
    EXPECT_EQ(h.ctl.snapshot().at(0).switches.at("failed"), 1u);
}

TEST(Controller, LostPromoteReplyIsResolvedByAskingNewsRole)
{
    harness h;
    h.servers->promote_answers = false;
    h.start_switch(side::new_side);
    const auto r = h.finish();
    ASSERT_TRUE(r.ok()) << r.error;
    EXPECT_EQ(h.servers->seen(), (std::vector<std::string>{"observe", "pause_writes", "wait_caught_up", "fence",
                                                           "promote", "verify_promoted", "follow", "unpause"}));
    EXPECT_EQ(h.svc->current_route(), proxy::route_to(side::new_side));
}

TEST(Controller, FailedPromotionOfAReplicaThatStayedOneReleasesToOld)
{
    harness h;
    h.servers->promote_answers = false;
    h.servers->promote_promotes = false;
    h.start_switch(side::new_side);
    const auto r = h.finish();
    EXPECT_EQ(r.result, verdict::failed);
    EXPECT_EQ(h.svc->current_route(), route{});
    const auto seen = h.servers->seen();
    EXPECT_EQ(seen, (std::vector<std::string>{"observe", "pause_writes", "wait_caught_up", "fence", "promote",
                                              "verify_promoted", "unfence", "unpause"}))
        << "the fence taken before the promotion is lifted, then the pause";
}

TEST(Controller, ASwitchFindingTheServersAlreadySwitchedAdoptsThemWithoutChangingThem)
{
    harness h;
    // Another host switched: new a primary continuing old's lineage, old its fenced replica.
    h.servers->seen_by_observe = {{true, "", server_role::replica, "b2", "00", 10, std::nullopt, true},
                                  {true, "", server_role::primary, "b2", "a1", 10, 5, false}};
    h.start_switch(side::new_side);
    const auto r = h.finish();
    ASSERT_TRUE(r.ok()) << r.error;
    EXPECT_TRUE(r.adopted);
    EXPECT_EQ(h.servers->seen(), (std::vector<std::string>{"observe"})) << "nothing is changed on the servers";
    EXPECT_EQ(h.svc->current_route(), proxy::route_to(side::new_side));
    ASSERT_TRUE(r.service && r.service->last_switch);
    EXPECT_TRUE(r.service->last_switch->adopted);
    EXPECT_NE(r.service->last_switch->message.find("adopted"), std::string::npos) << r.service->last_switch->message;
    EXPECT_TRUE(r.service->fenced);
    const auto saved = load_state(h.dir / "state.json");
    ASSERT_TRUE(std::holds_alternative<state>(saved));
    EXPECT_EQ(std::get<state>(saved).services.at("redis").active, "new");
    EXPECT_FALSE(std::get<state>(saved).services.at("redis").journal);
}

TEST(Controller, ASwitchFindingTwoWritablePrimariesIsRefusedWithWhatItSaw)
{
    harness h;
    h.servers->seen_by_observe = {{true, "", server_role::primary, "a1", "00", 10, std::nullopt, false},
                                  {true, "", server_role::primary, "c3", "00", 0, std::nullopt, false}};
    h.start_switch(side::new_side);
    const auto r = h.finish();
    EXPECT_EQ(r.result, verdict::refused);
    EXPECT_NE(r.error.find("two primaries of different lineage"), std::string::npos) << r.error;
    EXPECT_NE(r.error.find("--force"), std::string::npos) << "names a way out: " << r.error;
    EXPECT_EQ(h.servers->seen(), (std::vector<std::string>{"observe"}));
    EXPECT_EQ(h.svc->current_route(), route{});
}

} // namespace
} // namespace tunneld::cutover
