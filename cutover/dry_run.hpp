#pragma once
// A dry run of a switch (`tunnelctl switch SERVICE --dry-run`, `tunnelctl check SERVICE`): every
// guardrail the switch would meet, the steps it would take, and an estimate of how long clients
// would be held. Pure: the probes' answers come in as parameters; nothing is changed anywhere.

#include "config/config.hpp"
#include "cutover/lag.hpp"
#include "cutover/replication.hpp"
#include "proxy/router.hpp"

#include <chrono>
#include <optional>
#include <string>
#include <vector>

namespace tunneld::cutover {

/// What a dry run saw, gathered by the controller.
struct dry_run_input {
    const config::service_config* settings = nullptr; ///< never null
    proxy::side from = proxy::side::old_side;         ///< active side now
    proxy::side to = proxy::side::new_side;
    config::switch_mode mode = config::switch_mode::pause;
    bool force = false;
    std::optional<gate_verdict> gate; ///< the lag gate's verdict; nullopt where no gate applies
    std::optional<lag_reading> lag;   ///< latest probe reading
    /// Replay speed of new while it was behind, from the recent lag history; nullopt: unknown.
    std::optional<double> catch_up_bytes_per_second;
    std::vector<preflight_check> server_checks; ///< replication::preflight (empty for tcp)
    std::optional<std::string> state_file_problem; ///< why the state file could not be written
    std::string state_file;                        ///< its path, for the plan
    std::size_t clients_old = 0;
    std::size_t clients_new = 0;
};

struct dry_run_report {
    std::vector<preflight_check> checks; ///< every guardrail, in the order the switch meets them
    std::vector<std::string> plan;       ///< the steps the switch would take, one line each
    std::optional<std::chrono::milliseconds> estimated_hold; ///< nullopt: no hold, or unknown
    bool would_proceed = false;          ///< no check failed
};

/// Round trips to the servers inside a redis pause switch's hold (pause, catch-up reads,
/// promote, role check, fence, unpause): the estimate's fixed part.
inline constexpr int redis_round_trips_in_hold = 9;
inline constexpr int postgres_round_trips_in_hold = 5;

dry_run_report make_dry_run_report(const dry_run_input& input);

} // namespace tunneld::cutover
