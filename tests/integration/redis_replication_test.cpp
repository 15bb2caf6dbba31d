// Real redis-server tests of the redis replication layer (test names RedisReplication_*). Each
// test starts its own throwaway servers on free loopback ports and kills them in TearDown.
//  1. probe sees a warm replica with the link up and zero lag
//  2. a full switch under a live writer: pause, catch up, promote, fence, unpause; every
//     acknowledged write is on new and old refuses writes afterwards
//  3. the min_replicas fence makes old refuse writes
//  4. a stopped replica makes wait_caught_up fail at its deadline and the probe unknown
//  5. rollback after a switch loses nothing and demotes new
//  6. rollback refuses when old is not a replica of new, and changes nothing
//  7. AUTH from a credentials file; a wrong password never shows up in a message
//  8. promote_command hook

#include "cutover/replication.hpp"
#include "redis_test_bed.hpp"

#include <arpa/inet.h>
#include <atomic>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <gtest/gtest.h>
#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>

namespace tunneld::cutover {
namespace {

using namespace std::chrono_literals;
using clock = std::chrono::steady_clock;
using namespace tunneld::test_bed;

class RedisReplication : public ::testing::Test {
protected:
    void SetUp() override
    {
        // tools/deps installs redis-server: its absence is a failure, not a skip.
        ASSERT_EQ(std::system("command -v redis-server >/dev/null 2>&1"), 0) << "redis-server not installed";
        char pattern[] = "/tmp/tunneld-redis-XXXXXX";
        directory_ = ::mkdtemp(pattern);
    }
    void TearDown() override
    {
        new_.reset();
        old_.reset();
        if (!directory_.empty()) std::filesystem::remove_all(directory_);
    }

    /// Starts old (primary) and new (its replica) and waits for the link to be up.
    void start_pair(std::vector<std::string> old_extra = {}, std::vector<std::string> new_extra = {})
    {
        old_ = std::make_unique<redis_server>(directory_ / "old", old_extra);
        new_ = std::make_unique<redis_server>(directory_ / "new", new_extra);
        auto replica = new_->connect();
        ASSERT_EQ(replica.command({"REPLICAOF", "127.0.0.1", std::to_string(old_->port())}), "OK");
        ASSERT_TRUE(eventually([&] {
            return replica.command({"INFO", "replication"}).find("master_link_status:up") !=
                   std::string::npos;
        }));
        service_.name = "redis";
        service_.kind = config::service_kind::redis;
        service_.probe_timeout = 1s;
        service_.fence = config::redis_fence::replicaof;
        service_.fence_replicaof = new_->endpoint();
    }

    std::unique_ptr<replication> make()
    {
        return make_redis_replication(service_, old_->endpoint(), new_->endpoint());
    }

    lag_reading probe_until_caught_up(replication& replication)
    {
        lag_reading reading;
        eventually([&] {
            reading = replication.probe(proxy::side::old_side);
            return reading.bytes == 0u;
        });
        return reading;
    }

    std::filesystem::path directory_;
    std::unique_ptr<redis_server> old_, new_;
    config::service_config service_;
};

TEST_F(RedisReplication, ProbeSeesWarmReplicaWithZeroLag)
{
    start_pair();
    auto primary = old_->connect();
    for (int i = 0; i < 100; ++i)
        ASSERT_EQ(primary.command({"SET", "k" + std::to_string(i), "v"}), "OK");
    auto replication = make();
    const auto reading = probe_until_caught_up(*replication);
    EXPECT_EQ(reading.link, link_state::up) << reading.detail;
    EXPECT_EQ(reading.bytes, 0u) << reading.detail;
    EXPECT_TRUE(check_gate(reading, 1024 * 1024, std::nullopt, false, clock::now(), 5s).allowed);
}

TEST_F(RedisReplication, SwitchUnderLoadLosesNoAcknowledgedWriteAndFencesOld)
{
    start_pair();
    auto replication = make();
    // A writer keeps writing to old; keys acknowledged by old before the fence must be on new.
    std::atomic<bool> stop{false};
    std::vector<std::string> acknowledged;
    std::size_t refused = 0;
    std::thread writer([&] {
        auto primary = old_->connect();
        for (int i = 0; !stop; ++i) {
            const auto key = "key:" + std::to_string(i);
            if (primary.command({"SET", key, "v"}) == "OK")
                acknowledged.push_back(key);
            else
                ++refused;
        }
    });
    std::this_thread::sleep_for(200ms);

    const auto start = clock::now();
    const auto paused = replication->pause_writes(3000ms);
    ASSERT_TRUE(paused.ok) << paused.message;
    const auto caught_up = replication->wait_caught_up(clock::now() + 2s);
    ASSERT_TRUE(caught_up.ok) << caught_up.message;
    // Fence first: old refuses writes before new takes any; then old follows new.
    const auto fenced = replication->fence(proxy::side::old_side, clock::now() + 2s);
    ASSERT_TRUE(fenced.ok) << fenced.message;
    const auto promoted = replication->promote(clock::now() + 2s);
    ASSERT_TRUE(promoted.ok) << promoted.message;
    EXPECT_TRUE(replication->verify_promoted(clock::now()).ok);
    const auto followed = replication->follow(proxy::side::old_side, clock::now() + 2s);
    ASSERT_TRUE(followed.ok) << followed.message;
    const auto unpaused = replication->unpause(proxy::side::old_side);
    ASSERT_TRUE(unpaused.ok) << unpaused.message;
    const auto held = clock::now() - start;
    std::this_thread::sleep_for(200ms);
    stop = true;
    writer.join();

    auto primary = new_->connect();
    std::size_t missing = 0;
    for (const auto& key : acknowledged)
        missing += primary.command({"EXISTS", key}) != "1";
    EXPECT_EQ(missing, 0u) << "of " << acknowledged.size() << " acknowledged writes";
    EXPECT_GT(acknowledged.size(), 0u);
    EXPECT_GT(refused, 0u) << "the writer should have seen old refuse writes after the fence";
    auto old_client = old_->connect();
    EXPECT_EQ(old_client.command({"SET", "after", "fence"}).rfind("!READONLY", 0), 0u);
    EXPECT_EQ(primary.command({"SET", "after", "switch"}), "OK");
    std::cout << "[ switch ] held " << std::chrono::duration_cast<std::chrono::milliseconds>(held).count()
              << "ms, acknowledged " << acknowledged.size() << ", refused " << refused << ": "
              << caught_up.message << "; " << fenced.message << "\n";
}

TEST_F(RedisReplication, MinReplicasFenceRefusesWrites)
{
    start_pair();
    service_.fence = config::redis_fence::min_replicas;
    auto replication = make();
    probe_until_caught_up(*replication);
    ASSERT_TRUE(replication->pause_writes(2000ms).ok);
    ASSERT_TRUE(replication->wait_caught_up(clock::now() + 2s).ok);
    const auto fenced = replication->fence(proxy::side::old_side, clock::now() + 2s);
    ASSERT_TRUE(fenced.ok) << fenced.message;
    ASSERT_TRUE(replication->promote(clock::now() + 2s).ok);
    const auto followed = replication->follow(proxy::side::old_side, clock::now() + 2s);
    EXPECT_TRUE(followed.ok && followed.no_op) << "fence = min_replicas: old stays fenced as it is";
    ASSERT_TRUE(replication->unpause(proxy::side::old_side).ok);
    auto old_client = old_->connect();
    EXPECT_EQ(old_client.command({"SET", "after", "fence"}).rfind("!NOREPLICAS", 0), 0u);
}

TEST_F(RedisReplication, StoppedReplicaFailsCatchUpAtDeadline)
{
    start_pair();
    service_.probe_timeout = 300ms;
    auto replication = make();
    probe_until_caught_up(*replication);
    ::kill(new_->pid(), SIGSTOP);
    auto primary = old_->connect();
    for (int i = 0; i < 50; ++i)
        ASSERT_EQ(primary.command({"SET", "late" + std::to_string(i), "v"}), "OK");
    ASSERT_TRUE(replication->pause_writes(2000ms).ok);
    const auto start = clock::now();
    const auto caught_up = replication->wait_caught_up(start + 600ms);
    const auto took = clock::now() - start;
    EXPECT_FALSE(caught_up.ok);
    EXPECT_GE(took, 550ms);
    EXPECT_LT(took, 1500ms);
    const auto reading = replication->probe(proxy::side::old_side);
    EXPECT_FALSE(reading.bytes);
    EXPECT_EQ(reading.link, link_state::unknown);
    EXPECT_FALSE(check_gate(reading, std::nullopt, std::nullopt, false, clock::now(), 5s).allowed);
    // Undo: old takes writes again, nothing was promoted.
    ASSERT_TRUE(replication->unpause(proxy::side::old_side).ok);
    EXPECT_EQ(primary.command({"SET", "after", "abort"}), "OK");
    ::kill(new_->pid(), SIGCONT);
    std::cout << "[ stopped ] " << caught_up.message << "\n";
}

TEST_F(RedisReplication, RollbackAfterSwitchLosesNothing)
{
    start_pair();
    // The operator's own durability setting on old (satisfied by its one replica): the switch's
    // fence replaces it, the rollback must give it back.
    ASSERT_EQ(old_->connect().command({"CONFIG", "SET", "min-replicas-to-write", "1"}), "OK");
    auto replication = make();
    probe_until_caught_up(*replication);
    ASSERT_TRUE(replication->pause_writes(2000ms).ok);
    ASSERT_TRUE(replication->wait_caught_up(clock::now() + 2s).ok);
    ASSERT_TRUE(replication->fence(proxy::side::old_side, clock::now() + 2s).ok);
    ASSERT_TRUE(replication->promote(clock::now() + 2s).ok);
    ASSERT_TRUE(replication->follow(proxy::side::old_side, clock::now() + 2s).ok);
    ASSERT_TRUE(replication->unpause(proxy::side::old_side).ok);

    auto on_new = new_->connect();
    for (int i = 0; i < 200; ++i)
        ASSERT_EQ(on_new.command({"SET", "new" + std::to_string(i), "v"}), "OK");
    rollback_options options;
    options.new_replicaof = old_->endpoint();
    options.pause_hold = 3000ms;
    const auto rolled_back = replication->rollback(options, clock::now() + 3s);
    ASSERT_TRUE(rolled_back.ok) << rolled_back.message;

    auto on_old = old_->connect();
    for (int i = 0; i < 200; ++i)
        EXPECT_EQ(on_old.command({"EXISTS", "new" + std::to_string(i)}), "1") << i;
    EXPECT_EQ(on_new.command({"SET", "after", "rollback"}).rfind("!READONLY", 0), 0u);
    // And the pair is warm again the right way round.
    const auto reading = probe_until_caught_up(*replication);
    EXPECT_EQ(reading.link, link_state::up) << reading.detail;
    EXPECT_EQ(on_old.command({"SET", "after", "rollback"}), "OK") << "new follows old: one replica, as before";
    EXPECT_EQ(on_old.config_value("min-replicas-to-write"), "1")
        << "the operator's value is back on old";
    std::cout << "[ rollback ] " << rolled_back.message << "\n";

    // Switched again: new, fenced by the rollback, takes writes once promoted.
    ASSERT_TRUE(replication->pause_writes(2000ms).ok);
    ASSERT_TRUE(replication->wait_caught_up(clock::now() + 2s).ok);
    ASSERT_TRUE(replication->fence(proxy::side::old_side, clock::now() + 2s).ok);
    const auto promoted = replication->promote(clock::now() + 2s);
    ASSERT_TRUE(promoted.ok) << promoted.message;
    ASSERT_TRUE(replication->unpause(proxy::side::old_side).ok);
    auto again = new_->connect();
    EXPECT_EQ(again.command({"SET", "after", "second switch"}), "OK") << promoted.message;
    EXPECT_EQ(again.config_value("min-replicas-to-write"), "0");
}

TEST_F(RedisReplication, RollbackRefusedWhenOldIsNotAReplica)
{
    start_pair();
    service_.fence = config::redis_fence::min_replicas;
    auto replication = make();
    probe_until_caught_up(*replication);
    ASSERT_TRUE(replication->pause_writes(2000ms).ok);
    ASSERT_TRUE(replication->wait_caught_up(clock::now() + 2s).ok);
    ASSERT_TRUE(replication->fence(proxy::side::old_side, clock::now() + 2s).ok);
    ASSERT_TRUE(replication->promote(clock::now() + 2s).ok);
    ASSERT_TRUE(replication->unpause(proxy::side::old_side).ok);

    rollback_options options;
    options.new_replicaof = old_->endpoint();
    const auto refused = replication->rollback(options, clock::now() + 2s);
    EXPECT_FALSE(refused.ok);
    EXPECT_NE(refused.message.find("would be lost"), std::string::npos) << refused.message;
    auto on_new = new_->connect();
    EXPECT_EQ(on_new.command({"SET", "still", "writable"}), "OK"); // unpaused, still primary

    options.force = true;
    const auto forced = replication->rollback(options, clock::now() + 3s);
    ASSERT_TRUE(forced.ok) << forced.message;
    auto on_old = old_->connect();
    EXPECT_EQ(on_old.command({"SET", "after", "rollback"}), "OK"); // min_replicas fence lifted
}

TEST_F(RedisReplication, AuthFromCredentialsFileAndNoPasswordInMessages)
{
    const std::string password = "s3cret-Pa55";
    start_pair({"--requirepass", password}, {"--requirepass", password, "--masterauth", password});
    const auto credentials = directory_ / "credentials";
    std::ofstream(credentials) << password << "\n";
    service_.credentials_file = credentials;
    auto replication = make();
    const auto reading = probe_until_caught_up(*replication);
    EXPECT_EQ(reading.link, link_state::up) << reading.detail;

    const auto wrong = directory_ / "wrong";
    std::ofstream(wrong) << "default wrong-Pa55word\n";
    service_.credentials_file = wrong;
    auto refused = make();
    const auto bad = refused->probe(proxy::side::old_side);
    EXPECT_FALSE(bad.bytes);
    EXPECT_NE(bad.detail.find("AUTH failed"), std::string::npos) << bad.detail;
    EXPECT_EQ(bad.detail.find("wrong-Pa55word"), std::string::npos) << bad.detail;
    const auto paused = refused->pause_writes(100ms);
    EXPECT_FALSE(paused.ok);
    EXPECT_EQ(paused.message.find("wrong-Pa55word"), std::string::npos) << paused.message;

    service_.credentials_file = directory_ / "absent";
    EXPECT_NE(make()->probe(proxy::side::old_side).detail.find("cannot read credentials file"), std::string::npos);
}

TEST_F(RedisReplication, PromoteCommandHookPromotes)
{
    start_pair();
    service_.promote_command =
        "redis-cli -p " + std::to_string(new_->port()) + " REPLICAOF NO ONE >/dev/null";
    auto replication = make();
    const auto promoted = replication->promote(clock::now() + 3s);
    ASSERT_TRUE(promoted.ok) << promoted.message;
    EXPECT_TRUE(replication->verify_promoted(clock::now()).ok);

    service_.promote_command = "sleep 5";
    const auto start = clock::now();
    const auto timed_out = make()->promote(start + 300ms);
    EXPECT_FALSE(timed_out.ok);
    EXPECT_LT(clock::now() - start, 2s);
}

TEST_F(RedisReplication, VerifyPromotedAsksAgainWhileNewIsAwayAndSaysWhenItNeverAnswered)
{
    start_pair();
    service_.probe_timeout = 200ms;
    auto replication = make();
    ASSERT_TRUE(replication->promote(clock::now() + 3s).ok);

    // Away for 600 ms (a restart): asked again until it answers as the primary it is.
    ::kill(new_->pid(), SIGSTOP);
    std::thread resume([pid = new_->pid()] {
        std::this_thread::sleep_for(600ms);
        ::kill(pid, SIGCONT);
    });
    const auto back = replication->verify_promoted(clock::now() + 5s);
    resume.join();
    EXPECT_TRUE(back.ok) << back.message;

    // Away past `until`: a failure that says nobody answered, not that new is a replica.
    ::kill(new_->pid(), SIGSTOP);
    const auto start = clock::now();
    const auto gone = replication->verify_promoted(start + 700ms);
    const auto took = clock::now() - start;
    ::kill(new_->pid(), SIGCONT);
    EXPECT_FALSE(gone.ok);
    EXPECT_TRUE(gone.unanswered) << gone.message;
    EXPECT_GE(took, 500ms);
    EXPECT_LT(took, 2s);

    // Answering as a replica is an answer: unanswered stays false.
    auto replica = new_->connect();
    ASSERT_EQ(replica.command({"REPLICAOF", "127.0.0.1", std::to_string(old_->port())}), "OK");
    const auto demoted = replication->verify_promoted(clock::now() + 2s);
    EXPECT_FALSE(demoted.ok);
    EXPECT_FALSE(demoted.unanswered) << demoted.message;
}

TEST_F(RedisReplication, UnreachableBackendIsUnknown)
{
    service_.probe_timeout = 300ms;
    auto replication =
        make_redis_replication(service_, {"127.0.0.1", free_port()}, {"127.0.0.1", free_port()});
    const auto reading = replication->probe(proxy::side::old_side);
    EXPECT_EQ(reading.link, link_state::unknown);
    EXPECT_NE(reading.detail.find("cannot connect"), std::string::npos) << reading.detail;
    EXPECT_FALSE(replication->wait_caught_up(clock::now() + 200ms).ok);
}

} // namespace
} // namespace tunneld::cutover
