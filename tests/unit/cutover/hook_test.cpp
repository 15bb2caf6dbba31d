// Hooks: exit status, output, environment, and the kill at the deadline.

#include "cutover/hook.hpp"

#include <gtest/gtest.h>

namespace tunneld::cutover {
namespace {

using namespace std::chrono_literals;

TEST(RunHook, ReportsExitStatusAndOutput)
{
    const auto ok = run_hook("echo hello; echo oops >&2", 5s);
    EXPECT_TRUE(ok.ok);
    EXPECT_EQ(ok.exit_status, 0);
    EXPECT_EQ(ok.output, "hello\noops\n");
    const auto failed = run_hook("exit 3", 5s);
    EXPECT_FALSE(failed.ok);
    EXPECT_EQ(failed.exit_status, 3);
    EXPECT_NE(failed.message.find("exited 3"), std::string::npos);
    EXPECT_EQ(describe(run_hook("echo first; echo 'no such replica' >&2; exit 1", 5s)).substr(0, 8),
              "exited 1");
    EXPECT_TRUE(describe(run_hook("echo first; echo 'no such replica' >&2; exit 1", 5s))
                    .ends_with(": no such replica"));
    EXPECT_EQ(describe(ok), ok.message);
}

TEST(RunHook, PassesEnvironment)
{
    const auto result = run_hook("printf %s \"$TUNNELD_SERVICE\"", 5s, {{"TUNNELD_SERVICE", "redis"}});
    EXPECT_EQ(result.output, "redis");
}

TEST(RunHook, KillsTheWholeGroupAtTheDeadline)
{
    const auto start = std::chrono::steady_clock::now();
    const auto result = run_hook("sleep 30 & sleep 30", 300ms);
    EXPECT_FALSE(result.ok);
    EXPECT_TRUE(result.timed_out);
    EXPECT_LT(std::chrono::steady_clock::now() - start, 3s);
    EXPECT_NE(result.message.find("timeout"), std::string::npos);
}

TEST(RunHook, BackgroundChildHoldingThePipeDoesNotDelayTheResult)
{
    const auto start = std::chrono::steady_clock::now();
    const auto result = run_hook("sleep 30 & echo started", 5s);
    EXPECT_TRUE(result.ok);
    EXPECT_LT(std::chrono::steady_clock::now() - start, 3s);
}

} // namespace
} // namespace tunneld::cutover
