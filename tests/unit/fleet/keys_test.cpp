// The fleet's key layout and records: every key the layout makes parses back to what made it,
// foreign keys are ignored, and a record that is not exactly ours decodes to nothing (the view
// reports it) instead of to a default that would read as "epoch 0 on old".
#include "fleet/keys.hpp"
#include "fleet/membership.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <random>

namespace tunneld::fleet {
namespace {

TEST(KeyLayout, KeysOfAFleet)
{
    const key_layout keys("legacy-eu1");
    EXPECT_EQ(keys.root(), "/tunneld/legacy-eu1/");
    EXPECT_EQ(keys.epoch_key("redis"), "/tunneld/legacy-eu1/services/redis/epoch");
    EXPECT_EQ(keys.members_prefix("redis"), "/tunneld/legacy-eu1/services/redis/members/");
    EXPECT_EQ(keys.member_key("redis", "web-7.eu"), "/tunneld/legacy-eu1/services/redis/members/web-7.eu");
}

TEST(KeyLayout, ParsesItsOwnKeysAndIgnoresOthers)
{
    const key_layout keys("f");
    using kind = key_layout::named::kind;
    EXPECT_EQ(keys.parse(keys.epoch_key("redis")), (key_layout::named{kind::epoch, "redis", ""}));
    EXPECT_EQ(keys.parse(keys.member_key("pg", "web-7")), (key_layout::named{kind::member, "pg", "web-7"}));
    EXPECT_EQ(keys.parse(keys.pause_key("redis")), (key_layout::named{kind::pause, "redis", ""}));
    for (std::string_view other : {"/tunneld/g/services/redis/epoch", "/tunneld/f/services/redis/lock",
                                   "/tunneld/f/services//epoch", "/tunneld/f/services/redis/members/",
                                   "/tunneld/f/services/redis/members/a/b", "/tunneld/f/switches/1", "/tunneld/f/"})
        EXPECT_FALSE(keys.parse(other)) << other;
}

TEST(PauseRecord, RoundTripsAndRefusesAnythingElse)
{
    const pause_record r{1'700'000'000'123, "web-7"};
    EXPECT_EQ(encode(r), R"({"by":"web-7","until_ms":1700000000123})");
    EXPECT_EQ(decode_pause_record(encode(r)), r);
    for (std::string_view bad : {"", "[]", R"({"by":"a"})", R"({"until_ms":-1,"by":"a"})", R"({"until_ms":"1","by":"a"})",
                                 R"({"until_ms":1})"})
        EXPECT_FALSE(decode_pause_record(bad)) << bad;
}

TEST(MemberRecord, RoundTripsAndRefusesAnythingElse)
{
    const member_record r{side::new_side, 7, "holding", 12, 1'700'000'000'123};
    EXPECT_EQ(encode(r), R"({"epoch":7,"held":12,"last_seen_ms":1700000000123,"side":"new","state":"holding"})");
    EXPECT_EQ(decode_member_record(encode(r)), r);
    for (std::string_view bad : {
             "", "[]", "null",
             R"({"epoch":7,"held":12,"last_seen_ms":1,"side":"split","state":"serving"})",
             R"({"epoch":-1,"held":12,"last_seen_ms":1,"side":"old","state":"serving"})",
             R"({"epoch":"7","held":12,"last_seen_ms":1,"side":"old","state":"serving"})",
             R"({"epoch":7,"held":-1,"last_seen_ms":1,"side":"old","state":"serving"})",
             R"({"epoch":7,"held":1,"last_seen_ms":1,"side":"old","state":""})",
             R"({"epoch":7,"held":1,"side":"old","state":"serving"})",
         })
        EXPECT_FALSE(decode_member_record(bad)) << bad;
}

TEST(EpochRecord, CommittedAndHeld)
{
    const epoch_record committed{3, side::new_side, "committed", {}, std::nullopt};
    EXPECT_FALSE(committed.held());
    EXPECT_EQ(encode(committed), R"({"epoch":3,"phase":"committed","side":"new"})");
    EXPECT_EQ(decode_epoch_record(encode(committed)), committed);

    const epoch_record held{4, side::new_side, "claimed", "web-7", side::old_side};
    EXPECT_TRUE(held.held());
    EXPECT_EQ(decode_epoch_record(encode(held)), held);
    // Held without saying by whom or towards where cannot be acted on: refused.
    EXPECT_FALSE(decode_epoch_record(R"({"epoch":4,"phase":"claimed","side":"new"})"));
    EXPECT_FALSE(decode_epoch_record(R"({"epoch":4,"phase":"claimed","side":"new","coordinator":"a","target":"x"})"));
    EXPECT_FALSE(decode_epoch_record(R"({"epoch":4,"phase":"","side":"new"})"));
}

TEST(FleetView, DecodesTheMirrorByService)
{
    const key_layout keys("f");
    prefix_mirror mirror;
    const member_record a{side::old_side, 3, "serving", 0, 1}, b{side::new_side, 3, "serving", 0, 2};
    mirror.reset({20,
                  {{keys.epoch_key("redis"), encode(epoch_record{3, side::old_side, "committed", {}, std::nullopt}), 1, 4, 2, 0},
                   {keys.member_key("redis", "web-2"), encode(b), 5, 6, 1, 9},
                   {keys.member_key("redis", "web-1"), encode(a), 5, 7, 1, 9},
                   {keys.member_key("pg", "web-1"), "garbage", 8, 8, 1, 9},
                   {keys.epoch_key("pg"), "{}", 8, 8, 1, 0},
                   {"/tunneld/f/unknown", "x", 8, 8, 1, 0}},
                  6, false});
    const fleet_view view = make_view(keys, mirror);
    EXPECT_EQ(view.revision, 20);
    ASSERT_EQ(view.services.size(), 2u);
    const auto& redis = view.services.at("redis");
    ASSERT_TRUE(redis.epoch);
    EXPECT_EQ(redis.epoch->record.epoch, 3);
    EXPECT_EQ(redis.epoch->mod_revision, 4);
    ASSERT_EQ(redis.members.size(), 2u);
    EXPECT_EQ(redis.members[0].member, "web-1");
    EXPECT_EQ(redis.members[0].record, a);
    EXPECT_EQ(redis.members[1].record, b);
    const auto& pg = view.services.at("pg");
    EXPECT_FALSE(pg.epoch);
    EXPECT_TRUE(pg.epoch_malformed);
    ASSERT_EQ(pg.members.size(), 1u);
    EXPECT_FALSE(pg.members[0].record);
}

TEST(FleetView, ApplyingEventsGivesTheViewOfTheWholeMirror)
{
    // A member's watch applies each message's events to its view instead of decoding every key
    // again: after every message the view must be exactly make_view of the mirror. Events cover
    // puts (valid, malformed), deletes of present and absent keys, foreign keys and a service
    // whose last key goes; messages of one to three events.
    const key_layout keys("f");
    const std::vector<std::string> candidates{
        keys.epoch_key("redis"), keys.member_key("redis", "web-1"), keys.member_key("redis", "web-2"),
        keys.member_key("redis", "web-3"), keys.pause_key("redis"), keys.epoch_key("pg"),
        keys.member_key("pg", "web-1"), keys.pause_key("pg"), "/tunneld/f/services/redis/other", "/tunneld/f/x"};
    const auto value_for = [&](const std::string& key, unsigned pick) -> std::string {
        if (pick % 5 == 0) return "garbage";
        const auto n = static_cast<std::int64_t>(pick);
        if (key.ends_with("/epoch"))
            return pick % 2 ? encode(epoch_record{n, side::new_side, "committed", {}, std::nullopt})
                            : encode(epoch_record{n, side::old_side, "hold", "web-1", side::new_side});
        if (key.ends_with("/pause")) return encode(pause_record{n * 1000, "web-2"});
        return encode(member_record{pick % 2 ? side::new_side : side::old_side, n, "serving", pick % 3, n});
    };
    std::mt19937 random(12); // fixed: the same sequence on every run
    prefix_mirror mirror;
    mirror.reset({1, {}, 0, false});
    fleet_view view = make_view(keys, mirror);
    std::int64_t revision = 1;
    for (int message = 0; message < 2000; ++message) {
        std::vector<etcd::event> events;
        const auto count = 1 + random() % 3;
        for (unsigned i = 0; i < count; ++i) {
            const auto& key = candidates[random() % candidates.size()];
            etcd::event e;
            e.kind = random() % 3 == 0 ? etcd::event::type::del : etcd::event::type::put;
            e.kv.key = key;
            e.kv.mod_revision = ++revision;
            if (e.kind == etcd::event::type::put) e.kv.value = value_for(key, static_cast<unsigned>(random() % 50));
            events.push_back(std::move(e));
        }
        mirror.apply(events);
        apply_events(view, keys, mirror, events);
        ASSERT_EQ(view, make_view(keys, mirror)) << "after message " << message;
    }
    EXPECT_GT(view.services.size(), 0u);
}

TEST(FleetView, AMemberRunsTheCommittedEpochOnlyOnTheCommittedSide)
{
    const epoch_state committed_new{{4, side::new_side, "committed", {}, std::nullopt}, 9};
    EXPECT_EQ(epoch_run(committed_new, side::new_side, 2), 4);
    EXPECT_EQ(epoch_run(committed_new, side::old_side, 2), 2) << "on old it still runs what it ran";
    EXPECT_EQ(epoch_run(std::nullopt, side::old_side, 0), 0) << "no epoch key: nothing committed yet";
    // While epoch 5 is being switched, epoch 4 is still the committed one.
    const epoch_state held{{5, side::new_side, "hold", "web-1", side::old_side}, 10};
    EXPECT_EQ(epoch_run(held, side::new_side, 3), 4);
    EXPECT_EQ(epoch_run(committed_new, side::new_side, 6), 6) << "never goes back";
}

TEST(FleetView, AMemberLagsWhenOnAnotherSideOrAnOlderEpoch)
{
    const epoch_state committed_new{{4, side::new_side, "committed", {}, std::nullopt}, 9};
    EXPECT_FALSE(lags_behind(committed_new, {side::new_side, 4, "serving", 0, 1}));
    EXPECT_TRUE(lags_behind(committed_new, {side::new_side, 3, "serving", 0, 1}));
    EXPECT_TRUE(lags_behind(committed_new, {side::old_side, 4, "serving", 0, 1}));
    EXPECT_FALSE(lags_behind(std::nullopt, {side::old_side, 0, "serving", 0, 1}));
    EXPECT_TRUE(lags_behind(std::nullopt, {side::new_side, 0, "serving", 0, 1}))
        << "switched on its own while the fleet has committed nothing";
    const epoch_state held{{5, side::new_side, "hold", "web-1", side::old_side}, 10};
    EXPECT_FALSE(lags_behind(held, {side::new_side, 4, "holding", 2, 1})) << "a switch under way is not lag";
}

} // namespace
} // namespace tunneld::fleet
