// The switch history: bounded, filtered per service, stored and read back exactly; a malformed
// file is an error that says what is wrong, never a crash.

#include "cutover/history.hpp"

#include <filesystem>
#include <fstream>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

namespace tunneld::cutover {
namespace {

using ::testing::HasSubstr;

history_entry entry(std::string service, history_action action, int n)
{
    history_entry e;
    e.time = "2026-11-30T08:00:0" + std::to_string(n % 10) + "Z";
    e.service = std::move(service);
    e.action = action;
    e.from = "old";
    e.to = "new";
    e.mode = "pause";
    e.uid = 1000u + static_cast<unsigned>(n);
    e.user = "ops";
    e.held_ms = 20 + n;
    e.cut = static_cast<std::uint64_t>(n);
    e.result = history_result::done;
    e.reason = "redis switched to new (clients held " + std::to_string(20 + n) + "ms)";
    return e;
}

TEST(SwitchHistory, KeepsTheNewestEntriesUpToItsCapacity)
{
    switch_history history(3);
    for (int n = 0; n < 5; ++n)
        history.append(entry("redis", history_action::switch_side, n));
    const auto all = history.entries();
    ASSERT_EQ(all.size(), 3u);
    EXPECT_EQ(all.front().uid, 1002u);
    EXPECT_EQ(all.back().uid, 1004u);
}

TEST(SwitchHistory, FiltersByServiceAndLimitsToTheNewest)
{
    switch_history history;
    history.append(entry("redis", history_action::switch_side, 1));
    history.append(entry("pg", history_action::pause, 2));
    history.append(entry("redis", history_action::rollback, 3));
    history.append(entry("redis", history_action::resume, 4));
    const auto redis = history.entries("redis");
    ASSERT_EQ(redis.size(), 3u);
    EXPECT_EQ(redis[1].action, history_action::rollback);
    const auto newest = history.entries("redis", 1);
    ASSERT_EQ(newest.size(), 1u);
    EXPECT_EQ(newest[0].action, history_action::resume);
    EXPECT_EQ(history.entries("nope").size(), 0u);
}

TEST(SwitchHistory, EncodesAndDecodesEveryField)
{
    switch_history history;
    history.append(entry("redis", history_action::switch_side, 1));
    auto refused = entry("redis", history_action::split, 2);
    refused.result = history_result::refused;
    refused.held_ms.reset();
    refused.cut.reset();
    refused.uid.reset();
    refused.forced = true;
    history.append(refused);
    auto decoded = switch_history::decode(history.encode());
    ASSERT_TRUE(std::holds_alternative<switch_history>(decoded)) << std::get<std::string>(decoded);
    EXPECT_EQ(std::get<switch_history>(decoded).entries(), history.entries());
}

TEST(SwitchHistory, DecodeKeepsOnlyTheNewestWithinCapacity)
{
    switch_history history;
    for (int n = 0; n < 10; ++n)
        history.append(entry("redis", history_action::switch_side, n));
    auto decoded = switch_history::decode(history.encode(), 4);
    ASSERT_TRUE(std::holds_alternative<switch_history>(decoded));
    const auto kept = std::get<switch_history>(decoded).entries();
    ASSERT_EQ(kept.size(), 4u);
    EXPECT_EQ(kept.front().uid, 1006u);
}

TEST(SwitchHistory, MalformedDocumentsAreErrorsThatSayWhy)
{
    const std::pair<const char*, const char*> cases[] = {
        {"", "not valid JSON"},
        {"[]", "not a JSON object"},
        {R"({"version":2,"entries":[]})", "version"},
        {R"({"version":1})", "entries"},
        {R"({"version":1,"entries":[1]})", "entry 0: not an object"},
        {R"({"version":1,"entries":[{"service":"r","action":"jump","result":"done"}]})", "action"},
        {R"({"version":1,"entries":[{"service":"r","action":"pause","result":"meh"}]})", "result"},
        {R"({"version":1,"entries":[{"action":"pause","result":"done"}]})", "service"},
        {R"({"version":1,"entries":[{"service":"r","action":"pause","result":"done","uid":-1}]})", "uid"},
        {R"({"version":1,"entries":[{"service":"r","action":"pause","result":"done","held_ms":"5"}]})",
         "held_ms"},
        {R"({"version":1,"entries":[{"service":7,"action":"pause","result":"done"}]})", "service"},
    };
    for (const auto& [text, expected] : cases) {
        auto decoded = switch_history::decode(text);
        ASSERT_TRUE(std::holds_alternative<std::string>(decoded)) << text;
        EXPECT_THAT(std::get<std::string>(decoded), HasSubstr(expected)) << text;
    }
}

class HistoryFile : public ::testing::Test {
protected:
    void SetUp() override
    {
        char pattern[] = "/tmp/tunneld-history-XXXXXX";
        directory_ = ::mkdtemp(pattern);
    }
    void TearDown() override { std::filesystem::remove_all(directory_); }
    std::filesystem::path directory_;
};

TEST_F(HistoryFile, LivesBesideTheStateFile)
{
    EXPECT_EQ(history_path_for("/var/lib/tunneld/state.json"), "/var/lib/tunneld/history.json");
}

TEST_F(HistoryFile, MissingFileIsAnEmptyHistoryAndASavedOneReadsBack)
{
    const auto path = directory_ / "history.json";
    auto empty = load_history(path);
    ASSERT_TRUE(std::holds_alternative<switch_history>(empty));
    EXPECT_EQ(std::get<switch_history>(empty).size(), 0u);

    switch_history history;
    history.append(entry("redis", history_action::switch_side, 1));
    ASSERT_EQ(save_history(path, history), std::nullopt);
    auto loaded = load_history(path);
    ASSERT_TRUE(std::holds_alternative<switch_history>(loaded));
    EXPECT_EQ(std::get<switch_history>(loaded).entries(), history.entries());
    EXPECT_FALSE(std::filesystem::exists(directory_ / "history.json.tmp"));
}

TEST_F(HistoryFile, CorruptFileIsAnErrorNamingIt)
{
    const auto path = directory_ / "history.json";
    std::ofstream(path) << "{ not json";
    auto loaded = load_history(path);
    ASSERT_TRUE(std::holds_alternative<std::string>(loaded));
    EXPECT_THAT(std::get<std::string>(loaded), HasSubstr(path.string()));
}

} // namespace
} // namespace tunneld::cutover
