#include "daemon/metrics.hpp"

#include <prometheus/text_serializer.h>

namespace tunneld::daemon {
namespace {

using prometheus::ClientMetric;
using prometheus::MetricFamily;
using prometheus::MetricType;
using proxy::side;

/// One family being filled; `add` appends a sample with its labels, in order.
struct family {
    MetricFamily out;

    family(std::string name, MetricType type, std::string help)
        : out{std::move(name), std::move(help), type, {}}
    {
    }

    void add(std::vector<ClientMetric::Label> labels, double value)
    {
        ClientMetric m;
        m.label = std::move(labels);
        (out.type == MetricType::Counter ? m.counter.value : m.gauge.value) = value;
        out.metric.push_back(std::move(m));
    }

    /// `histogram` (as prometheus-cpp collected it, or built from counts) with `labels`.
    void add_histogram(std::vector<ClientMetric::Label> labels, ClientMetric histogram)
    {
        histogram.label = std::move(labels);
        out.metric.push_back(std::move(histogram));
    }
};

double seconds(std::chrono::nanoseconds d)
{
    return std::chrono::duration<double>(d).count();
}

/// A histogram sample from per-bucket counts (channel_open_latency's shape: the last count is
/// above every bound).
ClientMetric histogram_of(const tunnel::channel_open_latency& latency)
{
    ClientMetric m;
    std::uint64_t cumulative = 0;
    for (std::size_t i = 0; i < tunnel::channel_open_bounds.size(); ++i) {
        cumulative += latency.counts[i];
        m.histogram.bucket.push_back({cumulative, tunnel::channel_open_bounds[i]});
    }
    m.histogram.sample_count = cumulative + latency.counts.back();
    m.histogram.sample_sum = seconds(latency.sum);
    return m;
}

ClientMetric empty_hold_histogram()
{
    return prometheus::Histogram({hold_bounds.begin(), hold_bounds.end()}).Collect();
}

} // namespace

std::vector<MetricFamily> metric_families(const control::status_snapshot& status,
                                          const hold_histograms& holds)
{
    const auto counter = MetricType::Counter;
    const auto gauge = MetricType::Gauge;
    const auto histogram = MetricType::Histogram;
    family clients_active{"tunneld_clients_active", gauge,
                          "Clients connected now, by the side they were sent to."};
    family clients_total{"tunneld_clients_total", counter, "Clients accepted since the daemon started."};
    family bytes{"tunneld_bytes_total", counter, "Bytes proxied for clients; up is client to backend."};
    family connect_errors{"tunneld_backend_connect_errors_total", counter,
                          "Failed connects to a backend (direct or through a tunnel channel)."};
    family switches{"tunneld_switches_total", counter, "Switches of the active side, by result."};
    family moved{"tunneld_clients_moved_total", counter,
                 "Redis clients a switch moved to the other side with their session, since start."};
    family move_failed{"tunneld_client_moves_failed_total", counter,
                       "Client moves that ended the client (the other side refused its session, or no connect)."};
    family hold{"tunneld_switch_hold_seconds", histogram,
                "How long a switch or rollback held new clients (those that held any), in seconds."};
    family lag_bytes{"tunneld_lag_bytes", gauge,
                     "Replication lag of the side that follows the active one (new before a switch, old "
                     "after one with fence_replicaof), in bytes."};
    family lag_seconds{"tunneld_lag_seconds", gauge,
                       "Replication lag of the new backend behind the old one, in seconds."};
    family link_up{"tunneld_replication_link_up", gauge,
                   "1 when the new backend's replication link is up, 0 when down."};
    family active_side{"tunneld_service_active_side", gauge, "1 for each side that receives new clients."};
    family split{"tunneld_service_split_percent", gauge,
                 "Percentage of new clients sent to the new side while split."};
    family paused{"tunneld_paused", gauge, "1 while the service holds new clients (pause)."};
    family held{"tunneld_clients_held", gauge, "Clients held by a pause, waiting for a backend."};
    family fenced{"tunneld_fenced", gauge, "1 when the old backend has been fenced."};
    family fence_reasserted{"tunneld_fence_reasserted_total", counter,
                            "Times the old backend was found writable again while on new, and fenced again."};
    family fleet_reachable{"tunneld_fleet_etcd_reachable", gauge,
                           "1 while the fleet's etcd answers, 0 while not."};
    family fleet_epoch{"tunneld_fleet_epoch", gauge, "The fleet epoch the service runs on this member."};
    family fleet_members{"tunneld_fleet_members", gauge,
                         "Members of the service's fleet listed in etcd (this one too), as last read (every 2 s)."};
    family fleet_behind{"tunneld_fleet_members_behind", gauge,
                        "Members on another side than the fleet's committed one, or on an older epoch."};
    family fleet_follows{"tunneld_fleet_follows_total", counter,
                         "Times this member flipped to the side its fleet committed while it was away."};
    family fleet_switches{"tunneld_fleet_switches_total", counter,
                          "Fleet switches coordinated by this member, by outcome."};
    family fleet_acks{"tunneld_fleet_last_switch_acks", gauge,
                      "Members that acknowledged the last fleet switch coordinated by this member."};
    family fleet_ack_seconds{"tunneld_fleet_last_switch_slowest_ack_seconds", gauge,
                             "The slowest acknowledgement of the last fleet switch coordinated by this member."};
    family fleet_hold_seconds{"tunneld_fleet_last_switch_hold_seconds", gauge,
                              "From the first member's hold to the last member's release, for the last fleet "
                              "switch coordinated by this member that committed."};

    family sessions{"tunneld_tunnel_sessions", gauge, "SSH sessions configured for the tunnel."};
    family sessions_up{"tunneld_tunnel_sessions_up", gauge,
                       "SSH sessions of the tunnel that are connected and authenticated."};
    family channels{"tunneld_tunnel_channels", gauge, "Open direct-tcpip channels on the tunnel."};
    family tunnel_bytes{"tunneld_tunnel_bytes_total", counter,
                        "Bytes carried by the tunnel's channels; up is towards the gateway."};
    family reconnects{"tunneld_tunnel_reconnects_total", counter, "SSH session reconnects of the tunnel."};
    family open_failures{"tunneld_tunnel_channel_open_failures_total", counter,
                         "Channel opens on the tunnel that failed (refused by the gateway or timed out)."};
    family channel_open{"tunneld_tunnel_channel_open_seconds", histogram,
                        "Time to open each channel handed to a client on the tunnel, in seconds."};
    family since_receive{"tunneld_tunnel_since_last_receive_seconds", gauge,
                         "Seconds since the tunnel last received a byte from the gateway."};
    family gateway_up{"tunneld_tunnel_gateway_up", gauge,
                      "1 when the gateway takes new channels, 0 while it is down or connecting."};
    family gateway_sessions_up{"tunneld_tunnel_gateway_sessions_up", gauge,
                               "SSH sessions to the gateway that are connected and authenticated."};
    family gateway_channels{"tunneld_tunnel_gateway_channels", gauge,
                            "Open direct-tcpip channels through the gateway."};
    family gateway_failures{"tunneld_tunnel_gateway_failures_total", counter,
                            "Sessions to the gateway that failed or could not be established."};

    const auto at = [](const auto& by_side, side s) {
        return static_cast<double>(by_side[static_cast<std::size_t>(s)]);
    };
    for (const auto& service : status.services) {
        const std::string& s = service.name;
        for (const side d : {side::old_side, side::new_side}) {
            const std::string side_name{proxy::to_string(d)};
            clients_active.add({{"service", s}, {"side", side_name}}, at(service.connections, d));
            connect_errors.add({{"service", s}, {"side", side_name}}, at(service.connect_errors, d));
        }
        clients_total.add({{"service", s}}, static_cast<double>(service.clients_total));
        moved.add({{"service", s}}, static_cast<double>(service.clients_moved));
        move_failed.add({{"service", s}}, static_cast<double>(service.clients_move_failed));
        bytes.add({{"service", s}, {"direction", "up"}}, static_cast<double>(service.bytes_up));
        bytes.add({{"service", s}, {"direction", "down"}}, static_cast<double>(service.bytes_down));
        for (const std::string result : {"done", "refused", "failed"}) {
            const auto count = service.switches.find(result);
            switches.add({{"service", s}, {"result", result}},
                         count == service.switches.end() ? 0.0 : static_cast<double>(count->second));
        }
        const auto observed = holds.find(s);
        hold.add_histogram({{"service", s}},
                           observed != holds.end() ? observed->second : empty_hold_histogram());

        if (const auto& lag = service.lag) {
            if (lag->bytes) lag_bytes.add({{"service", s}}, static_cast<double>(*lag->bytes));
            if (lag->seconds) lag_seconds.add({{"service", s}}, *lag->seconds);
            if (lag->link != cutover::link_state::unknown)
                link_up.add({{"service", s}}, lag->link == cutover::link_state::up ? 1 : 0);
        }

        const auto& route = service.route;
        if (const auto percent = route.split_percent) {
            // While split, a side is active when it gets some share of new clients.
            active_side.add({{"service", s}, {"side", "old"}}, *percent < 100 ? 1 : 0);
            active_side.add({{"service", s}, {"side", "new"}}, *percent > 0 ? 1 : 0);
        } else {
            active_side.add({{"service", s}, {"side", "old"}}, route.active == side::old_side ? 1 : 0);
            active_side.add({{"service", s}, {"side", "new"}}, route.active == side::new_side ? 1 : 0);
        }
        split.add({{"service", s}}, route.split_percent.value_or(0));
        paused.add({{"service", s}}, service.state == cutover::service_state::paused ? 1 : 0);
        held.add({{"service", s}}, static_cast<double>(service.held));
        fenced.add({{"service", s}}, service.fenced ? 1 : 0);
        if (service.kind == config::service_kind::redis)
            fence_reasserted.add({{"service", s}}, static_cast<double>(service.fence_reasserted));
        if (const auto& fleet = status.fleet) { // only in a fleet: a single host has neither
            fleet_reachable.add({{"service", s}}, fleet->reachable ? 1 : 0);
            // 0: no epoch committed for the service yet, as status --json says
            const auto epoch = fleet->epochs.find(s);
            fleet_epoch.add({{"service", s}},
                            epoch == fleet->epochs.end() ? 0.0 : static_cast<double>(epoch->second));
            const auto count = [&s](const auto& per_service) {
                const auto found = per_service.find(s);
                return found == per_service.end() ? 0.0 : static_cast<double>(found->second);
            };
            fleet_members.add({{"service", s}}, count(fleet->members));
            fleet_behind.add({{"service", s}}, count(fleet->behind));
            fleet_follows.add({{"service", s}}, count(fleet->follows));
            if (const auto sw = fleet->switches.find(s); sw != fleet->switches.end())
                for (const auto& [outcome, n] : sw->second)
                    fleet_switches.add({{"service", s}, {"outcome", outcome}}, static_cast<double>(n));
            const auto seconds = [&s](const std::map<std::string, std::chrono::milliseconds>& per_service,
                                      family& f) {
                if (const auto found = per_service.find(s); found != per_service.end())
                    f.add({{"service", s}}, static_cast<double>(found->second.count()) / 1000.0);
            };
            if (fleet->last_acks.contains(s)) fleet_acks.add({{"service", s}}, count(fleet->last_acks));
            seconds(fleet->last_ack, fleet_ack_seconds);
            seconds(fleet->last_hold, fleet_hold_seconds);
        }
    }

    for (const auto& tunnel : status.tunnels) {
        const std::string& t = tunnel.name;
        sessions.add({{"tunnel", t}}, tunnel.sessions);
        sessions_up.add({{"tunnel", t}}, tunnel.sessions_up);
        channels.add({{"tunnel", t}}, tunnel.channels);
        tunnel_bytes.add({{"tunnel", t}, {"direction", "up"}}, static_cast<double>(tunnel.bytes_up));
        tunnel_bytes.add({{"tunnel", t}, {"direction", "down"}}, static_cast<double>(tunnel.bytes_down));
        reconnects.add({{"tunnel", t}}, static_cast<double>(tunnel.reconnects));
        open_failures.add({{"tunnel", t}}, static_cast<double>(tunnel.channel_open_failures));
        channel_open.add_histogram({{"tunnel", t}}, histogram_of(tunnel.channel_open));
        if (tunnel.since_last_receive)
            since_receive.add({{"tunnel", t}}, seconds(*tunnel.since_last_receive));
        for (const auto& gateway : tunnel.gateways) {
            const std::string& g = gateway.address;
            gateway_up.add({{"tunnel", t}, {"gateway", g}}, gateway.state == "up" ? 1 : 0);
            gateway_sessions_up.add({{"tunnel", t}, {"gateway", g}}, gateway.sessions_up);
            gateway_channels.add({{"tunnel", t}, {"gateway", g}}, gateway.channels);
            gateway_failures.add({{"tunnel", t}, {"gateway", g}}, static_cast<double>(gateway.failures));
        }
    }

    std::vector<MetricFamily> out;
    for (family* f : {&clients_active,
                      &clients_total,
                      &bytes,
                      &connect_errors,
                      &switches,
                      &moved,
                      &move_failed,
                      &hold,
                      &lag_bytes,
                      &lag_seconds,
                      &link_up,
                      &active_side,
                      &split,
                      &paused,
                      &held,
                      &fenced,
                      &fence_reasserted,
                      &sessions,
                      &sessions_up,
                      &channels,
                      &tunnel_bytes,
                      &reconnects,
                      &open_failures,
                      &channel_open,
                      &since_receive,
                      &gateway_up,
                      &gateway_sessions_up,
                      &gateway_channels,
                      &gateway_failures,
                      &fleet_reachable,
                      &fleet_epoch,
                      &fleet_members,
                      &fleet_behind,
                      &fleet_follows,
                      &fleet_switches,
                      &fleet_acks,
                      &fleet_ack_seconds,
                      &fleet_hold_seconds})
        out.push_back(std::move(f->out));
    return out;
}

std::string render_metrics(const std::vector<MetricFamily>& families)
{
    return prometheus::TextSerializer().Serialize(families);
}

void metrics::observe_hold(const std::string& service, std::chrono::milliseconds held)
{
    std::lock_guard lock(mutex_);
    auto& histogram = holds_[service];
    if (!histogram)
        histogram = std::make_unique<prometheus::Histogram>(
            prometheus::Histogram::BucketBoundaries(hold_bounds.begin(), hold_bounds.end()));
    histogram->Observe(std::chrono::duration<double>(held).count());
}

std::string metrics::render(const control::status_snapshot& status) const
{
    hold_histograms holds;
    {
        std::lock_guard lock(mutex_);
        for (const auto& [service, histogram] : holds_)
            holds.emplace(service, histogram->Collect());
    }
    return render_metrics(metric_families(status, holds));
}

} // namespace tunneld::daemon
