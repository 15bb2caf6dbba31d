// Goal: the status contract's JSON (DESIGN.md, docs/control-protocol.md) comes out of the typed
// snapshots with the field names and meanings scripts rely on.

#include "control/status_json.hpp"

#include <gtest/gtest.h>

namespace tunneld::control {
namespace {

cutover::service_snapshot redis_snapshot()
{
    cutover::service_snapshot s;
    s.name = "redis";
    s.kind = config::service_kind::redis;
    s.mode = config::switch_mode::pause;
    s.listen = config::endpoint{"127.0.0.1", 6379};
    s.old_backend.address = config::endpoint{"10.0.1.20", 6379};
    s.new_backend.address = config::endpoint{"10.8.1.20", 6379};
    s.new_backend.via = "vpc";
    s.connections = {3, 1};
    s.connect_errors = {0, 2};
    s.switches = {{"done", 1}, {"refused", 0}, {"failed", 0}};
    return s;
}

TEST(StatusJson, ServiceCarriesTheContractFields)
{
    const auto j = to_json(redis_snapshot());
    EXPECT_EQ(j["name"], "redis");
    EXPECT_EQ(j["kind"], "redis");
    EXPECT_EQ(j["listen"], "127.0.0.1:6379");
    EXPECT_EQ(j["active"], "old");
    EXPECT_EQ(j["split_percent"], 0);
    EXPECT_EQ(j["state"], "serving");
    EXPECT_EQ(j["mode"], "pause");
    EXPECT_EQ(j["connections"], (nlohmann::json{{"old", 3}, {"new", 1}}));
    EXPECT_EQ(j["connect_errors"], (nlohmann::json{{"old", 0}, {"new", 2}}));
    EXPECT_EQ(j["lag"], (nlohmann::json{{"bytes", nullptr}, {"seconds", nullptr}, {"link", "unknown"}}));
    EXPECT_EQ(j["fenced"], false);
    EXPECT_EQ(j["old"], (nlohmann::json{{"address", "10.0.1.20:6379"}, {"via", nullptr}}));
    EXPECT_EQ(j["new"], (nlohmann::json{{"address", "10.8.1.20:6379"}, {"via", "vpc"}}));
    EXPECT_TRUE(j["last_switch"].is_null());
    EXPECT_EQ(j["switches"]["done"], 1);
}

TEST(StatusJson, SplitLagAndLastSwitch)
{
    auto s = redis_snapshot();
    s.route.split_percent = 25;
    s.route.sticky = true;
    cutover::lag_reading lag;
    lag.bytes = 512;
    lag.seconds = 0.25;
    lag.link = cutover::link_state::up;
    lag.detail = "in sync";
    s.lag = lag;
    s.last_switch = cutover::switch_record{"failed", "2026-11-21T23:50:00Z", "why", 1, 4};
    s.clients_moved = 9;
    s.clients_move_failed = 2;
    const auto j = to_json(s);
    EXPECT_EQ(j["active"], "split");
    EXPECT_EQ(j["split_percent"], 25);
    EXPECT_EQ(j["sticky"], true);
    EXPECT_EQ(j["lag"], (nlohmann::json{{"bytes", 512}, {"seconds", 0.25}, {"link", "up"}, {"detail", "in sync"}, {"replica", nullptr}}));
    EXPECT_EQ(j["last_switch"],
              (nlohmann::json{{"result", "failed"}, {"at", "2026-11-21T23:50:00Z"}, {"message", "why"},
                              {"cut", 1}, {"moved", 4}, {"adopted", false}}))
        << "the last switch says how many clients it cut and moved, and that it was not adopted";
    EXPECT_EQ(j["clients_moved"], 9);
    EXPECT_EQ(j["clients_move_failed"], 2);
}

TEST(StatusJson, TunnelsAndTheWhole)
{
    tunnel::tunnel_status t;
    t.name = "vpc";
    t.address = "203.0.113.10:22";
    t.sessions = 2;
    t.sessions_up = 1;
    const auto whole = to_json(status_snapshot{{redis_snapshot()}, {t}, {}, std::nullopt});
    ASSERT_EQ(whole["services"].size(), 1u);
    ASSERT_EQ(whole["tunnels"].size(), 1u);
    const auto& j = whole["tunnels"][0];
    EXPECT_EQ(j["name"], "vpc");
    EXPECT_EQ(j["sessions"], 2);
    EXPECT_EQ(j["sessions_up"], 1);
    EXPECT_EQ(j["channels"], 0);
    EXPECT_EQ(j["reconnects"], 0);
    EXPECT_TRUE(j["since_last_receive_ms"].is_null());
    EXPECT_EQ(to_json(status_snapshot{{}, {}, {}, std::nullopt}), (nlohmann::json{{"services", nlohmann::json::array()},
                                                           {"tunnels", nlohmann::json::array()},
                                                           {"history", nlohmann::json::array()}}));
}

TEST(StatusJson, FleetFieldsAreNullOnASingleHostAndSayEtcdsStateInAFleet)
{
    const auto single = to_json(status_snapshot{{redis_snapshot()}, {}, {}, std::nullopt});
    EXPECT_TRUE(single["services"][0]["epoch"].is_null());
    EXPECT_TRUE(single["services"][0]["fleet"].is_null());

    fleet_status reachable;
    reachable.reachable = true;
    reachable.epochs = {{"redis", 4}};
    const auto ok = to_json(status_snapshot{{redis_snapshot()}, {}, {}, reachable});
    EXPECT_EQ(ok["services"][0]["epoch"], 4);
    EXPECT_EQ(ok["services"][0]["fleet"], "ok");

    const auto cut_off = to_json(status_snapshot{{redis_snapshot()}, {}, {}, fleet_status{}});
    EXPECT_EQ(cut_off["services"][0]["epoch"], 0) << "in a fleet, a service that never switched runs epoch 0";
    EXPECT_EQ(cut_off["services"][0]["fleet"], "unreachable");
}

} // namespace
} // namespace tunneld::control
