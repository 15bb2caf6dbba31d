#include "tools/tunnelctl_format.hpp"

#include <algorithm>
#include <array>
#include <cctype>
#include <fmt/format.h>
#include <optional>
#include <set>

namespace tunneld::tools {

namespace {

using json = nlohmann::json;

const json* member(const json& object, std::string_view key)
{
    if (!object.is_object()) return nullptr;
    const auto it = object.find(key);
    if (it == object.end() || it->is_null()) return nullptr;
    return &*it;
}

std::string text_of(const json& object, std::string_view key, std::string fallback = "-")
{
    const auto* value = member(object, key);
    if (!value) return fallback;
    if (value->is_string()) return value->get<std::string>();
    return value->dump(-1, ' ', false, json::error_handler_t::replace);
}

std::optional<std::uint64_t> count_of(const json& object, std::string_view key)
{
    const auto* value = member(object, key);
    // Counts may come signed or unsigned, depending on how the daemon built them.
    if (!value || !value->is_number_integer()) return std::nullopt;
    if (value->is_number_unsigned()) return value->get<std::uint64_t>();
    const auto count = value->get<std::int64_t>();
    if (count < 0) return std::nullopt;
    return static_cast<std::uint64_t>(count);
}

std::string count_text(const json& object, std::string_view key)
{
    const auto count = count_of(object, key);
    return count ? std::to_string(*count) : "-";
}

std::string size_text(const json& object, std::string_view key)
{
    const auto count = count_of(object, key);
    return count ? human_size(*count) : "-";
}

// Perfdata labels are bare words: anything else becomes '_'.
std::string label(std::string_view name)
{
    std::string out(name);
    for (auto& c : out)
        if (!std::isalnum(static_cast<unsigned char>(c)) && c != '_' && c != '-' && c != '.') c = '_';
    return out;
}

std::string active_text(const json& service)
{
    auto active = text_of(service, "active");
    if (active == "split") {
        active += " " + count_text(service, "split_percent") + "%";
        if (const auto* sticky = member(service, "sticky");
            sticky && sticky->is_boolean() && sticky->get<bool>())
            active += " sticky";
    }
    return active;
}

std::string plural(std::size_t n, std::string_view word)
{
    return fmt::format("{} {}{}", n, word, n == 1 ? "" : "s");
}

} // namespace

std::string human_size(std::uint64_t bytes)
{
    constexpr std::array units{"KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
    if (bytes < 1024) return std::to_string(bytes) + "B";
    double value = static_cast<double>(bytes) / 1024;
    std::size_t unit = 0;
    while (value >= 1024 && unit + 1 < units.size()) {
        value /= 1024;
        ++unit;
    }
    return fmt::format("{:.1f}{}", value, units[unit]);
}

std::string human_age(std::uint64_t milliseconds)
{
    if (milliseconds < 1000) return std::to_string(milliseconds) + "ms";
    if (milliseconds < 60'000) return fmt::format("{:.1f}s", static_cast<double>(milliseconds) / 1000);
    const auto seconds = milliseconds / 1000;
    if (seconds < 3600) return fmt::format("{}m{}s", seconds / 60, seconds % 60);
    return fmt::format("{}h{}m", seconds / 3600, seconds % 3600 / 60);
}

std::string format_table(const std::vector<std::vector<std::string>>& rows)
{
    std::vector<std::size_t> widths;
    for (const auto& row : rows) {
        widths.resize(std::max(widths.size(), row.size()));
        for (std::size_t i = 0; i < row.size(); ++i)
            widths[i] = std::max(widths[i], row[i].size());
    }
    std::string out;
    for (const auto& row : rows) {
        std::string line;
        for (std::size_t i = 0; i < row.size(); ++i) {
            line += row[i];
            if (i + 1 < row.size()) line.append(widths[i] - row[i].size() + 2, ' ');
        }
        while (!line.empty() && line.back() == ' ')
            line.pop_back();
        out += line + "\n";
    }
    return out;
}

std::string format_services(const json& services)
{
    std::vector<std::vector<std::string>> rows{
        {"SERVICE", "KIND", "LISTEN", "ACTIVE", "STATE", "OLD", "NEW", "LAG", "LINK", "FENCED"}};
    if (services.is_array()) {
        for (const auto& service : services) {
            const json empty = json::object();
            const auto* connections = member(service, "connections");
            const auto* lag = member(service, "lag");
            const auto* fenced = member(service, "fenced");
            rows.push_back({text_of(service, "name"), text_of(service, "kind"), text_of(service, "listen"),
                            active_text(service), text_of(service, "state"),
                            count_text(connections ? *connections : empty, "old"),
                            count_text(connections ? *connections : empty, "new"),
                            size_text(lag ? *lag : empty, "bytes"), text_of(lag ? *lag : empty, "link"),
                            fenced && fenced->is_boolean() ? (fenced->get<bool>() ? "yes" : "no") : "-"});
        }
    }
    return format_table(rows);
}

std::string format_tunnels(const json& tunnels)
{
    std::vector<std::vector<std::string>> rows{{"TUNNEL", "ADDRESS", "SESSIONS", "CHANNELS", "BYTES_UP",
                                                "BYTES_DOWN", "RECONNECTS", "LAST_RX", "LAST_ERROR"}};
    if (tunnels.is_array()) {
        for (const auto& tunnel : tunnels) {
            const auto since = count_of(tunnel, "since_last_receive_ms");
            auto error = text_of(tunnel, "last_error");
            if (error.empty()) error = "-";
            rows.push_back({text_of(tunnel, "name"), text_of(tunnel, "address"),
                            count_text(tunnel, "sessions_up") + "/" + count_text(tunnel, "sessions"),
                            count_text(tunnel, "channels"), size_text(tunnel, "bytes_up"),
                            size_text(tunnel, "bytes_down"), count_text(tunnel, "reconnects"),
                            since ? human_age(*since) : "-", error});
        }
    }
    // A tunnel over several gateways gets one row per gateway in a second table.
    std::vector<std::vector<std::string>> gateway_rows{
        {"TUNNEL", "GATEWAY", "STATE", "SESSIONS", "CHANNELS", "FAILURES", "LAST_ERROR"}};
    if (tunnels.is_array()) {
        for (const auto& tunnel : tunnels) {
            const auto* gateways = member(tunnel, "gateways");
            if (!gateways || !gateways->is_array() || gateways->size() < 2) continue;
            for (const auto& gateway : *gateways) {
                auto error = text_of(gateway, "last_error");
                if (error.empty()) error = "-";
                gateway_rows.push_back({text_of(tunnel, "name"), text_of(gateway, "address"),
                                        text_of(gateway, "state"),
                                        count_text(gateway, "sessions_up") + "/" + count_text(gateway, "sessions"),
                                        count_text(gateway, "channels"), count_text(gateway, "failures"), error});
            }
        }
    }
    if (gateway_rows.size() == 1) return format_table(rows);
    return format_table(rows) + "\n" + format_table(gateway_rows);
}

health_report unknown_health(std::string_view reason)
{
    return {health_state::unknown, fmt::format("TUNNELD UNKNOWN - {}", reason)};
}

health_report evaluate_health(const json& status, const health_thresholds& limits)
{
    const auto* services = member(status, "services");
    const auto* tunnels = member(status, "tunnels");
    if (!services || !services->is_array() || !tunnels || !tunnels->is_array())
        return unknown_health("malformed status reply: no \"services\" and \"tunnels\" arrays");

    auto state = health_state::ok;
    std::vector<std::string> problems;
    const auto raise = [&](health_state level, std::string problem) {
        state = std::max(state, level);
        problems.push_back(std::move(problem));
    };
    std::vector<std::string> perfdata;

    // Tunnels that carry an active side: a service on old needs its old backend's tunnel, on
    // new its new backend's, on split both (unless the split sends nobody one way).
    std::set<std::string> carrying;
    std::size_t serving = 0;
    for (const auto& service : *services) {
        const auto name = text_of(service, "name", "?");
        const auto active = text_of(service, "active");
        if (text_of(service, "state") == "serving") ++serving;
        const auto percent = count_of(service, "split_percent").value_or(0);
        const auto uses = [&](std::string_view side) {
            if (active == "split") return side == "new" ? percent > 0 : percent < 100;
            return active == side;
        };
        for (const auto* side : {"old", "new"}) {
            const auto* backend = member(service, side);
            if (!backend || !uses(side)) continue;
            if (const auto* via = member(*backend, "via"); via && via->is_string())
                carrying.insert(via->get<std::string>());
        }

        const auto* lag = member(service, "lag");
        if (!lag) continue;
        const auto link = text_of(*lag, "link", "unknown");
        const auto kind = text_of(service, "kind", "tcp");
        // Once on new, new is the primary and no longer replicates from old: its link says nothing.
        if (active != "new" && kind != "tcp") {
            if (link == "down") raise(health_state::warning, fmt::format("{} replica link down", name));
            else if (link == "unknown")
                raise(health_state::warning, fmt::format("{} lag unknown: {}", name, text_of(*lag, "detail", "")));
        }
        const auto bytes = count_of(*lag, "bytes");
        if (!bytes) continue;
        perfdata.push_back(fmt::format("{}_lag_bytes={};{};{}", label(name), *bytes, limits.lag_warning,
                                       limits.lag_critical));
        if (active == "new") continue; // once on new, the old side's lead no longer matters
        if (*bytes >= limits.lag_critical)
            raise(health_state::critical,
                  fmt::format("{} lag {} >= {}", name, human_size(*bytes), human_size(limits.lag_critical)));
        else if (*bytes >= limits.lag_warning)
            raise(health_state::warning,
                  fmt::format("{} lag {} >= {}", name, human_size(*bytes), human_size(limits.lag_warning)));
    }

    std::uint64_t sessions_total = 0, sessions_up_total = 0;
    for (const auto& tunnel : *tunnels) {
        const auto name = text_of(tunnel, "name", "?");
        const auto sessions = count_of(tunnel, "sessions").value_or(0);
        const auto up = std::min(count_of(tunnel, "sessions_up").value_or(0), sessions);
        sessions_total += sessions;
        sessions_up_total += up;
        perfdata.push_back(fmt::format("{}_sessions_up={};;;0;{}", label(name), up, sessions));
        const auto down = sessions - up;
        const auto what = fmt::format("tunnel {} {}/{} sessions up", name, up, sessions);
        if (sessions > 0 && up == 0 && carrying.contains(name))
            raise(health_state::critical, what + " and carries an active side");
        else if (limits.sessions_down_critical > 0 && down >= limits.sessions_down_critical)
            raise(health_state::critical, what);
        else if (limits.sessions_down_warning > 0 && down >= limits.sessions_down_warning)
            raise(health_state::warning, what);
        // Several gateways: one that is down is a WARNING even while the others carry everything.
        const auto* gateways = member(tunnel, "gateways");
        if (!gateways || !gateways->is_array() || gateways->size() < 2) continue;
        std::size_t gateways_up = 0;
        for (const auto& gateway : *gateways) {
            const auto gateway_state = text_of(gateway, "state", "?");
            if (gateway_state == "up") {
                ++gateways_up;
                continue;
            }
            if (gateway_state != "down") continue;
            const auto error = text_of(gateway, "last_error", "");
            raise(health_state::warning, fmt::format("tunnel {} gateway {} down{}", name,
                                                     text_of(gateway, "address", "?"),
                                                     error.empty() ? "" : " (" + error + ")"));
        }
        perfdata.push_back(fmt::format("{}_gateways_up={};;;0;{}", label(name), gateways_up, gateways->size()));
    }

    constexpr std::array names{"OK", "WARNING", "CRITICAL", "UNKNOWN"};
    std::string summary = serving == services->size()
                              ? plural(services->size(), "service") + " serving"
                              : fmt::format("{}/{} services serving", serving, services->size());
    summary += fmt::format(", {} {}/{} sessions", plural(tunnels->size(), "tunnel"), sessions_up_total,
                           sessions_total);
    std::string line = fmt::format("TUNNELD {} - ", names[static_cast<int>(state)]);
    for (const auto& problem : problems)
        line += problem + "; ";
    line += summary;
    if (!perfdata.empty()) {
        line += " |";
        for (const auto& item : perfdata)
            line += " " + item;
    }
    return {state, line};
}

} // namespace tunneld::tools
