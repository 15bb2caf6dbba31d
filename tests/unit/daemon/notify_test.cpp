#include "daemon/notify.hpp"

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <gtest/gtest.h>
#include <optional>
#include <string>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

namespace tunneld::daemon {
namespace {

/// An AF_UNIX datagram socket standing in for systemd's notification socket, named by
/// NOTIFY_SOCKET for the test's lifetime.
class NotifySocket : public ::testing::Test {
protected:
    void SetUp() override
    {
        char dir_template[] = "/tmp/tunneld-notify-XXXXXX";
        ASSERT_NE(mkdtemp(dir_template), nullptr);
        dir_ = dir_template;
        path_ = dir_ / "notify.sock";
        fd_ = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        ASSERT_GE(fd_, 0);
        sockaddr_un address{};
        address.sun_family = AF_UNIX;
        std::strncpy(address.sun_path, path_.c_str(), sizeof(address.sun_path) - 1);
        ASSERT_EQ(bind(fd_, reinterpret_cast<const sockaddr*>(&address), sizeof(address)), 0);
        timeval timeout{.tv_sec = 2, .tv_usec = 0};
        setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
        setenv("NOTIFY_SOCKET", path_.c_str(), 1);
    }

    void TearDown() override
    {
        unsetenv("NOTIFY_SOCKET");
        unsetenv("WATCHDOG_USEC");
        unsetenv("WATCHDOG_PID");
        if (fd_ >= 0) close(fd_);
        std::error_code ignored;
        std::filesystem::remove_all(dir_, ignored);
    }

    /// The next datagram, or nullopt after 2 s.
    std::optional<std::string> receive()
    {
        char buffer[4096];
        const ssize_t n = recv(fd_, buffer, sizeof(buffer), 0);
        if (n < 0) return std::nullopt;
        return std::string(buffer, static_cast<std::size_t>(n));
    }

    std::filesystem::path dir_;
    std::filesystem::path path_;
    int fd_ = -1;
};

TEST_F(NotifySocket, ReadyStoppingWatchdogArriveAsDatagrams)
{
    EXPECT_TRUE(notify::ready());
    EXPECT_EQ(receive(), "READY=1");
    EXPECT_TRUE(notify::stopping());
    EXPECT_EQ(receive(), "STOPPING=1");
    EXPECT_TRUE(notify::watchdog());
    EXPECT_EQ(receive(), "WATCHDOG=1");
}

TEST_F(NotifySocket, ReloadingCarriesTheMonotonicClock)
{
    timespec before{};
    clock_gettime(CLOCK_MONOTONIC, &before);
    EXPECT_TRUE(notify::reloading());
    const auto message = receive();
    ASSERT_TRUE(message);
    const std::string prefix = "RELOADING=1\nMONOTONIC_USEC=";
    ASSERT_TRUE(message->starts_with(prefix)) << *message;
    const long long usec = std::stoll(message->substr(prefix.size()));
    const long long before_usec = before.tv_sec * 1000000LL + before.tv_nsec / 1000;
    EXPECT_GE(usec, before_usec);
    EXPECT_LT(usec, before_usec + 10'000'000);
}

TEST_F(NotifySocket, StatusIsOneLine)
{
    EXPECT_TRUE(notify::status("serving 2 services\nredis: old"));
    EXPECT_EQ(receive(), "STATUS=serving 2 services redis: old");
}

TEST_F(NotifySocket, WatchdogIntervalComesFromTheEnvironment)
{
    EXPECT_EQ(notify::watchdog_interval(), std::nullopt);
    setenv("WATCHDOG_USEC", "30000000", 1);
    setenv("WATCHDOG_PID", std::to_string(getpid()).c_str(), 1);
    EXPECT_EQ(notify::watchdog_interval(), std::chrono::seconds(30));
    // The watchdog is meant for another process: not ours to feed.
    setenv("WATCHDOG_PID", std::to_string(getpid() + 1).c_str(), 1);
    EXPECT_EQ(notify::watchdog_interval(), std::nullopt);
}

TEST(Notify, WithoutNotifySocketEveryCallIsANoOp)
{
    unsetenv("NOTIFY_SOCKET");
    EXPECT_FALSE(notify::ready());
    EXPECT_FALSE(notify::reloading());
    EXPECT_FALSE(notify::stopping());
    EXPECT_FALSE(notify::watchdog());
    EXPECT_FALSE(notify::status("x"));
}

TEST(Notify, MessagesArePure)
{
    EXPECT_EQ(notify::reloading_message(std::chrono::microseconds(123)), "RELOADING=1\nMONOTONIC_USEC=123");
    EXPECT_EQ(notify::status_message("a\r\nb"), "STATUS=a  b");
}

} // namespace
} // namespace tunneld::daemon
