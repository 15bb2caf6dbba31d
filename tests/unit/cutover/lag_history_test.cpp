// The lag history behind the status page's graph and the dry run's replay rate: bounded in time
// and in points, the newest reading always kept, a replica that went back gives no rate.

#include "cutover/lag_history.hpp"

#include <gtest/gtest.h>

namespace tunneld::cutover {
namespace {

using namespace std::chrono_literals;
using clock = std::chrono::steady_clock;

const clock::time_point t0{std::chrono::hours(1)};

lag_reading reading(clock::duration after, std::uint64_t bytes, std::optional<std::uint64_t> position)
{
    lag_reading r;
    r.at = t0 + after;
    r.bytes = bytes;
    r.link = link_state::up;
    r.replica_position = position;
    return r;
}

TEST(LagHistory, KeepsAboutOnePointPerSecondAndTheNewest)
{
    lag_history history(10min, 1s);
    for (int i = 0; i <= 50; ++i) // every 200ms for 10s
        history.add(reading(i * 200ms, static_cast<std::uint64_t>(i), 1000u + static_cast<unsigned>(i)), i * 200);
    const auto& samples = history.samples();
    EXPECT_GE(samples.size(), 10u);
    EXPECT_LE(samples.size(), 20u);
    EXPECT_EQ(samples.back().bytes, 50u);
    EXPECT_EQ(samples.back().unix_ms, 10000);
}

TEST(LagHistory, ForgetsWhatIsOlderThanItsWindow)
{
    lag_history history(1min, 1s);
    for (int i = 0; i <= 180; ++i)
        history.add(reading(i * 1s, 0, std::nullopt), i * 1000);
    EXPECT_LE(t0 + 180s - history.samples().front().at, 1min);
}

TEST(LagHistory, ReplayRateIsPositionOverTime)
{
    lag_history history;
    for (int i = 0; i <= 10; ++i)
        history.add(reading(i * 1s, 0, 5000u + 2000u * static_cast<unsigned>(i)), i * 1000);
    ASSERT_TRUE(history.replay_rate(30s));
    EXPECT_DOUBLE_EQ(*history.replay_rate(30s), 2000.0);
}

TEST(LagHistory, NoRateFromOneSampleOrAReplicaThatWentBack)
{
    lag_history history;
    history.add(reading(0s, 0, 9000), 0);
    EXPECT_FALSE(history.replay_rate());
    history.add(reading(2s, 0, 100), 2000); // resynced from scratch
    EXPECT_FALSE(history.replay_rate());
    lag_history unknown;
    unknown.add(reading(0s, 0, std::nullopt), 0);
    unknown.add(reading(2s, 0, std::nullopt), 2000);
    EXPECT_FALSE(unknown.replay_rate());
}

} // namespace
} // namespace tunneld::cutover
