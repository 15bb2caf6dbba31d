// Real redis-server tests of moving redis clients between a service's two backends at the proxy
// level (test names RedisMove_*): proxy::service in front of two throwaway servers that both
// require a password; clients are hiredis connections through the service's port. What must
// hold: a moved client sees no error and keeps its session (AUTH, SELECT, CLIENT SETNAME) on the
// other server; pinned clients move when they unpin or are cut with a reason; a refused replay
// cuts the client; a hold can be lifted and the client goes on where it was.
//  1. an idle client with AUTH, SELECT 3 and a name moves; its writes land in db 3 of new and
//     CLIENT LIST on new shows its name
//  2. a pipelining writer moves mid-stream: every reply is +OK, every write is on old or new
//  3. a MULTI client is held only after EXEC's answer; the transaction is whole on old
//  4. a BRPOP client is held once its BRPOP answers, and its next BRPOP runs on new; one whose
//     BRPOP was sent while an earlier reply was outstanding can be unblocked by its backend id
//  5. a subscriber is cut (pinned for good), with the pin in the log reason
//  6. new refusing the password cuts the client: replay_refused
//  7. resume after a hold: the client goes on with old
//  8. a held client's connection to new is opened and its session replayed while new is still a
//     replica; after the promotion the move forwards its request on that same connection
//  9. a hold lifted instead of a move closes the connection opened ahead on new

#include "proxy/service.hpp"
#include "redis_test_bed.hpp"

#include <atomic>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <cstdlib>
#include <memory>
#include <thread>

namespace tunneld::proxy {
namespace {

using namespace tunneld::test_bed;
using namespace std::chrono_literals;

const std::string password = "s3cret-move";

class RedisMove : public ::testing::Test {
protected:
    void SetUp() override
    {
        // tools/deps installs redis-server: its absence is a failure, not a skip.
        ASSERT_EQ(std::system("command -v redis-server >/dev/null 2>&1"), 0) << "redis-server not installed";
        char pattern[] = "/tmp/tunneld-move-XXXXXX";
        directory_ = ::mkdtemp(pattern);
        old_ = std::make_unique<redis_server>(directory_ / "old", std::vector<std::string>{"--requirepass", password});
        new_ = std::make_unique<redis_server>(directory_ / "new", std::vector<std::string>{"--requirepass", password});
        auto settings = std::make_shared<config::service_config>();
        settings->name = "redis";
        settings->kind = config::service_kind::redis;
        settings->listen = {"127.0.0.1", 0};
        settings->old_backend.address = old_->endpoint();
        settings->new_backend.address = new_->endpoint();
        settings->connect_timeout = 2s;
        service_ = std::make_shared<service>(settings, std::vector<asio::io_context*>{&loop_}, nullptr,
                                             route_to(side::old_side));
        service_->start();
        thread_ = std::thread([this] { loop_.run(); });
    }
    void TearDown() override
    {
        if (service_) {
            service_->stop_accepting();
            service_->cut_everything(close_reason::shutdown);
        }
        eventually([&] { return !service_ || service_->active() == 0; }, 5s);
        work_.reset();
        loop_.stop();
        if (thread_.joinable()) thread_.join();
        service_.reset();
        new_.reset();
        old_.reset();
        if (!directory_.empty()) std::filesystem::remove_all(directory_);
    }

    std::uint16_t port() const { return service_->local_port(); }
    /// A client through the service with AUTH, SELECT 3 and CLIENT SETNAME `name`.
    std::unique_ptr<client> application(const std::string& name)
    {
        auto c = std::make_unique<client>(port(), password);
        EXPECT_EQ(c->command({"SELECT", "3"}), "OK");
        EXPECT_EQ(c->command({"CLIENT", "SETNAME", name}), "OK");
        return c;
    }
    /// Waits until every client on `from` is held (or pinned for good).
    bool all_held(side from, clock::duration limit = 5s)
    {
        return eventually([&] { return service_->census(from).busy() == 0; }, limit);
    }
    bool moved_off(side from, clock::duration limit = 5s)
    {
        return eventually([&] { return service_->clients().count(from) == 0; }, limit);
    }
    /// The whole move: hold, wait, move, wait.
    void move(side from, side to)
    {
        service_->hold_clients(from);
        ASSERT_TRUE(all_held(from)) << "clients held: " << service_->census(from).held;
        service_->move_clients(from, to);
        ASSERT_TRUE(moved_off(from));
    }
    /// A client of `server` itself, on db 3.
    std::unique_ptr<client> on_server(const redis_server& server)
    {
        auto c = std::make_unique<client>(server.port(), password);
        EXPECT_EQ(c->command({"SELECT", "3"}), "OK");
        return c;
    }

    std::filesystem::path directory_;
    std::unique_ptr<redis_server> old_;
    std::unique_ptr<redis_server> new_;
    asio::io_context loop_;
    std::optional<asio::executor_work_guard<asio::io_context::executor_type>> work_{loop_.get_executor()};
    std::thread thread_;
    std::shared_ptr<service> service_;
};

TEST_F(RedisMove, IdleClientMovesWithItsSession)
{
    auto app = application("app-one");
    ASSERT_EQ(app->command({"SET", "before", "1"}), "OK");
    move(side::old_side, side::new_side);
    EXPECT_EQ(service_->clients().count(side::new_side), 1u);
    EXPECT_EQ(app->command({"SET", "after", "1"}), "OK");
    EXPECT_EQ(on_server(*new_)->command({"GET", "after"}), "1") << "the write is in db 3 of new";
    EXPECT_EQ(on_server(*old_)->command({"GET", "before"}), "1");
    EXPECT_EQ(on_server(*old_)->command({"GET", "after"}), "");
    EXPECT_NE(new_->connect().command({"CLIENT", "LIST"}).find("name=app-one"), std::string::npos);
    EXPECT_EQ(service_->counters().clients_moved.load(), 1u);
    // And back.
    move(side::new_side, side::old_side);
    EXPECT_EQ(app->command({"SET", "back", "1"}), "OK");
    EXPECT_EQ(on_server(*old_)->command({"GET", "back"}), "1");
}

TEST_F(RedisMove, PipeliningWriterMovesMidStream)
{
    std::atomic<bool> stop{false};
    std::atomic<int> errors{0};
    std::atomic<int> acknowledged{0};
    std::string first_error;
    std::thread writer([&] {
        auto app = application("piped");
        int n = 0;
        while (!stop) {
            const int base = n;
            for (int i = 0; i < 16; ++i)
                app->append({"SET", "k:" + std::to_string(n++), "v"});
            for (int i = 0; i < 16; ++i) {
                const auto answer = app->reply();
                if (answer == "OK") {
                    ++acknowledged;
                } else if (errors++ == 0) {
                    first_error = answer + " at " + std::to_string(base + i);
                }
            }
            if (errors > 0) return;
        }
    });
    ASSERT_TRUE(eventually([&] { return acknowledged > 2000; }));
    move(side::old_side, side::new_side);
    const int at_move = acknowledged;
    ASSERT_TRUE(eventually([&] { return acknowledged > at_move + 2000 || errors > 0; }));
    stop = true;
    writer.join();
    EXPECT_EQ(errors.load(), 0) << first_error;
    const auto on_old = std::stoll(on_server(*old_)->command({"DBSIZE"}));
    const auto on_new = std::stoll(on_server(*new_)->command({"DBSIZE"}));
    EXPECT_EQ(on_old + on_new, acknowledged.load()) << "every acknowledged write is on one side";
    EXPECT_GT(on_new, 0);
}

TEST_F(RedisMove, TransactionIsHeldOnlyAfterExec)
{
    auto app = application("tx");
    ASSERT_EQ(app->command({"MULTI"}), "OK");
    ASSERT_EQ(app->command({"SET", "tx:a", "1"}), "QUEUED");
    service_->hold_clients(side::old_side);
    std::this_thread::sleep_for(200ms);
    EXPECT_EQ(service_->census(side::old_side).held, 0u) << "inside MULTI the client is not held";
    ASSERT_EQ(app->command({"SET", "tx:b", "1"}), "QUEUED");
    EXPECT_EQ(app->command({"EXEC"}), "OK") << "the first element of EXEC's answer";
    ASSERT_TRUE(all_held(side::old_side));
    service_->move_clients(side::old_side, side::new_side);
    ASSERT_TRUE(moved_off(side::old_side));
    EXPECT_EQ(on_server(*old_)->command({"MGET", "tx:a", "tx:b"}), "1") << "the transaction ran whole on old";
    EXPECT_EQ(app->command({"INCR", "tx:count"}), "1");
    EXPECT_EQ(on_server(*new_)->command({"GET", "tx:count"}), "1");
}

TEST_F(RedisMove, BlockedClientMovesOnceItsBrpopAnswers)
{
    auto app = application("worker");
    app->append({"BRPOP", "jobs", "1"});
    app->flush();
    std::this_thread::sleep_for(100ms);
    service_->hold_clients(side::old_side);
    std::this_thread::sleep_for(200ms);
    EXPECT_EQ(service_->census(side::old_side).held, 0u) << "blocked in BRPOP: not held yet";
    EXPECT_EQ(app->reply(), "") << "BRPOP timed out with nil";
    ASSERT_TRUE(all_held(side::old_side));
    service_->move_clients(side::old_side, side::new_side);
    ASSERT_TRUE(moved_off(side::old_side));
    {
        auto producer = on_server(*new_);
        ASSERT_EQ(producer->command({"LPUSH", "jobs", "job-1"}), "1");
    }
    EXPECT_EQ(app->command({"BRPOP", "jobs", "1"}), "jobs") << "the next BRPOP runs on new";
}

TEST_F(RedisMove, BrpopSentBehindAnOutstandingRequestCanBeUnblocked)
{
    auto app = application("late-worker");
    // A script that runs 2 s: its reply is still outstanding when the BRPOP reaches tunneld, so
    // there is no moment with nothing outstanding just before the blocking command.
    app->append({"EVAL",
                 "local t = redis.call('TIME') local s = t[1] * 1000000 + t[2] "
                 "while true do local n = redis.call('TIME') "
                 "if n[1] * 1000000 + n[2] - s > 2000000 then return 7 end end",
                 "0"});
    app->flush();
    std::this_thread::sleep_for(200ms); // a write of its own, while the script runs
    app->append({"BRPOP", "jobs", "30"});
    app->flush();
    EXPECT_EQ(app->reply(), "7");
    // As a switch does: hold, then unblock the blocked clients by the backend id tunneld learnt.
    service_->hold_clients(side::old_side);
    std::vector<std::int64_t> ids;
    EXPECT_TRUE(eventually([&] {
        ids = service_->blocked_backend_ids(side::old_side);
        return ids.size() == 1;
    })) << "the blocked client's backend id is known";
    ASSERT_EQ(ids.size(), 1u);
    EXPECT_EQ(on_server(*old_)->command({"CLIENT", "UNBLOCK", std::to_string(ids[0]), "TIMEOUT"}), "1");
    EXPECT_EQ(app->reply(), "") << "BRPOP answered nil, as at its timeout";
    ASSERT_TRUE(all_held(side::old_side));
    service_->move_clients(side::old_side, side::new_side);
    ASSERT_TRUE(moved_off(side::old_side));
    EXPECT_EQ(app->command({"SET", "after", "1"}), "OK");
    EXPECT_EQ(on_server(*new_)->command({"GET", "after"}), "1");
}

TEST_F(RedisMove, SubscriberIsCutWithItsPin)
{
    auto app = application("listener");
    app->append({"SUBSCRIBE", "news"});
    app->flush();
    EXPECT_EQ(app->reply(), "subscribe");
    auto writer = application("writer");
    service_->hold_clients(side::old_side);
    ASSERT_TRUE(all_held(side::old_side));
    EXPECT_EQ(service_->census(side::old_side).pinned_lasting, 1u);
    EXPECT_EQ(service_->move_clients(side::old_side, side::new_side), 1u) << "the subscriber is cut";
    ASSERT_TRUE(moved_off(side::old_side));
    EXPECT_EQ(writer->command({"SET", "w", "1"}), "OK");
    EXPECT_EQ(app->reply().substr(0, 3), "!io") << "the subscriber's connection is closed";
}

TEST_F(RedisMove, RefusedReplayCutsTheClient)
{
    auto app = application("refused");
    ASSERT_EQ(new_->connect().command({"CONFIG", "SET", "requirepass", "another"}), "OK");
    service_->hold_clients(side::old_side);
    ASSERT_TRUE(all_held(side::old_side));
    service_->move_clients(side::old_side, side::new_side);
    EXPECT_TRUE(eventually([&] { return service_->counters().clients_move_failed.load() == 1; }));
    EXPECT_EQ(app->command({"PING"}).substr(0, 3), "!io");
    EXPECT_EQ(service_->counters().clients_moved.load(), 0u);
}

TEST_F(RedisMove, ResumedClientGoesOnWithOld)
{
    auto app = application("stay");
    service_->hold_clients(side::old_side);
    ASSERT_TRUE(all_held(side::old_side));
    std::string answer;
    std::thread held([&] { answer = app->command({"SET", "held", "1"}); });
    std::this_thread::sleep_for(200ms);
    EXPECT_EQ(on_server(*old_)->command({"GET", "held"}), "") << "the held request has not reached old";
    service_->resume_clients(side::old_side);
    held.join();
    EXPECT_EQ(answer, "OK");
    EXPECT_EQ(on_server(*old_)->command({"GET", "held"}), "1");
    EXPECT_EQ(service_->clients().count(side::old_side), 1u);
}

/// The line of CLIENT LIST on `server` for the client named `name` ("" when there is none).
std::string client_line(const redis_server& server, const std::string& name)
{
    const std::string list = server.connect().command({"CLIENT", "LIST"});
    const auto at = list.find(" name=" + name + " ");
    if (at == std::string::npos) return {};
    const auto begin = list.rfind('\n', at);
    const auto end = list.find('\n', at);
    return list.substr(begin == std::string::npos ? 0 : begin + 1,
                       end == std::string::npos ? std::string::npos : end - begin - 1);
}

/// new follows old (as at a switch's start) and has caught up.
void make_replica(redis_server& replica, const redis_server& primary)
{
    auto c = replica.connect();
    ASSERT_EQ(c.command({"CONFIG", "SET", "masterauth", password}), "OK");
    ASSERT_EQ(c.command({"REPLICAOF", "127.0.0.1", std::to_string(primary.port())}), "OK");
    ASSERT_TRUE(eventually([&] {
        return replica.connect().command({"INFO", "replication"}).find("master_link_status:up") !=
               std::string::npos;
    }));
}

TEST_F(RedisMove, HeldClientIsConnectedAndReplayedOnTheReplicaBeforeItsMove)
{
    make_replica(*new_, *old_);
    auto app = application("ahead");
    service_->hold_clients(side::old_side);
    ASSERT_TRUE(all_held(side::old_side));
    // While new is still a replica, its CLIENT LIST shows the held client's connection, in db 3.
    std::string ahead;
    ASSERT_TRUE(eventually([&] { return !(ahead = client_line(*new_, "ahead")).empty(); }))
        << "no connection named ahead on new during the hold";
    EXPECT_NE(ahead.find(" db=3 "), std::string::npos) << ahead;
    EXPECT_NE(new_->connect().command({"INFO", "replication"}).find("role:slave"), std::string::npos);
    const std::string id = ahead.substr(0, ahead.find(' ')); // "id=N"

    ASSERT_EQ(new_->connect().command({"REPLICAOF", "NO", "ONE"}), "OK"); // the promotion
    service_->move_clients(side::old_side, side::new_side);
    ASSERT_TRUE(moved_off(side::old_side));
    EXPECT_EQ(app->command({"SET", "after", "1"}), "OK");
    EXPECT_EQ(on_server(*new_)->command({"GET", "after"}), "1") << "the write is in db 3 of new";
    const std::string after = client_line(*new_, "ahead");
    EXPECT_EQ(after.substr(0, after.find(' ')), id) << "the move used the connection opened ahead: " << after;
    EXPECT_EQ(service_->counters().clients_moved.load(), 1u);
    EXPECT_EQ(service_->counters().moves_ready_ahead.load(), 1u);
}

TEST_F(RedisMove, LiftedHoldClosesTheConnectionOpenedAhead)
{
    auto app = application("lifted");
    service_->hold_clients(side::old_side);
    ASSERT_TRUE(all_held(side::old_side));
    ASSERT_TRUE(eventually([&] { return !client_line(*new_, "lifted").empty(); }))
        << "no connection named lifted on new during the hold";
    service_->resume_clients(side::old_side);
    EXPECT_TRUE(eventually([&] { return client_line(*new_, "lifted").empty(); }))
        << "the connection opened ahead on new is still there: " << client_line(*new_, "lifted");
    EXPECT_EQ(app->command({"SET", "stayed", "1"}), "OK");
    EXPECT_EQ(on_server(*old_)->command({"GET", "stayed"}), "1");
    EXPECT_NE(client_line(*old_, "lifted"), "");
    EXPECT_EQ(service_->counters().clients_moved.load(), 0u);
}

} // namespace
} // namespace tunneld::proxy
