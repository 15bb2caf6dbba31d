#pragma once
// Carries out a coordinator's effects against etcd (docs/fleet.md, "The fleet switch"): the
// claim, each phase's compare-and-swap, the read-back after a lost answer; the servers' part is
// the member's own (a hook), and the acknowledgements come from the membership's view.

#include "fleet/coordinator.hpp"

#include <boost/asio/awaitable.hpp>
#include <functional>

namespace tunneld::fleet {

struct executor_hooks {
    /// The servers' part of the switch, once: lag gate, catch-up, fence, promote, journalled
    /// under `epoch` (on the single host: the controller's steps).
    std::function<boost::asio::awaitable<servers_switched>(std::int64_t epoch, side target)> switch_servers;
    /// A progress line for the operator (tunnelctl's progress, the log); may be empty.
    std::function<void(const std::string&)> progress;
};

struct executor_options {
    std::chrono::milliseconds call_timeout{2000}; ///< each etcd call's deadline
    /// The view is looked at as soon as it changes; this is only how long a wait may last without
    /// a change (a safety net).
    std::chrono::milliseconds poll{250};
};

/// Runs `machine` (fresh, or from coordinator::take_over) for `service` until it is done:
/// performs each effect on `client` and feeds its answer back, and feeds the service's member
/// records from `members.view()` as soon as the view changed (a view listener wakes it). For its
/// run the records are watched live (membership::watch_members); none is fed before that watch
/// has read them. Runs on the client's executor, like the membership.
boost::asio::awaitable<fleet_result> run_coordinator(etcd::client& client, key_layout keys, std::string service,
                                                     coordinator& machine, const membership& members,
                                                     executor_hooks hooks, executor_options options = {});

} // namespace tunneld::fleet
