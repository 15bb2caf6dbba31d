// /metrics: the families built from a typed status snapshot, serialised by prometheus-cpp's
// TextSerializer and parsed back here, as a scraper would read them. Pure: no server, no clock.

#include "daemon/metrics.hpp"

#include <cmath>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <map>
#include <sstream>
#include <string>

namespace tunneld::daemon {
namespace {

using namespace std::chrono_literals;
using ::testing::HasSubstr;
using ::testing::Not;

/// What a scrape reads: every sample by its series text (`name{labels}`), and each family's type.
struct scrape {
    std::map<std::string, double> samples;
    std::map<std::string, std::string> types;
    std::map<std::string, int> helps;
    std::vector<std::string> bad_lines;

    bool has(const std::string& series) const { return samples.contains(series); }
    double at(const std::string& series) const
    {
        const auto it = samples.find(series);
        if (it == samples.end()) ADD_FAILURE() << "no sample " << series;
        return it == samples.end() ? -1 : it->second;
    }
};

scrape parse(const std::string& text)
{
    scrape out;
    std::istringstream lines(text);
    for (std::string line; std::getline(lines, line);) {
        if (line.starts_with("# HELP ")) {
            ++out.helps[line.substr(7, line.find(' ', 7) - 7)];
        } else if (line.starts_with("# TYPE ")) {
            const auto space = line.find(' ', 7);
            out.types[line.substr(7, space - 7)] = line.substr(space + 1);
        } else if (const auto space = line.rfind(' ');
                   line.starts_with("tunneld_") && space != std::string::npos) {
            std::size_t used = 0;
            const std::string value = line.substr(space + 1);
            const double x = value == "+Inf" ? HUGE_VAL : std::stod(value, &used);
            if (value != "+Inf" && used != value.size()) out.bad_lines.push_back(line);
            out.samples[line.substr(0, space)] = x;
        } else {
            out.bad_lines.push_back(line);
        }
    }
    return out;
}

cutover::service_snapshot redis_service()
{
    cutover::service_snapshot s;
    s.name = "redis";
    s.kind = config::service_kind::redis;
    s.route.active = proxy::side::old_side;
    s.connections = {3, 1};
    s.clients_total = 17;
    s.clients_moved = 6;
    s.clients_move_failed = 1;
    s.bytes_up = 1024;
    s.bytes_down = 4096;
    s.connect_errors = {0, 2};
    s.switches = {{"done", 1}, {"refused", 2}};
    s.lag.emplace();
    s.lag->bytes = 512;
    s.lag->seconds = 0.25;
    s.lag->link = cutover::link_state::up;
    return s;
}

control::status_snapshot with_services(std::vector<cutover::service_snapshot> services)
{
    control::status_snapshot status;
    status.services = std::move(services);
    return status;
}

control::status_snapshot with_tunnels(std::vector<tunnel::tunnel_status> tunnels)
{
    control::status_snapshot status;
    status.tunnels = std::move(tunnels);
    return status;
}

tunnel::gateway_status gateway(std::string address, std::string state, unsigned sessions_up,
                               unsigned channels, std::uint64_t failures)
{
    tunnel::gateway_status g;
    g.address = std::move(address);
    g.state = std::move(state);
    g.sessions = 2;
    g.sessions_up = sessions_up;
    g.channels = channels;
    g.failures = failures;
    return g;
}

tunnel::tunnel_status vpc_tunnel()
{
    tunnel::tunnel_status t;
    t.name = "vpc";
    t.sessions = 2;
    t.sessions_up = 1;
    t.channels = 5;
    t.bytes_up = 10;
    t.bytes_down = 20;
    t.reconnects = 3;
    t.channel_open_failures = 4;
    t.since_last_receive = 120ms;
    return t;
}

scrape scrape_of(const control::status_snapshot& status, const hold_histograms& holds = {})
{
    const std::string text = render_metrics(metric_families(status, holds));
    auto out = parse(text);
    EXPECT_EQ(out.bad_lines, std::vector<std::string>{});
    return out;
}

TEST(RenderMetrics, ServiceSamplesCarryServiceAndSideLabels)
{
    const auto m = scrape_of(with_services({redis_service()}));
    EXPECT_EQ(m.at(R"(tunneld_clients_active{service="redis",side="old"})"), 3);
    EXPECT_EQ(m.at(R"(tunneld_clients_active{service="redis",side="new"})"), 1);
    EXPECT_EQ(m.at(R"(tunneld_clients_total{service="redis"})"), 17);
    EXPECT_EQ(m.at(R"(tunneld_bytes_total{service="redis",direction="up"})"), 1024);
    EXPECT_EQ(m.at(R"(tunneld_bytes_total{service="redis",direction="down"})"), 4096);
    EXPECT_EQ(m.at(R"(tunneld_backend_connect_errors_total{service="redis",side="new"})"), 2);
    EXPECT_EQ(m.at(R"(tunneld_switches_total{service="redis",result="refused"})"), 2);
    EXPECT_EQ(m.at(R"(tunneld_clients_moved_total{service="redis"})"), 6);
    EXPECT_EQ(m.at(R"(tunneld_client_moves_failed_total{service="redis"})"), 1);
    // A result that never happened is a real zero, there from the start for increase().
    EXPECT_EQ(m.at(R"(tunneld_switches_total{service="redis",result="failed"})"), 0);
    EXPECT_EQ(m.at(R"(tunneld_lag_bytes{service="redis"})"), 512);
    EXPECT_EQ(m.at(R"(tunneld_lag_seconds{service="redis"})"), 0.25);
    EXPECT_EQ(m.at(R"(tunneld_replication_link_up{service="redis"})"), 1);
    EXPECT_EQ(m.at(R"(tunneld_service_active_side{service="redis",side="old"})"), 1);
    EXPECT_EQ(m.at(R"(tunneld_service_active_side{service="redis",side="new"})"), 0);
    EXPECT_EQ(m.at(R"(tunneld_service_split_percent{service="redis"})"), 0);
    EXPECT_EQ(m.at(R"(tunneld_paused{service="redis"})"), 0);
    EXPECT_EQ(m.at(R"(tunneld_clients_held{service="redis"})"), 0);
    EXPECT_EQ(m.at(R"(tunneld_fenced{service="redis"})"), 0);
}

TEST(RenderMetrics, EveryFamilyIsDeclaredOnceWithItsTypeEvenWithoutSamples)
{
    const std::map<std::string, std::string> expected = {
        {"tunneld_clients_active", "gauge"},
        {"tunneld_clients_moved_total", "counter"}, {"tunneld_client_moves_failed_total", "counter"}, {"tunneld_clients_total", "counter"},
        {"tunneld_bytes_total", "counter"},
        {"tunneld_backend_connect_errors_total", "counter"},
        {"tunneld_switches_total", "counter"},
        {"tunneld_switch_hold_seconds", "histogram"},
        {"tunneld_lag_bytes", "gauge"},
        {"tunneld_lag_seconds", "gauge"},
        {"tunneld_replication_link_up", "gauge"},
        {"tunneld_service_active_side", "gauge"},
        {"tunneld_service_split_percent", "gauge"},
        {"tunneld_paused", "gauge"},
        {"tunneld_clients_held", "gauge"},
        {"tunneld_fenced", "gauge"},
        {"tunneld_fence_reasserted_total", "counter"},
        {"tunneld_tunnel_sessions", "gauge"},
        {"tunneld_tunnel_sessions_up", "gauge"},
        {"tunneld_tunnel_channels", "gauge"},
        {"tunneld_tunnel_bytes_total", "counter"},
        {"tunneld_tunnel_reconnects_total", "counter"},
        {"tunneld_tunnel_channel_open_failures_total", "counter"},
        {"tunneld_tunnel_channel_open_seconds", "histogram"},
        {"tunneld_tunnel_since_last_receive_seconds", "gauge"},
        {"tunneld_tunnel_gateway_up", "gauge"},
        {"tunneld_tunnel_gateway_sessions_up", "gauge"},
        {"tunneld_tunnel_gateway_channels", "gauge"},
        {"tunneld_tunnel_gateway_failures_total", "counter"},
        {"tunneld_fleet_etcd_reachable", "gauge"},
        {"tunneld_fleet_epoch", "gauge"},
        {"tunneld_fleet_members", "gauge"},
        {"tunneld_fleet_members_behind", "gauge"},
        {"tunneld_fleet_follows_total", "counter"},
        {"tunneld_fleet_switches_total", "counter"},
        {"tunneld_fleet_last_switch_acks", "gauge"},
        {"tunneld_fleet_last_switch_slowest_ack_seconds", "gauge"},
        {"tunneld_fleet_last_switch_hold_seconds", "gauge"},
    };
    const std::string text = render_metrics(metric_families({}, {}));
    const auto m = parse(text);
    EXPECT_EQ(m.types, expected);
    EXPECT_TRUE(m.samples.empty());
    for (const auto& [name, type] : expected)
        EXPECT_EQ(m.helps.at(name), 1) << name;
    // HELP, then TYPE, then the samples of that family, each family in one block.
    const std::string two = render_metrics(metric_families(with_services({redis_service()}), {}));
    const auto type = two.find("# TYPE tunneld_clients_active gauge\n");
    EXPECT_LT(two.find("# HELP tunneld_clients_active "), type);
    EXPECT_LT(type, two.find("tunneld_clients_active{service=\"redis\""));
}

TEST(RenderMetrics, UnknownLagIsOmittedNeverZero)
{
    auto service = redis_service();
    service.lag.emplace(); // a probe answered, but could not tell
    auto m = scrape_of(with_services({service}));
    EXPECT_FALSE(m.has(R"(tunneld_lag_bytes{service="redis"})"));
    EXPECT_FALSE(m.has(R"(tunneld_lag_seconds{service="redis"})"));
    EXPECT_FALSE(m.has(R"(tunneld_replication_link_up{service="redis"})"));
    EXPECT_EQ(m.types.at("tunneld_lag_bytes"), "gauge");

    service.lag.reset(); // no probe answered yet
    m = scrape_of(with_services({service}));
    EXPECT_FALSE(m.has(R"(tunneld_lag_bytes{service="redis"})"));
    EXPECT_FALSE(m.has(R"(tunneld_replication_link_up{service="redis"})"));
}

TEST(RenderMetrics, LinkDownIsZero)
{
    auto service = redis_service();
    service.lag->link = cutover::link_state::down;
    EXPECT_EQ(scrape_of(with_services({service})).at(R"(tunneld_replication_link_up{service="redis"})"), 0);
}

TEST(RenderMetrics, SplitMarksBothSidesActive)
{
    auto service = redis_service();
    service.route.split_percent = 10;
    const auto m = scrape_of(with_services({service}));
    EXPECT_EQ(m.at(R"(tunneld_service_active_side{service="redis",side="old"})"), 1);
    EXPECT_EQ(m.at(R"(tunneld_service_active_side{service="redis",side="new"})"), 1);
    EXPECT_EQ(m.at(R"(tunneld_service_split_percent{service="redis"})"), 10);
}

TEST(RenderMetrics, PausedStateIsOneAndHeldClientsAreCounted)
{
    auto service = redis_service();
    service.state = cutover::service_state::paused;
    service.held = 4;
    const auto m = scrape_of(with_services({service}));
    EXPECT_EQ(m.at(R"(tunneld_paused{service="redis"})"), 1);
    EXPECT_EQ(m.at(R"(tunneld_clients_held{service="redis"})"), 4);
}

TEST(RenderMetrics, FleetReachabilityAndEpochOnlyInAFleet)
{
    auto status = with_services({redis_service()});
    EXPECT_FALSE(scrape_of(status).has(R"(tunneld_fleet_etcd_reachable{service="redis"})"));
    EXPECT_FALSE(scrape_of(status).has(R"(tunneld_fleet_epoch{service="redis"})"));
    EXPECT_FALSE(scrape_of(status).has(R"(tunneld_fleet_members{service="redis"})"));
    status.fleet.emplace();
    status.fleet->reachable = false;
    status.fleet->epochs = {{"redis", 3}};
    auto m = scrape_of(status);
    EXPECT_EQ(m.at(R"(tunneld_fleet_etcd_reachable{service="redis"})"), 0);
    EXPECT_EQ(m.at(R"(tunneld_fleet_epoch{service="redis"})"), 3);
    status.fleet->reachable = true;
    status.fleet->epochs.clear(); // no epoch committed yet
    m = scrape_of(status);
    EXPECT_EQ(m.at(R"(tunneld_fleet_etcd_reachable{service="redis"})"), 1);
    EXPECT_EQ(m.at(R"(tunneld_fleet_epoch{service="redis"})"), 0);
    EXPECT_EQ(m.at(R"(tunneld_fleet_members{service="redis"})"), 0);
    EXPECT_EQ(m.at(R"(tunneld_fleet_members_behind{service="redis"})"), 0);
    EXPECT_EQ(m.at(R"(tunneld_fleet_follows_total{service="redis"})"), 0);
    status.fleet->members = {{"redis", 3}};
    status.fleet->behind = {{"redis", 1}};
    status.fleet->follows = {{"redis", 2}};
    m = scrape_of(status);
    EXPECT_EQ(m.at(R"(tunneld_fleet_members{service="redis"})"), 3);
    EXPECT_EQ(m.at(R"(tunneld_fleet_members_behind{service="redis"})"), 1);
    EXPECT_EQ(m.at(R"(tunneld_fleet_follows_total{service="redis"})"), 2);
    // A fleet switch's figures appear once this member coordinated one.
    EXPECT_FALSE(scrape_of(status).has(R"(tunneld_fleet_last_switch_hold_seconds{service="redis"})"));
    status.fleet->switches = {{"redis", {{"committed", 2}, {"aborted", 1}}}};
    status.fleet->last_acks = {{"redis", 3}};
    status.fleet->last_ack = {{"redis", std::chrono::milliseconds(12)}};
    status.fleet->last_hold = {{"redis", std::chrono::milliseconds(45)}};
    m = scrape_of(status);
    EXPECT_EQ(m.at(R"(tunneld_fleet_switches_total{service="redis",outcome="committed"})"), 2);
    EXPECT_EQ(m.at(R"(tunneld_fleet_switches_total{service="redis",outcome="aborted"})"), 1);
    EXPECT_EQ(m.at(R"(tunneld_fleet_last_switch_acks{service="redis"})"), 3);
    EXPECT_DOUBLE_EQ(m.at(R"(tunneld_fleet_last_switch_slowest_ack_seconds{service="redis"})"), 0.012);
    EXPECT_DOUBLE_EQ(m.at(R"(tunneld_fleet_last_switch_hold_seconds{service="redis"})"), 0.045);
}

TEST(RenderMetrics, TunnelSamples)
{
    const auto m = scrape_of(with_tunnels({vpc_tunnel()}));
    EXPECT_EQ(m.at(R"(tunneld_tunnel_sessions{tunnel="vpc"})"), 2);
    EXPECT_EQ(m.at(R"(tunneld_tunnel_sessions_up{tunnel="vpc"})"), 1);
    EXPECT_EQ(m.at(R"(tunneld_tunnel_channels{tunnel="vpc"})"), 5);
    EXPECT_EQ(m.at(R"(tunneld_tunnel_bytes_total{tunnel="vpc",direction="up"})"), 10);
    EXPECT_EQ(m.at(R"(tunneld_tunnel_bytes_total{tunnel="vpc",direction="down"})"), 20);
    EXPECT_EQ(m.at(R"(tunneld_tunnel_reconnects_total{tunnel="vpc"})"), 3);
    EXPECT_EQ(m.at(R"(tunneld_tunnel_channel_open_failures_total{tunnel="vpc"})"), 4);
    EXPECT_EQ(m.at(R"(tunneld_tunnel_since_last_receive_seconds{tunnel="vpc"})"), 0.12);

    auto silent = vpc_tunnel();
    silent.since_last_receive.reset();
    EXPECT_FALSE(
        scrape_of(with_tunnels({silent})).has(R"(tunneld_tunnel_since_last_receive_seconds{tunnel="vpc"})"));
}

TEST(RenderMetrics, ChannelOpenHistogramIsCumulativeWithAnInfBucket)
{
    auto vpc = vpc_tunnel();
    vpc.channel_open.counts[0] = 2;     // <= 1 ms
    vpc.channel_open.counts[3] = 1;     // <= 10 ms
    vpc.channel_open.counts.back() = 1; // slower than every bound
    vpc.channel_open.sum = 7500ms;
    const auto m = scrape_of(with_tunnels({vpc}));
    EXPECT_EQ(m.at(R"(tunneld_tunnel_channel_open_seconds_count{tunnel="vpc"})"), 4);
    EXPECT_EQ(m.at(R"(tunneld_tunnel_channel_open_seconds_sum{tunnel="vpc"})"), 7.5);
    EXPECT_EQ(m.at(R"(tunneld_tunnel_channel_open_seconds_bucket{tunnel="vpc",le="0.001"})"), 2);
    EXPECT_EQ(m.at(R"(tunneld_tunnel_channel_open_seconds_bucket{tunnel="vpc",le="0.005"})"), 2);
    EXPECT_EQ(m.at(R"(tunneld_tunnel_channel_open_seconds_bucket{tunnel="vpc",le="0.01"})"), 3);
    EXPECT_EQ(m.at(R"(tunneld_tunnel_channel_open_seconds_bucket{tunnel="vpc",le="5"})"), 3);
    EXPECT_EQ(m.at(R"(tunneld_tunnel_channel_open_seconds_bucket{tunnel="vpc",le="+Inf"})"), 4);

    // A tunnel that opened nothing yet has its series at zero.
    const auto idle = scrape_of(with_tunnels({vpc_tunnel()}));
    EXPECT_EQ(idle.at(R"(tunneld_tunnel_channel_open_seconds_count{tunnel="vpc"})"), 0);
    EXPECT_EQ(idle.at(R"(tunneld_tunnel_channel_open_seconds_bucket{tunnel="vpc",le="+Inf"})"), 0);
}

TEST(RenderMetrics, HoldHistogramCountsOnlyWhatWasObservedPerService)
{
    metrics counted;
    counted.observe_hold("redis", 1200ms);
    counted.observe_hold("redis", 30ms);
    auto app = redis_service();
    app.name = "app";
    const auto m = parse(counted.render(with_services({redis_service(), app})));
    EXPECT_EQ(m.bad_lines, std::vector<std::string>{});
    EXPECT_EQ(m.at(R"(tunneld_switch_hold_seconds_count{service="redis"})"), 2);
    EXPECT_DOUBLE_EQ(m.at(R"(tunneld_switch_hold_seconds_sum{service="redis"})"), 1.23);
    EXPECT_EQ(m.at(R"(tunneld_switch_hold_seconds_bucket{service="redis",le="0.025"})"), 0);
    EXPECT_EQ(m.at(R"(tunneld_switch_hold_seconds_bucket{service="redis",le="0.05"})"), 1);
    EXPECT_EQ(m.at(R"(tunneld_switch_hold_seconds_bucket{service="redis",le="1"})"), 1);
    EXPECT_EQ(m.at(R"(tunneld_switch_hold_seconds_bucket{service="redis",le="2.5"})"), 2);
    EXPECT_EQ(m.at(R"(tunneld_switch_hold_seconds_bucket{service="redis",le="+Inf"})"), 2);
    // A service that never held clients is there from the start, at zero.
    EXPECT_EQ(m.at(R"(tunneld_switch_hold_seconds_count{service="app"})"), 0);
    EXPECT_EQ(m.at(R"(tunneld_switch_hold_seconds_bucket{service="app",le="60"})"), 0);
    // A service the status no longer has (removed by a reload) is not served.
    counted.observe_hold("gone", 1s);
    EXPECT_THAT(counted.render(with_services({redis_service()})), Not(HasSubstr("gone")));
}

TEST(RenderMetrics, GatewaySamplesCarryTunnelAndGatewayLabels)
{
    auto vpc = vpc_tunnel();
    vpc.gateways = {gateway("203.0.113.10:22", "up", 2, 5, 0), gateway("203.0.113.11:22", "down", 0, 0, 7)};
    const auto m = scrape_of(with_tunnels({vpc}));
    EXPECT_EQ(m.at(R"(tunneld_tunnel_gateway_up{tunnel="vpc",gateway="203.0.113.10:22"})"), 1);
    EXPECT_EQ(m.at(R"(tunneld_tunnel_gateway_up{tunnel="vpc",gateway="203.0.113.11:22"})"), 0);
    EXPECT_EQ(m.at(R"(tunneld_tunnel_gateway_sessions_up{tunnel="vpc",gateway="203.0.113.10:22"})"), 2);
    EXPECT_EQ(m.at(R"(tunneld_tunnel_gateway_channels{tunnel="vpc",gateway="203.0.113.10:22"})"), 5);
    EXPECT_EQ(m.at(R"(tunneld_tunnel_gateway_failures_total{tunnel="vpc",gateway="203.0.113.11:22"})"), 7);
}

TEST(RenderMetrics, LabelValuesAreEscaped)
{
    auto service = redis_service();
    service.name = "a\"b\\c\nd";
    EXPECT_THAT(render_metrics(metric_families(with_services({service}), {})),
                HasSubstr("tunneld_clients_total{service=\"a\\\"b\\\\c\\nd\"} 17\n"));
}

TEST(RenderMetrics, CountersBeyondTwoToThe53KeepTheirMagnitude)
{
    // Prometheus samples are float64: a byte counter past 2^53 keeps 15 significant digits.
    auto service = redis_service();
    service.bytes_up = 18446744073709551615ULL;
    const auto m = scrape_of(with_services({service}));
    EXPECT_DOUBLE_EQ(m.at(R"(tunneld_bytes_total{service="redis",direction="up"})"), 18446744073709551615.0);
}

} // namespace
} // namespace tunneld::daemon
