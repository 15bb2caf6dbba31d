// Pure decisions of tunnel/: backoff, session choice, keepalive deadline, host-key verdicts.

#include "tunnel/decisions.hpp"

#include <array>
#include <gtest/gtest.h>
#include <libssh2.h>

using namespace std::chrono_literals;
using namespace tunneld::tunnel;

TEST(BackoffDelay, DoublesFromBaseWithFullJitterRange)
{
    EXPECT_EQ(backoff_delay(0, 500ms, 30s, 0.0), 250ms);
    EXPECT_EQ(backoff_delay(0, 500ms, 30s, 1.0), 500ms);
    EXPECT_EQ(backoff_delay(1, 500ms, 30s, 1.0), 1000ms);
    EXPECT_EQ(backoff_delay(3, 500ms, 30s, 0.0), 2000ms);
}

TEST(BackoffDelay, NeverExceedsTheCapEvenForHugeAttempts)
{
    EXPECT_EQ(backoff_delay(6, 500ms, 30s, 1.0), 30s);
    EXPECT_EQ(backoff_delay(1000, 500ms, 30s, 0.999), backoff_delay(60, 500ms, 30s, 0.999));
    EXPECT_LE(backoff_delay(1000, 500ms, 30s, 1.0), 30s);
    EXPECT_GE(backoff_delay(1000, 500ms, 30s, 0.0), 15s);
}

TEST(BackoffDelay, CapBelowBaseWinsAndZeroCapMeansNoDelay)
{
    EXPECT_EQ(backoff_delay(0, 500ms, 100ms, 1.0), 100ms);
    EXPECT_EQ(backoff_delay(4, 500ms, 0ms, 1.0), 0ms);
}

TEST(BackoffDelay, OutOfRangeRandomIsClamped)
{
    EXPECT_EQ(backoff_delay(0, 500ms, 30s, -3.0), 250ms);
    EXPECT_EQ(backoff_delay(0, 500ms, 30s, 7.0), 500ms);
}

TEST(LeastLoaded, PicksHealthySessionWithFewestChannels)
{
    const std::array<session_load, 3> loads{{{true, 5}, {false, 0}, {true, 2}}};
    EXPECT_EQ(least_loaded(loads), 2U);
}

TEST(LeastLoaded, NoneHealthyMeansNoChoice)
{
    const std::array<session_load, 2> loads{{{false, 0}, {false, 0}}};
    EXPECT_EQ(least_loaded(loads), std::nullopt);
    EXPECT_EQ(least_loaded(std::span<const session_load>{}), std::nullopt);
}

TEST(LeastLoaded, SessionsOfADownGatewayAreALastResort)
{
    // Gateway A (sessions 0, 1) is down; gateway B (2, 3) is up but busier.
    const session_load loads[] = {{true, 0, true}, {true, 1, true}, {true, 40, false}, {true, 30, false}};
    EXPECT_EQ(least_loaded(loads), 3U);
    // Only the down gateway still has a session: use it rather than fail the client.
    const session_load only_down[] = {{true, 5, true}, {false, 0, false}};
    EXPECT_EQ(least_loaded(only_down), 0U);
}

TEST(LeastLoaded, AnOpenDoesNotQueueBehindAnotherWhenASessionIsIdle)
{
    // Session 0's only load is an open in flight (counted in channels); session 1 is idle.
    const session_load loads[] = {{true, 1, false, 1}, {true, 0, false, 0}};
    EXPECT_EQ(least_loaded(loads), 1U);
    // Every session has an open in flight: the least loaded still takes it.
    const session_load busy[] = {{true, 3, false, 1}, {true, 10, false, 2}};
    EXPECT_EQ(least_loaded(busy), 0U);
    // A down gateway's idle session is still a last resort.
    const session_load down[] = {{true, 3, false, 1}, {true, 0, true, 0}};
    EXPECT_EQ(least_loaded(down), 0U);
}

TEST(LeastLoaded, ATieGoesToTheSessionOnTheCallersLoop)
{
    // Sessions 0 and 2 are as idle as each other; 2 runs on the caller's loop.
    const session_load loads[] = {{true, 0}, {true, 3}, {true, 0, false, 0, true}};
    EXPECT_EQ(least_loaded(loads), 2U);
    EXPECT_EQ(least_loaded(loads, 1), 2U);
    // Locality only breaks ties: a busier local session does not win.
    const session_load busier[] = {{true, 1}, {true, 2, false, 0, true}};
    EXPECT_EQ(least_loaded(busier), 0U);
    // Nor does a local session of a down gateway.
    const session_load down[] = {{true, 4}, {true, 0, true, 0, true}};
    EXPECT_EQ(least_loaded(down), 0U);
}

TEST(NextWindow, GrowsOnlyWhileTheClientDrains)
{
    constexpr std::uint32_t initial = 2 << 20, max = 16 << 20;
    // The client took a whole window and keeps little queued: double, and grant up to it.
    auto step = next_window(initial, max, initial / 4, 0, initial);
    EXPECT_EQ(step.target, 4U << 20);
    EXPECT_EQ(step.adjust, (4U << 20) - initial / 4);
    // Not a whole window taken yet: no growth; a quarter used: topped up.
    step = next_window(initial, max, initial / 2, 0, initial - 1);
    EXPECT_EQ(step.target, initial);
    EXPECT_EQ(step.adjust, initial / 2);
    // Doubling stops at max.
    step = next_window(max, max, 0, 0, max);
    EXPECT_EQ(step.target, max);
    EXPECT_EQ(step.adjust, max);
    // A quarter of the window queued (the client lags): no growth however much it took, and what
    // is queued counts as granted.
    step = next_window(initial, max, 0, initial / 4, 10 * initial);
    EXPECT_EQ(step.target, initial);
    EXPECT_EQ(step.adjust, initial - initial / 4);
    step = next_window(initial, max, initial / 2, initial / 4, 0);
    EXPECT_EQ(step.adjust, 0U);
}

TEST(NextWindow, ASlowClientHoldsNoMoreThanItsWindow)
{
    constexpr std::uint32_t initial = 2 << 20, max = 16 << 20;
    // A client that never empties the queue: the target never moves, and nothing is granted
    // while the queue holds three quarters of it.
    std::uint32_t target = initial;
    for (std::uint64_t drained = 0; drained < 100 * std::uint64_t{initial}; drained += initial) {
        const auto step = next_window(target, max, 0, initial, drained);
        target = step.target;
        EXPECT_EQ(step.adjust, 0U);
    }
    EXPECT_EQ(target, initial);
    EXPECT_EQ(initial_channel_window(64 << 10), 64U << 10);
    EXPECT_EQ(initial_channel_window(std::uint64_t{1} << 30), initial);
}

TEST(LeastLoaded, SpreadsOverGatewaysByChannelCount)
{
    // Two gateways of two sessions each; each new channel goes to the emptiest session of either.
    std::vector<session_load> loads{{true, 0}, {true, 0}, {true, 0}, {true, 0}};
    for (std::size_t round = 0; round < 8; ++round) {
        const auto pick = least_loaded(loads, round % loads.size());
        ASSERT_TRUE(pick);
        ++loads[*pick].channels;
    }
    for (const auto& l : loads)
        EXPECT_EQ(l.channels, 2U);
}

TEST(RaceDelay, AQuarterKeepaliveWithinBoundsAndHalfConnectTimeout)
{
    using namespace std::chrono_literals;
    EXPECT_EQ(race_delay(10s, 2s), 500ms);
    EXPECT_EQ(race_delay(10s, 5s), 1000ms);  // capped at 1 s
    EXPECT_EQ(race_delay(10s, 200ms), 100ms); // at least 100 ms
    EXPECT_EQ(race_delay(600ms, 2s), 300ms);  // never more than half of connect_timeout
    EXPECT_EQ(race_delay(0ms, 2s), 500ms);
}

TEST(GatewayState, DownFromFailureUntilASessionIsEstablished)
{
    EXPECT_EQ(gateway_state_of(0, false), gateway_state::connecting);
    EXPECT_EQ(gateway_state_of(2, false), gateway_state::up);
    EXPECT_EQ(gateway_state_of(0, true), gateway_state::down);
    // A sibling session still up does not make a gateway that just lost one healthy.
    EXPECT_EQ(gateway_state_of(1, true), gateway_state::down);
    EXPECT_EQ(to_string(gateway_state::down), "down");
    EXPECT_EQ(to_string(gateway_state::up), "up");
    EXPECT_EQ(to_string(gateway_state::connecting), "connecting");
}

TEST(LeastLoaded, TiesGoToTheFirstAtOrAfterStart)
{
    const std::array<session_load, 3> loads{{{true, 1}, {true, 1}, {true, 1}}};
    EXPECT_EQ(least_loaded(loads, 0), 0U);
    EXPECT_EQ(least_loaded(loads, 1), 1U);
    EXPECT_EQ(least_loaded(loads, 5), 2U);
}

TEST(KeepaliveExpired, DeadExactlyAtIntervalTimesMaxMissed)
{
    const auto t0 = std::chrono::steady_clock::time_point{} + 1h;
    EXPECT_FALSE(keepalive_expired(t0, t0 + 5999ms, 2s, 3));
    EXPECT_TRUE(keepalive_expired(t0, t0 + 6000ms, 2s, 3));
}

TEST(KeepaliveExpired, DisabledByZeroIntervalOrZeroMisses)
{
    const auto t0 = std::chrono::steady_clock::time_point{};
    EXPECT_FALSE(keepalive_expired(t0, t0 + 24h, 0ms, 3));
    EXPECT_FALSE(keepalive_expired(t0, t0 + 24h, 5s, 0));
}

TEST(KeepaliveTick, QuarterIntervalWithFloor)
{
    EXPECT_EQ(keepalive_tick(4s), 1s);
    EXPECT_EQ(keepalive_tick(200ms), 100ms);
    EXPECT_EQ(keepalive_seconds(500ms), 1U);
    EXPECT_EQ(keepalive_seconds(5s), 5U);
}

TEST(HostKeyVerdict, MapsEveryLibssh2Result)
{
    EXPECT_EQ(verdict_from_check(LIBSSH2_KNOWNHOST_CHECK_MATCH), host_key_verdict::trusted);
    EXPECT_EQ(verdict_from_check(LIBSSH2_KNOWNHOST_CHECK_MISMATCH), host_key_verdict::mismatch);
    EXPECT_EQ(verdict_from_check(LIBSSH2_KNOWNHOST_CHECK_NOTFOUND), host_key_verdict::unknown);
    EXPECT_EQ(verdict_from_check(LIBSSH2_KNOWNHOST_CHECK_FAILURE), host_key_verdict::check_failed);
    EXPECT_EQ(verdict_from_check(12345), host_key_verdict::check_failed);
}

TEST(HostKeyVerdict, OnlyTrustedIsAccepted)
{
    EXPECT_EQ(refusal_for(host_key_verdict::trusted), std::nullopt);
    EXPECT_EQ(refusal_for(host_key_verdict::mismatch), tunnel_errc::host_key_mismatch);
    EXPECT_EQ(refusal_for(host_key_verdict::unknown), tunnel_errc::host_key_unknown);
    EXPECT_EQ(refusal_for(host_key_verdict::check_failed), tunnel_errc::host_key_unknown);
}

TEST(HostKeyType, KeyBitsAndNames)
{
    EXPECT_EQ(knownhost_key_bits(LIBSSH2_HOSTKEY_TYPE_ED25519), LIBSSH2_KNOWNHOST_KEY_ED25519);
    EXPECT_EQ(knownhost_key_bits(LIBSSH2_HOSTKEY_TYPE_ECDSA_256), LIBSSH2_KNOWNHOST_KEY_ECDSA_256);
    EXPECT_EQ(knownhost_key_bits(LIBSSH2_HOSTKEY_TYPE_RSA), LIBSSH2_KNOWNHOST_KEY_SSHRSA);
    EXPECT_EQ(knownhost_key_bits(LIBSSH2_HOSTKEY_TYPE_UNKNOWN), 0);
    EXPECT_EQ(host_key_type_name(LIBSSH2_HOSTKEY_TYPE_ED25519), "ssh-ed25519");
    EXPECT_EQ(host_key_type_name(99), "unknown");
}

TEST(Sha256Fingerprint, MatchesSshKeygenFormat)
{
    // sha256("") = e3b0c442...; ssh-keygen style base64 without padding.
    const std::array<unsigned char, 32> digest{
        0xe3, 0xb0, 0xc4, 0x42, 0x98, 0xfc, 0x1c, 0x14, 0x9a, 0xfb, 0xf4, 0xc8, 0x99, 0x6f, 0xb9, 0x24,
        0x27, 0xae, 0x41, 0xe4, 0x64, 0x9b, 0x93, 0x4c, 0xa4, 0x95, 0x99, 0x1b, 0x78, 0x52, 0xb8, 0x55};
    EXPECT_EQ(sha256_fingerprint(digest), "SHA256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU");
}

TEST(KeyMode, GroupOrOtherAccessIsTooOpen)
{
    EXPECT_FALSE(key_mode_too_open(0100600));
    EXPECT_FALSE(key_mode_too_open(0400));
    EXPECT_TRUE(key_mode_too_open(0640));
    EXPECT_TRUE(key_mode_too_open(0604));
    EXPECT_TRUE(key_mode_too_open(0610));
    EXPECT_EQ(mode_string(0100640), "0640");
}

TEST(TunnelErrc, IsAStdErrorCodeEnum)
{
    const std::error_code ec = tunnel_errc::channel_open_refused;
    EXPECT_EQ(ec, tunnel_errc::channel_open_refused);
    EXPECT_STREQ(ec.category().name(), "tunnel");
    const boost::system::error_code boost_ec = ec;
    EXPECT_TRUE(boost_ec == tunnel_errc::channel_open_refused);
    EXPECT_EQ(static_cast<std::error_code>(boost_ec), tunnel_errc::channel_open_refused);
}

TEST(FilterMethods, KeepsWantedOrderAndDropsUnsupported)
{
    const std::array<std::string_view, 3> supported{"ssh-rsa", "ssh-ed25519", "ecdsa-sha2-nistp256"};
    EXPECT_EQ(filter_methods("ssh-ed25519,rsa-sha2-512,ssh-rsa", supported), "ssh-ed25519,ssh-rsa");
    EXPECT_EQ(filter_methods("rsa-sha2-512", supported), "");
    EXPECT_EQ(filter_methods(",,ssh-rsa,", supported), "ssh-rsa");
    EXPECT_EQ(filter_methods("", supported), "");
}

TEST(ChannelOpenBucket, AnOpenAtABoundCountsInThatBoundsBucket)
{
    EXPECT_EQ(channel_open_bucket(0ns), 0U);
    EXPECT_EQ(channel_open_bucket(1ms), 0U); // le="0.001"
    EXPECT_EQ(channel_open_bucket(1ms + 1ns), 1U);
    EXPECT_EQ(channel_open_bucket(5s), channel_open_bounds.size() - 1);
}

TEST(ChannelOpenBucket, SlowerThanEveryBoundGoesToTheLastCount)
{
    EXPECT_EQ(channel_open_bucket(5s + 1ms), channel_open_bounds.size());
    EXPECT_EQ(channel_open_bucket(std::chrono::hours(1)), channel_open_latency{}.counts.size() - 1);
}
