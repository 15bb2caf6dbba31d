#include "fleet/coordinator.hpp"

#include <algorithm>

namespace tunneld::fleet {

namespace {

std::string join(const std::vector<std::string>& names)
{
    std::string out;
    for (const auto& n : names)
        out += (out.empty() ? "" : ", ") + n;
    return out;
}

} // namespace

bool acknowledged(const member_entry& m, std::int64_t epoch) noexcept
{
    return m.record && m.record->epoch == epoch && m.record->state == held_state;
}

std::string_view to_string(fleet_outcome o) noexcept
{
    switch (o) {
    case fleet_outcome::committed:
        return "committed";
    case fleet_outcome::refused:
        return "refused";
    case fleet_outcome::aborted:
        return "aborted";
    case fleet_outcome::unresolved:
        return "unresolved";
    }
    return "unresolved";
}

coordinator::coordinator(std::string member, side target, coordinator_options options)
    : member_(std::move(member)), target_(target), options_(options)
{
}

coordinator coordinator::take_over(std::string member, epoch_state found, coordinator_options options)
{
    coordinator c(std::move(member), found.record.target.value_or(side::new_side), options);
    c.state_ = found;
    c.takeover_from_ = std::move(found);
    return c;
}

epoch_record coordinator::with_phase(std::string_view p) const
{
    epoch_record next = state_.record;
    next.phase = std::string(p);
    next.coordinator = member_;
    next.target = target_;
    return next;
}

coordinator_step coordinator::finish(fleet_outcome outcome, std::string reason)
{
    stage_ = stage::done;
    ack_deadline_.reset();
    retry_at_.reset();
    return {{}, fleet_result{outcome, state_.record.epoch, std::move(reason)}};
}

coordinator_step coordinator::start(clock::time_point now)
{
    if (takeover_from_) {
        const auto& r = takeover_from_->record;
        auto step = write(intent::take_over, with_phase(r.phase), now);
        step.effects.insert(step.effects.begin(),
                            report{"taking over epoch " + std::to_string(r.epoch) + " (phase " + r.phase +
                                   ") from " + r.coordinator + ", whose lease ended"});
        return step;
    }
    stage_ = stage::claiming;
    return {{claim_epoch{target_}}, std::nullopt};
}

coordinator_step coordinator::write(intent why, epoch_record next, clock::time_point now)
{
    stage_ = stage::writing;
    if (intent_ != why) write_started_ = now; // a retry keeps its first attempt's budget
    intent_ = why;
    pending_ = std::move(next);
    retry_at_.reset();
    return {{write_epoch{pending_}}, std::nullopt};
}

coordinator_step coordinator::abort(std::string reason, clock::time_point now)
{
    abort_reason_ = std::move(reason);
    ack_deadline_.reset();
    epoch_record next = state_.record;
    next.phase = std::string(phase::committed);
    next.coordinator.clear();
    next.target.reset(); // the side stays the committed one: every member resumes on it
    auto step = write(intent::abort, std::move(next), now);
    step.effects.insert(step.effects.begin(), report{"aborting epoch " + std::to_string(state_.record.epoch) + ": " +
                                                     abort_reason_});
    return step;
}

coordinator_step coordinator::written(const epoch_state& now_state, clock::time_point now)
{
    state_ = now_state;
    const auto epoch = std::to_string(state_.record.epoch);
    switch (intent_) {
    case intent::take_over:
        if (state_.record.phase == phase::switching) {
            stage_ = stage::switching;
            return {{report{"epoch " + epoch + " was switching: switching the servers again"},
                     switch_servers{state_.record.epoch, target_}},
                    std::nullopt};
        }
        return abort("its coordinator " + takeover_from_->record.coordinator +
                         " went away before the servers were switched",
                     now);
    case intent::hold:
        stage_ = stage::holding;
        hold_written_ = now;
        ack_deadline_ = now + options_.ack_timeout;
        {
            auto step = check_acks(now);
            step.effects.insert(step.effects.begin(), report{"epoch " + epoch + ": every member holds its clients"});
            return step;
        }
    case intent::switch_servers:
        stage_ = stage::switching;
        return {{switch_servers{state_.record.epoch, target_}}, std::nullopt};
    case intent::commit:
        return finish(fleet_outcome::committed, "epoch " + epoch + " committed on " + std::string(to_string(target_)));
    case intent::abort:
        return finish(fleet_outcome::aborted, abort_reason_);
    case intent::none:
        break;
    }
    return {};
}

coordinator_step coordinator::check_acks(clock::time_point now)
{
    if (stage_ != stage::holding) return {};
    const auto epoch = std::to_string(state_.record.epoch);
    std::vector<std::string> waiting;
    std::vector<std::string> newly;
    for (const auto& m : members_) {
        if (!acknowledged(m, state_.record.epoch))
            waiting.push_back(m.member);
        else if (acked_.insert(m.member).second)
            newly.push_back(m.member);
    }
    // Each member's acknowledgement is one progress line, as it is seen.
    std::vector<coordinator_effect> lines;
    const auto after =
        std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(now - hold_written_).count());
    const auto of = std::to_string(members_.size() - waiting.size()) + " of " + std::to_string(members_.size());
    for (const auto& name : newly)
        lines.push_back(report{"epoch " + epoch + ": " + name + " acknowledged after " + after + " ms (" + of + ")"});
    auto step = decide_on_acks(waiting, now);
    step.effects.insert(step.effects.begin(), lines.begin(), lines.end());
    return step;
}

coordinator_step coordinator::decide_on_acks(const std::vector<std::string>& waiting, clock::time_point now)
{
    // No member seen at all is no acknowledgement (the coordinator itself is a member).
    if (members_.empty()) {
        if (ack_deadline_ && now >= *ack_deadline_) return abort("no live member was seen", now);
        return {};
    }
    if (waiting.empty()) {
        auto step = write(intent::switch_servers, with_phase(phase::switching), now);
        step.effects.insert(step.effects.begin(),
                            report{"all " + std::to_string(members_.size()) + " members acknowledged epoch " +
                                   std::to_string(state_.record.epoch)});
        ack_deadline_.reset();
        return step;
    }
    if (ack_deadline_ && now >= *ack_deadline_)
        return abort(join(waiting) + " did not acknowledge within " +
                         std::to_string(options_.ack_timeout.count()) + "ms",
                     now);
    return {};
}

coordinator_step coordinator::retry_or_give_up(std::string reason, clock::time_point now)
{
    // The commit after the servers were switched is worth more patience: until it is written the
    // members hold their clients, and letting them go back to old would be wrong.
    const auto budget = intent_ == intent::commit ? options_.write_budget * 10 : options_.write_budget;
    if (write_started_ && now - *write_started_ >= budget) {
        const auto epoch = std::to_string(state_.record.epoch);
        if (intent_ == intent::commit)
            return finish(fleet_outcome::unresolved,
                          "the servers are switched but epoch " + epoch + " could not be committed (" + reason +
                              "); the members finish it when etcd answers");
        return finish(fleet_outcome::unresolved, "epoch " + epoch + " left in phase " + state_.record.phase + " (" +
                                                     reason + "); the members resume on " +
                                                     std::string(to_string(state_.record.committed)) +
                                                     " and the switch is aborted by whoever takes it over");
    }
    retry_at_ = now + options_.retry;
    return {};
}

coordinator_step coordinator::on(const coordinator_event& e, clock::time_point now)
{
    if (stage_ == stage::done) return {};
    if (const auto* answer = std::get_if<claim_answered>(&e)) {
        if (stage_ != stage::claiming && !(stage_ == stage::reading_back && claim_pending_)) return {};
        const auto& current = answer->result.current;
        if (!answer->result.claimed) {
            state_ = current;
            const auto& r = current.record;
            if (r.held())
                return finish(fleet_outcome::refused,
                              "epoch " + std::to_string(r.epoch) + " is held by " + r.coordinator + " (switching to " +
                                  std::string(r.target ? to_string(*r.target) : "?") + ", phase " + r.phase + ")");
            return finish(fleet_outcome::refused, "epoch " + std::to_string(r.epoch) +
                                                      " was committed meanwhile on " +
                                                      std::string(to_string(r.committed)) + "; ask again");
        }
        state_ = current;
        auto step = write(intent::hold, with_phase(phase::hold), now);
        step.effects.insert(step.effects.begin(), report{"epoch " + std::to_string(current.record.epoch) + " claimed"});
        return step;
    }
    if (const auto* failed = std::get_if<claim_failed>(&e)) {
        if (stage_ != stage::claiming) return {};
        if (!failed->maybe_applied) return finish(fleet_outcome::refused, "etcd: " + failed->reason);
        stage_ = stage::reading_back;
        claim_pending_ = true;
        return {{read_back{}}, std::nullopt};
    }
    if (const auto* done = std::get_if<epoch_written>(&e)) {
        if (stage_ != stage::writing) return {};
        return written(done->now, now);
    }
    if (const auto* failed = std::get_if<epoch_not_written>(&e)) {
        if (stage_ != stage::writing) return {};
        if (failed->lost)
            return finish(fleet_outcome::unresolved, "epoch " + std::to_string(state_.record.epoch) +
                                                         " was changed by another member (taken over?): " +
                                                         failed->reason);
        if (failed->maybe_applied) {
            stage_ = stage::reading_back;
            return {{read_back{}}, std::nullopt};
        }
        return retry_or_give_up(failed->reason, now);
    }
    if (const auto* read = std::get_if<epoch_read>(&e)) {
        if (stage_ != stage::reading_back) return {};
        if (claim_pending_) {
            claim_pending_ = false;
            if (!read->state) return finish(fleet_outcome::refused, "etcd: the claim's outcome is unknown");
            const auto& r = read->state->record;
            // Ours if the record names us as the claimer of its epoch towards our target.
            const bool ours = r.phase == phase::claimed && r.coordinator == member_ && r.target == target_;
            stage_ = stage::claiming;
            return on(claim_answered{claim{ours, *read->state}}, now);
        }
        if (!read->state) {
            stage_ = stage::writing;
            return retry_or_give_up("etcd could not be read", now);
        }
        if (read->state->record == pending_) {
            stage_ = stage::writing;
            return written(*read->state, now);
        }
        if (read->state->mod_revision == state_.mod_revision) {
            stage_ = stage::writing;
            return {{write_epoch{pending_}}, std::nullopt}; // it did not apply: write it again
        }
        return finish(fleet_outcome::unresolved, "epoch " + std::to_string(state_.record.epoch) +
                                                     " was changed by another member (taken over?)");
    }
    if (const auto* seen = std::get_if<members_seen>(&e)) {
        members_ = seen->members;
        return check_acks(now);
    }
    if (const auto* switched = std::get_if<servers_switched>(&e)) {
        if (stage_ != stage::switching) return {};
        if (!switched->ok) return abort("the servers were not switched: " + switched->reason, now);
        epoch_record next = state_.record;
        next.phase = std::string(phase::committed);
        next.committed = target_;
        next.coordinator.clear();
        next.target.reset();
        auto step = write(intent::commit, std::move(next), now);
        step.effects.insert(step.effects.begin(), report{"servers switched to " + std::string(to_string(target_))});
        return step;
    }
    if (std::holds_alternative<coordinator_deadline>(e)) {
        if (stage_ == stage::holding) return check_acks(now);
        if (stage_ == stage::writing && retry_at_ && now >= *retry_at_) {
            retry_at_.reset();
            return {{write_epoch{pending_}}, std::nullopt};
        }
    }
    return {};
}

std::optional<clock::time_point> coordinator::deadline() const
{
    if (stage_ == stage::holding) return ack_deadline_;
    if (stage_ == stage::writing) return retry_at_;
    return std::nullopt;
}

member_action react(const std::optional<epoch_state>& epoch, const member_local& local) noexcept
{
    if (!epoch) return {};
    const auto& r = epoch->record;
    if (r.phase == phase::hold || r.phase == phase::switching) {
        // Asked to hold (or still holding while the servers switch): newer than what it runs.
        if (r.epoch > local.epoch && local.holding != r.epoch) return {member_action::kind::hold, r.epoch, local.active};
        return {};
    }
    if (!r.held()) {
        if (local.holding) return {member_action::kind::release, r.epoch, r.committed};
        if (local.active != r.committed && r.epoch > local.epoch) return {member_action::kind::flip, r.epoch, r.committed};
    }
    return {};
}

std::chrono::milliseconds takeover_wait(std::chrono::seconds lease_ttl, std::chrono::milliseconds longest_step) noexcept
{
    return std::chrono::duration_cast<std::chrono::milliseconds>(lease_ttl) + longest_step;
}

bool takeover_watch::due(const std::optional<epoch_state>& epoch, const std::vector<member_entry>& members,
                         const members_read& read)
{
    if (!epoch || !epoch->record.held()) {
        gone_since_.reset();
        return false;
    }
    // Any write to the record (a phase, another takeover) means someone is at work: start over,
    // and count only reads made after that write.
    if (epoch->mod_revision != watched_revision_) {
        watched_revision_ = epoch->mod_revision;
        gone_since_.reset();
    }
    if (read.revision < epoch->mod_revision) return false;
    const bool present = std::any_of(members.begin(), members.end(),
                                     [&](const member_entry& m) { return m.member == epoch->record.coordinator; });
    if (present) {
        gone_since_.reset();
        return false;
    }
    if (!gone_since_) gone_since_ = read.read_at;
    return read.read_at - *gone_since_ >= wait_;
}

} // namespace tunneld::fleet
