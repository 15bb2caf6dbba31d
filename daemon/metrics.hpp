#pragma once
// Prometheus text exposition (format 0.0.4) of the daemon's status. Pure: the caller passes the
// same JSON `tunnelctl status --json` returns, so /metrics and /status can never disagree.

#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

namespace tunneld::daemon {

/// The content type `GET /metrics` answers with.
inline constexpr std::string_view metrics_content_type = "text/plain; version=0.0.4; charset=utf-8";

/// Renders `status` (`{"services": [...], "tunnels": [...]}`, see docs/control-protocol.md) as
/// Prometheus text with the `tunneld_` prefix. A field that is missing, null or of the wrong
/// type leaves out its sample (never a made-up zero); a family with no sample is left out whole.
std::string render_metrics(const nlohmann::json& status);

/// Escapes a label value: backslash, double quote and newline become `\\`, `\"` and `\n`.
std::string escape_label_value(std::string_view value);

} // namespace tunneld::daemon
