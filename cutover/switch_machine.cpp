#include "cutover/switch_machine.hpp"

#include <fmt/format.h>
#include <utility>

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
    case service_state::recovering:
        return "recovering";
    case service_state::unresolved:
        return "unresolved";
    }
    return "serving";
}

switch_machine::switch_machine(config::service_kind kind, route initial, std::string name, bool fenced,
                               std::optional<switch_journal> journal, bool new_fenced)
    : kind_(kind), name_(std::move(name)), route_(initial), fenced_(fenced), new_fenced_(new_fenced),
      journal_(std::move(journal))
{
    route_.hold = false;
    route_.refuse = false;
    if (journal_) {
        // Nobody is routed anywhere until the servers say which side may take writes.
        state_ = service_state::recovering;
        phase_ = phase::recovering;
        route_.hold = true;
        journal_on_disk_ = true;
    }
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
    case service_state::recovering:
    case service_state::unresolved:
        break;
    }
    return action::none;
}

} // namespace tunneld::cutover

// ---- The switch as events and effects ----

namespace tunneld::cutover {

using proxy::close_reason;

namespace {

template <class... F> struct overloaded : F... {
    using F::operator()...;
};

std::string_view side_name(side s)
{
    return proxy::to_string(s);
}

} // namespace

std::string_view to_string(verdict v) noexcept
{
    switch (v) {
    case verdict::done:
        return "done";
    case verdict::refused:
        return "refused";
    case verdict::busy:
        return "busy";
    case verdict::failed:
        return "failed";
    case verdict::unknown_service:
        return "unknown_service";
    }
    return "failed";
}

std::string_view to_string(journal_step s) noexcept
{
    switch (s) {
    case journal_step::pause_writes:
        return "pause_writes";
    case journal_step::fence:
        return "fence";
    case journal_step::promote:
        return "promote";
    case journal_step::follow:
        return "follow";
    case journal_step::roll_back:
        return "roll_back";
    }
    return "pause_writes";
}

std::optional<journal_step> parse_journal_step(std::string_view text) noexcept
{
    for (auto s : {journal_step::pause_writes, journal_step::fence, journal_step::promote, journal_step::follow,
                   journal_step::roll_back})
        if (to_string(s) == text) return s;
    return std::nullopt;
}

bool answers(const effect& e) noexcept
{
    return std::holds_alternative<pause_writes>(e) || std::holds_alternative<drain_clients>(e) ||
           std::holds_alternative<wait_caught_up>(e) || std::holds_alternative<promote>(e) ||
           std::holds_alternative<check_roles>(e) || std::holds_alternative<fence>(e) ||
           std::holds_alternative<follow>(e) || std::holds_alternative<roll_back>(e) || std::holds_alternative<persist>(e) ||
           std::holds_alternative<watch_drain>(e) || std::holds_alternative<wait_fleet>(e);
}

step_kind kind_of_answer(const effect& e) noexcept
{
    return std::visit(overloaded{
                          [](const pause_writes&) { return step_kind::pause_writes; },
                          [](const drain_clients&) { return step_kind::drain_clients; },
                          [](const wait_caught_up&) { return step_kind::wait_caught_up; },
                          [](const promote&) { return step_kind::promote; },
                          [](const check_roles&) { return step_kind::check_roles; },
                          [](const fence&) { return step_kind::fence; },
                          [](const follow&) { return step_kind::follow; },
                          [](const roll_back&) { return step_kind::roll_back; },
                          [](const auto&) { return step_kind::persist; },
                      },
                      e);
}

step switch_machine::on(const event& e, time_point now)
{
    return std::visit(
        overloaded{
            [&](const switch_command& c) { return start(c, now); },
            [&](const pause_command& c) -> step {
                if (busy())
                    return {{}, command_outcome{verdict::busy, fmt::format("a switch of {} is under way", name_), false}};
                const auto o = pause(now, c.timeout);
                if (const auto* refused = std::get_if<refusal>(&o))
                    return {{}, command_outcome{refused->busy ? verdict::busy : verdict::refused,
                                                "pause refused: " + refused->reason, false}};
                return {{hold_new_clients{},
                         log_line{false, fmt::format("paused for up to {}", format_duration(c.timeout))}},
                        command_outcome{verdict::done, {}, false}};
            },
            [&](const resume_command&) -> step {
                const auto o = resume();
                if (const auto* refused = std::get_if<refusal>(&o))
                    return {{}, command_outcome{verdict::refused, "resume refused: " + refused->reason, false}};
                return {{release{route_}, log_line{false, "resumed"}}, command_outcome{verdict::done, {}, false}};
            },
            [&](const split_command& c) -> step {
                if (busy())
                    return {{}, command_outcome{verdict::busy, fmt::format("a switch of {} is under way", name_), false}};
                const auto o = split(c.percent, c.sticky);
                if (const auto* refused = std::get_if<refusal>(&o))
                    return {{}, command_outcome{refused->busy ? verdict::busy : verdict::refused,
                                                "split refused: " + refused->reason, false}};
                phase_ = phase::persisting_split;
                return {{release{route_}, persist{}}, std::nullopt};
            },
            [&](const step_done& d) { return on_done(d, now); },
            [&](const recovered& r) { return on_recovered(r, now); },
            [&](const resolve_command& r) { return on_resolve(r, now); },
            [&](const fence_lost& f) { return on_fence_lost(f, now); },
            [&](const fleet_decision& d) { return on_fleet(d, now); },
            [&](const deadline_reached&) { return on_deadline(now); },
            [&](const side_empty&) -> step {
                if (phase_ != phase::draining) return {};
                const auto from = draining_.value_or(proxy::other(route_.active));
                drained();
                phase_ = phase::idle;
                return {{progress{fmt::format("drained {}", side_name(from))},
                         log_line{false, fmt::format("switch to {} done", side_name(route_.active))}},
                        done_outcome(fmt::format("{} switched to {}", name_, side_name(route_.active)))};
            },
        },
        e);
}

command_outcome switch_machine::fail(std::string message)
{
    return command_outcome{verdict::failed, std::move(message)};
}

command_outcome switch_machine::done_outcome(std::string message)
{
    command_outcome outcome{verdict::done, std::move(message)};
    outcome.adopted = std::exchange(adopted_, false);
    if (outcome.adopted) outcome.message += "; adopted: the servers were already switched";
    return outcome;
}

long long switch_machine::held_ms(time_point now) const
{
    return std::chrono::duration_cast<std::chrono::milliseconds>(now - held_since_).count();
}

std::string switch_machine::budget_text() const
{
    return fmt::format("pause budget {} ran out", format_duration(limits_.pause_timeout));
}

step switch_machine::start(const switch_command& c, time_point now)
{
    if (phase_ == phase::unresolved) return {{}, command_outcome{verdict::refused, "switch refused: " + problem_}};
    if (busy())
        return {{}, command_outcome{verdict::busy, fmt::format("another switch of {} is under way", name_), false}};
    const auto& request = c.request;
    const bool replicated_kind = kind_ != config::service_kind::tcp;
    if (replicated_kind && c.seen && state_ == service_state::serving && !route_.split_percent &&
        route_.active != request.to) {
        const auto where = locate_servers(request.to, *c.seen);
        if (where.at == servers_at::target) return adopt(c, where.reason, now);
        // Postgres shows neither a fence nor a lineage: two primaries may be a finished switch
        // there, and its own gate decides as before.
        if (where.at == servers_at::neither && kind_ == config::service_kind::redis && !request.force) {
            const auto reason = "switch refused: " + where.reason;
            return {{log_line{true, reason}}, command_outcome{verdict::refused, reason}};
        }
    }
    step out;
    if (replicated_kind && request.mode != config::switch_mode::pause && !request.force) {
        const auto reason =
            fmt::format("switch refused: mode {} on a {} service would let both sides take writes; "
                        "use --mode pause (promotes and fences) or --force",
                        config::to_string(request.mode), config::to_string(kind_));
        return {{}, command_outcome{verdict::refused, reason}};
    }
    if (replicated_kind && request.to == side::new_side && request.mode == config::switch_mode::pause && !c.fleet) {
        const auto reading = c.lag ? *c.lag
                                   : unknown_lag(c.replicated ? "no probe has answered yet"
                                                              : "no probe configured for this service",
                                                 now);
        const auto gate = check_gate(reading, c.limits.max_lag, c.limits.max_lag_seconds, request.force, now,
                                     c.limits.max_lag_age);
        if (!gate.allowed) {
            const auto reason = "switch refused: " + gate.reason;
            return {{log_line{true, reason}}, command_outcome{verdict::refused, reason}};
        }
        if (gate.forced) out.effects.push_back(log_line{true, "switch to new forced by operator: " + gate.reason});
        out.effects.push_back(progress{gate.forced ? gate.reason : "lag gate passed: " + gate.reason});
    }

    const auto started = start_switch(request, now, c.limits.drain_timeout, c.limits.pause_timeout);
    if (const auto* refused = std::get_if<refusal>(&started)) {
        out.done = command_outcome{refused->busy ? verdict::busy : verdict::refused,
                                   "switch refused: " + refused->reason};
        return out;
    }
    const auto a = std::get<action>(started);
    if (a == action::none && state_ == service_state::serving) {
        out.effects.push_back(progress{fmt::format("{} is already on {}", name_, side_name(request.to))});
        out.done = command_outcome{verdict::done, {}, false};
        return out;
    }
    out.effects.push_back(log_line{false, fmt::format("switch to {} mode={} started", side_name(request.to),
                                                      config::to_string(request.mode))});
    take(c);
    if (replicated_ && replicated_kind && a == action::run_pause_switch)
        journal_ = switch_journal{c.id, *draining_, request.to, request.mode, journal_step::pause_writes, std::nullopt};
    if (a != action::run_pause_switch) return flip(std::move(out));
    hold_clients(out, now,
                 fmt::format("holding new clients of {} (budget {})", name_, format_duration(limits_.pause_timeout)));
    if (c.fleet) {
        // The servers' steps wait for the fleet: every member holds, then one of them runs them.
        phase_ = phase::awaiting_fleet;
        out.effects.push_back(wait_fleet{deadline_.value_or(now)});
        return out;
    }
    auto first = pause_step(now);
    out.effects.insert(out.effects.end(), first.effects.begin(), first.effects.end());
    out.done = first.done;
    return out;
}

step switch_machine::flip(step out)
{
    phase_ = phase::persisting_flip;
    out.effects.push_back(release{route_});
    out.effects.push_back(persist{});
    return out;
}

void switch_machine::hold_clients(step& out, time_point now, std::string line)
{
    held_since_ = now;
    out.effects.push_back(hold_new_clients{});
    if (!line.empty()) out.effects.push_back(progress{std::move(line)});
    if (moves_clients()) {
        // This host's own clients stop at a request boundary before any server changes: none of
        // their requests is then inside old when its writes pause (it would be answered after
        // the pause, by a replica). Three fifths of the budget: the server steps need the rest.
        out.effects.push_back(quiesce_clients{*draining_, now + limits_.pause_timeout * 3 / 5});
    }
}

void switch_machine::take(const switch_command& c)
{
    request_ = c.request;
    limits_ = c.limits;
    replicated_ = c.replicated;
    adopted_ = false;
    fleet_here_ = false;
    journal_.reset();
    journal_on_disk_ = false;
    writes_paused_ = false;
    fence_sent_ = false;
    budget_spent_ = false;
    persist_error_.reset();
    fence_problem_.clear();
    failed_step_.clear();
}

step switch_machine::adopt(const switch_command& c, const std::string& saw, time_point now)
{
    const auto& request = c.request;
    // Serving, not split, the other side asked: start_switch flips (kill, drain) or holds (pause).
    const auto a = std::get<action>(start_switch(request, now, c.limits.drain_timeout, c.limits.pause_timeout));
    take(c); // no journal: nothing changes on a server, nothing is left to recover
    adopted_ = true;
    fenced_ = request.to == side::new_side;
    new_fenced_ = false; // another host's fence: that host keeps it
    step out{{log_line{false, fmt::format("switch to {} mode={} adopted: the servers are already switched ({})",
                                          side_name(request.to), config::to_string(request.mode), saw)},
              progress{fmt::format("the servers are already switched ({}): adopting, nothing is changed on them",
                                   saw)}},
             std::nullopt};
    if (a != action::run_pause_switch) return flip(std::move(out));
    // The pause mode's client handling without its server steps: this host's clients stop at a
    // request boundary, the route goes to disk, then they move (or are cut) to the target.
    hold_clients(out, now, {});
    auto rest = commit(now);
    out.effects.insert(out.effects.end(), rest.effects.begin(), rest.effects.end());
    return out;
}

step switch_machine::on_fleet(const fleet_decision& d, time_point now)
{
    if (phase_ != phase::awaiting_fleet) return {}; // the budget ran out first: undone already
    switch (d.go) {
    case fleet_go::run_here:
        fleet_here_ = true;
        return pause_step(now);
    case fleet_go::adopt: {
        // Another member switched the servers: this host only flips, as adopt() does.
        journal_.reset();
        adopted_ = true;
        fenced_ = request_.to == side::new_side;
        new_fenced_ = false; // another host's fence: that host keeps it
        step out{{log_line{false, fmt::format("fleet switch to {} adopted: {}", side_name(request_.to), d.reason)},
                  progress{fmt::format("the fleet switched the servers ({}): releasing onto {}", d.reason,
                                       side_name(request_.to))}},
                 std::nullopt};
        auto rest = commit(now);
        out.effects.insert(out.effects.end(), rest.effects.begin(), rest.effects.end());
        return out;
    }
    case fleet_go::abort:
        break;
    }
    return undo(d.reason, now, false);
}

step switch_machine::pause_step(time_point now)
{
    const auto deadline = deadline_.value_or(now);
    const auto remaining = std::max(config::duration(1), std::chrono::duration_cast<config::duration>(deadline - now));
    if (replicated_ && request_.to == side::new_side) {
        // Writes on a postgres primary cannot be paused from outside: its clients (maybe
        // mid-transaction) finish until drain_timeout instead, and what is left is cut.
        if (kind_ == config::service_kind::postgres) {
            phase_ = phase::draining_old;
            return {{drain_clients{side::old_side, std::min(deadline, now + limits_.drain_timeout),
                                   limits_.drain_timeout}},
                    std::nullopt};
        }
        // The write pause outlives the budget by the fence's deadline: old must refuse writes until fenced.
        const auto hold = remaining + std::chrono::seconds(5);
        if (journal_) journal_->pause_hold = hold;
        return journaled(journal_step::pause_writes, phase::pausing_writes, {pause_writes{side::old_side, hold}});
    }
    if (replicated_) {
        // The rollback fences new and lifts its write pause itself: no write of new's clients
        // may be queued there, or it is answered with a refusal. Redis clients were held at a
        // request boundary (quiesce_clients); others are cut first. They reconnect and are held.
        if (moves_clients())
            return journaled(journal_step::roll_back, phase::rolling_back,
                             {roll_back{remaining, request_.force, deadline}});
        return journaled(journal_step::roll_back, phase::rolling_back,
                         {cut{side::new_side, close_reason::cut_by_switch},
                          roll_back{remaining, request_.force, deadline}});
    }
    if (now >= deadline) return undo(budget_text(), now, false);
    return commit(now);
}

step switch_machine::journaled(journal_step s, phase then, std::vector<effect> next)
{
    if (!journal_) {
        phase_ = then;
        return {std::move(next), std::nullopt};
    }
    journal_->step = s;
    journal_on_disk_ = true;
    phase_ = phase::persisting_journal;
    journal_then_ = then;
    journal_next_ = std::move(next);
    return {{persist{}}, std::nullopt};
}

step switch_machine::catch_up()
{
    phase_ = phase::catching_up;
    return {{progress{"waiting for new to catch up"},
             wait_caught_up{side::new_side, deadline_.value_or(time_point{})}},
            std::nullopt};
}

step switch_machine::on_done(const step_done& d, time_point now)
{
    const auto expected = [&]() -> std::optional<step_kind> {
        switch (phase_) {
        case phase::persisting_flip:
        case phase::persisting_split:
        case phase::persisting_commit:
        case phase::persisting_fence:
        case phase::persisting_journal:
        case phase::persisting_undo:
            return step_kind::persist;
        case phase::pausing_writes:
            return step_kind::pause_writes;
        case phase::draining_old:
            return step_kind::drain_clients;
        case phase::catching_up:
            return step_kind::wait_caught_up;
        case phase::promoting:
            return step_kind::promote;
        case phase::checking_roles:
            return step_kind::check_roles;
        case phase::rolling_back:
            return step_kind::roll_back;
        case phase::fencing_writes:
            return step_kind::fence;
        case phase::following:
            return step_kind::follow;
        case phase::stale:
            return d.which;
        case phase::recovering_fence:
            return step_kind::fence;
        case phase::recovering_follow:
            return step_kind::follow;
        case phase::recovering_persist:
            return step_kind::persist;
        case phase::refencing:
            return step_kind::fence;
        case phase::refollowing:
            return step_kind::follow;
        case phase::recovering:
        case phase::unresolved:
        case phase::awaiting_fleet: // answered by fleet_decision, never by a step_done
            return std::nullopt;
        case phase::idle:
        case phase::draining:
            return std::nullopt;
        }
        return std::nullopt;
    }();
    if (expected != d.which) return {};

    switch (phase_) {
    case phase::stale: {
        // The switch already ended (its budget ran out) while this step was out: undo what it did.
        phase_ = phase::idle;
        const bool paused_now = writes_paused_ || (d.which == step_kind::pause_writes && d.ok);
        step out;
        if (fence_sent_) {
            out.effects.push_back(unfence{side::old_side});
            fenced_ = false;
        }
        if (paused_now) out.effects.push_back(unpause{side::old_side});
        writes_paused_ = false;
        fence_sent_ = false;
        journal_.reset();
        if (std::exchange(journal_on_disk_, false)) {
            phase_ = phase::persisting_undo;
            out.effects.push_back(persist{});
        }
        return out;
    }
    case phase::persisting_journal: {
        if (!d.ok) return undo("cannot write the journal to the state file: " + d.message, now, false);
        phase_ = journal_then_;
        for (const auto& next : journal_next_)
            if (std::holds_alternative<fence>(next)) fence_sent_ = true;
        return {std::exchange(journal_next_, {}), std::nullopt};
    }
    case phase::persisting_undo:
        phase_ = phase::idle;
        if (!d.ok)
            return {{log_line{true, "the undone switch's journal could not be cleared (" + d.message +
                                        "); a restart resolves it from the servers again"}},
                    std::nullopt};
        return {};
    case phase::persisting_split: {
        phase_ = phase::idle;
        if (!d.ok)
            return {{}, command_outcome{verdict::failed, "split applied but could not be persisted: " + d.message, false}};
        return {{log_line{false, fmt::format("split {}% to new{}", route_.split_percent.value_or(0),
                                             route_.sticky ? " (sticky)" : "")}},
                command_outcome{verdict::done, {}, false}};
    }
    case phase::persisting_flip: {
        const side to = route_.active;
        const side from = draining_.value_or(proxy::other(to));
        if (!d.ok) {
            drained();
            phase_ = phase::idle;
            return {{}, fail(fmt::format("switched {} to {} but could not persist it: {}", name_, side_name(to),
                                         d.message))};
        }
        if (state_ == service_state::draining) {
            phase_ = phase::draining;
            return {{watch_drain{from, limits_.drain_timeout}}, std::nullopt};
        }
        phase_ = phase::idle;
        return {{progress{fmt::format("new clients go to {}; cutting clients on {}", side_name(to),
                                      side_name(proxy::other(to)))},
                 cut{proxy::other(to), close_reason::cut_by_switch},
                 log_line{false, fmt::format("switch to {} done", side_name(to))}},
                done_outcome(fmt::format("{} switched to {}", name_, side_name(to)))};
    }
    case phase::pausing_writes:
        if (!d.ok) return undo(d.message, now, false);
        writes_paused_ = true;
        {
            auto next = catch_up();
            next.effects.insert(next.effects.begin(), progress{d.message});
            return next;
        }
    case phase::draining_old: {
        auto next = catch_up();
        next.effects.insert(next.effects.begin(), cut{side::old_side, close_reason::drain_timeout});
        return next;
    }
    case phase::catching_up:
        if (!d.ok) return undo(d.message, now, false);
        if (now >= deadline_.value_or(now)) {
            auto out = undo(budget_text(), now, false);
            out.effects.insert(out.effects.begin(), progress{d.message});
            return out;
        }
        // Fence first: old refuses writes before new accepts any, by a fence that outlives the
        // write pause (and us); unfence undoes it should the switch stop before the promotion.
        {
            auto out = journaled(journal_step::fence, phase::fencing_writes, {fence{side::old_side, *deadline_}});
            out.effects.insert(out.effects.begin(), progress{d.message});
            return out;
        }
    case phase::fencing_writes:
        if (!d.ok) return undo(d.message, now, false);
        fenced_ = !d.no_op;
        if (now >= deadline_.value_or(now)) {
            auto out = undo(budget_text(), now, false);
            out.effects.insert(out.effects.begin(), progress{d.message});
            return out;
        }
        {
            auto out = journaled(journal_step::promote, phase::promoting, {promote{side::new_side, *deadline_}});
            out.effects.insert(out.effects.begin(), progress{d.no_op ? "old is not fenced: " + d.message : d.message});
            return out;
        }
    case phase::promoting:
        if (d.ok) {
            auto out = commit(now);
            out.effects.insert(out.effects.begin(), progress{d.message});
            return out;
        }
        // A failed promotion may still have promoted new (a lost reply, a hook that timed out
        // after acting): ask new's role before routing anyone anywhere.
        failed_step_ = d.message;
        phase_ = phase::checking_roles;
        return {{progress{d.message}, check_roles{side::new_side, deadline_.value_or(now)}}, std::nullopt};
    case phase::checking_roles:
        if (!d.ok && d.unanswered)
            return promotion_unknown(side::new_side,
                                     fmt::format("{}, and new has not answered since ({})", failed_step_, d.message),
                                     now);
        if (!d.ok) return undo(failed_step_, now, false);
        {
            // The promotion may have stopped before it lifted the fence a rollback left on new.
            const bool lift_new_fence = new_fenced_;
            auto out = commit(now);
            if (lift_new_fence) out.effects.insert(out.effects.begin(), unfence{side::new_side});
            out.effects.insert(out.effects.begin(),
                               progress{fmt::format("new is a primary after all ({}): the switch goes on", d.message)});
            out.effects.insert(out.effects.begin(),
                               log_line{true, fmt::format("promotion reported a failure ({}) but new is a primary; "
                                                          "switching to it",
                                                          failed_step_)});
            return out;
        }
    case phase::rolling_back:
        if (!d.ok && d.unanswered) return promotion_unknown(side::old_side, d.message, now);
        if (!d.ok) return undo(d.message, now, false);
        // A redis rollback fenced new before it promoted old; a postgres rollback fences nothing
        // (a promoted postgres cannot be made a standby again by tunneld).
        new_fenced_ = kind_ == config::service_kind::redis;
        {
            auto out = commit(now);
            out.effects.insert(out.effects.begin(), progress{d.message});
            return out;
        }
    case phase::persisting_commit: {
        if (!d.ok) persist_error_ = d.message;
        step out;
        if (replicated_ && request_.to == side::new_side && !adopted_) {
            phase_ = phase::following;
            out.effects.push_back(follow{side::old_side, now + std::chrono::seconds(5)});
        } else {
            out = finish_pause_switch(now);
        }
        // Switched (even if the route could not be written: the others must go there too):
        // the fleet commits while old follows new and this host releases its own clients.
        if (std::exchange(fleet_here_, false)) out.effects.insert(out.effects.begin(), fleet_switched{});
        return out;
    }
    case phase::following:
        if (!d.ok) fence_problem_ = d.message;
        journal_.reset();
        if (persist_error_) {
            auto out = finish_pause_switch(now);
            out.effects.insert(out.effects.begin(), progress{d.message});
            return out;
        }
        phase_ = phase::persisting_fence;
        return {{progress{d.message}, persist{}}, std::nullopt};
    case phase::persisting_fence:
        if (!d.ok) persist_error_ = d.message;
        return finish_pause_switch(now);
    case phase::recovering_fence:
        if (!d.ok && !resolved_) {
            // The side left behind cannot be fenced: never route to the other one blind.
            phase_ = phase::unresolved;
            state_ = service_state::unresolved;
            problem_ = "fencing " + std::string(side_name(proxy::other(recovering_to_))) + " failed: " + d.message;
            route_ = proxy::route_to(route_.active);
            route_.refuse = true;
            return {{release{route_}, log_line{true, problem_}}, std::nullopt};
        }
        if (!d.ok) {
            phase_ = phase::unresolved;
            resolved_.reset();
            return {{log_line{true, "resolve: " + d.message}},
                    command_outcome{verdict::failed, "resolve failed: " + d.message, false}};
        }
        fenced_ = recovering_to_ == side::new_side && !d.no_op;
        new_fenced_ = recovering_to_ == side::old_side && !d.no_op;
        {
            // Finishing a switch (or a rollback) forward: the fenced side follows the other one,
            // as the step that died would have made it (fence_replicaof, rollback_replicaof).
            step out = !resolved_ ? step{{log_line{false, d.message},
                                          follow{proxy::other(recovering_to_), now + std::chrono::seconds(5)}},
                                         std::nullopt}
                                  : finish_recovery(recovering_to_, d.message);
            if (!resolved_) phase_ = phase::recovering_follow;
            if (std::exchange(unfence_target_, false)) out.effects.insert(out.effects.begin(), unfence{recovering_to_});
            return out;
        }
    case phase::recovering_follow:
        return finish_recovery(recovering_to_, d.message);
    case phase::refencing: {
        const auto left = proxy::other(route_.active);
        if (!d.ok) {
            phase_ = phase::idle;
            return {{log_line{true, fmt::format("fencing {} again failed: {}; the probe tries again", side_name(left),
                                                d.message)}},
                    std::nullopt};
        }
        ++fence_reasserted_;
        phase_ = phase::refollowing;
        return {{log_line{true, fmt::format("{} fenced again: {}", side_name(left), d.message)},
                 follow{left, now + std::chrono::seconds(5)}},
                std::nullopt};
    }
    case phase::refollowing:
        phase_ = phase::idle;
        if (!d.ok)
            return {{log_line{true, fmt::format("{} is fenced but does not follow {} again: {}",
                                                side_name(proxy::other(route_.active)), side_name(route_.active),
                                                d.message)}},
                    std::nullopt};
        return {{log_line{false, d.message}}, std::nullopt};
    case phase::recovering_persist: {
        phase_ = phase::idle;
        step out;
        if (!d.ok) out.effects.push_back(log_line{true, "the recovered route could not be written: " + d.message});
        out.done = std::exchange(resolved_, std::nullopt);
        return out;
    }
    case phase::recovering:
    case phase::unresolved:
    case phase::awaiting_fleet:
    case phase::idle:
    case phase::draining:
        break;
    }
    return {};
}

step switch_machine::on_recovered(const recovered& r, time_point now)
{
    if (phase_ != phase::recovering || !journal_) return {};
    const auto& j = *journal_;
    const auto decision = decide_recovery(j, r.seen);
    const auto head = fmt::format("unfinished switch {} ({} -> {}, step {})", j.id, side_name(j.from), side_name(j.to),
                                  to_string(j.step));
    switch (decision.verdict) {
    case recovery_verdict::forward:
        recovering_to_ = j.to;
        // A rollback that died between promoting old and restoring its min-replicas-to-write
        // leaves old a primary still fenced: lifted once the other side is fenced.
        unfence_target_ = r.seen.of(j.to).fenced;
        phase_ = phase::recovering_fence;
        return {{log_line{true, fmt::format("{}: finishing it forward: {}", head, decision.reason)},
                 unpause{j.from}, fence{j.from, now + std::chrono::seconds(5)}},
                std::nullopt};
    case recovery_verdict::undo: {
        recovering_to_ = j.from;
        auto out = finish_recovery(j.from, fmt::format("{}: undone: {}", head, decision.reason));
        out.effects.insert(out.effects.begin(), {unfence{j.from}, unpause{j.from}});
        if (j.from == side::old_side) fenced_ = false;
        return out;
    }
    case recovery_verdict::unresolved:
        break;
    }
    return {become_unresolved(fmt::format("{}: {}", head, decision.reason)), std::nullopt};
}

std::vector<effect> switch_machine::become_unresolved(const std::string& problem)
{
    phase_ = phase::unresolved;
    state_ = service_state::unresolved;
    problem_ = fmt::format("{}; clients are refused until `tunnelctl resolve {} --to old` or `--to new`", problem,
                           name_);
    route_.hold = false;
    route_.refuse = true;
    return {release{route_}, log_line{true, problem_}};
}

step switch_machine::on_resolve(const resolve_command& r, time_point now)
{
    if (phase_ != phase::unresolved)
        return {{}, command_outcome{phase_ == phase::recovering ? verdict::busy : verdict::refused,
                                    fmt::format("resolve refused: {} has no unresolved switch", name_), false}};
    const auto check = check_resolve(r.to, r.seen);
    if (check.verdict != recovery_verdict::forward)
        return {{}, command_outcome{verdict::refused, "resolve refused: " + check.reason, false}};
    recovering_to_ = r.to;
    resolved_ = command_outcome{verdict::done, fmt::format("{} resolved to {}: {}", name_, side_name(r.to), check.reason)};
    const auto other = proxy::other(r.to);
    const auto& left = r.seen.of(other);
    step out{{log_line{true, fmt::format("resolve to {} by the operator: {}", side_name(r.to), check.reason)},
              unpause{r.to}},
             std::nullopt};
    // The side that takes the clients may carry our fence from the switch that died (old fenced
    // before the promotion, new fenced by a rollback): it takes writes again, but only once the
    // other side refuses them.
    unfence_target_ = r.seen.of(r.to).fenced;
    if (left.reachable && left.role == server_role::primary) {
        // Two primaries: the one left behind refuses writes before any client reaches the other.
        phase_ = phase::recovering_fence;
        out.effects.push_back(fence{other, now + std::chrono::seconds(5)});
        return out;
    }
    if (std::exchange(unfence_target_, false)) {
        out.effects.push_back(unfence{r.to});
        if (r.to == side::old_side) fenced_ = false;
    }
    auto rest = finish_recovery(r.to, left.reachable ? "" : fmt::format("{} is unreachable and not fenced: it must "
                                                                        "not come back writable", side_name(other)));
    out.effects.insert(out.effects.end(), rest.effects.begin(), rest.effects.end());
    return out;
}

bool switch_machine::keeps_fence() const
{
    return kind_ == config::service_kind::redis && phase_ == phase::idle && state_ == service_state::serving &&
           !route_.split_percent && (route_.active == side::new_side ? fenced_ : new_fenced_);
}

step switch_machine::on_fence_lost(const fence_lost& f, time_point now)
{
    const auto active = route_.active;
    const auto left = proxy::other(active);
    const auto& active_server = f.seen.of(active);
    const auto& left_server = f.seen.of(left);
    // The active side fenced (or not a primary) is another host's switch or rollback under way
    // or done: not ours to undo.
    const auto primary = [](const server_observation& o) { return o.reachable && o.role == server_role::primary; };
    if (!keeps_fence() || !primary(active_server) || active_server.fenced || !primary(left_server)) return {};
    if (left_server.fenced) {
        // Still fenced, but no replica (its REPLICAOF failed or was never sent): follow only.
        phase_ = phase::refollowing;
        return {{log_line{true, fmt::format("{} is fenced but does not follow {}: {}; making it follow again",
                                            side_name(left), side_name(active), describe(left_server))},
                 follow{left, now + std::chrono::seconds(5)}},
                std::nullopt};
    }
    phase_ = phase::refencing;
    return {{log_line{true, fmt::format("{} answers as a writable primary again while clients go to {} (restarted "
                                        "without its fence?): {}; {} is {}; fencing {} again",
                                        side_name(left), side_name(active), describe(left_server), side_name(active),
                                        describe(active_server), side_name(left))},
             fence{left, now + std::chrono::seconds(5)}},
            std::nullopt};
}

step switch_machine::finish_recovery(side to, std::string message)
{
    journal_.reset();
    journal_on_disk_ = false;
    problem_.clear();
    state_ = service_state::serving;
    route_ = proxy::route_to(to);
    if (to == side::new_side) new_fenced_ = false;
    phase_ = phase::recovering_persist;
    step out;
    if (!message.empty()) out.effects.push_back(log_line{false, std::move(message)});
    out.effects.push_back(log_line{false, fmt::format("clients go to {}", side_name(to))});
    out.effects.push_back(release{route_});
    out.effects.push_back(persist{});
    return out;
}

step switch_machine::commit(time_point)
{
    // Committed: new is the primary (or this is a plain tcp service). From here on nothing is undone.
    complete_pause_switch();
    budget_spent_ = false;
    fence_sent_ = false;
    if (request_.to == side::old_side) fenced_ = false;
    if (request_.to == side::new_side) new_fenced_ = false;
    // The route and the next step go to disk together: a crash after this finishes forward.
    if (journal_ && replicated_ && request_.to == side::new_side)
        journal_->step = journal_step::follow;
    else
        journal_.reset();
    phase_ = phase::persisting_commit;
    return {{persist{}}, std::nullopt};
}

step switch_machine::finish_pause_switch(time_point now)
{
    phase_ = phase::idle;
    const side to = route_.active;
    step out;
    if (moves_clients()) {
        // Unpause before the move waits for pinned clients: an EXEC still inside old is
        // answered only once its writes are unpaused. Pinned clients get what is left of the
        // budget, and at least a second, to unpin.
        out.effects.push_back(release{route_});
        if (writes_paused_) out.effects.push_back(unpause{side::old_side});
        out.effects.push_back(move_clients{proxy::other(to), to,
                                           std::max(now + std::chrono::seconds(1), held_since_ + limits_.pause_timeout)});
    } else {
        out.effects = {cut{proxy::other(to), close_reason::cut_by_switch}, release{route_}};
        if (writes_paused_) out.effects.push_back(unpause{side::old_side});
    }
    writes_paused_ = false;
    const auto ms = held_ms(now);
    out.effects.push_back(progress{fmt::format("released held clients to {} after {}ms", side_name(to), ms)});
    if (persist_error_) {
        out.done = fail(fmt::format("{} switched to {} but the state file could not be written: {}", name_,
                                    side_name(to), *persist_error_));
    } else if (!fence_problem_.empty()) {
        out.done = fail(fmt::format("{} switched to new, but making old a replica of new failed: {}; old "
                                    "still refuses writes (fenced before the promotion)",
                                    name_, fence_problem_));
    } else {
        out.done = done_outcome(fmt::format("{} switched to {} (clients held {}ms)", name_, side_name(to), ms));
        out.effects.push_back(log_line{false, out.done->message});
    }
    adopted_ = false;
    return out;
}

step switch_machine::undo(const std::string& why, time_point now, bool step_out)
{
    abort_pause_switch();
    budget_spent_ = false;
    step out{{release{route_}}, std::nullopt};
    if (step_out) {
        // A step is still out on the servers: unpause follows its answer (phase stale), never
        // two calls on the servers at once.
        phase_ = phase::stale;
    } else {
        phase_ = phase::idle;
        if (fence_sent_) {
            out.effects.push_back(unfence{side::old_side});
            fenced_ = false;
        }
        if (writes_paused_) out.effects.push_back(unpause{side::old_side});
        writes_paused_ = false;
        fence_sent_ = false;
    }
    const auto reason = fmt::format("switch failed: {}; clients released to {} after {}ms, nothing changed", why,
                                    side_name(route_.active), held_ms(now));
    out.effects.push_back(log_line{true, reason});
    out.done = fail(reason);
    if (!step_out) {
        // Undone: the journal goes, once the servers are as they were.
        journal_.reset();
        if (std::exchange(journal_on_disk_, false)) {
            phase_ = phase::persisting_undo;
            out.effects.push_back(persist{});
        }
    }
    return out;
}

step switch_machine::promotion_unknown(side promoted, const std::string& what, time_point now)
{
    // `promoted` may be a primary (promoted, then away before it said so): lifting the other
    // side's fence could make two primaries. That fence and the journal stay, as after a crash
    // at this step.
    const auto held = held_ms(now);
    abort_pause_switch();
    budget_spent_ = false;
    writes_paused_ = false; // CLIENT PAUSE ends by itself
    fence_sent_ = false;
    auto effects = become_unresolved(fmt::format("switch {}: {}: {} may be a primary, so {} stays fenced",
                                                 journal_ ? journal_->id : std::string("-"), what,
                                                 side_name(promoted), side_name(proxy::other(promoted))));
    return {std::move(effects), fail(fmt::format("switch failed after holding clients {}ms: {}", held, problem_))};
}

step switch_machine::on_deadline(time_point now)
{
    if (!deadline_ || now < *deadline_) return {};
    switch (phase_) {
    case phase::awaiting_fleet:
        return undo(budget_text() + " before the fleet decided", now, false);
    case phase::pausing_writes:
    case phase::draining_old:
    case phase::catching_up:
    case phase::fencing_writes:
    case phase::persisting_journal:
        // Nothing new accepts writes yet: the held clients go back to old right away (a fence
        // under way is lifted once its step answers).
        return undo(budget_text(), now, true);
    case phase::promoting:
    case phase::checking_roles:
    case phase::rolling_back:
        // A step that changes a server is out: its answer decides (each has the budget as deadline).
        if (!budget_spent_) {
            budget_spent_ = true;
            return {{log_line{true, budget_text() + " while a server was being changed; waiting for its answer"}},
                    std::nullopt};
        }
        return {};
    case phase::idle:
    case phase::persisting_flip:
    case phase::draining:
        break;
    case phase::persisting_split:
    case phase::persisting_commit:
    case phase::following:
    case phase::persisting_fence:
    case phase::persisting_undo:
    case phase::stale:
    case phase::recovering:
    case phase::recovering_fence:
    case phase::recovering_follow:
    case phase::recovering_persist:
    case phase::unresolved:
    case phase::refencing:
    case phase::refollowing:
        return {};
    }
    const auto draining = draining_;
    switch (tick(now)) {
    case action::auto_resumed:
        return {{release{route_},
                 log_line{true, fmt::format("pause reached its timeout; clients released to {}",
                                            side_name(route_.active))}},
                std::nullopt};
    case action::drain_deadline:
        if (draining) return {{cut{*draining, close_reason::drain_timeout}}, std::nullopt};
        return {};
    default:
        return {};
    }
}

} // namespace tunneld::cutover
