#pragma once
// The fleet's JSON (`tunnelctl fleet`, docs/control-protocol.md): made here, once, from the
// member's view of etcd.

#include "fleet/membership.hpp"

#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

namespace tunneld::control {

/// `{"fleet", "member", "etcd": "ok"|"unreachable", "error", "revision", "services": [...]}`:
/// every service under the fleet's prefix (only `service` when it is not empty, listed even
/// without keys), each with its epoch record and its members (`name`, `side`, `epoch`, `state`,
/// `held`, `last_seen` in Unix ms, `behind`), sorted by name, and `members_read` (`live`,
/// `revision`, `at` in Unix ms: the epoch is live, the member records are as of that read; null
/// before any read). A record that did not decode is listed with `malformed: true`.
nlohmann::json fleet_json(const fleet::fleet_view& view, std::string_view fleet_name, std::string_view member,
                          const std::string& service = {});

} // namespace tunneld::control
