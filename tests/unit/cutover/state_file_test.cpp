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
                                         .updated = "2026-11-21T23:50:00Z"};
    s.services["app"] = service_record{.active = "old",
                                       .split_percent = 30,
                                       .split = true,
                                       .sticky = true,
                                       .fenced = false,
                                       .updated = "2026-11-21T23:51:00Z"};
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
    EXPECT_TRUE(std::holds_alternative<std::string>(decode(R"({"version": 2, "services": {}})")));
    EXPECT_TRUE(std::holds_alternative<std::string>(
        decode(R"({"version": 1, "services": {"r": {"active": "new", "side": "sideways"}}})")));
    EXPECT_TRUE(std::holds_alternative<std::string>(decode(
        R"({"version": 1, "services": {"r": {"active": "split", "side": "old", "split_percent": 101}}})")));
    EXPECT_TRUE(std::holds_alternative<std::string>(
        decode(R"({"version": 1, "services": {"r": {"active": "new", "side": "new", "fenced": "yes"}}})")));
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

} // namespace
} // namespace tunneld::cutover
