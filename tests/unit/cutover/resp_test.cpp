// INFO parsing: every split, every bad byte; missing or malformed fields are absent, never zero.

#include "cutover/resp.hpp"

#include <gtest/gtest.h>

namespace tunneld::cutover {
namespace {

constexpr std::string_view replica_info = "# Replication\r\n"
                                          "role:slave\r\n"
                                          "master_host:127.0.0.1\r\n"
                                          "master_port:6379\r\n"
                                          "master_link_status:up\r\n"
                                          "master_last_io_seconds_ago:1\r\n"
                                          "master_sync_in_progress:0\r\n"
                                          "slave_read_repl_offset:1234\r\n"
                                          "slave_repl_offset:1234\r\n"
                                          "slave_priority:100\r\n"
                                          "connected_slaves:0\r\n"
                                          "master_replid:6c3e1bb3b1f2d5b8b2a9d3e5b5bdbf0a2d3c4e5f\r\n"
                                          "master_repl_offset:1234\r\n";

TEST(InfoParser, ParsesRealReplicaAnswer)
{
    const auto info = parse_replication(replica_info);
    EXPECT_EQ(info.role, redis_role::slave);
    EXPECT_EQ(info.slave_repl_offset, 1234u);
    EXPECT_EQ(info.master_repl_offset, 1234u);
    EXPECT_EQ(info.master_link_up, true);
    EXPECT_EQ(info.master_sync_in_progress, false);
    EXPECT_EQ(info.master_last_io_seconds_ago, 1);
    EXPECT_EQ(info.connected_slaves, 0u);
    EXPECT_EQ(info.master_host, "127.0.0.1");
    EXPECT_EQ(info.master_port, 6379);
}

TEST(InfoParser, SameFieldsWhateverTheSplit)
{
    const auto whole = parse_info(replica_info);
    ASSERT_EQ(whole.size(), 12u);
    for (std::size_t cut = 0; cut <= replica_info.size(); ++cut) {
        info_parser parser;
        parser.feed(replica_info.substr(0, cut));
        parser.feed(replica_info.substr(cut));
        EXPECT_EQ(parser.finish(), whole) << "cut at " << cut;
    }
    info_parser bytewise;
    for (char c : replica_info)
        bytewise.feed(std::string_view(&c, 1));
    EXPECT_EQ(bytewise.finish(), whole);
}

TEST(InfoParser, TruncatedLastLineIsDropped)
{
    // Every prefix: a field appears only once its line is complete, so a number is never cut short.
    for (std::size_t cut = 0; cut < replica_info.size(); ++cut) {
        const auto prefix = replica_info.substr(0, cut);
        const auto fields = parse_info(prefix);
        const auto info = parse_replication(fields);
        if (info.slave_repl_offset) {
            EXPECT_EQ(*info.slave_repl_offset, 1234u) << "cut at " << cut;
        }
        if (info.master_repl_offset) {
            EXPECT_EQ(*info.master_repl_offset, 1234u) << "cut at " << cut;
        }
    }
    EXPECT_FALSE(parse_replication("role:slave\r\nslave_repl_offset:12").slave_repl_offset);
}

TEST(InfoParser, AcceptsLfOnly)
{
    const auto info = parse_replication("role:master\nmaster_repl_offset:77\nconnected_slaves:2\n");
    EXPECT_EQ(info.role, redis_role::master);
    EXPECT_EQ(info.master_repl_offset, 77u);
    EXPECT_EQ(info.connected_slaves, 2u);
}

TEST(InfoParser, GarbageOffsetsAreAbsentNotZero)
{
    for (std::string_view bad :
         {"", "-1", "+5", " 5", "5 ", "5x", "0x10", "1e3", "99999999999999999999999", "1.5", "abc"}) {
        const auto text = "role:master\r\nmaster_repl_offset:" + std::string(bad) +
                          "\r\nslave_repl_offset:" + std::string(bad) +
                          "\r\nconnected_slaves:" + std::string(bad) + "\r\n";
        const auto info = parse_replication(text);
        EXPECT_FALSE(info.master_repl_offset) << "'" << bad << "'";
        EXPECT_FALSE(info.slave_repl_offset) << "'" << bad << "'";
        EXPECT_FALSE(info.connected_slaves) << "'" << bad << "'";
    }
}

TEST(InfoParser, GarbageFlagsAndRoleAreAbsent)
{
    const auto info =
        parse_replication("role:primary\r\nmaster_link_status:UP\r\nmaster_sync_in_progress:2\r\n"
                          "master_last_io_seconds_ago:soon\r\nmaster_port:70000\r\n");
    EXPECT_FALSE(info.role);
    EXPECT_FALSE(info.master_link_up);
    EXPECT_FALSE(info.master_sync_in_progress);
    EXPECT_FALSE(info.master_last_io_seconds_ago);
    EXPECT_FALSE(info.master_port);
    EXPECT_EQ(parse_replication("master_link_status:down\n").master_link_up, false);
    EXPECT_EQ(parse_replication("master_last_io_seconds_ago:-1\n").master_last_io_seconds_ago, -1);
}

TEST(InfoParser, LinesWithBadBytesAreDropped)
{
    const std::string text = std::string("role:master\r\nmaster_repl_offset:1\0"
                                         "2\r\n",
                                         32) +
                             "conn\x01"
                             "ected_slaves:3\r\nmaster_host:h\xff\r\n:5\r\nnocolon\r\n";
    const auto fields = parse_info(text);
    EXPECT_EQ(fields.size(), 1u);
    EXPECT_EQ(fields.at("role"), "master");
}

TEST(InfoParser, ConflictingDuplicateIsDroppedForGood)
{
    const auto fields = parse_info("master_repl_offset:5\r\nmaster_repl_offset:6\r\nmaster_repl_offset:"
                                   "5\r\nrole:master\r\nrole:master\r\n");
    EXPECT_FALSE(fields.contains("master_repl_offset"));
    EXPECT_EQ(fields.at("role"), "master");
}

TEST(InfoParser, SurvivesEveryByteValue)
{
    std::string noise;
    for (int i = 0; i < 4096; ++i)
        noise.push_back(static_cast<char>((i * 7919 + 13) & 0xff));
    for (std::size_t cut = 0; cut < noise.size(); cut += 97) {
        info_parser parser;
        parser.feed(std::string_view(noise).substr(0, cut));
        parser.feed(std::string_view(noise).substr(cut));
        const auto fields = parser.finish();
        for (const auto& [key, value] : fields) {
            EXPECT_FALSE(key.empty());
            for (char c : value)
                EXPECT_TRUE(c >= 0x20 && c <= 0x7e);
        }
    }
}

TEST(InfoParser, OverlongLineIsDropped)
{
    info_parser parser;
    parser.feed("role:master\r\nmaster_host:");
    parser.feed(std::string(info_parser::max_line + 10, 'a'));
    parser.feed("\r\nconnected_slaves:1\r\n");
    const auto fields = parser.finish();
    EXPECT_FALSE(fields.contains("master_host"));
    EXPECT_EQ(fields.at("connected_slaves"), "1");
}

TEST(ParseUint, StrictDecimal)
{
    EXPECT_EQ(parse_uint("0"), 0u);
    EXPECT_EQ(parse_uint("18446744073709551615"), 18446744073709551615u);
    EXPECT_FALSE(parse_uint("18446744073709551616"));
    EXPECT_FALSE(parse_uint("-0"));
    EXPECT_FALSE(parse_uint("007"));
    EXPECT_FALSE(parse_uint("09223372036854775807"));
    EXPECT_FALSE(parse_int("-07"));
    EXPECT_EQ(parse_int("0"), 0);
    EXPECT_EQ(parse_int("-7"), -7);
    EXPECT_FALSE(parse_int("- 7"));
}

} // namespace
} // namespace tunneld::cutover
