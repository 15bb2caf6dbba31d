// Lag readings and the gate: unknown fails closed, every refusal says why, force says so.

#include "cutover/lag.hpp"

#include <gtest/gtest.h>

namespace tunneld::cutover {
namespace {

using namespace std::chrono_literals;
using clock = std::chrono::steady_clock;

const clock::time_point t0 = clock::time_point{} + 1000h;

std::string primary(std::string_view offset)
{
    return "# Replication\r\nrole:master\r\nconnected_slaves:1\r\nmaster_repl_offset:" + std::string(offset) +
           "\r\n";
}

std::string replica(std::string_view offset, std::string_view link = "up", std::string_view sync = "0")
{
    return "# Replication\r\nrole:slave\r\nmaster_link_status:" + std::string(link) +
           "\r\nmaster_last_io_seconds_ago:0\r\nmaster_sync_in_progress:" + std::string(sync) +
           "\r\nslave_repl_offset:" + std::string(offset) + "\r\nmaster_repl_offset:" + std::string(offset) +
           "\r\n";
}

TEST(RedisLag, OldOffsetMinusNewOffset)
{
    const auto reading = redis_lag(primary("5000"), replica("4000"), t0);
    EXPECT_EQ(reading.bytes, 1000u);
    EXPECT_EQ(reading.link, link_state::up);
    EXPECT_FALSE(reading.seconds);
    EXPECT_EQ(reading.at, t0);
    EXPECT_EQ(redis_lag(primary("5000"), replica("5000"), t0).bytes, 0u);
}

TEST(RedisLag, LinkDownOrSyncingIsDown)
{
    auto down = redis_lag(primary("5000"), replica("4000", "down"), t0);
    EXPECT_EQ(down.link, link_state::down);
    EXPECT_FALSE(down.bytes);
    EXPECT_NE(down.detail.find("master_link_status:down"), std::string::npos);
    auto syncing = redis_lag(primary("5000"), replica("0", "up", "1"), t0);
    EXPECT_EQ(syncing.link, link_state::down);
    EXPECT_FALSE(syncing.bytes);
}

TEST(RedisLag, MissingOrGarbageIsUnknownNeverZero)
{
    struct example {
        std::string old_info, new_info;
    };
    const example examples[] = {
        {primary("garbage"), replica("4000")},
        {primary(""), replica("4000")},
        {"role:master\r\n", replica("4000")},
        {primary("5000"), replica("-1")},
        {primary("5000"), replica("4k")},
        {primary("5000"), "role:slave\r\nmaster_link_status:up\r\nmaster_sync_in_progress:0\r\n"},
        {primary("5000"), "role:slave\r\nslave_repl_offset:5000\r\nmaster_sync_in_progress:0\r\n"},
        {primary("5000"), "role:slave\r\nslave_repl_offset:5000\r\nmaster_link_status:up\r\n"},
        {primary("5000"), replica("5000", "sideways")},
        {primary("5000"), "slave_repl_offset:5000\r\nmaster_link_status:up\r\nmaster_sync_in_progress:0\r\n"},
        {"", ""},
        {"\x01\x02\xff", replica("5000")},
        {replica("5000"), replica("5000")}, // old is itself a replica
    };
    for (const auto& [old_info, new_info] : examples) {
        const auto reading = redis_lag(old_info, new_info, t0);
        EXPECT_FALSE(reading.bytes) << old_info << " / " << new_info;
        EXPECT_FALSE(reading.detail.empty());
        EXPECT_FALSE(check_gate(reading, std::nullopt, std::nullopt, false, t0, 5s).allowed);
    }
}

TEST(RedisLag, NewAheadOfOldIsUnknown)
{
    const auto reading = redis_lag(primary("4000"), replica("5000"), t0);
    EXPECT_FALSE(reading.bytes);
    EXPECT_NE(reading.detail.find("ahead"), std::string::npos);
}

TEST(RedisLag, NewAlreadyPrimaryIsLinkDown)
{
    const auto reading = redis_lag(primary("4000"), primary("4000"), t0);
    EXPECT_EQ(reading.link, link_state::down);
    EXPECT_FALSE(reading.bytes);
}

TEST(ParseLsn, HighAndLowHalves)
{
    EXPECT_EQ(parse_lsn("16/B374D848"), 0x16B374D848u);
    EXPECT_EQ(parse_lsn("0/0"), 0u);
    EXPECT_EQ(parse_lsn("0/3000060"), 0x3000060u);
    EXPECT_EQ(parse_lsn("FFFFFFFF/FFFFFFFF"), 0xFFFFFFFFFFFFFFFFu);
    EXPECT_EQ(parse_lsn("16/b374d848"), 0x16B374D848u);
    for (std::string_view bad :
         {"", "/", "16/", "/B374D848", "16B374D848", "16/B374D848/1", "1FFFFFFFF/0", "16/B374D8480",
          " 16/B374D848", "16/B374D848 ", "-1/0", "G/0", "16:B374D848"})
        EXPECT_FALSE(parse_lsn(bad)) << "'" << bad << "'";
    EXPECT_EQ(format_lsn(0x16B374D848u), "16/B374D848");
    EXPECT_EQ(format_lsn(0), "0/0");
}

postgres_standby_text standby(std::optional<std::string> lsn, std::optional<std::string> delay = "0",
                              std::optional<std::string> in_recovery = "t",
                              std::optional<std::string> status = "streaming")
{
    return {.in_recovery = in_recovery, .replay_lsn = lsn, .replay_delay = delay, .receiver_status = status};
}

TEST(PostgresLag, CurrentLsnMinusReplayLsn)
{
    const auto reading = postgres_lag("16/B374D848", standby("16/B3740000", "0.25"), t0);
    EXPECT_EQ(reading.bytes, 0xD848u);
    EXPECT_EQ(reading.link, link_state::up);
    EXPECT_DOUBLE_EQ(reading.seconds.value_or(-1), 0.25);
    EXPECT_EQ(postgres_lag("0/3000060", standby("0/3000060"), t0).bytes, 0u);
}

TEST(PostgresLag, NotStreamingOrPromotedIsDown)
{
    EXPECT_EQ(postgres_lag("0/1", standby("0/1", "0", "f"), t0).link, link_state::down);
    EXPECT_EQ(postgres_lag("0/1", standby("0/1", "0", "t", std::nullopt), t0).link, link_state::down);
    const auto catchup = postgres_lag("0/1", standby("0/1", "0", "t", "catchup"), t0);
    EXPECT_EQ(catchup.link, link_state::down);
    EXPECT_FALSE(catchup.bytes);
}

TEST(PostgresLag, MissingOrGarbageIsUnknown)
{
    EXPECT_EQ(postgres_lag("0/1", standby("0/1", "0", std::nullopt), t0).link, link_state::unknown);
    EXPECT_EQ(postgres_lag("0/1", standby("0/1", "0", "yes"), t0).link, link_state::unknown);
    EXPECT_FALSE(postgres_lag(std::nullopt, standby("0/1"), t0).bytes);
    EXPECT_FALSE(postgres_lag("garbage", standby("0/1"), t0).bytes);
    EXPECT_FALSE(postgres_lag("0/1", standby(std::nullopt), t0).bytes);
    EXPECT_FALSE(postgres_lag("0/1", standby("0/2"), t0).bytes); // ahead
    const auto no_delay = postgres_lag("0/1", standby("0/1", "soon"), t0);
    EXPECT_EQ(no_delay.bytes, 0u);
    EXPECT_FALSE(no_delay.seconds);
}

lag_reading good(std::uint64_t bytes, clock::time_point at = t0)
{
    return lag_reading{
        .bytes = bytes, .seconds = std::nullopt, .link = link_state::up, .replica_position = std::nullopt,
        .detail = "ok", .at = at, .replica = proxy::side::new_side};
}

TEST(CheckGate, AllowsWithinMaxLag)
{
    const auto verdict = check_gate(good(512), 1024 * 1024, std::nullopt, false, t0, 5s);
    EXPECT_TRUE(verdict.allowed);
    EXPECT_FALSE(verdict.forced);
    EXPECT_EQ(verdict.reason, "lag 512B within max_lag 1MiB, link up");
    EXPECT_TRUE(check_gate(good(1024 * 1024), 1024 * 1024, std::nullopt, false, t0, 5s).allowed); // inclusive
    EXPECT_EQ(check_gate(good(0), std::nullopt, std::nullopt, false, t0, 5s).reason, "lag 0B, link up");
}

TEST(CheckGate, RefusesAboveMaxLag)
{
    const auto verdict = check_gate(good(4404019), 1024 * 1024, std::nullopt, false, t0, 5s);
    EXPECT_FALSE(verdict.allowed);
    EXPECT_EQ(verdict.reason, "lag 4.2MiB exceeds max_lag 1MiB");
    EXPECT_EQ(check_gate(good(1024 * 1024 + 1), 1024 * 1024, std::nullopt, false, t0, 5s).reason,
              "lag 1048577B exceeds max_lag 1MiB");
    EXPECT_EQ(check_gate(good(1), 0, std::nullopt, false, t0, 5s).reason, "lag 1B exceeds max_lag 0B");
}

TEST(CheckGate, RefusesLinkDownAndUnknown)
{
    auto down = good(0);
    down.link = link_state::down;
    down.detail = "new: master_link_status:down";
    EXPECT_EQ(check_gate(down, std::nullopt, std::nullopt, false, t0, 5s).reason,
              "replication link is down (new: master_link_status:down)");
    auto unknown = unknown_lag("new 127.0.0.1:6380: cannot connect: Connection refused", t0);
    const auto verdict = check_gate(unknown, 1024, std::nullopt, false, t0, 5s);
    EXPECT_FALSE(verdict.allowed);
    EXPECT_EQ(verdict.reason,
              "replication link state is unknown (new 127.0.0.1:6380: cannot connect: Connection refused)");
    auto no_bytes = good(0);
    no_bytes.bytes.reset();
    no_bytes.detail = "old: master_repl_offset missing or malformed";
    EXPECT_EQ(check_gate(no_bytes, std::nullopt, std::nullopt, false, t0, 5s).reason,
              "lag is unknown (old: master_repl_offset missing or malformed)");
}

TEST(CheckGate, RefusesStaleReading)
{
    EXPECT_TRUE(check_gate(good(0, t0 - 5s), std::nullopt, std::nullopt, false, t0, 5s).allowed);
    const auto verdict = check_gate(good(0, t0 - 5200ms), std::nullopt, std::nullopt, false, t0, 5s);
    EXPECT_FALSE(verdict.allowed);
    EXPECT_EQ(verdict.reason, "lag reading is 5.2s old (max 5s)");
    EXPECT_FALSE(
        check_gate(lag_reading{}, std::nullopt, std::nullopt, false, t0, 5s).allowed); // never probed
}

TEST(CheckGate, ReplayDelay)
{
    auto reading = good(0);
    reading.seconds = 3.5;
    EXPECT_EQ(check_gate(reading, std::nullopt, 1s, false, t0, 5s).reason,
              "replay delay 3.5s exceeds max_lag_seconds 1s");
    EXPECT_TRUE(check_gate(reading, std::nullopt, 3500ms, false, t0, 5s).allowed);
    EXPECT_TRUE(check_gate(reading, std::nullopt, std::nullopt, false, t0, 5s).allowed);
    reading.seconds.reset();
    EXPECT_EQ(check_gate(reading, std::nullopt, 1s, false, t0, 5s).reason, "replay delay is unknown (ok)");
    reading.seconds = 0.25;
    EXPECT_EQ(check_gate(reading, 10, 1s, false, t0, 5s).reason,
              "lag 0B within max_lag 10B, replay delay 250ms, link up");
}

TEST(CheckGate, ForceOverridesEveryRefusalAndSaysSo)
{
    const auto over = check_gate(good(4404019), 1024 * 1024, std::nullopt, true, t0, 5s);
    EXPECT_TRUE(over.allowed);
    EXPECT_TRUE(over.forced);
    EXPECT_EQ(over.reason, "forced: lag 4.2MiB exceeds max_lag 1MiB");
    const auto unknown = check_gate(unknown_lag("no answer", t0), 1, std::nullopt, true, t0, 5s);
    EXPECT_TRUE(unknown.allowed);
    EXPECT_EQ(unknown.reason, "forced: replication link state is unknown (no answer)");
    const auto fine = check_gate(good(0), 1, std::nullopt, true, t0, 5s);
    EXPECT_TRUE(fine.allowed);
    EXPECT_FALSE(fine.forced); // nothing was overridden
}

TEST(Format, BytesAndSeconds)
{
    EXPECT_EQ(format_bytes(0), "0B");
    EXPECT_EQ(format_bytes(1023), "1023B");
    EXPECT_EQ(format_bytes(64 * 1024), "64KiB");
    EXPECT_EQ(format_bytes(1536), "1.5KiB");
    EXPECT_EQ(format_bytes(3ull << 30), "3GiB");
    EXPECT_EQ(format_seconds(0.25), "250ms");
    EXPECT_EQ(format_seconds(5), "5s");
    EXPECT_EQ(format_seconds(120), "2m");
}

} // namespace
} // namespace tunneld::cutover
