#pragma once
// Blocking replication operations on a service's two backends (redis via hiredis, postgres via
// libpq): lag probes, write pause, catch-up, promotion, fencing, rollback. Every call has a
// deadline and never throws; run them OFF the event loop (a worker thread). The endpoints are
// where this host reaches each backend (a loopback forward for a tunnelled backend).
// Credentials are read from the service's credentials_file at each connect and never appear in
// any message.

#include "config/config.hpp"
#include "cutover/lag.hpp"
#include "cutover/recovery.hpp"
#include "proxy/router.hpp"

#include <chrono>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace tunneld::cutover {

/// Outcome of one step; `message` is one human line for logs and tunnelctl output.
struct step_result {
    bool ok = false;
    std::string message;
    bool no_op = false; ///< ok, but nothing could be done (no fence configured)
    bool unanswered = false; ///< failed because the server never answered: what it is now is not known

    static step_result success(std::string message) { return {true, std::move(message), false}; }
    static step_result failure(std::string message) { return {false, std::move(message), false}; }
    static step_result nothing_done(std::string message) { return {true, std::move(message), true}; }
    static step_result no_answer(std::string message) { return {false, std::move(message), false, true}; }
};

/// How one guardrail of a dry run came out. `unchecked`: the dry run cannot know without doing it
/// (a hook, a permission the probe user may not inspect); it does not stop the switch.
enum class check_verdict { pass, fail, unchecked };
std::string_view to_string(check_verdict) noexcept;

/// One guardrail of a dry run: what was checked, how it came out, and what was seen.
struct preflight_check {
    std::string name;   ///< e.g. "new accepts REPLICAOF NO ONE (promote)"
    check_verdict verdict = check_verdict::fail;
    std::string detail; ///< one line; never a credential
    std::optional<std::chrono::milliseconds> round_trip; ///< of the check's own request, when timed

    friend bool operator==(const preflight_check&, const preflight_check&) = default;
};

/// What a rollback (new -> old) needs that the forward switch does not.
struct rollback_options {
    /// Address of the old backend as the NEW backend can reach it: new becomes its replica.
    /// Unset (redis): new is fenced with min-replicas-to-write instead.
    std::optional<config::endpoint> new_replicaof;
    /// How long new's writes stay paused while old catches up (auto-expires if we die).
    std::chrono::milliseconds pause_hold{5000};
    /// Roll back even when old cannot hold new's writes (old is not a replica of new):
    /// writes made on new since the switch are then lost.
    bool force = false;
    /// redis: min-replicas-to-write restored on old when this process did not see the value old
    /// had before the switch fenced it (it keeps that value and restores it otherwise).
    unsigned restore_min_replicas = 0;
};

/// Keeps its connections between calls (reconnecting after an error); one caller at a time.
class replication {
public:
    using clock = std::chrono::steady_clock;
    using duration = std::chrono::milliseconds;

    virtual ~replication() = default;

    /// `observer` hears the process group of each hook a step starts, and 0 when it has ended
    /// (called on the calling thread). Set before the first step.
    void observe_hooks(std::function<void(int)> observer) { hook_observer_ = std::move(observer); }

    /// What min-replicas-to-write each side had before this object's fence replaced it (the
    /// value a rollback or unfence gives back). The controller keeps it in the state file and
    /// hands it to the object that replaces this one after a restart or a reload, so that a
    /// rollback never drops an operator's durability setting. Safe to call from any thread.
    virtual std::map<proxy::side, unsigned> values_before_fence() const { return {}; }
    virtual void remember_values_before_fence(const std::map<proxy::side, unsigned>&) {}

    /// Measures how far the side that is not `active` is behind `active` (probe_timeout per
    /// query): new behind old while old is active; once new is, old behind new where old follows
    /// it (redis fence_replicaof), else a reading that says no replica follows new. A failed or
    /// garbled answer gives link unknown, bytes nullopt, and says why in `detail`.
    virtual lag_reading probe(proxy::side active) = 0;
    /// Makes old refuse to execute writes for at most `hold` (redis: CLIENT PAUSE hold WRITE; it
    /// expires by itself should the daemon die). Postgres: nothing to do, clients are held.
    virtual step_result pause_writes(duration hold) = 0;
    /// Polls until new has replayed everything old has, with the link up, or `deadline`.
    virtual step_result wait_caught_up(clock::time_point deadline) = 0;
    /// Makes new a primary (built-in, or promote_command), then verifies it before `deadline`.
    virtual step_result promote(clock::time_point deadline) = 0;
    /// Checks that new is a primary now (redis role:master, postgres not in recovery). While new
    /// does not answer (a server restarting is away for a moment) it asks again until `until`
    /// (at least once); never answered: no_answer, as new may or may not be a primary.
    virtual step_result verify_promoted(clock::time_point until) = 0;
    /// Makes old refuse every further write from anyone in a way unfence() undoes (redis:
    /// min-replicas-to-write set to a number no deployment reaches, unless fence = "none"), then
    /// runs fence_command if configured; verifies what it can before `deadline`. Taken before new
    /// is promoted. nothing_done when no fence is configured (postgres without fence_command).
    /// `which`: the side to fence (new during a rollback or a resolve; fence_command fences old only).
    virtual step_result fence(proxy::side which, clock::time_point deadline) = 0;
    /// Lifts fence() on `which` (redis: min-replicas-to-write back to what it was, 0 if unknown),
    /// then runs unfence_command on old if configured (within unfence_command_limit); without
    /// one, what a fence_command did stays and the answer says so.
    virtual step_result unfence(proxy::side which) = 0;
    /// What both servers say about their replication now (recovery and resolve).
    virtual observations observe(clock::time_point deadline) = 0;
    /// Makes the fenced `which` a read-only replica of the other side: old of new after a switch
    /// (redis fence = "replicaof" with fence_replicaof, warm for a rollback), new of old after a
    /// rollback (rollback_replicaof, warm for the next switch); nothing_done where not configured.
    virtual step_result follow(proxy::side which, clock::time_point deadline) = 0;
    /// Lifts a write pause on `which` (a no-op where nothing was paused).
    virtual step_result unpause(proxy::side which) = 0;
    /// Ends the blocking commands (BRPOP, XREAD BLOCK, ...) of the connections `ids` (their
    /// CLIENT ID) on `which` as if they had timed out (redis: CLIENT UNBLOCK id TIMEOUT), so
    /// their clients get an ordinary answer and can be moved. nothing_done where there is no such thing.
    virtual step_result unblock_clients(proxy::side which, const std::vector<std::int64_t>& ids)
    {
        (void)which;
        (void)ids;
        return step_result::nothing_done("nothing to unblock");
    }
    /// Reverses a completed switch, fence first: pause writes on new, wait until old (a replica of
    /// new after a replicaof fence) has caught up, fence new, promote old, make new a replica of
    /// old (when configured), unpause new. Changes nothing and fails if old cannot catch up before `deadline`.
    virtual step_result rollback(const rollback_options& options, clock::time_point deadline) = 0;
    /// The server-side guardrails of a switch old -> new, changing nothing on either server: both
    /// reachable with the configured credentials, new a replica of old, promotion and fence
    /// permitted (the command exists and the probe user may run it). Hooks are `unchecked`.
    virtual std::vector<preflight_check> preflight(clock::time_point deadline) = 0;

protected:
    std::function<void(int)> hook_observer_;
};

/// The primary a fenced redis side is made a replica of: fence_replicaof for old (under
/// fence = "replicaof"), rollback_replicaof for new; nothing when that side stays fenced by
/// min-replicas-to-write alone. The one rule `follow` and the probe that keeps a fence share.
std::optional<config::endpoint> followed_primary(const config::service_config& service, proxy::side fenced);

/// Replication for `service.kind` redis or postgres; nullptr for tcp.
std::unique_ptr<replication> make_replication(const config::service_config& service,
                                              const config::endpoint& old_endpoint,
                                              const config::endpoint& new_endpoint);
std::unique_ptr<replication> make_redis_replication(const config::service_config& service,
                                                    const config::endpoint& old_endpoint,
                                                    const config::endpoint& new_endpoint);
std::unique_ptr<replication> make_postgres_replication(const config::service_config& service,
                                                       const config::endpoint& old_endpoint,
                                                       const config::endpoint& new_endpoint);

/// Reads a redis credentials file: first line "password" or "user password".
struct redis_credentials {
    std::optional<std::string> user;
    std::string password;
};
/// nullopt (and `error` set, without any file content) when unreadable or empty.
std::optional<redis_credentials> read_redis_credentials(const std::filesystem::path& file,
                                                        std::string& error);

/// Reads a postgres credentials file: whitespace-separated `keyword=value` pairs (libpq
/// conninfo keywords such as user=, password=, dbname=); lines starting with '#' are comments.
/// host, port and hostaddr are refused (the endpoint comes from the config).
std::optional<std::vector<std::pair<std::string, std::string>>>
read_postgres_credentials(const std::filesystem::path& file, std::string& error);

} // namespace tunneld::cutover
