#pragma once
// The status contract's JSON (docs/control-protocol.md, DESIGN.md): made here, once, from the
// typed snapshots; the daemon hands it to the control socket and to HTTP /status as it is.

#include "cutover/dry_run.hpp"
#include "cutover/history.hpp"
#include "cutover/snapshot.hpp"
#include "tunnel/tunnel.hpp"

#include <chrono>
#include <map>
#include <nlohmann/json.hpp>
#include <vector>

namespace tunneld::control {

/// This member's place in its fleet, for status: whether etcd answers and the epoch each
/// service runs here.
struct fleet_status {
    bool reachable = false;
    std::map<std::string, std::int64_t> epochs; ///< service -> the epoch it runs on this member
    std::map<std::string, std::size_t> members; ///< service -> live members listed in etcd (this one too)
    std::map<std::string, std::size_t> behind;  ///< service -> members behind its committed epoch
    std::map<std::string, std::uint64_t> follows; ///< service -> flips to the committed side done here
    /// service -> fleet switches coordinated here, by outcome (committed, aborted, refused, unresolved)
    std::map<std::string, std::map<std::string, std::uint64_t>> switches;
    /// The last fleet switch coordinated here, per service: members that acknowledged, the
    /// slowest acknowledgement, and the time from the first hold to the last release (committed only).
    std::map<std::string, std::size_t> last_acks;
    std::map<std::string, std::chrono::milliseconds> last_ack;
    std::map<std::string, std::chrono::milliseconds> last_hold;
};

/// Everything `status` reports: the services and the tunnels, as values.
struct status_snapshot {
    std::vector<cutover::service_snapshot> services;
    std::vector<tunnel::tunnel_status> tunnels;
    std::vector<cutover::history_entry> history; ///< the newest switches on this host, oldest first
    std::optional<fleet_status> fleet;           ///< nullopt: no [fleet], a single host
};

/// One service object of the contract.
nlohmann::json to_json(const cutover::service_snapshot& s);
/// One tunnel object of the contract: a new tunnel field is one line here.
nlohmann::json to_json(const tunnel::tunnel_status& t);
/// `[tunnel, ...]`
nlohmann::json to_json(const std::vector<tunnel::tunnel_status>& tunnels);
/// One entry of `tunnelctl history` (and of `history` in status).
nlohmann::json to_json(const cutover::history_entry& e);
nlohmann::json to_json(const std::vector<cutover::history_entry>& entries);
/// The result of `check` (and `switch --dry-run`): the service, the sides, the mode, whether the
/// switch would proceed, the hold estimate, every guardrail and the plan.
nlohmann::json check_json(const std::string& service, proxy::side from, proxy::side to, config::switch_mode mode,
                          const cutover::dry_run_report& report);
/// `{"services": [...], "tunnels": [...], "history": [...]}`; each service also carries `epoch`
/// (the epoch it runs here) and `fleet` (`"ok"|"unreachable"`), both null without a fleet.
nlohmann::json to_json(const status_snapshot& s);

} // namespace tunneld::control
