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

namespace {

/// "9 (5+4)": a tunnel's open channels, then how they fall on its sessions (in `by_session`
/// order) when it has more than one.
std::string channels_text(const json& tunnel)
{
    auto text = count_text(tunnel, "channels");
    const auto* sessions = member(tunnel, "by_session");
    if (!sessions || !sessions->is_array() || sessions->size() < 2) return text;
    std::string split;
    for (const auto& s : *sessions)
        split += (split.empty() ? "" : "+") + count_text(s, "channels");
    return text + " (" + split + ")";
}

} // namespace

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
                            channels_text(tunnel), size_text(tunnel, "bytes_up"),
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

std::string format_check(const json& report)
{
    std::string out = fmt::format("check {}: {} -> {}, mode {}\n", text_of(report, "service"), text_of(report, "from"),
                                  text_of(report, "to"), text_of(report, "mode"));
    std::size_t failed = 0;
    if (const auto* checks = member(report, "checks"); checks && checks->is_array()) {
        for (const auto& check : *checks) {
            auto verdict = text_of(check, "verdict");
            if (verdict == "fail") ++failed;
            std::transform(verdict.begin(), verdict.end(), verdict.begin(),
                           [](unsigned char c) { return static_cast<char>(std::toupper(c)); });
            out += fmt::format("  {:<10} {}: {}\n", verdict, text_of(check, "name"), text_of(check, "detail", ""));
        }
    }
    if (const auto hold = count_of(report, "estimated_hold_ms"))
        out += fmt::format("estimated hold: {}ms\n", *hold);
    if (const auto* plan = member(report, "plan"); plan && plan->is_array() && !plan->empty()) {
        out += "plan:\n";
        std::size_t step = 0;
        for (const auto& line : *plan)
            out += fmt::format("  {}. {}\n", ++step, line.is_string() ? line.get<std::string>() : line.dump());
    }
    const auto* proceed = member(report, "would_proceed");
    if (proceed && proceed->is_boolean() && proceed->get<bool>())
        out += "result: the switch would proceed; nothing was changed\n";
    else
        out += fmt::format("result: the switch would be refused ({} check{} failed); nothing was changed\n", failed,
                           failed == 1 ? "" : "s");
    return out;
}

std::string format_history(const json& entries)
{
    std::vector<std::vector<std::string>> rows{
        {"WHEN", "SERVICE", "ACTION", "FROM", "TO", "MODE", "OPERATOR", "HELD", "CUT", "RESULT", "REASON"}};
    if (entries.is_array()) {
        for (const auto& e : entries) {
            const auto user = text_of(e, "user", "");
            const auto uid = count_text(e, "uid");
            const auto held = count_of(e, "held_ms");
            auto mode = text_of(e, "mode", "");
            auto result = text_of(e, "result");
            if (const auto* adopted = member(e, "adopted"); adopted && adopted->is_boolean() && adopted->get<bool>())
                result += " (adopted)";
            rows.push_back({text_of(e, "time"), text_of(e, "service"), text_of(e, "action"),
                            text_of(e, "from", "-"), text_of(e, "to", "-"), mode.empty() ? "-" : mode,
                            user.empty() ? "uid " + uid : user + " (" + uid + ")",
                            held ? std::to_string(*held) + "ms" : "-", count_text(e, "cut"), result,
                            text_of(e, "reason", "")});
        }
    }
    return format_table(rows);
}

std::string format_fleet(const json& result, std::int64_t now_unix_ms)
{
    std::string out = fmt::format("fleet {}, this member {}, etcd {}", text_of(result, "fleet"),
                                  text_of(result, "member"), text_of(result, "etcd"));
    if (const auto error = text_of(result, "error", ""); !error.empty())
        out += fmt::format(" ({}); showing what was last seen", error);
    out += "\n";
    std::vector<std::vector<std::string>> rows{
        {"SERVICE", "MEMBER", "SIDE", "EPOCH", "STATE", "HELD", "LAST_SEEN", "BEHIND"}};
    const auto* services = member(result, "services");
    for (const auto& service : services && services->is_array() ? *services : json::array()) {
        const auto name = text_of(service, "name", "?");
        std::string line;
        if (!member(service, "epoch"))
            line = fmt::format("{}: epoch record malformed", name);
        else if (const auto phase = text_of(service, "phase"); phase == "committed")
            line = fmt::format("{}: epoch {} committed on {}", name, count_text(service, "epoch"), text_of(service, "side"));
        else
            line = fmt::format("{}: epoch {} held by {} towards {} (phase {}); committed on {}", name,
                               count_text(service, "epoch"), text_of(service, "coordinator"),
                               text_of(service, "target"), phase, text_of(service, "side"));
        // The members are read for the listing; an older read means etcd did not answer then.
        if (const auto* read = member(service, "members_read"); read && read->is_object()) {
            const auto* at = member(*read, "at");
            if (at && at->is_number_integer() && now_unix_ms - at->get<std::int64_t>() > 3000)
                line += fmt::format(" (members as read {} ago)",
                                    human_age(static_cast<std::uint64_t>(now_unix_ms - at->get<std::int64_t>())));
        }
        std::vector<std::string> behind;
        const auto* members = member(service, "members");
        for (const auto& m : members && members->is_array() ? *members : json::array()) {
            const auto* malformed = member(m, "malformed");
            if (malformed && malformed->is_boolean() && malformed->get<bool>()) {
                rows.push_back({name, text_of(m, "name"), "-", "-", "record malformed", "-", "-", "-"});
                continue;
            }
            const auto* lags = member(m, "behind");
            const bool is_behind = lags && lags->is_boolean() && lags->get<bool>();
            if (is_behind) behind.push_back(text_of(m, "name"));
            const auto* seen = member(m, "last_seen");
            std::string last_seen = "-";
            if (seen && seen->is_number_integer())
                last_seen = human_age(static_cast<std::uint64_t>(std::max<std::int64_t>(0, now_unix_ms - seen->get<std::int64_t>()))) + " ago";
            rows.push_back({name, text_of(m, "name"), text_of(m, "side"), count_text(m, "epoch"), text_of(m, "state"),
                            count_text(m, "held"), last_seen, is_behind ? "yes" : "-"});
        }
        if (!behind.empty()) {
            line += "; behind:";
            for (const auto& b : behind)
                line += " " + b;
        }
        out += line + "\n";
    }
    return out + format_table(rows);
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
    std::vector<std::string> cut_off; // services whose fleet's etcd does not answer
    for (const auto& service : *services) {
        const auto name = text_of(service, "name", "?");
        const auto active = text_of(service, "active");
        if (text_of(service, "state") == "serving") ++serving;
        if (text_of(service, "fleet") == "unreachable") cut_off.push_back(name);
        // A switch tunneld died in: while it is finished or undone new clients wait; once it
        // could not be, they are refused until an operator resolves it.
        if (const auto state_text = text_of(service, "state"); state_text == "unresolved")
            raise(health_state::critical,
                  fmt::format("{} switch unresolved, clients refused: {}", name, text_of(service, "problem", "?")));
        else if (state_text == "recovering")
            raise(health_state::warning, fmt::format("{} recovering an interrupted switch", name));
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
        // Once on new, new is the primary: what counts is whether old follows it (a rollback
        // then loses nothing), where it is meant to (lag.replica "old").
        if (active == "new" && text_of(*lag, "replica", "") == "old") {
            if (link == "down")
                raise(health_state::warning,
                      fmt::format("{} rollback not ready: old does not follow new ({})", name,
                                  text_of(*lag, "detail", "")));
            else if (link == "unknown")
                raise(health_state::warning,
                      fmt::format("{} rollback not ready: old's lag unknown: {}", name, text_of(*lag, "detail", "")));
        } else if (active != "new" && kind != "tcp") {
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

    // Traffic does not depend on etcd, but switches do (they are refused until it is back).
    if (!cut_off.empty()) {
        std::string names;
        for (const auto& name : cut_off)
            names += (names.empty() ? "" : ", ") + name;
        raise(health_state::warning, fmt::format("fleet etcd unreachable ({})", names));
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
