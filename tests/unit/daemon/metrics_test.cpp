#include "daemon/metrics.hpp"

#include <gmock/gmock.h>
#include <sstream>
#include <gtest/gtest.h>
#include <string>

namespace tunneld::daemon {
namespace {

using nlohmann::json;
using ::testing::HasSubstr;
using ::testing::Not;

json redis_service()
{
    return json::parse(R"({"name": "redis", "kind": "redis", "listen": "127.0.0.1:6379",
        "active": "old", "split_percent": 0, "state": "serving",
        "connections": {"old": 3, "new": 1}, "clients_total": 17, "held": 0,
        "bytes_up": 1024, "bytes_down": 4096, "connect_errors": {"old": 0, "new": 2},
        "switches": {"done": 1, "refused": 2, "failed": 0}, "clients_moved": 6, "clients_move_failed": 1,
        "lag": {"bytes": 512, "seconds": 0.25, "link": "up"}, "fenced": false})");
}

json vpc_tunnel()
{
    return json::parse(R"({"name": "vpc", "address": "203.0.113.10:22", "sessions": 2, "sessions_up": 1,
        "channels": 5, "bytes_up": 10, "bytes_down": 20, "reconnects": 3, "channel_open_failures": 4, "channel_open_ms_avg": 12.5,
        "since_last_receive_ms": 120})");
}

TEST(RenderMetrics, ServiceSamplesCarryServiceAndSideLabels)
{
    const std::string text = render_metrics({{"services", {redis_service()}}, {"tunnels", json::array()}});
    EXPECT_THAT(text, HasSubstr("tunneld_clients_active{service=\"redis\",side=\"old\"} 3\n"));
    EXPECT_THAT(text, HasSubstr("tunneld_clients_active{service=\"redis\",side=\"new\"} 1\n"));
    EXPECT_THAT(text, HasSubstr("tunneld_clients_total{service=\"redis\"} 17\n"));
    EXPECT_THAT(text, HasSubstr("tunneld_bytes_total{service=\"redis\",direction=\"up\"} 1024\n"));
    EXPECT_THAT(text, HasSubstr("tunneld_bytes_total{service=\"redis\",direction=\"down\"} 4096\n"));
    EXPECT_THAT(text, HasSubstr("tunneld_backend_connect_errors_total{service=\"redis\",side=\"new\"} 2\n"));
    EXPECT_THAT(text, HasSubstr("tunneld_switches_total{service=\"redis\",result=\"refused\"} 2\n"));
    EXPECT_THAT(text, HasSubstr("tunneld_clients_moved_total{service=\"redis\"} 6\n"));
    EXPECT_THAT(text, HasSubstr("tunneld_client_moves_failed_total{service=\"redis\"} 1\n"));
    EXPECT_THAT(text, HasSubstr("tunneld_lag_bytes{service=\"redis\"} 512\n"));
    EXPECT_THAT(text, HasSubstr("tunneld_lag_seconds{service=\"redis\"} 0.25\n"));
    EXPECT_THAT(text, HasSubstr("tunneld_replication_link_up{service=\"redis\"} 1\n"));
    EXPECT_THAT(text, HasSubstr("tunneld_service_active_side{service=\"redis\",side=\"old\"} 1\n"));
    EXPECT_THAT(text, HasSubstr("tunneld_service_active_side{service=\"redis\",side=\"new\"} 0\n"));
    EXPECT_THAT(text, HasSubstr("tunneld_paused{service=\"redis\"} 0\n"));
    EXPECT_THAT(text, HasSubstr("tunneld_fenced{service=\"redis\"} 0\n"));
}

TEST(RenderMetrics, EachFamilyHasHelpAndTypeOnceBeforeItsSamples)
{
    json other = redis_service();
    other["name"] = "app";
    const std::string text = render_metrics({{"services", {redis_service(), other}}});
    const auto help = text.find("# HELP tunneld_clients_active ");
    const auto type = text.find("# TYPE tunneld_clients_active gauge\n");
    const auto first = text.find("tunneld_clients_active{service=\"redis\"");
    const auto second = text.find("tunneld_clients_active{service=\"app\"");
    ASSERT_NE(help, std::string::npos);
    EXPECT_LT(help, type);
    EXPECT_LT(type, first);
    EXPECT_LT(first, second);
    EXPECT_EQ(text.find("# TYPE tunneld_clients_active", type + 1), std::string::npos);
    EXPECT_THAT(text, HasSubstr("# TYPE tunneld_bytes_total counter\n"));
}

/// The lines of `text` that are samples (not # HELP / # TYPE).
std::vector<std::string> sample_lines(const std::string& text)
{
    std::vector<std::string> samples;
    std::istringstream lines(text);
    for (std::string line; std::getline(lines, line);)
        if (!line.empty() && line[0] != '#') samples.push_back(line);
    return samples;
}

TEST(RenderMetrics, UnknownLagIsOmittedNeverZero)
{
    json service = redis_service();
    service["lag"] = {{"bytes", nullptr}, {"seconds", nullptr}, {"link", "unknown"}};
    const std::string text = render_metrics({{"services", {service}}});
    // Families are declared (# HELP / # TYPE) but carry no sample.
    EXPECT_THAT(text, Not(HasSubstr("tunneld_lag_bytes{")));
    EXPECT_THAT(text, Not(HasSubstr("tunneld_lag_seconds{")));
    EXPECT_THAT(text, Not(HasSubstr("tunneld_replication_link_up{")));
    EXPECT_THAT(text, HasSubstr("# TYPE tunneld_lag_bytes gauge\n"));
}

TEST(RenderMetrics, LinkDownIsZero)
{
    json service = redis_service();
    service["lag"]["link"] = "down";
    EXPECT_THAT(render_metrics({{"services", {service}}}),
                HasSubstr("tunneld_replication_link_up{service=\"redis\"} 0\n"));
}

TEST(RenderMetrics, MissingFieldsOmitTheirSamples)
{
    const std::string text =
        render_metrics({{"services", {{{"name", "bare"}}}}, {"tunnels", {{{"name", "t"}}}}});
    EXPECT_EQ(sample_lines(text), std::vector<std::string>{});
}

TEST(RenderMetrics, WrongTypesAndNamelessEntriesAreSkipped)
{
    const json status = {{"services", {{{"clients_total", 4}}, {{"name", "x"}, {"clients_total", "four"}}}},
                         {"tunnels", "not an array"}};
    EXPECT_EQ(sample_lines(render_metrics(status)), std::vector<std::string>{});
    EXPECT_EQ(sample_lines(render_metrics(json::array())), std::vector<std::string>{});
    EXPECT_EQ(sample_lines(render_metrics(json())), std::vector<std::string>{});
}

TEST(RenderMetrics, SplitMarksBothSidesActive)
{
    json service = redis_service();
    service["active"] = "split";
    service["split_percent"] = 10;
    const std::string text = render_metrics({{"services", {service}}});
    EXPECT_THAT(text, HasSubstr("tunneld_service_active_side{service=\"redis\",side=\"old\"} 1\n"));
    EXPECT_THAT(text, HasSubstr("tunneld_service_active_side{service=\"redis\",side=\"new\"} 1\n"));
    EXPECT_THAT(text, HasSubstr("tunneld_service_split_percent{service=\"redis\"} 10\n"));
}

TEST(RenderMetrics, PausedStateIsOne)
{
    json service = redis_service();
    service["state"] = "paused";
    EXPECT_THAT(render_metrics({{"services", {service}}}),
                HasSubstr("tunneld_paused{service=\"redis\"} 1\n"));
}

TEST(RenderMetrics, FleetReachabilityAndEpochOnlyInAFleet)
{
    json service = redis_service();
    EXPECT_THAT(render_metrics({{"services", {service}}}), Not(HasSubstr("tunneld_fleet_etcd_reachable{")));
    service["fleet"] = "unreachable";
    service["epoch"] = 3;
    std::string text = render_metrics({{"services", {service}}});
    EXPECT_THAT(text, HasSubstr("tunneld_fleet_etcd_reachable{service=\"redis\"} 0\n"));
    EXPECT_THAT(text, HasSubstr("tunneld_fleet_epoch{service=\"redis\"} 3\n"));
    service["fleet"] = "ok";
    EXPECT_THAT(render_metrics({{"services", {service}}}), HasSubstr("tunneld_fleet_etcd_reachable{service=\"redis\"} 1\n"));
}

TEST(RenderMetrics, TunnelSamples)
{
    const std::string text = render_metrics({{"tunnels", {vpc_tunnel()}}});
    EXPECT_THAT(text, HasSubstr("tunneld_tunnel_sessions{tunnel=\"vpc\"} 2\n"));
    EXPECT_THAT(text, HasSubstr("tunneld_tunnel_sessions_up{tunnel=\"vpc\"} 1\n"));
    EXPECT_THAT(text, HasSubstr("tunneld_tunnel_channels{tunnel=\"vpc\"} 5\n"));
    EXPECT_THAT(text, HasSubstr("tunneld_tunnel_bytes_total{tunnel=\"vpc\",direction=\"up\"} 10\n"));
    EXPECT_THAT(text, HasSubstr("tunneld_tunnel_bytes_total{tunnel=\"vpc\",direction=\"down\"} 20\n"));
    EXPECT_THAT(text, HasSubstr("tunneld_tunnel_reconnects_total{tunnel=\"vpc\"} 3\n"));
    EXPECT_THAT(text, HasSubstr("tunneld_tunnel_channel_open_failures_total{tunnel=\"vpc\"} 4\n"));
    EXPECT_THAT(text, HasSubstr("tunneld_tunnel_channel_open_seconds{tunnel=\"vpc\"} 0.0125\n"));
    EXPECT_THAT(text, HasSubstr("tunneld_tunnel_since_last_receive_seconds{tunnel=\"vpc\"} 0.12\n"));
}

TEST(RenderMetrics, GatewaySamplesCarryTunnelAndGatewayLabels)
{
    auto vpc = vpc_tunnel();
    vpc["gateways"] = json::parse(R"([
        {"address": "203.0.113.10:22", "state": "up", "sessions": 2, "sessions_up": 2, "channels": 5,
         "failures": 0, "last_error": ""},
        {"address": "203.0.113.11:22", "state": "down", "sessions": 2, "sessions_up": 0, "channels": 0,
         "failures": 7, "last_error": "connection refused"}])");
    const std::string text = render_metrics({{"tunnels", {vpc}}});
    EXPECT_THAT(text, HasSubstr("tunneld_tunnel_gateway_up{tunnel=\"vpc\",gateway=\"203.0.113.10:22\"} 1\n"));
    EXPECT_THAT(text, HasSubstr("tunneld_tunnel_gateway_up{tunnel=\"vpc\",gateway=\"203.0.113.11:22\"} 0\n"));
    EXPECT_THAT(text,
                HasSubstr("tunneld_tunnel_gateway_sessions_up{tunnel=\"vpc\",gateway=\"203.0.113.10:22\"} 2\n"));
    EXPECT_THAT(text,
                HasSubstr("tunneld_tunnel_gateway_channels{tunnel=\"vpc\",gateway=\"203.0.113.10:22\"} 5\n"));
    EXPECT_THAT(text,
                HasSubstr("tunneld_tunnel_gateway_failures_total{tunnel=\"vpc\",gateway=\"203.0.113.11:22\"} 7\n"));
    EXPECT_THAT(text, HasSubstr("# TYPE tunneld_tunnel_gateway_failures_total counter\n"));
}

TEST(RenderMetrics, LabelValuesAreEscaped)
{
    json service = redis_service();
    service["name"] = "a\"b\\c\nd";
    EXPECT_THAT(render_metrics({{"services", {service}}}),
                HasSubstr("tunneld_clients_total{service=\"a\\\"b\\\\c\\nd\"} 17\n"));
    EXPECT_EQ(escape_label_value("plain"), "plain");
}

TEST(RenderMetrics, LargeCountersKeepEveryDigit)
{
    json service = redis_service();
    service["bytes_up"] = 18446744073709551615ULL;
    EXPECT_THAT(render_metrics({{"services", {service}}}),
                HasSubstr("direction=\"up\"} 18446744073709551615\n"));
}

TEST(RenderMetrics, EveryLineIsACommentOrASample)
{
    const std::string text = render_metrics({{"services", {redis_service()}}, {"tunnels", {vpc_tunnel()}}});
    ASSERT_FALSE(text.empty());
    EXPECT_EQ(text.back(), '\n');
    std::size_t start = 0;
    while (start < text.size()) {
        const auto end = text.find('\n', start);
        const std::string line = text.substr(start, end - start);
        EXPECT_TRUE(line.starts_with("# HELP tunneld_") || line.starts_with("# TYPE tunneld_") ||
                    line.starts_with("tunneld_"))
            << line;
        start = end + 1;
    }
}

} // namespace
} // namespace tunneld::daemon
