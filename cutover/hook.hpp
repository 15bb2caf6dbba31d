#pragma once
// Runs an operator's hook (promote_command, fence_command) with /bin/sh -c and a deadline.
// Blocking: call it off the event loop.

#include <chrono>
#include <functional>
#include <string>
#include <utility>
#include <vector>

namespace tunneld::cutover {

struct hook_result {
    bool ok = false;        ///< exited with status 0 before the deadline
    bool timed_out = false; ///< killed (with its whole process group) at the deadline
    int exit_status = -1;   ///< exit code, or 128 + signal, or -1 if it never ran
    std::string output;     ///< stdout and stderr interleaved, at most `max_output` bytes
    std::string message;    ///< one line for the log: "exited 0 after 12ms", "killed after 5s"
};

/// Runs `command` with /bin/sh -c in its own process group, stdin from /dev/null, the
/// environment of the daemon plus `environment`; kills the group with SIGKILL when `timeout`
/// runs out; whatever the hook left running in its group is killed when it exits. Never throws
/// for a failing command.
/// `started`, if set, is called with the hook's process group id as soon as it runs (for the
/// journal: a daemon restarted meanwhile finds the group and waits for it or kills it).
hook_result run_hook(const std::string& command, std::chrono::milliseconds timeout,
                     const std::vector<std::pair<std::string, std::string>>& environment = {},
                     const std::function<void(int)>& started = nullptr);

/// `message`, plus the hook's last non-empty output line (at most 200 bytes) when it failed:
/// "exited 1 after 12ms: ERROR: permission denied".
std::string describe(const hook_result& result);

inline constexpr std::size_t max_hook_output = 16 * 1024;

} // namespace tunneld::cutover
