#pragma once
// The systemd notification protocol (sd_notify(3)) for Type=notify units. Every call is a no-op
// returning false when NOTIFY_SOCKET is unset, so the daemon runs the same way in a terminal.

#include <chrono>
#include <optional>
#include <string>
#include <string_view>

namespace tunneld::daemon::notify {

/// "READY=1": listeners are up (also after a reload finished).
bool ready();
/// "RELOADING=1" with MONOTONIC_USEC, as systemd 253+ expects from Type=notify-reload units;
/// follow with ready() when the reload is done, whether it was applied or rejected.
bool reloading();
/// "STOPPING=1": the daemon stopped accepting and drains its clients.
bool stopping();
/// "WATCHDOG=1": the event loop is alive; send every watchdog_interval() / 2.
bool watchdog();
/// "STATUS=<text>": one line shown by `systemctl status`; newlines become spaces.
bool status(std::string_view text);

/// The interval systemd expects WATCHDOG=1 within (WatchdogSec=), or nullopt when the watchdog
/// is off for this process.
std::optional<std::chrono::microseconds> watchdog_interval();

/// The datagram reloading() sends, for a CLOCK_MONOTONIC reading `now` (pure; for tests).
std::string reloading_message(std::chrono::microseconds now);
/// The datagram status() sends (pure; for tests).
std::string status_message(std::string_view text);

} // namespace tunneld::daemon::notify
