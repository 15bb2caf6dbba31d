// PostgreSQL replication through libpq (blocking, with timeouts): see replication.hpp.

#include "cutover/replication_detail.hpp"

#include <cmath>
#include <libpq-fe.h>
#include <thread>

namespace tunneld::cutover {
namespace {

using namespace detail;

struct connection_deleter {
    void operator()(PGconn* connection) const { PQfinish(connection); }
};
struct result_deleter {
    void operator()(PGresult* result) const { PQclear(result); }
};
using result_ptr = std::unique_ptr<PGresult, result_deleter>;

using row = std::vector<std::optional<std::string>>;

/// libpq's messages span lines ("...failed: Connection refused\n\tIs the server running..."):
/// make them one log line.
std::string one_line(std::string_view text)
{
    std::string line;
    for (char c : text) {
        if (c == '\n')
            line += "; ";
        else if (c == '\t' || c == '\r')
            line += ' ';
        else
            line += c;
    }
    while (!line.empty() && (line.back() == ' ' || line.back() == ';'))
        line.pop_back();
    return line;
}

/// Server notices (e.g. "terminating connection due to ...") must not go to stderr.
void ignore_notice(void*, const char*) {}

/// One connection to one postgres server, named "old" or "new" in messages.
class postgres_session {
public:
    postgres_session(std::string side, config::endpoint endpoint,
                     std::optional<std::filesystem::path> credentials)
        : side_(std::move(side)), endpoint_(std::move(endpoint)), credentials_(std::move(credentials))
    {
    }

    const std::string& side() const { return side_; }
    std::string name() const { return side_ + " " + endpoint_text(endpoint_); }

    /// Runs `sql` (no parameters) and returns its first row; `error` says why not. `timeout`
    /// bounds the connect and, as statement_timeout, the statement.
    std::optional<row> first_row(const std::string& sql, milliseconds timeout, std::string& error)
    {
        const bool reused = connection_ != nullptr;
        auto result = attempt(sql, timeout, error);
        if (!result && reused && !connection_)
            result = attempt(sql, timeout, error); // kept connection had died
        return result;
    }

private:
    std::optional<row> attempt(const std::string& sql, milliseconds timeout, std::string& error)
    {
        if (!connection_) {
            error = connect(timeout);
            if (!error.empty()) {
                error = name() + ": " + error;
                return std::nullopt;
            }
        }
        // statement_timeout per call: the deadline shrinks as a step goes on.
        const auto set = "SET statement_timeout = " + std::to_string(timeout.count());
        result_ptr setting(PQexec(connection_.get(), set.c_str()));
        result_ptr result(PQexec(connection_.get(), sql.c_str()));
        if (!result || PQresultStatus(result.get()) != PGRES_TUPLES_OK) {
            error = name() + ": " + scrub(one_line(PQerrorMessage(connection_.get())), secret_);
            if (PQstatus(connection_.get()) != CONNECTION_OK) connection_.reset();
            return std::nullopt;
        }
        if (PQntuples(result.get()) < 1) {
            error = name() + ": no row";
            return std::nullopt;
        }
        row values;
        for (int column = 0; column < PQnfields(result.get()); ++column) {
            if (PQgetisnull(result.get(), 0, column))
                values.emplace_back(std::nullopt);
            else
                values.emplace_back(PQgetvalue(result.get(), 0, column));
        }
        return values;
    }

    std::string connect(milliseconds timeout)
    {
        std::vector<std::pair<std::string, std::string>> keywords;
        if (credentials_) {
            std::string error;
            auto read = read_postgres_credentials(*credentials_, error);
            if (!read) return error;
            keywords = std::move(*read);
        }
        secret_.clear();
        for (const auto& [key, value] : keywords)
            if (key == "password") secret_ = value;
        // libpq's connect_timeout is whole seconds (and at least 2); round up.
        const auto seconds = std::max<long long>(2, (timeout.count() + 999) / 1000);
        keywords.emplace_back("host", endpoint_.host);
        keywords.emplace_back("port", std::to_string(endpoint_.port));
        keywords.emplace_back("connect_timeout", std::to_string(seconds));
        keywords.emplace_back("application_name", "tunneld");
        std::vector<const char*> keys, values;
        for (const auto& [key, value] : keywords) {
            keys.push_back(key.c_str());
            values.push_back(value.c_str());
        }
        keys.push_back(nullptr);
        values.push_back(nullptr);
        connection_.reset(PQconnectdbParams(keys.data(), values.data(), 0));
        if (!connection_) return "cannot allocate a libpq connection";
        PQsetNoticeProcessor(connection_.get(), ignore_notice, nullptr);
        if (PQstatus(connection_.get()) != CONNECTION_OK) {
            auto error = "cannot connect: " + scrub(one_line(PQerrorMessage(connection_.get())), secret_);
            connection_.reset();
            return error;
        }
        return {};
    }

    std::string side_;
    config::endpoint endpoint_;
    std::optional<std::filesystem::path> credentials_;
    std::unique_ptr<PGconn, connection_deleter> connection_; ///< null until connected, or after it broke
    std::string secret_;                                     ///< scrubbed from every message
};

constexpr const char* standby_query =
    "SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn(), "
    // Why the CASE: on an idle primary the last replayed transaction grows old although nothing
    // is missing; with everything received replayed, the delay is zero.
    "CASE WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0 "
    "ELSE extract(epoch from now() - pg_last_xact_replay_timestamp()) END, "
    "(SELECT status FROM pg_stat_wal_receiver LIMIT 1)";

class postgres_replication final : public replication {
public:
    postgres_replication(const config::service_config& service, config::endpoint old_endpoint,
                         config::endpoint new_endpoint)
        : service_(service), old_endpoint_(std::move(old_endpoint)), new_endpoint_(std::move(new_endpoint)),
          old_("old", old_endpoint_, service.credentials_file),
          new_("new", new_endpoint_, service.credentials_file)
    {
    }

    lag_reading probe(proxy::side active) override
    {
        const auto at = clock::now();
        if (active == proxy::side::new_side)
            return unknown_lag("old is no standby of new: a postgres rollback does not replicate back", at);
        auto reading = measure(at + service_.probe_timeout, at);
        reading.replica = proxy::side::new_side;
        return reading;
    }

    step_result pause_writes(duration) override
    {
        return step_result::success("postgres has no write pause: tunneld holds and drains the clients");
    }

    step_result wait_caught_up(clock::time_point deadline) override
    {
        // The target is old's WAL *insert* position, read once while clients are held: with
        // synchronous_commit = off a commit is acknowledged before its WAL is written, and
        // pg_current_wal_lsn() (the write position) would let us promote without it. The WAL
        // writer flushes it within wal_writer_delay and the standby then replays it.
        const auto start = clock::now();
        std::string error;
        const auto inserted = old_.first_row("SELECT pg_current_wal_insert_lsn()",
                                             time_left(deadline, service_.probe_timeout), error);
        const auto target =
            inserted && inserted->size() == 1 && (*inserted)[0] ? parse_lsn(*(*inserted)[0]) : std::nullopt;
        if (!target)
            return step_result::failure("cannot read old's WAL insert position: " +
                                        (inserted ? std::string("unexpected answer") : error));
        const std::uint64_t goal = *target;
        std::string last = "no answer";
        for (;;) {
            const auto standby =
                new_.first_row(standby_query, time_left(deadline, service_.probe_timeout), error);
            if (standby && standby->size() == 4) {
                const bool streaming = (*standby)[0] == "t" && (*standby)[3] == "streaming";
                // Plain values, not an optional: g++ 12 -O2 warns maybe-uninitialized on the latter.
                std::uint64_t replayed = 0;
                bool known = false;
                if ((*standby)[1]) {
                    if (const auto lsn = parse_lsn(*(*standby)[1])) {
                        replayed = *lsn;
                        known = true;
                    }
                }
                if (streaming && known && replay_reached(replayed, goal))
                    return step_result::success("new caught up with old in " + since(start) + " (replayed " +
                                                format_lsn(replayed) + ", old inserted " + format_lsn(goal) +
                                                ")");
                last = "replayed " + (known ? format_lsn(replayed) : std::string("unknown")) + " of " +
                       format_lsn(goal) + (streaming ? "" : ", not streaming");
            } else {
                last = standby ? "new: unexpected answer" : error;
            }
            if (clock::now() + poll_interval >= deadline) break;
            std::this_thread::sleep_for(poll_interval);
        }
        return step_result::failure("new not caught up with old by the deadline (" + last + ")");
    }

    step_result promote(clock::time_point deadline) override
    {
        const auto start = clock::now();
        if (service_.promote_command) {
            const auto hook = run_service_hook(*service_.promote_command, "promote", service_, old_endpoint_,
                                               new_endpoint_, deadline, hook_observer_);
            if (!hook.ok) return step_result::failure("promote_command " + describe(hook));
        } else {
            const auto left = time_left(deadline, std::chrono::hours(1));
            const auto wait_seconds = std::max<long long>(1, left.count() / 1000);
            std::string error;
            // pg_promote waits for the end of recovery itself, up to wait_seconds.
            const auto answer =
                new_.first_row("SELECT pg_promote(true, " + std::to_string(wait_seconds) + ")",
                               left + milliseconds(500), error);
            if (!answer) return step_result::failure("promote: " + error);
            if (answer->empty() || (*answer)[0] != "t")
                return step_result::failure("promote: pg_promote() did not finish within " +
                                            std::to_string(wait_seconds) + "s");
        }
        for (;;) {
            auto verified = verify_promoted(clock::now());
            if (verified.ok) return step_result::success("new promoted in " + since(start));
            if (clock::now() + poll_interval >= deadline)
                return step_result::failure("promote: " + verified.message);
            std::this_thread::sleep_for(poll_interval);
        }
    }

    step_result verify_promoted(clock::time_point until) override
    {
        std::string error;
        const auto answer = ask_until_answered(
            [&] { return new_.first_row("SELECT pg_is_in_recovery()", service_.probe_timeout, error); }, until);
        if (!answer) return step_result::no_answer("verify promotion: " + error);
        if (answer->empty() || (*answer)[0] != "f")
            return step_result::failure("verify promotion: new is still in recovery");
        return step_result::success("new is a primary (not in recovery)");
    }

    step_result fence(proxy::side which, clock::time_point deadline) override
    {
        if (which != proxy::side::old_side)
            return step_result::nothing_done("postgres: new has no fence (fence_command fences old)");
        if (!service_.fence_command)
            return step_result::nothing_done(
                "postgres has no built-in fence and no fence_command is set; old-side clients are cut");
        const auto hook = run_service_hook(*service_.fence_command, "fence", service_, old_endpoint_,
                                           new_endpoint_, deadline, hook_observer_);
        if (!hook.ok) return step_result::failure("fence_command " + describe(hook));
        return step_result::success("old fenced: fence_command " + describe(hook));
    }

    step_result unfence(proxy::side which) override
    {
        if (!service_.fence_command || which != proxy::side::old_side) return step_result::nothing_done("postgres: nothing fenced");
        return lift_fence_command(service_, old_endpoint_, new_endpoint_, "");
    }

    step_result follow(proxy::side which, clock::time_point) override
    {
        return step_result::nothing_done(std::string("postgres: ") + std::string(proxy::to_string(which)) +
                                         " cannot follow the other side (rebuild it with pg_rewind)");
    }

    observations observe(clock::time_point deadline) override
    {
        observations seen;
        const auto look = [&](auto& session, server_observation& o) {
            std::string error;
            const auto answer =
                session.first_row("SELECT pg_is_in_recovery()", time_left(deadline, service_.probe_timeout), error);
            if (!answer || answer->empty() || !(*answer)[0]) {
                o.error = answer ? "no answer to pg_is_in_recovery()" : error;
                return;
            }
            o.reachable = true;
            o.role = *(*answer)[0] == "f" ? server_role::primary : server_role::replica;
        };
        look(old_, seen.old_server);
        look(new_, seen.new_server);
        return seen;
    }

    step_result unpause(proxy::side) override { return step_result::success("postgres: nothing paused"); }

    std::vector<preflight_check> preflight(clock::time_point deadline) override
    {
        std::vector<preflight_check> checks;
        for (auto* session : {&old_, &new_}) {
            const auto start = clock::now();
            std::string error;
            const auto answer = session->first_row("SELECT 1", time_left(deadline, service_.probe_timeout), error);
            const auto rtt = std::chrono::duration_cast<milliseconds>(clock::now() - start);
            checks.push_back({session->side() + " reachable, credentials accepted",
                              answer ? check_verdict::pass : check_verdict::fail,
                              answer ? session->name() + " answered in " + std::to_string(rtt.count()) + "ms" : error,
                              rtt});
        }
        if (checks[0].verdict != check_verdict::pass || checks[1].verdict != check_verdict::pass) return checks;

        std::string error;
        const auto recovery =
            new_.first_row("SELECT pg_is_in_recovery()", time_left(deadline, service_.probe_timeout), error);
        const bool standby = recovery && !recovery->empty() && (*recovery)[0] == "t";
        checks.push_back({"new is a standby (in recovery)", standby ? check_verdict::pass : check_verdict::fail,
                          !recovery ? error : standby ? "pg_is_in_recovery() = t" : "new is not in recovery: already a primary",
                          {}});
        if (service_.promote_command) {
            checks.push_back({"promote_command", check_verdict::unchecked, "a dry run does not run hooks", {}});
        } else {
            const auto may = new_.first_row(
                "SELECT has_function_privilege('pg_promote(boolean, integer)', 'EXECUTE'), current_user",
                time_left(deadline, service_.probe_timeout), error);
            const bool allowed = may && !may->empty() && (*may)[0] == "t";
            const std::string user = may && may->size() > 1 && (*may)[1] ? *(*may)[1] : "the probe user";
            checks.push_back({"new allows pg_promote() (promote)", allowed ? check_verdict::pass : check_verdict::fail,
                              !may      ? error
                              : allowed ? "EXECUTE granted to " + user
                                        : user + " may not execute pg_promote() (grant it, or set promote_command)",
                              {}});
        }
        if (service_.fence_command)
            add_fence_hook_checks(service_, checks);
        else
            checks.push_back({"fence", check_verdict::unchecked,
                              "postgres has no built-in fence and no fence_command is set: old will not be fenced",
                              {}});
        return checks;
    }

    step_result rollback(const rollback_options& options, clock::time_point) override
    {
        // A promoted standby has its own timeline; old can follow it only after pg_rewind or a new
        // base backup, which is an operator's job.
        if (!options.force)
            return step_result::failure(
                "rollback: old postgres cannot take back the writes made on new since the "
                "switch (rebuild it from new with pg_rewind); force to route clients back "
                "anyway");
        return step_result::success(
            "forced rollback: clients go back to old; writes made on new since the switch "
            "are not on old");
    }

private:
    /// Replay reached `target`. An insert position at the very start of a WAL page points past
    /// the page header, which no record ends in: within that header counts as reached.
    static bool replay_reached(std::uint64_t replayed, std::uint64_t target)
    {
        constexpr std::uint64_t wal_page = 8192;
        constexpr std::uint64_t long_page_header = 40;
        if (replayed >= target) return true;
        return target % wal_page <= long_page_header && target - replayed <= long_page_header;
    }

    lag_reading measure(clock::time_point deadline, clock::time_point at)
    {
        std::string error;
        // New first: a standby can then never look ahead of its primary.
        const auto standby =
            new_.first_row(standby_query, time_left(deadline, service_.probe_timeout), error);
        if (!standby || standby->size() != 4)
            return unknown_lag(standby ? "new: unexpected answer" : error, at);
        const auto primary =
            old_.first_row("SELECT pg_current_wal_lsn()", time_left(deadline, service_.probe_timeout), error);
        if (!primary || primary->size() != 1)
            return unknown_lag(primary ? "old: unexpected answer" : error, at);
        return postgres_lag((*primary)[0],
                            postgres_standby_text{.in_recovery = (*standby)[0],
                                                  .replay_lsn = (*standby)[1],
                                                  .replay_delay = (*standby)[2],
                                                  .receiver_status = (*standby)[3]},
                            at);
    }

    config::service_config service_;
    config::endpoint old_endpoint_;
    config::endpoint new_endpoint_;
    postgres_session old_;
    postgres_session new_;
};

} // namespace

std::unique_ptr<replication> make_postgres_replication(const config::service_config& service,
                                                       const config::endpoint& old_endpoint,
                                                       const config::endpoint& new_endpoint)
{
    return std::make_unique<postgres_replication>(service, old_endpoint, new_endpoint);
}

} // namespace tunneld::cutover
