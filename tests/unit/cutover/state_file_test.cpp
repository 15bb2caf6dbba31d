#include "cutover/state_file.hpp"

#include <filesystem>
#include <fstream>
#include <gtest/gtest.h>
#include <unistd.h>

namespace tunneld::cutover {
namespace {

class StateFile : public ::testing::Test {
protected:
    void SetUp() override
    {
        dir_ = std::filesystem::temp_directory_path() /
               ("tunneld-state-" + std::to_string(::getpid()) + "-" +
                ::testing::UnitTest::GetInstance()->current_test_info()->name());
        std::filesystem::create_directories(dir_);
    }
    void TearDown() override { std::filesystem::remove_all(dir_); }
    void write(const std::string& text) { std::ofstream(dir_ / "state.json") << text; }
    std::filesystem::path dir_;
};

TEST_F(StateFile, MissingFileIsAFirstStart)
{
    const auto loaded = load_state(dir_ / "state.json");
    ASSERT_TRUE(std::holds_alternative<state>(loaded));
    EXPECT_TRUE(std::get<state>(loaded).services.empty());
}

TEST_F(StateFile, SaveThenLoadRoundTrips)
{
    state s;
    s.services["redis"] = service_record{.active = "new",
                                         .split_percent = 0,
                                         .split = false,
                                         .sticky = false,
                                         .fenced = true,
                                         .new_fenced = false,
                                         .min_replicas_before_fence = {{"old", 1}, {"new", 0}},
                                         .updated = "2026-11-21T23:50:00Z",
                                         .journal = std::nullopt};
    s.services["app"] = service_record{.active = "old",
                                       .split_percent = 30,
                                       .split = true,
                                       .sticky = true,
                                       .fenced = false,
                                       .new_fenced = true,
                                       .min_replicas_before_fence = {},
                                       .updated = "2026-11-21T23:51:00Z",
                                       .journal = std::nullopt};
    ASSERT_EQ(save_state(dir_ / "state.json", s), std::nullopt);
    const auto loaded = load_state(dir_ / "state.json");
    ASSERT_TRUE(std::holds_alternative<state>(loaded));
    EXPECT_EQ(std::get<state>(loaded), s);
    EXPECT_FALSE(std::filesystem::exists(dir_ / "state.json.tmp"))
        << "the temp file is renamed, not left behind";
}

TEST_F(StateFile, CorruptFileIsAnErrorNamingTheFile)
{
    write("{\"version\": 1, \"services\": {\"redis\": {\"active\": \"sideways\"");
    const auto loaded = load_state(dir_ / "state.json");
    ASSERT_TRUE(std::holds_alternative<state_error>(loaded));
    const auto& message = std::get<state_error>(loaded).message;
    EXPECT_NE(message.find((dir_ / "state.json").string()), std::string::npos) << message;
    EXPECT_NE(message.find("corrupt"), std::string::npos) << message;
}

TEST(StateDecode, RejectsWhatCouldBeMisreadAsOld)
{
    EXPECT_TRUE(std::holds_alternative<std::string>(decode("")));
    EXPECT_TRUE(std::holds_alternative<std::string>(decode("[]")));
    EXPECT_TRUE(std::holds_alternative<std::string>(decode(R"({"services": {}})"))) << "no version";
    EXPECT_TRUE(std::holds_alternative<std::string>(decode(R"({"version": 3, "services": {}})")));
    EXPECT_TRUE(std::holds_alternative<std::string>(
        decode(R"({"version": 1, "services": {"r": {"active": "new", "side": "sideways"}}})")));
    EXPECT_TRUE(std::holds_alternative<std::string>(decode(
        R"({"version": 1, "services": {"r": {"active": "split", "side": "old", "split_percent": 101}}})")));
    EXPECT_TRUE(std::holds_alternative<std::string>(
        decode(R"({"version": 1, "services": {"r": {"active": "new", "side": "new", "fenced": "yes"}}})")));
    for (const auto* before : {R"("min_replicas_before_fence": 1)", R"("min_replicas_before_fence": {"sideways": 1})",
                               R"("min_replicas_before_fence": {"old": -1})",
                               R"("min_replicas_before_fence": {"old": "1"})"}) {
        const auto text =
            std::string(R"({"version": 1, "services": {"r": {"active": "new", "side": "new", )") + before + "}}}";
        const auto decoded = decode(text);
        ASSERT_TRUE(std::holds_alternative<std::string>(decoded)) << text;
        EXPECT_NE(std::get<std::string>(decoded).find("min_replicas_before_fence"), std::string::npos);
    }
}

TEST(StateDecode, SplitRecordKeepsItsPercent)
{
    const auto decoded = decode(
        R"({"version": 1, "services": {"app": {"active": "split", "side": "old", "split_percent": 10}}})");
    ASSERT_TRUE(std::holds_alternative<state>(decoded));
    const auto& record = std::get<state>(decoded).services.at("app");
    EXPECT_TRUE(record.split);
    EXPECT_EQ(record.split_percent, 10u);
}

TEST(StateJournal, RoundTripsAndMakesTheFileVersionTwoOnlyWhileAJournalIsThere)
{
    state s;
    s.services["redis"].active = "old";
    s.services["app"].active = "new";
    EXPECT_NE(encode(s).find("\"version\": 1"), std::string::npos) << "no journal: readable by any tunneld";

    s.services["redis"].journal = journal_record{.id = "redis-1",
                                                 .from = "old",
                                                 .to = "new",
                                                 .mode = "pause",
                                                 .step = "promote",
                                                 .pause_expires_unix_ms = 1764500000123,
                                                 .hook_pgid = 4242};
    const auto text = encode(s);
    EXPECT_NE(text.find("\"version\": 2"), std::string::npos)
        << "a tunneld that predates the journal refuses the file instead of routing by a half-done switch";
    const auto decoded = decode(text);
    ASSERT_TRUE(std::holds_alternative<state>(decoded)) << std::get<std::string>(decoded);
    EXPECT_EQ(std::get<state>(decoded), s);
}

TEST(StateJournal, MalformedJournalIsAnErrorNotIgnored)
{
    for (const auto* journal :
         {R"("x")", R"({"id": "a", "from": "old", "to": "new", "mode": "pause"})",
          R"({"id": "a", "from": "old", "to": "sideways", "mode": "pause", "step": "promote"})",
          R"({"id": "a", "from": "old", "to": "new", "mode": "pause", "step": "levitate"})",
          R"({"id": "a", "from": "old", "to": "new", "mode": "pause", "step": "promote", "hook_pgid": 0})"}) {
        const auto text = std::string(R"({"version": 2, "services": {"r": {"active": "old", "side": "old", "journal": )") +
                          journal + "}}}";
        EXPECT_TRUE(std::holds_alternative<std::string>(decode(text))) << journal;
    }
}

} // namespace
} // namespace tunneld::cutover
