#include "cutover/switch_machine.hpp"

#include <fmt/format.h>

namespace tunneld::cutover {

std::string_view to_string(service_state s) noexcept
{
    switch (s) {
    case service_state::serving:
        return "serving";
    case service_state::paused:
        return "paused";
    case service_state::draining:
        return "draining";
    case service_state::switching:
        return "switching";
    }
    return "serving";
}

switch_machine::switch_machine(config::service_kind kind, route initial) : kind_(kind), route_(initial)
{
    route_.hold = false;
}

outcome switch_machine::start_switch(const switch_request& request, time_point now,
                                     config::duration drain_timeout, config::duration pause_timeout)
{
    if (state_ == service_state::switching || state_ == service_state::draining)
        return refusal{fmt::format("another switch is under way (state {})", to_string(state_)), true};
    if (state_ == service_state::paused)
        return refusal{"the service is paused; run `tunnelctl resume` first"};
    if (!route_.split_percent && route_.active == request.to) return action::none;

    const side from = route_.split_percent ? proxy::other(request.to) : route_.active;
    switch (request.mode) {
    case config::switch_mode::kill:
        route_ = proxy::route_to(request.to);
        draining_ = from;
        return action::cut_other_side;
    case config::switch_mode::drain:
        route_ = proxy::route_to(request.to);
        state_ = service_state::draining;
        draining_ = from;
        deadline_ = now + drain_timeout;
        return action::none;
    case config::switch_mode::pause:
        route_.hold = true;
        state_ = service_state::switching;
        draining_ = from;
        target_ = request.to;
        deadline_ = now + pause_timeout;
        return action::run_pause_switch;
    }
    return refusal{"unknown mode"};
}

outcome switch_machine::complete_pause_switch()
{
    if (state_ != service_state::switching || !target_) return refusal{"no pause switch is under way"};
    route_ = proxy::route_to(*target_);
    state_ = service_state::serving;
    deadline_.reset();
    target_.reset();
    return action::cut_other_side;
}

void switch_machine::abort_pause_switch()
{
    if (state_ != service_state::switching) return;
    route_.hold = false;
    state_ = service_state::serving;
    deadline_.reset();
    target_.reset();
    draining_.reset();
}

void switch_machine::drained()
{
    if (state_ != service_state::draining) return;
    state_ = service_state::serving;
    deadline_.reset();
    draining_.reset();
}

outcome switch_machine::pause(time_point now, config::duration timeout)
{
    if (state_ == service_state::switching || state_ == service_state::draining)
        return refusal{fmt::format("a switch is under way (state {})", to_string(state_)), true};
    if (state_ == service_state::paused) return refusal{"the service is already paused"};
    route_.hold = true;
    state_ = service_state::paused;
    deadline_ = now + timeout;
    return action::none;
}

outcome switch_machine::resume()
{
    if (state_ != service_state::paused) return refusal{"the service is not paused"};
    route_.hold = false;
    state_ = service_state::serving;
    deadline_.reset();
    return action::none;
}

outcome switch_machine::split(unsigned percent, bool sticky)
{
    if (kind_ != config::service_kind::tcp)
        return refusal{fmt::format("split is only for kind = \"tcp\": a {} service with two primaries taking "
                                   "writes would lose data",
                                   config::to_string(kind_))};
    if (percent > 100) return refusal{fmt::format("percent must be 0..100, not {}", percent)};
    if (state_ != service_state::serving)
        return refusal{fmt::format("the service is {}; wait for it to serve", to_string(state_)),
                       state_ != service_state::paused};
    route_.split_percent = static_cast<std::uint8_t>(percent);
    route_.sticky = sticky;
    return action::none;
}

action switch_machine::tick(time_point now)
{
    if (!deadline_ || now < *deadline_) return action::none;
    switch (state_) {
    case service_state::paused:
        route_.hold = false;
        state_ = service_state::serving;
        deadline_.reset();
        return action::auto_resumed;
    case service_state::switching:
        abort_pause_switch();
        return action::pause_budget_exhausted;
    case service_state::draining:
        // Clients still on the draining side are cut; drained() follows when they are gone.
        deadline_.reset();
        return action::drain_deadline;
    case service_state::serving:
        break;
    }
    return action::none;
}

} // namespace tunneld::cutover
