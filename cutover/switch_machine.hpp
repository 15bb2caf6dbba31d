#pragma once
// The switch state machine of one service: pure, clock passed in, no sockets. The controller
// feeds it events and carries out the actions it returns.

#include "config/config.hpp"
#include "proxy/router.hpp"

#include <chrono>
#include <optional>
#include <string>
#include <string_view>
#include <variant>

namespace tunneld::cutover {

using proxy::route;
using proxy::side;
using time_point = std::chrono::steady_clock::time_point;

enum class service_state { serving, paused, draining, switching };
std::string_view to_string(service_state) noexcept;

struct switch_request {
    side to = side::new_side;
    config::switch_mode mode = config::switch_mode::drain;
    bool force = false;
};

/// What the controller must do after an event or a tick.
enum class action {
    none,
    cut_other_side,   ///< cut every client on the side that is no longer active
    run_pause_switch, ///< clients are held: run the quiesce/catch-up/promote steps, then
                      ///< complete_pause_switch
    auto_resumed,     ///< a manual pause reached its timeout; clients were released to the previous route
    pause_budget_exhausted, ///< a pause switch ran out of time: undo, clients released to the old route
    drain_deadline,         ///< drain_timeout reached: cut what is left on the draining side
};

/// Refusal with a reason the operator reads.
struct refusal {
    std::string reason;
    bool busy = false; ///< another switch on this service is under way
};

/// Result of an event: an action to carry out, or a refusal.
using outcome = std::variant<action, refusal>;

class switch_machine {
public:
    switch_machine(config::service_kind kind, route initial);

    const route& current_route() const { return route_; }
    service_state state() const { return state_; }
    /// The side that is being drained (state draining) or that held clients came from (switching).
    std::optional<side> draining_side() const { return draining_; }
    /// When the current pause or drain ends on its own; nullopt when nothing is pending.
    std::optional<time_point> deadline() const { return deadline_; }

    /// Starts a switch. kill: flips and asks to cut the other side. drain: flips, old clients may
    /// finish until now + drain_timeout. pause: holds new clients until complete_pause_switch or
    /// now + pause_timeout. A switch to the side already active (no split) is a no-op.
    outcome start_switch(const switch_request& request, time_point now, config::duration drain_timeout,
                         config::duration pause_timeout);
    /// The pause switch's steps all succeeded: flip to the target, release held clients, cut the old side.
    outcome complete_pause_switch();
    /// The pause switch's steps failed: release held clients to the unchanged route.
    void abort_pause_switch();
    /// The draining side has no clients left.
    void drained();

    /// Holds new clients until resume() or now + timeout.
    outcome pause(time_point now, config::duration timeout);
    outcome resume();
    /// kind = "tcp" only: `percent` of new clients go to new.
    outcome split(unsigned percent, bool sticky);

    /// Fires timeouts that are due at `now`.
    action tick(time_point now);

private:
    config::service_kind kind_;
    route route_;
    service_state state_ = service_state::serving;
    std::optional<time_point> deadline_;
    std::optional<side> draining_;
    std::optional<side> target_; ///< state switching: where the pause switch goes
};

} // namespace tunneld::cutover
