#include "daemon/metrics.hpp"

#include <charconv>
#include <cmath>
#include <cstdint>
#include <iterator>
#include <optional>
#include <system_error>
#include <utility>
#include <vector>

namespace tunneld::daemon {
namespace {

using nlohmann::json;

/// One metric family: its HELP and TYPE lines and the samples gathered for it, in order.
struct family {
    std::string_view name;
    std::string_view type; ///< "counter" or "gauge"
    std::string_view help;
    std::vector<std::string> samples;
};

using label = std::pair<std::string_view, std::string>;

std::string format_value(const json& value)
{
    if (value.is_number_unsigned()) return std::to_string(value.get<std::uint64_t>());
    if (value.is_number_integer()) return std::to_string(value.get<std::int64_t>());
    const double x = value.get<double>();
    if (std::isnan(x)) return "NaN";
    if (std::isinf(x)) return x > 0 ? "+Inf" : "-Inf";
    char text[32];
    // Shortest text that reads back as the same double.
    const auto [end, ec] = std::to_chars(std::begin(text), std::end(text), x);
    return ec == std::errc{} ? std::string(text, end) : "NaN";
}

void add_sample(family& f, std::initializer_list<label> labels, const json& value)
{
    std::string line{f.name};
    if (labels.size() > 0) {
        line += '{';
        bool first = true;
        for (const auto& [name, text] : labels) {
            if (!first) line += ',';
            first = false;
            line += name;
            line += "=\"";
            line += escape_label_value(text);
            line += '"';
        }
        line += '}';
    }
    line += ' ';
    line += format_value(value);
    f.samples.push_back(std::move(line));
}

/// The number at `key` in `object`, or nullptr when the field is absent or not a number.
const json* number_at(const json& object, std::string_view key)
{
    if (!object.is_object()) return nullptr;
    const auto it = object.find(key);
    if (it == object.end() || !it->is_number()) return nullptr;
    return &*it;
}

/// The string at `key` in `object`, or nullopt.
std::optional<std::string> string_at(const json& object, std::string_view key)
{
    if (!object.is_object()) return std::nullopt;
    const auto it = object.find(key);
    if (it == object.end() || !it->is_string()) return std::nullopt;
    return it->get<std::string>();
}

const json& member(const json& object, std::string_view key)
{
    static const json absent;
    if (!object.is_object()) return absent;
    const auto it = object.find(key);
    return it == object.end() ? absent : *it;
}

void add_if_number(family& f, std::initializer_list<label> labels, const json& object, std::string_view key)
{
    if (const json* value = number_at(object, key)) add_sample(f, labels, *value);
}

const json& array_at(const json& object, std::string_view key)
{
    static const json empty = json::array();
    const json& value = member(object, key);
    return value.is_array() ? value : empty;
}

} // namespace

std::string escape_label_value(std::string_view value)
{
    std::string out;
    out.reserve(value.size());
    for (const char c : value) {
        switch (c) {
        case '\\':
            out += "\\\\";
            break;
        case '"':
            out += "\\\"";
            break;
        case '\n':
            out += "\\n";
            break;
        default:
            out += c;
        }
    }
    return out;
}

std::string render_metrics(const nlohmann::json& status)
{
    family clients_active{
        "tunneld_clients_active", "gauge", "Clients connected now, by the side they were sent to.", {}};
    family clients_total{
        "tunneld_clients_total", "counter", "Clients accepted since the daemon started.", {}};
    family bytes{"tunneld_bytes_total", "counter", "Bytes proxied for clients; up is client to backend.", {}};
    family connect_errors{"tunneld_backend_connect_errors_total",
                          "counter",
                          "Failed connects to a backend (direct or through a tunnel channel).",
                          {}};
    family switches{"tunneld_switches_total", "counter", "Switches of the active side, by result.", {}};
    family moved{"tunneld_clients_moved_total",
                 "counter",
                 "Redis clients a switch moved to the other side with their session, since start.",
                 {}};
    family move_failed{"tunneld_client_moves_failed_total",
                       "counter",
                       "Client moves that ended the client (the other side refused its session, or no connect).",
                       {}};
    family lag_bytes{
        "tunneld_lag_bytes", "gauge", "Replication lag of the new backend behind the old one, in bytes.", {}};
    family lag_seconds{"tunneld_lag_seconds",
                       "gauge",
                       "Replication lag of the new backend behind the old one, in seconds.",
                       {}};
    family link_up{"tunneld_replication_link_up",
                   "gauge",
                   "1 when the new backend's replication link is up, 0 when down.",
                   {}};
    family active_side{
        "tunneld_service_active_side", "gauge", "1 for each side that receives new clients.", {}};
    family split{"tunneld_service_split_percent",
                 "gauge",
                 "Percentage of new clients sent to the new side while split.",
                 {}};
    family paused{"tunneld_paused", "gauge", "1 while the service holds new clients (pause).", {}};
    family held{"tunneld_clients_held", "gauge", "Clients held by a pause, waiting for a backend.", {}};
    family fenced{"tunneld_fenced", "gauge", "1 when the old backend has been fenced.", {}};
    family fleet_reachable{"tunneld_fleet_etcd_reachable", "gauge", "1 while the fleet's etcd answers, 0 while not.", {}};
    family fleet_epoch{"tunneld_fleet_epoch", "gauge", "The fleet epoch the service runs on this member.", {}};

    family sessions{"tunneld_tunnel_sessions", "gauge", "SSH sessions configured for the tunnel.", {}};
    family sessions_up{"tunneld_tunnel_sessions_up",
                       "gauge",
                       "SSH sessions of the tunnel that are connected and authenticated.",
                       {}};
    family channels{"tunneld_tunnel_channels", "gauge", "Open direct-tcpip channels on the tunnel.", {}};
    family tunnel_bytes{"tunneld_tunnel_bytes_total",
                        "counter",
                        "Bytes carried by the tunnel's channels; up is towards the gateway.",
                        {}};
    family reconnects{
        "tunneld_tunnel_reconnects_total", "counter", "SSH session reconnects of the tunnel.", {}};
    family open_failures{"tunneld_tunnel_channel_open_failures_total",
                         "counter",
                         "Channel opens on the tunnel that failed (refused by the gateway or timed out).",
                         {}};
    family channel_open{"tunneld_tunnel_channel_open_seconds",
                        "gauge",
                        "Average time to open a channel on the tunnel, in seconds.",
                        {}};
    family since_receive{"tunneld_tunnel_since_last_receive_seconds",
                         "gauge",
                         "Seconds since the tunnel last received a byte from the gateway.",
                         {}};

    family gateway_up{"tunneld_tunnel_gateway_up",
                      "gauge",
                      "1 when the gateway takes new channels, 0 while it is down or connecting.",
                      {}};
    family gateway_sessions_up{"tunneld_tunnel_gateway_sessions_up",
                               "gauge",
                               "SSH sessions to the gateway that are connected and authenticated.",
                               {}};
    family gateway_channels{
        "tunneld_tunnel_gateway_channels", "gauge", "Open direct-tcpip channels through the gateway.", {}};
    family gateway_failures{"tunneld_tunnel_gateway_failures_total",
                            "counter",
                            "Sessions to the gateway that failed or could not be established.",
                            {}};

    for (const json& service : array_at(status, "services")) {
        const auto name = string_at(service, "name");
        if (!name) continue; // a sample without its service label would be meaningless
        const std::string& s = *name;

        const json& connections = member(service, "connections");
        add_if_number(clients_active, {{"service", s}, {"side", "old"}}, connections, "old");
        add_if_number(clients_active, {{"service", s}, {"side", "new"}}, connections, "new");
        add_if_number(clients_total, {{"service", s}}, service, "clients_total");
        add_if_number(bytes, {{"service", s}, {"direction", "up"}}, service, "bytes_up");
        add_if_number(bytes, {{"service", s}, {"direction", "down"}}, service, "bytes_down");

        const json& errors = member(service, "connect_errors");
        add_if_number(connect_errors, {{"service", s}, {"side", "old"}}, errors, "old");
        add_if_number(connect_errors, {{"service", s}, {"side", "new"}}, errors, "new");

        add_if_number(moved, {{"service", s}}, service, "clients_moved");
        add_if_number(move_failed, {{"service", s}}, service, "clients_move_failed");

        const json& switch_counts = member(service, "switches");
        for (const std::string_view result : {"done", "refused", "failed"})
            add_if_number(switches, {{"service", s}, {"result", std::string{result}}}, switch_counts, result);

        const json& lag = member(service, "lag");
        add_if_number(lag_bytes, {{"service", s}}, lag, "bytes");
        add_if_number(lag_seconds, {{"service", s}}, lag, "seconds");
        if (const auto link = string_at(lag, "link"); link == "up" || link == "down")
            add_sample(link_up, {{"service", s}}, json(*link == "up" ? 1 : 0));

        const auto active = string_at(service, "active");
        const json* percent = number_at(service, "split_percent");
        if (active == "old" || active == "new") {
            add_sample(active_side, {{"service", s}, {"side", "old"}}, json(*active == "old" ? 1 : 0));
            add_sample(active_side, {{"service", s}, {"side", "new"}}, json(*active == "new" ? 1 : 0));
        } else if (active == "split" && percent) {
            // While split, a side is active when it gets some share of new clients.
            const double p = percent->get<double>();
            add_sample(active_side, {{"service", s}, {"side", "old"}}, json(p < 100 ? 1 : 0));
            add_sample(active_side, {{"service", s}, {"side", "new"}}, json(p > 0 ? 1 : 0));
        }
        if (percent) add_sample(split, {{"service", s}}, *percent);

        if (const auto state = string_at(service, "state"))
            add_sample(paused, {{"service", s}}, json(*state == "paused" ? 1 : 0));
        add_if_number(held, {{"service", s}}, service, "held");
        if (const json& f = member(service, "fenced"); f.is_boolean())
            add_sample(fenced, {{"service", s}}, json(f.get<bool>() ? 1 : 0));
        if (const auto fleet = string_at(service, "fleet"))
            add_sample(fleet_reachable, {{"service", s}}, json(*fleet == "ok" ? 1 : 0));
        add_if_number(fleet_epoch, {{"service", s}}, service, "epoch");
    }

    for (const json& tunnel : array_at(status, "tunnels")) {
        const auto name = string_at(tunnel, "name");
        if (!name) continue;
        const std::string& t = *name;
        add_if_number(sessions, {{"tunnel", t}}, tunnel, "sessions");
        add_if_number(sessions_up, {{"tunnel", t}}, tunnel, "sessions_up");
        add_if_number(channels, {{"tunnel", t}}, tunnel, "channels");
        add_if_number(tunnel_bytes, {{"tunnel", t}, {"direction", "up"}}, tunnel, "bytes_up");
        add_if_number(tunnel_bytes, {{"tunnel", t}, {"direction", "down"}}, tunnel, "bytes_down");
        add_if_number(reconnects, {{"tunnel", t}}, tunnel, "reconnects");
        add_if_number(open_failures, {{"tunnel", t}}, tunnel, "channel_open_failures");
        if (const json* ms = number_at(tunnel, "channel_open_ms_avg"))
            add_sample(channel_open, {{"tunnel", t}}, json(ms->get<double>() / 1000.0));
        if (const json* ms = number_at(tunnel, "since_last_receive_ms"))
            add_sample(since_receive, {{"tunnel", t}}, json(ms->get<double>() / 1000.0));
        for (const json& gateway : array_at(tunnel, "gateways")) {
            const auto address = string_at(gateway, "address");
            if (!address) continue;
            const std::string& g = *address;
            if (const auto state = string_at(gateway, "state"))
                add_sample(gateway_up, {{"tunnel", t}, {"gateway", g}}, json(*state == "up" ? 1 : 0));
            add_if_number(gateway_sessions_up, {{"tunnel", t}, {"gateway", g}}, gateway, "sessions_up");
            add_if_number(gateway_channels, {{"tunnel", t}, {"gateway", g}}, gateway, "channels");
            add_if_number(gateway_failures, {{"tunnel", t}, {"gateway", g}}, gateway, "failures");
        }
    }

    std::string out;
    for (const family* f :
         {&clients_active, &clients_total, &bytes,        &connect_errors, &switches,     &moved, &move_failed, &lag_bytes,
          &lag_seconds,    &link_up,       &active_side,  &split,          &paused,       &held,
          &fenced,         &sessions,      &sessions_up,  &channels,       &tunnel_bytes, &reconnects,
          &open_failures,  &channel_open,  &since_receive, &gateway_up, &gateway_sessions_up, &gateway_channels,
          &gateway_failures, &fleet_reachable, &fleet_epoch}) {
        // Every family is declared even with no sample yet, so dashboards and alert rules find
        // each name from the first scrape (a tcp-only host has no lag samples, say).
        out.append("# HELP ").append(f->name).append(" ").append(f->help).append("\n");
        out.append("# TYPE ").append(f->name).append(" ").append(f->type).append("\n");
        for (const std::string& sample : f->samples) {
            out += sample;
            out += '\n';
        }
    }
    return out;
}

} // namespace tunneld::daemon
