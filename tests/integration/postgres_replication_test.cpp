// Real PostgreSQL tests of the postgres replication layer (test names PostgresReplication_*): a
// primary and a streaming standby made with initdb + pg_basebackup, run as the `postgres` user on
// free loopback ports in a temporary directory, stopped in TearDown. TCP logins use SCRAM, so the
// credentials file is exercised.
//  1. probe sees the standby streaming with zero lag; the gate allows
//  2. inserts committed on old before clients are cut are all on new after catch-up + promote
//  3. a stopped standby makes the probe unknown and wait_caught_up fail at its deadline
//  4. a wrong password never appears in a message
//  5. rollback after promotion is refused unless forced

#include "cutover/replication.hpp"
#include "free_port.hpp"

#include <arpa/inet.h>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <gtest/gtest.h>
#include <libpq-fe.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <thread>
#include <unistd.h>

namespace tunneld::cutover {
namespace {

using namespace std::chrono_literals;
using clock = std::chrono::steady_clock;

const std::filesystem::path bin = "/usr/lib/postgresql/15/bin";
const std::string password = "pg-Pa55-word";

using test_bed::free_port;

/// Runs `command` as the postgres user; true on exit status 0.
bool as_postgres(const std::string& command)
{
    return std::system(("runuser -u postgres -- sh -c '" + command + "' >/dev/null 2>&1").c_str()) == 0;
}

/// A libpq connection for the test's own statements.
class session {
public:
    explicit session(std::uint16_t port)
    {
        const auto conninfo = "host=127.0.0.1 port=" + std::to_string(port) +
                              " user=postgres dbname=postgres connect_timeout=5 password=" + password;
        connection_ = PQconnectdb(conninfo.c_str());
    }
    ~session() { PQfinish(connection_); }
    session(const session&) = delete;
    session& operator=(const session&) = delete;

    bool ok() const { return PQstatus(connection_) == CONNECTION_OK; }

    /// The first value of the first row, "" when none; nullopt when the statement failed.
    std::optional<std::string> run(const std::string& sql)
    {
        PGresult* result = PQexec(connection_, sql.c_str());
        std::optional<std::string> value;
        const auto status = PQresultStatus(result);
        if (status == PGRES_TUPLES_OK)
            value = PQntuples(result) > 0 ? PQgetvalue(result, 0, 0) : "";
        else if (status == PGRES_COMMAND_OK)
            value = "";
        PQclear(result);
        return value;
    }

private:
    PGconn* connection_ = nullptr;
};

bool eventually(const std::function<bool()>& condition, clock::duration limit = 20s)
{
    const auto until = clock::now() + limit;
    while (clock::now() < until) {
        if (condition()) return true;
        std::this_thread::sleep_for(50ms);
    }
    return condition();
}

class PostgresReplication : public ::testing::Test {
protected:
    void SetUp() override
    {
        // tools/deps installs postgresql and tools/test runs as root: a missing piece fails.
        ASSERT_TRUE(::geteuid() == 0 && std::filesystem::exists(bin / "initdb") &&
                    std::system("id postgres >/dev/null 2>&1") == 0)
            << "needs root, the postgres user and " << bin.string();
        char pattern[] = "/tmp/tunneld-pg-XXXXXX";
        directory_ = ::mkdtemp(pattern);
        ASSERT_TRUE(as_postgres("true")) << "runuser not usable";
        ASSERT_EQ(std::system(("chown postgres: " + directory_.string()).c_str()), 0);
        const auto d = directory_.string();
        std::ofstream(directory_ / "pwfile") << password << "\n";
        ASSERT_EQ(std::system(("chown postgres: " + d + "/pwfile").c_str()), 0);
        ASSERT_TRUE(as_postgres(bin.string() + "/initdb -D " + d +
                                "/old -U postgres --no-sync --auth-local=trust " +
                                "--auth-host=scram-sha-256 --pwfile=" + d + "/pwfile"));
        old_port_ = free_port();
        ASSERT_TRUE(start("old", old_port_));
        // The standby streams over the unix socket (trust); clients and probes use TCP (SCRAM).
        ASSERT_TRUE(as_postgres(bin.string() + "/pg_basebackup -h " + d + " -p " + std::to_string(old_port_) +
                                " -U postgres -D " + d + "/new -R -X stream --no-sync"));
        new_port_ = free_port();
        ASSERT_TRUE(start("new", new_port_));

        credentials_ = directory_ / "credentials";
        std::ofstream(credentials_) << "user=postgres password=" << password << " dbname=postgres\n";
        service_.name = "postgres";
        service_.kind = config::service_kind::postgres;
        service_.probe_timeout = 2s;
        service_.credentials_file = credentials_;
    }

    void TearDown() override
    {
        if (directory_.empty()) return;
        for (const auto* side : {"new", "old"})
            if (std::filesystem::exists(directory_ / side / "postmaster.pid"))
                as_postgres(bin.string() + "/pg_ctl -D " + (directory_ / side).string() +
                            " -m immediate -w stop");
        std::filesystem::remove_all(directory_);
    }

    bool start(const std::string& side, std::uint16_t port)
    {
        const auto d = directory_.string();
        return as_postgres(bin.string() + "/pg_ctl -D " + d + "/" + side + " -l " + d + "/" + side +
                           ".log -w -o \"-p " + std::to_string(port) + " -k " + d +
                           " -c listen_addresses=127.0.0.1 -c fsync=off\" start");
    }

    std::unique_ptr<replication> make()
    {
        return make_postgres_replication(service_, {"127.0.0.1", old_port_}, {"127.0.0.1", new_port_});
    }

    lag_reading probe_until_caught_up(replication& replication)
    {
        lag_reading reading;
        eventually([&] {
            reading = replication.probe(proxy::side::old_side);
            return reading.bytes == 0u && reading.link == link_state::up;
        });
        return reading;
    }

    std::filesystem::path directory_, credentials_;
    std::uint16_t old_port_ = 0, new_port_ = 0;
    config::service_config service_;
};

TEST_F(PostgresReplication, ProbeSeesStreamingStandbyWithZeroLag)
{
    session primary(old_port_);
    ASSERT_TRUE(primary.ok());
    ASSERT_TRUE(primary.run("CREATE TABLE t (id int primary key)"));
    ASSERT_TRUE(primary.run("INSERT INTO t SELECT generate_series(1, 1000)"));
    auto replication = make();
    const auto reading = probe_until_caught_up(*replication);
    EXPECT_EQ(reading.link, link_state::up) << reading.detail;
    EXPECT_EQ(reading.bytes, 0u) << reading.detail;
    ASSERT_TRUE(reading.seconds) << reading.detail;
    EXPECT_TRUE(check_gate(reading, 1024 * 1024, 5s, false, clock::now(), 5s).allowed) << reading.detail;
}

TEST_F(PostgresReplication, CommittedInsertsAreAllOnNewAfterPromotion)
{
    session setup(old_port_);
    ASSERT_TRUE(setup.run("CREATE TABLE t (id int primary key)"));
    auto replication = make();
    probe_until_caught_up(*replication);

    // Clients write until tunneld cuts them; then catch up and promote.
    std::vector<int> committed;
    {
        session writer(old_port_);
        const auto until = clock::now() + 500ms;
        for (int id = 1; clock::now() < until; ++id)
            if (writer.run("INSERT INTO t VALUES (" + std::to_string(id) + ")")) committed.push_back(id);
    }
    const auto start = clock::now();
    const auto caught_up = replication->wait_caught_up(clock::now() + 5s);
    ASSERT_TRUE(caught_up.ok) << caught_up.message;
    const auto promoted = replication->promote(clock::now() + 10s);
    ASSERT_TRUE(promoted.ok) << promoted.message;
    const auto took = clock::now() - start;
    EXPECT_TRUE(replication->verify_promoted(clock::now()).ok);

    session on_new(new_port_);
    ASSERT_TRUE(on_new.ok());
    EXPECT_EQ(on_new.run("SELECT count(*) FROM t"), std::to_string(committed.size()));
    EXPECT_EQ(on_new.run("SELECT max(id) FROM t"), std::to_string(committed.back()));
    EXPECT_TRUE(on_new.run("INSERT INTO t VALUES (-1)")); // writable: a primary now
    const auto after = replication->probe(proxy::side::old_side);
    EXPECT_EQ(after.link, link_state::down) << after.detail;
    EXPECT_FALSE(check_gate(after, std::nullopt, std::nullopt, false, clock::now(), 5s).allowed);
    std::cout << "[ postgres switch ] " << committed.size() << " committed, catch-up + promote "
              << std::chrono::duration_cast<std::chrono::milliseconds>(took).count()
              << "ms: " << caught_up.message << "; " << promoted.message << "\n";

    const auto refused = replication->rollback({}, clock::now() + 2s);
    EXPECT_FALSE(refused.ok);
    rollback_options forced;
    forced.force = true;
    EXPECT_TRUE(replication->rollback(forced, clock::now() + 2s).ok);
}

TEST_F(PostgresReplication, StoppedStandbyIsUnknownAndCatchUpFailsAtDeadline)
{
    auto replication = make();
    probe_until_caught_up(*replication);
    ASSERT_TRUE(
        as_postgres(bin.string() + "/pg_ctl -D " + (directory_ / "new").string() + " -m immediate -w stop"));
    const auto reading = replication->probe(proxy::side::old_side);
    EXPECT_EQ(reading.link, link_state::unknown);
    EXPECT_FALSE(reading.bytes);
    const auto start = clock::now();
    const auto caught_up = replication->wait_caught_up(start + 500ms);
    EXPECT_FALSE(caught_up.ok);
    EXPECT_LT(clock::now() - start, 3s);
    std::cout << "[ postgres stopped ] " << caught_up.message << "\n";
}

TEST_F(PostgresReplication, WrongPasswordNeverAppearsInMessages)
{
    std::ofstream(credentials_) << "user=postgres password=wrong-Secret-1 dbname=postgres\n";
    auto replication = make();
    const auto reading = replication->probe(proxy::side::old_side);
    EXPECT_FALSE(reading.bytes);
    EXPECT_NE(reading.detail.find("cannot connect"), std::string::npos) << reading.detail;
    EXPECT_EQ(reading.detail.find("wrong-Secret-1"), std::string::npos) << reading.detail;
    const auto promoted = replication->promote(clock::now() + 2s);
    EXPECT_FALSE(promoted.ok);
    EXPECT_EQ(promoted.message.find("wrong-Secret-1"), std::string::npos) << promoted.message;
}

} // namespace
} // namespace tunneld::cutover
