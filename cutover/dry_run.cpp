#include "cutover/dry_run.hpp"

#include <algorithm>
#include <fmt/format.h>

namespace tunneld::cutover {

namespace {

using std::chrono::milliseconds;

std::string side_name(proxy::side s)
{
    return std::string(proxy::to_string(s));
}

std::string duration_text(milliseconds d)
{
    return format_seconds(static_cast<double>(d.count()) / 1000.0);
}

/// The longest timed round trip among the server checks; nullopt when none was timed.
std::optional<milliseconds> slowest_round_trip(const std::vector<preflight_check>& checks)
{
    std::optional<milliseconds> slowest;
    for (const auto& c : checks)
        if (c.round_trip && (!slowest || *c.round_trip > *slowest)) slowest = c.round_trip;
    return slowest;
}

std::vector<std::string> plan_of(const dry_run_input& in)
{
    const auto& s = *in.settings;
    const auto to = side_name(in.to);
    const auto from = side_name(in.from);
    std::vector<std::string> plan;
    if (in.mode == config::switch_mode::kill) {
        plan.push_back(fmt::format("send new clients of {} to {}", s.name, to));
        plan.push_back(fmt::format("persist the choice in {}", in.state_file));
        plan.push_back(fmt::format("cut the {} clients on {}", in.to == proxy::side::new_side ? in.clients_old
                                                                                                : in.clients_new,
                                   from));
        return plan;
    }
    if (in.mode == config::switch_mode::drain) {
        plan.push_back(fmt::format("send new clients of {} to {}", s.name, to));
        plan.push_back(fmt::format("persist the choice in {}", in.state_file));
        plan.push_back(fmt::format("let the {} clients on {} finish, cut what is left after {}",
                                   in.to == proxy::side::new_side ? in.clients_old : in.clients_new, from,
                                   duration_text(s.drain_timeout)));
        return plan;
    }
    plan.push_back(fmt::format("hold new clients of {} (budget {}; back on {} if it runs out)", s.name,
                               duration_text(s.pause_timeout), from));
    if (s.kind == config::service_kind::redis && in.to == proxy::side::new_side) {
        plan.push_back(fmt::format("hold the {} clients on old at their next request boundary; connect and replay "
                                   "their sessions on new meanwhile",
                                   in.clients_old));
        plan.push_back("old: CLIENT PAUSE WRITE (expires by itself if tunneld dies)");
        plan.push_back("wait until new's replication offset equals old's, link up");
        if (s.fence != config::redis_fence::none)
            plan.push_back("fence old: CONFIG SET min-replicas-to-write 100 (refuses writes); CONFIG REWRITE");
        else
            plan.push_back("old is not fenced by tunneld (fence = none)");
        if (s.fence_command) plan.push_back("fence old: run fence_command");
        plan.push_back(s.promote_command ? "promote new: run promote_command" : "promote new: REPLICAOF NO ONE; CONFIG REWRITE");
        plan.push_back(fmt::format("persist the choice in {}", in.state_file));
        if (s.fence == config::redis_fence::replicaof && s.fence_replicaof)
            plan.push_back(fmt::format("old follows new: REPLICAOF {} (a read-only replica, warm for a rollback); CONFIG REWRITE",
                                       s.fence_replicaof->to_string()));
        plan.push_back(fmt::format("release held clients to new; CLIENT UNPAUSE old; move the {} clients from old "
                                   "to new with their sessions",
                                   in.clients_old));
    } else if (s.kind == config::service_kind::redis) {
        plan.push_back(fmt::format("hold the {} clients on new at their next request boundary; connect and replay "
                                   "their sessions on old meanwhile",
                                   in.clients_new));
        plan.push_back("new: CLIENT PAUSE WRITE; wait until old (a replica of new) caught up");
        plan.push_back("promote old: REPLICAOF NO ONE; restore min-replicas-to-write; CONFIG REWRITE");
        plan.push_back(s.rollback_replicaof
                           ? fmt::format("new becomes a replica of {}", s.rollback_replicaof->to_string())
                           : std::string("fence new: min-replicas-to-write 100"));
        plan.push_back(fmt::format("persist the choice in {}", in.state_file));
        plan.push_back(fmt::format("release held clients to old; CLIENT UNPAUSE new; move the {} clients from new "
                                   "to old with their sessions",
                                   in.clients_new));
    } else if (s.kind == config::service_kind::postgres) {
        plan.push_back(fmt::format("let the {} clients on old finish, up to {}; cut the rest", in.clients_old,
                                   duration_text(s.drain_timeout)));
        plan.push_back("wait until new replayed old's WAL insert position");
        plan.push_back(s.fence_command ? "fence old: run fence_command" : "old is not fenced (no fence_command)");
        plan.push_back(s.promote_command ? "promote new: run promote_command" : "promote new: pg_promote()");
        plan.push_back(fmt::format("persist the choice in {}", in.state_file));
        plan.push_back("release held clients to new");
    } else {
        plan.push_back(fmt::format("send clients to {}", to));
        plan.push_back(fmt::format("persist the choice in {}", in.state_file));
        plan.push_back(fmt::format("cut the clients on {}; release held clients", from));
    }
    return plan;
}

} // namespace

dry_run_report make_dry_run_report(const dry_run_input& in)
{
    const auto& s = *in.settings;
    dry_run_report report;
    report.plan = plan_of(in);
    const bool replicated = s.kind != config::service_kind::tcp;

    if (in.from == in.to) {
        report.checks.push_back({"side", check_verdict::pass,
                                 fmt::format("{} is already on {}: nothing to do", s.name, side_name(in.to)), {}});
        report.plan.clear();
        report.would_proceed = true;
        return report;
    }
    if (replicated && in.mode != config::switch_mode::pause) {
        const bool allowed = in.force;
        report.checks.push_back(
            {"mode", allowed ? check_verdict::pass : check_verdict::fail,
             fmt::format("mode {} on a {} service lets both sides take writes{}", config::to_string(in.mode),
                         config::to_string(s.kind), allowed ? " (forced)" : "; use --mode pause, or --force"),
             {}});
    }
    if (in.gate)
        report.checks.push_back({"lag gate", in.gate->allowed ? check_verdict::pass : check_verdict::fail,
                                 in.gate->reason, {}});
    report.checks.insert(report.checks.end(), in.server_checks.begin(), in.server_checks.end());
    report.checks.push_back({"state file writable",
                             in.state_file_problem ? check_verdict::fail : check_verdict::pass,
                             in.state_file_problem.value_or(in.state_file), {}});

    if (in.mode == config::switch_mode::pause && replicated) {
        const int trips = s.kind == config::service_kind::redis ? redis_round_trips_in_hold
                                                                : postgres_round_trips_in_hold;
        const auto rtt = slowest_round_trip(in.server_checks);
        const bool lag_known = in.lag && in.lag->bytes;
        const std::uint64_t behind = lag_known ? *in.lag->bytes : 0;
        preflight_check hold{"estimated hold within pause_timeout", check_verdict::unchecked, {}, {}};
        if (!rtt) {
            hold.detail = "no round trip measured";
        } else if (!lag_known) {
            hold.detail = "lag unknown";
        } else if (behind > 0 && !in.catch_up_bytes_per_second) {
            hold.detail = fmt::format("new is {} behind and its catch-up rate is not known yet", format_bytes(behind));
        } else {
            auto estimate = *rtt * trips;
            if (behind > 0)
                estimate += milliseconds(static_cast<std::int64_t>(
                    1000.0 * static_cast<double>(behind) / std::max(1.0, *in.catch_up_bytes_per_second)));
            estimate = std::max(estimate, milliseconds(1));
            report.estimated_hold = estimate;
            const bool fits = estimate < s.pause_timeout;
            hold.verdict = fits ? check_verdict::pass : check_verdict::fail;
            hold.detail = fmt::format("about {} ({} round trips of {}ms{}) against a budget of {}",
                                      duration_text(estimate), trips, rtt->count(),
                                      behind > 0 ? fmt::format(" + {} to replay", format_bytes(behind)) : "",
                                      duration_text(s.pause_timeout));
        }
        report.checks.push_back(std::move(hold));
    }
    report.would_proceed = std::none_of(report.checks.begin(), report.checks.end(),
                                        [](const preflight_check& c) { return c.verdict == check_verdict::fail; });
    return report;
}

} // namespace tunneld::cutover
