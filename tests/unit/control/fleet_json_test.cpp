// Goal: `tunnelctl fleet --json` lists every member of a service with the fields DESIGN.md names
// (`name`, `side`, `epoch`, `state`, `held`, `last_seen`) and says who is behind the fleet.

#include "control/fleet_json.hpp"

#include <gtest/gtest.h>

namespace tunneld::control {
namespace {

using fleet::side;

fleet::fleet_view view_of_three()
{
    fleet::fleet_view view;
    view.reachable = true;
    view.revision = 42;
    auto& redis = view.services["redis"];
    redis.epoch = fleet::epoch_state{{2, side::new_side, "committed", {}, std::nullopt}, 30};
    redis.members = {{"web-1", fleet::member_record{side::new_side, 2, "serving", 0, 1700000000123}, 31},
                     {"web-2", fleet::member_record{side::old_side, 1, "serving", 0, 1700000000456}, 32},
                     {"web-3", std::nullopt, 33}};
    view.services["pg"].members = {{"web-1", fleet::member_record{side::old_side, 0, "paused", 3, 5}, 34}};
    return view;
}

TEST(FleetJson, ListsMembersAndWhoIsBehind)
{
    const auto j = fleet_json(view_of_three(), "legacy-eu1", "web-1");
    EXPECT_EQ(j["fleet"], "legacy-eu1");
    EXPECT_EQ(j["member"], "web-1");
    EXPECT_EQ(j["etcd"], "ok");
    EXPECT_TRUE(j["error"].is_null());
    EXPECT_EQ(j["revision"], 42);
    ASSERT_EQ(j["services"].size(), 2u);
    const auto& pg = j["services"][0];
    EXPECT_EQ(pg["name"], "pg");
    EXPECT_EQ(pg["epoch"], 0) << "no epoch key: epoch 0 on old";
    EXPECT_EQ(pg["side"], "old");
    EXPECT_EQ(pg["phase"], "committed");
    EXPECT_EQ(pg["members"][0]["state"], "paused");
    EXPECT_EQ(pg["members"][0]["held"], 3);
    EXPECT_EQ(pg["members"][0]["behind"], false);

    const auto& redis = j["services"][1];
    EXPECT_EQ(redis["epoch"], 2);
    EXPECT_EQ(redis["side"], "new");
    EXPECT_TRUE(redis["coordinator"].is_null());
    ASSERT_EQ(redis["members"].size(), 3u);
    EXPECT_EQ(redis["members"][0],
              (nlohmann::json{{"name", "web-1"}, {"malformed", false}, {"side", "new"}, {"epoch", 2}, {"state", "serving"},
                              {"held", 0}, {"last_seen", 1700000000123}, {"behind", false}}));
    EXPECT_EQ(redis["members"][1]["behind"], true);
    EXPECT_EQ(redis["members"][2]["malformed"], true);
    EXPECT_TRUE(redis["members"][2]["side"].is_null()) << "a record that did not decode is never read as a default";
}

TEST(FleetJson, OneServiceAndAnUnreachableEtcd)
{
    auto view = view_of_three();
    view.reachable = false;
    view.last_error = "unreachable: connection refused";
    view.services["redis"].epoch = fleet::epoch_state{{3, side::new_side, "hold", "web-2", side::old_side}, 40};
    const auto j = fleet_json(view, "f", "web-1", "redis");
    EXPECT_EQ(j["etcd"], "unreachable");
    EXPECT_EQ(j["error"], "unreachable: connection refused");
    ASSERT_EQ(j["services"].size(), 1u);
    EXPECT_EQ(j["services"][0]["phase"], "hold");
    EXPECT_EQ(j["services"][0]["coordinator"], "web-2");
    EXPECT_EQ(j["services"][0]["target"], "old");

    const auto absent = fleet_json(view, "f", "web-1", "app");
    ASSERT_EQ(absent["services"].size(), 1u);
    EXPECT_EQ(absent["services"][0]["name"], "app");
    EXPECT_TRUE(absent["services"][0]["members"].empty());
}

} // namespace
} // namespace tunneld::control
