#pragma once
// What a service looks like right now, as values: the controller produces it; the control
// server, HTTP /status, metrics and readiness read it; control/ turns it into the contract's
// JSON at the edge (tunnelctl never sees this type: it reads that JSON).

#include "config/config.hpp"
#include "cutover/lag.hpp"
#include "cutover/lag_history.hpp"
#include "proxy/router.hpp"

#include <array>
#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace tunneld::cutover {

/// recovering: a switch the daemon died in is being finished or undone (clients held);
/// unresolved: it could not be, clients are refused until `tunnelctl resolve`.
enum class service_state { serving, paused, draining, switching, recovering, unresolved };
std::string_view to_string(service_state) noexcept;

/// The last recorded switch of a service.
struct switch_record {
    std::string result; ///< "done" | "refused" | "failed"
    std::string at;     ///< RFC 3339 UTC
    std::string message;
    std::uint64_t cut = 0;              ///< clients the switch cut
    std::optional<std::uint64_t> moved; ///< clients it moved to the other side (redis); nullopt: none could be
    bool adopted = false; ///< the servers were already switched (another host): this host only followed
};

/// A switch or rollback under way: what the status page shows step by step.
struct switch_progress {
    std::string action;     ///< "switch" | "rollback"
    proxy::side from = proxy::side::old_side;
    proxy::side to = proxy::side::new_side;
    config::switch_mode mode = config::switch_mode::pause;
    std::int64_t started_unix_ms = 0;
    std::chrono::steady_clock::time_point started;
    std::vector<std::string> steps; ///< the progress lines so far, oldest first
};

struct service_snapshot {
    std::string name;
    config::service_kind kind = config::service_kind::tcp;
    config::switch_mode mode = config::switch_mode::drain;
    config::endpoint listen;
    config::backend old_backend;
    config::backend new_backend;
    proxy::route route; ///< active side, split and sticky as new clients see them
    service_state state = service_state::serving;
    std::array<std::size_t, 2> connections{}; ///< clients now, indexed by side
    std::size_t held = 0;
    std::uint64_t clients_total = 0;
    std::uint64_t bytes_up = 0;
    std::uint64_t bytes_down = 0;
    std::array<std::uint64_t, 2> connect_errors{}; ///< indexed by side
    std::uint64_t refused_max_clients = 0;
    std::uint64_t clients_moved = 0;       ///< redis clients moved by switches since start
    std::uint64_t clients_move_failed = 0; ///< moves that ended the client (replay refused, connect failed)
    std::optional<lag_reading> lag; ///< nullopt: no probe has answered (or none is configured)
    bool fenced = false;
    std::map<std::string, std::uint64_t> switches; ///< "done", "refused", "failed" -> count
    std::optional<switch_record> last_switch;
    std::vector<lag_sample> lag_history;      ///< the last minutes, oldest first (redis, postgres)
    std::optional<switch_progress> progress; ///< set while a switch or rollback runs
    std::string problem; ///< state unresolved: why, and the way out

    /// The sides that receive new clients: the active one, or both while split.
    bool receives(proxy::side s) const
    {
        return route.split_percent ? true : route.active == s;
    }
};

} // namespace tunneld::cutover
