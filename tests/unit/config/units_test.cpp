#include "config/config.hpp"

#include <gtest/gtest.h>

namespace tunneld::config {
namespace {

using namespace std::chrono_literals;

TEST(ParseDuration, AcceptsEveryUnit)
{
    EXPECT_EQ(parse_duration("250ms"), duration(250));
    EXPECT_EQ(parse_duration("5s"), duration(5s));
    EXPECT_EQ(parse_duration("2m"), duration(2min));
    EXPECT_EQ(parse_duration("1h"), duration(1h));
    EXPECT_EQ(parse_duration("0s"), duration(0));
    EXPECT_EQ(parse_duration("0ms"), duration(0));
}

TEST(ParseDuration, RejectsMalformedText)
{
    for (const char* text :
         {"", "5", "s", "-5s", "+5s", "5 s", " 5s", "5s ", "1.5s", "5sec", "5S", "5d", "ms", "5ms5", "0x10s"})
        EXPECT_EQ(parse_duration(text), std::nullopt) << text;
}

TEST(ParseDuration, RejectsOverflow)
{
    EXPECT_EQ(parse_duration("9223372036854775807ms"), duration(9223372036854775807));
    EXPECT_EQ(parse_duration("9223372036854775808ms"), std::nullopt);
    EXPECT_EQ(parse_duration("9223372036854776s"), std::nullopt);
    EXPECT_EQ(parse_duration("99999999999999999999999h"), std::nullopt);
}

TEST(ParseSize, AcceptsBinaryAndDecimalUnits)
{
    EXPECT_EQ(parse_size("0B"), 0u);
    EXPECT_EQ(parse_size("512B"), 512u);
    EXPECT_EQ(parse_size("64KiB"), 64u * 1024);
    EXPECT_EQ(parse_size("1MiB"), 1024u * 1024);
    EXPECT_EQ(parse_size("2GiB"), 2ull * 1024 * 1024 * 1024);
    EXPECT_EQ(parse_size("1TiB"), 1ull << 40);
    EXPECT_EQ(parse_size("1KB"), 1000u);
    EXPECT_EQ(parse_size("3MB"), 3'000'000u);
    EXPECT_EQ(parse_size("2GB"), 2'000'000'000u);
}

TEST(ParseSize, RejectsMalformedTextAndOverflow)
{
    for (const char* text :
         {"", "0", "64", "KiB", "-1B", "1.5MiB", "1 MiB", "1kib", "1KIB", "1mb", "1K", "1M"})
        EXPECT_EQ(parse_size(text), std::nullopt) << text;
    EXPECT_EQ(parse_size("18446744073709551615B"), 18446744073709551615ull);
    EXPECT_EQ(parse_size("18446744073709551616B"), std::nullopt);
    EXPECT_EQ(parse_size("16777216TiB"), std::nullopt);
    EXPECT_EQ(parse_size("16777215TiB"), 16777215ull << 40);
}

TEST(ParseEndpoint, AcceptsHostsAndBracketedIpv6)
{
    EXPECT_EQ(parse_endpoint("127.0.0.1:6379"), (endpoint{"127.0.0.1", 6379}));
    EXPECT_EQ(parse_endpoint("redis.internal:1"), (endpoint{"redis.internal", 1}));
    EXPECT_EQ(parse_endpoint("[::1]:65535"), (endpoint{"::1", 65535}));
    EXPECT_EQ(parse_endpoint("[fe80::1%eth0]:22"), (endpoint{"fe80::1%eth0", 22}));
}

TEST(ParseEndpoint, RejectsBadPortsAndShapes)
{
    for (const char* text :
         {"", "host", "host:", ":80", "host:0", "host:65536", "host:-1", "host:+80", "host:8o", "::1:80",
          "[::1]", "[::1]80", "[::1]:", "[]:80", "[1.2.3.4]:80", "a b:80", "host:99999999999"})
        EXPECT_EQ(parse_endpoint(text), std::nullopt) << text;
}

TEST(Endpoint, ToStringBracketsIpv6)
{
    EXPECT_EQ((endpoint{"10.0.0.1", 22}).to_string(), "10.0.0.1:22");
    EXPECT_EQ((endpoint{"::1", 9740}).to_string(), "[::1]:9740");
}

TEST(Enums, ToStringSpellsTheConfigWords)
{
    EXPECT_EQ(to_string(service_kind::postgres), "postgres");
    EXPECT_EQ(to_string(switch_mode::drain), "drain");
    EXPECT_EQ(to_string(redis_fence::min_replicas), "min-replicas");
}

} // namespace
} // namespace tunneld::config
