#include "daemon/notify.hpp"

#include <cstdint>
#include <systemd/sd-daemon.h>
#include <time.h>

namespace tunneld::daemon::notify {
namespace {

bool send(const std::string& message)
{
    // sd_notify returns 0 without NOTIFY_SOCKET, > 0 when sent, < 0 on a failed send; a failed
    // notification must never stop the daemon, so the caller only learns whether it went out.
    return sd_notify(0, message.c_str()) > 0;
}

std::chrono::microseconds monotonic_now()
{
    timespec ts{};
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return std::chrono::seconds(ts.tv_sec) +
           std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::nanoseconds(ts.tv_nsec));
}

} // namespace

std::string reloading_message(std::chrono::microseconds now)
{
    return "RELOADING=1\nMONOTONIC_USEC=" + std::to_string(now.count());
}

std::string status_message(std::string_view text)
{
    std::string message = "STATUS=";
    for (const char c : text)
        message += (c == '\n' || c == '\r') ? ' ' : c;
    return message;
}

bool ready()
{
    return send("READY=1");
}
bool reloading()
{
    return send(reloading_message(monotonic_now()));
}
bool stopping()
{
    return send("STOPPING=1");
}
bool watchdog()
{
    return send("WATCHDOG=1");
}
bool status(std::string_view text)
{
    return send(status_message(text));
}

std::optional<std::chrono::microseconds> watchdog_interval()
{
    std::uint64_t usec = 0;
    if (sd_watchdog_enabled(0, &usec) <= 0 || usec == 0) return std::nullopt;
    return std::chrono::microseconds(usec);
}

} // namespace tunneld::daemon::notify
