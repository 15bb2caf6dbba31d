#pragma once
// What tunnelctl prints: tables for status and tunnels, and the `health` verdict. Pure functions
// of the daemon's JSON results, so they are tested without a daemon.

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

namespace tunneld::tools {

/// "512B", "64.0KiB", "4.2MiB", "1.5GiB": one decimal above bytes, binary units.
std::string human_size(std::uint64_t bytes);

/// "120ms", "3.4s", "5m12s", "2h3m": how long ago, for LAST_RX.
std::string human_age(std::uint64_t milliseconds);

/// Rows as aligned columns separated by two spaces; the first row is the header. The last
/// column is not padded, so lines carry no trailing blanks.
std::string format_table(const std::vector<std::vector<std::string>>& rows);

/// The SERVICE KIND LISTEN ACTIVE STATE OLD NEW LAG LINK FENCED table of an array of service
/// objects; OLD and NEW are client connection counts. Missing fields print as "-".
std::string format_services(const nlohmann::json& services);

/// The TUNNEL ADDRESS SESSIONS CHANNELS BYTES_UP BYTES_DOWN RECONNECTS LAST_RX LAST_ERROR table
/// of an array of tunnel objects. Missing fields print as "-".
std::string format_tunnels(const nlohmann::json& tunnels);

/// What `tunnelctl check` (and `switch --dry-run`) prints for a check result: one line per
/// guardrail (PASS, FAIL, UNCHECKED), the hold estimate, the plan, and the verdict.
std::string format_check(const nlohmann::json& report);

/// The WHEN SERVICE ACTION FROM TO MODE OPERATOR HELD CUT RESULT REASON table of a history
/// result's entries, oldest first.
std::string format_history(const nlohmann::json& entries);

/// What `tunnelctl fleet` prints for a fleet result: one line on the fleet and etcd, then per
/// service its committed epoch (or the switch holding it) and the MEMBER SIDE EPOCH STATE HELD
/// LAST_SEEN BEHIND table. `now_unix_ms` dates LAST_SEEN ("3.2s ago").
std::string format_fleet(const nlohmann::json& result, std::int64_t now_unix_ms);

/// Limits for `tunnelctl health`.
struct health_thresholds {
    std::uint64_t lag_warning = 1024 * 1024;      ///< bytes, services not yet on new
    std::uint64_t lag_critical = 4 * 1024 * 1024; ///< bytes, services not yet on new
    unsigned sessions_down_warning = 1;           ///< per tunnel; 0 disables
    unsigned sessions_down_critical = 0;          ///< per tunnel; 0 disables
};

/// Monitoring-plugin states; the value is the exit code.
enum class health_state { ok = 0, warning = 1, critical = 2, unknown = 3 };

/// One verdict: the exit state and the single summary line (with perfdata, without "\n").
struct health_report {
    health_state state = health_state::unknown;
    std::string line;
};

/// Judges a `status` result (`{"services": [...], "tunnels": [...]}`):
/// CRITICAL when a tunnel carrying an active side has no session up, when a service on new
/// reports its lag link down, or a limit's critical level is reached; WARNING for a warning
/// level, a lag link down on a service still on old or split, or a fleet whose etcd does not
/// answer (`"fleet": "unreachable"`); OK otherwise. A result of the wrong shape is UNKNOWN.
health_report evaluate_health(const nlohmann::json& status, const health_thresholds& limits);

/// UNKNOWN with `reason`, for when the daemon cannot be asked.
health_report unknown_health(std::string_view reason);

} // namespace tunneld::tools
