// The watch's resume decision and the local copy of a prefix, fed messages by hand: a resumed
// watch starts at the last delivered revision + 1, nothing is delivered twice, progress
// notifications move the start forward, compaction asks for a re-read.
#include "fleet/watch.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace tunneld::fleet {
namespace {

using etcd::event;
using etcd::key_value;
using etcd::watch_message;
using verdict = watch_cursor::verdict;

event put(std::string key, std::string value, std::int64_t revision)
{
    return {event::type::put, key_value{std::move(key), std::move(value), revision, revision, 1, 0}};
}
event del(std::string key, std::int64_t revision) { return {event::type::del, key_value{std::move(key), {}, 0, revision, 0, 0}}; }

watch_message with_events(std::vector<event> events)
{
    watch_message m;
    m.revision = events.empty() ? 0 : events.back().kv.mod_revision;
    m.events = std::move(events);
    return m;
}

TEST(WatchCursor, StartsAfterTheReadAndAdvancesPastEachEvent)
{
    watch_cursor cursor(10);
    EXPECT_EQ(cursor.next_revision(), 11);
    watch_message created;
    created.created = true;
    created.revision = 10;
    EXPECT_EQ(cursor.on_message(created).what, verdict::progress);
    EXPECT_EQ(cursor.next_revision(), 11);

    const auto d = cursor.on_message(with_events({put("a", "1", 11), put("b", "1", 11), del("a", 13)}));
    EXPECT_EQ(d.what, verdict::deliver);
    EXPECT_EQ(d.events.size(), 3u);
    EXPECT_EQ(cursor.next_revision(), 14);
}

TEST(WatchCursor, NeverDeliversARevisionTwice)
{
    watch_cursor cursor(10);
    cursor.on_message(with_events({put("a", "1", 11), put("a", "2", 12)}));
    // A replay after a resume (from a proxy, or a server that does not honour start_revision).
    const auto d = cursor.on_message(with_events({put("a", "2", 12), put("a", "3", 13)}));
    ASSERT_EQ(d.events.size(), 1u);
    EXPECT_EQ(d.events[0].kv.value, "3");
    EXPECT_EQ(cursor.on_message(with_events({put("a", "3", 13)})).what, verdict::progress);
    EXPECT_EQ(cursor.next_revision(), 14);
}

TEST(WatchCursor, ProgressNotificationMovesTheResumePointForwardOnly)
{
    watch_cursor cursor(10);
    watch_message progress;
    progress.revision = 40; // other keys changed up to 40; none under the prefix
    EXPECT_TRUE(progress.progress());
    EXPECT_EQ(cursor.on_message(progress).what, verdict::progress);
    EXPECT_EQ(cursor.next_revision(), 41);
    progress.revision = 20;
    cursor.on_message(progress);
    EXPECT_EQ(cursor.next_revision(), 41);
}

TEST(WatchCursor, CompactionAsksForAReadThenResumesAfterIt)
{
    watch_cursor cursor(10);
    watch_message canceled;
    canceled.canceled = true;
    canceled.compact_revision = 25;
    EXPECT_EQ(cursor.on_message(canceled).what, verdict::resync);
    cursor.resynced(30);
    EXPECT_EQ(cursor.next_revision(), 31);

    watch_message other;
    other.canceled = true;
    other.cancel_reason = "permission denied";
    EXPECT_EQ(cursor.on_message(other).what, verdict::restart);
    EXPECT_EQ(cursor.next_revision(), 31);
}

TEST(PrefixMirror, SnapshotThenChanges)
{
    prefix_mirror mirror;
    mirror.reset({5, {key_value{"a", "1", 2, 2, 1, 0}, key_value{"b", "1", 3, 3, 1, 0}}, 2, false});
    EXPECT_EQ(mirror.revision(), 5);
    mirror.apply({put("c", "1", 6), del("a", 7), put("b", "2", 8)});
    EXPECT_EQ(mirror.revision(), 8);
    ASSERT_EQ(mirror.entries().size(), 2u);
    EXPECT_EQ(mirror.entries().at("b").value, "2");
    EXPECT_EQ(mirror.entries().at("c").value, "1");
    mirror.reset({9, {}, 0, false});
    EXPECT_TRUE(mirror.entries().empty());
}

TEST(PrefixMirror, AReadReplacesOnlyItsOwnRange)
{
    prefix_mirror mirror;
    mirror.reset({5, {key_value{"s/epoch", "e", 2, 2, 1, 0}, key_value{"s/members/a", "1", 3, 3, 1, 0},
                      key_value{"s/members/b", "1", 4, 4, 1, 0}, key_value{"s/pause", "p", 5, 5, 1, 0}},
                  4, false});
    // b left and c came: a read of the members' range at 12 replaces that range alone.
    mirror.replace("s/members/",
                   {12, {key_value{"s/members/a", "2", 3, 10, 2, 0}, key_value{"s/members/c", "1", 11, 11, 1, 0}}, 2,
                    false});
    EXPECT_EQ(mirror.revision(), 12);
    ASSERT_EQ(mirror.entries().size(), 4u);
    EXPECT_EQ(mirror.entries().at("s/epoch").value, "e");
    EXPECT_EQ(mirror.entries().at("s/members/a").value, "2");
    EXPECT_EQ(mirror.entries().at("s/members/c").value, "1");
    EXPECT_EQ(mirror.entries().count("s/members/b"), 0u);
    EXPECT_EQ(mirror.entries().at("s/pause").value, "p");
    // An empty read empties the range; the revision never goes back.
    mirror.replace("s/pause", {7, {}, 0, false});
    EXPECT_EQ(mirror.revision(), 12);
    EXPECT_EQ(mirror.entries().count("s/pause"), 0u);
    EXPECT_EQ(mirror.entries().size(), 3u);
}

} // namespace
} // namespace tunneld::fleet
