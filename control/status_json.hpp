#pragma once
// The status contract's JSON (docs/control-protocol.md, DESIGN.md): made here, once, from the
// typed snapshots; the daemon hands it to the control socket and to HTTP /status as it is.

#include "cutover/snapshot.hpp"
#include "tunnel/tunnel.hpp"

#include <nlohmann/json.hpp>
#include <vector>

namespace tunneld::control {

/// Everything `status` reports: the services and the tunnels, as values.
struct status_snapshot {
    std::vector<cutover::service_snapshot> services;
    std::vector<tunnel::tunnel_status> tunnels;
};

/// One service object of the contract.
nlohmann::json to_json(const cutover::service_snapshot& s);
/// One tunnel object of the contract: a new tunnel field is one line here.
nlohmann::json to_json(const tunnel::tunnel_status& t);
/// `[tunnel, ...]`
nlohmann::json to_json(const std::vector<tunnel::tunnel_status>& tunnels);
/// `{"services": [...], "tunnels": [...]}`
nlohmann::json to_json(const status_snapshot& s);

} // namespace tunneld::control
