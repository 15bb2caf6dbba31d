#pragma once
// Lag of the new backend (a replica) behind the old one, and the gate a switch must pass.
// Pure: the probe answers and the clock come in as parameters.

#include "cutover/resp.hpp"
#include "proxy/router.hpp"

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace tunneld::cutover {

enum class link_state { up, down, unknown };

std::string_view to_string(link_state) noexcept;

/// One measurement of lag. `bytes` is absent whenever it cannot be known for sure; absent lag
/// fails the gate closed, it is never read as zero.
struct lag_reading {
    std::optional<std::uint64_t> bytes;
    std::optional<double> seconds; ///< replay delay (postgres); redis has none
    link_state link = link_state::unknown;
    /// How far new has replayed (redis slave_repl_offset, postgres replay LSN), when `bytes` is
    /// known: successive readings give the replay rate.
    std::optional<std::uint64_t> replica_position;
    std::string detail; ///< human explanation, never a credential
    std::chrono::steady_clock::time_point at;
    /// The side measured as the replica: new (behind old) while old is active; old (behind new)
    /// after a switch that made old follow new (redis fence_replicaof). nullopt: no side follows
    /// the active one, nothing was measured.
    std::optional<proxy::side> replica;
};

/// A reading that says only "unknown", with why.
lag_reading unknown_lag(std::string detail, std::chrono::steady_clock::time_point at);

/// Redis lag from typed `INFO replication` answers: old master_repl_offset minus new
/// slave_repl_offset. Link up only if new says role:slave, master_link_status:up and
/// master_sync_in_progress:0. Anything missing or garbage, or a negative difference, gives
/// bytes = nullopt (and link unknown when the link fields themselves are missing).
/// Query new before old so that a correct replica can never look ahead of its primary.
lag_reading redis_lag(const replication_info& old_info, const replication_info& new_info,
                      std::chrono::steady_clock::time_point at);
/// Same, from the raw INFO texts.
lag_reading redis_lag(std::string_view old_info, std::string_view new_info,
                      std::chrono::steady_clock::time_point at);

/// Parses a PostgreSQL LSN "16/B374D848" (two hex numbers of at most 8 digits) to 0x16B374D848.
std::optional<std::uint64_t> parse_lsn(std::string_view text) noexcept;
/// Formats an LSN the way PostgreSQL prints it.
std::string format_lsn(std::uint64_t lsn);

/// What the new (standby) postgres answered, as text; nullopt for SQL NULL or no answer.
struct postgres_standby_text {
    std::optional<std::string> in_recovery;     ///< pg_is_in_recovery(): "t" | "f"
    std::optional<std::string> replay_lsn;      ///< pg_last_wal_replay_lsn()
    std::optional<std::string> replay_delay;    ///< seconds behind, as a decimal
    std::optional<std::string> receiver_status; ///< pg_stat_wal_receiver.status ("streaming")
};

/// Postgres lag: old pg_current_wal_lsn() minus new pg_last_wal_replay_lsn(). Link up only when
/// new is in recovery and its WAL receiver is streaming; down when it is not in recovery (already
/// a primary) or not streaming; unknown when the answer is missing or garbage.
lag_reading postgres_lag(const std::optional<std::string>& old_current_lsn,
                         const postgres_standby_text& standby, std::chrono::steady_clock::time_point at);

struct gate_verdict {
    bool allowed = false;
    bool forced = false; ///< allowed only because of --force; the reason says what was overridden
    std::string reason;
};

/// Decides whether a switch to new may start. Refuses (reason first found, in this order) when
/// the reading is older than `max_age`, the link is down or unknown, bytes are unknown, bytes
/// exceed `max_lag`, or `max_lag_seconds` is set and the delay is unknown or exceeds it.
/// `force` turns a refusal into an allowance whose reason starts with "forced: ".
gate_verdict check_gate(const lag_reading& reading, std::optional<std::uint64_t> max_lag,
                        std::optional<std::chrono::milliseconds> max_lag_seconds, bool force,
                        std::chrono::steady_clock::time_point now, std::chrono::milliseconds max_age);

/// "0B", "512B", "64KiB", "4.2MiB": whole numbers without decimals, else one decimal.
std::string format_bytes(std::uint64_t bytes);
/// "250ms", "5s", "5.2s", "2m".
std::string format_seconds(double seconds);
/// A configured duration the way the config writes it: "5s" when whole seconds, else "250ms".
std::string format_duration(std::chrono::milliseconds d);

} // namespace tunneld::cutover
