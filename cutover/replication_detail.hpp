#pragma once
// Helpers shared by the redis and postgres replication implementations; not a public API.

#include "config/config.hpp"
#include "cutover/hook.hpp"
#include "cutover/replication.hpp"

#include <algorithm>
#include <chrono>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace tunneld::cutover::detail {

using clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

/// "host:port" ("[v6]:port" for an IPv6 literal).
std::string endpoint_text(const config::endpoint& endpoint);

/// Time left until `deadline`, capped at `cap`, never below 1ms (a zero timeout means "forever"
/// to both client libraries).
milliseconds time_left(clock::time_point deadline, milliseconds cap);

/// Replaces every occurrence of `secret` in `text` with "***".
std::string scrub(std::string text, const std::string& secret);

/// Milliseconds since `start`, as "12ms".
std::string since(clock::time_point start);

/// Runs a promote/fence hook with the service's names in its environment (no credentials).
/// `observer` hears the hook's process group when it starts and 0 when it has ended.
hook_result run_service_hook(const std::string& command, std::string_view step,
                             const config::service_config& service, const config::endpoint& old_endpoint,
                             const config::endpoint& new_endpoint, clock::time_point deadline,
                             const std::function<void(int)>& observer = nullptr);

/// How long unfence_command may run: an unfence follows a failure, when no switch budget is left.
inline constexpr std::chrono::seconds unfence_command_limit{10};

/// The fence_command half of unfence(old): runs unfence_command if configured and appends its
/// outcome to `lifted` (what the built-in unfence did, "" when nothing); failure if the hook
/// failed. Without unfence_command, says that what fence_command did stays.
step_result lift_fence_command(const config::service_config& service, const config::endpoint& old_endpoint,
                               const config::endpoint& new_endpoint, std::string lifted);

/// A dry run's lines for the fence hooks: fence_command and unfence_command are never run by a
/// dry run, so each is listed unchecked; a fence_command without unfence_command says that an
/// undone switch leaves old fenced until it is lifted by hand.
void add_fence_hook_checks(const config::service_config& service, std::vector<preflight_check>& checks);

/// The pause between two polls of a catch-up or promotion wait.
inline constexpr milliseconds poll_interval{5};
/// How often a server that did not answer is asked again (a restart takes tens of milliseconds
/// at least; faster asks only fill its log with refused connections).
inline constexpr milliseconds reask_interval{100};

/// Calls `ask` until its answer converts to true or `until` is near, every reask_interval (a
/// server restarting is away for a moment); at least once. Returns the last answer.
template <class Ask> auto ask_until_answered(Ask&& ask, clock::time_point until)
{
    auto answer = ask();
    while (!answer && clock::now() + reask_interval < until) {
        std::this_thread::sleep_for(reask_interval);
        answer = ask();
    }
    return answer;
}

} // namespace tunneld::cutover::detail
