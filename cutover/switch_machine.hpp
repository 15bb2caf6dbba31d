#pragma once
// The switch state machine of one service: pure, clock passed in, no sockets, no threads.
// on() takes an event (a command, the result of a step, a deadline) and returns the effects to
// carry out, as data; the controller performs them and feeds each asked-for result back as the
// next event (etcd raft's Ready/Advance shape). The route transitions below on() (start_switch,
// complete_pause_switch, tick, ...) are its building blocks and stay callable on their own.

#include "config/config.hpp"
#include "cutover/lag.hpp"
#include "cutover/recovery.hpp"
#include "cutover/snapshot.hpp"
#include "proxy/close_reason.hpp"
#include "proxy/router.hpp"

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace tunneld::cutover {

using proxy::route;
using proxy::side;
using time_point = std::chrono::steady_clock::time_point;

/// What the fleet decided for a member holding its clients for a fleet switch (docs/fleet.md).
enum class fleet_go {
    run_here, ///< this member coordinates: run the servers' steps here, as a pause switch does
    adopt,    ///< the fleet committed the target (another member switched the servers): flip only
    abort,    ///< the fleet switch was aborted: release onto the unchanged side
};

struct switch_request {
    side to = side::new_side;
    config::switch_mode mode = config::switch_mode::drain;
    bool force = false;
};

/// A step of a switch that changes a server, written to the journal before it is taken.
enum class journal_step { pause_writes, fence, promote, follow, roll_back };
std::string_view to_string(journal_step) noexcept;
std::optional<journal_step> parse_journal_step(std::string_view) noexcept;

/// The journal of the switch under way (DESIGN.md): persisted with the route before each step
/// that changes a server, cleared when the switch is done or undone; read at start to finish or
/// undo a switch the daemon died in.
struct switch_journal {
    std::string id;
    side from = side::old_side;
    side to = side::new_side;
    config::switch_mode mode = config::switch_mode::pause;
    journal_step step = journal_step::pause_writes;
    /// The write pause asked on `from`; the executor records when it lifts by itself.
    std::optional<config::duration> pause_hold;

    friend bool operator==(const switch_journal&, const switch_journal&) = default;
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

// ---- Effects: what the executor carries out. Those marked "answers" end an effect list, and
// the executor feeds their outcome back as a step_done naming them; the others just happen. ----

/// New clients are accepted and held; nothing is connected (the route with hold set).
struct hold_new_clients {
    friend bool operator==(const hold_new_clients&, const hold_new_clients&) = default;
};
/// New clients, and held ones, go to `to` from now on.
struct release {
    route to;
    friend bool operator==(const release&, const release&) = default;
};
/// Answers. Makes `on` refuse writes for at most `hold` (it expires by itself should we die).
struct pause_writes {
    side on = side::old_side;
    config::duration hold{};
    friend bool operator==(const pause_writes&, const pause_writes&) = default;
};
/// Answers. Waits until `from` has no clients left, or `until` (a service whose writes cannot be
/// paused: its clients may be mid-transaction); then the machine cuts what is left.
struct drain_clients {
    side from = side::old_side;
    time_point until;
    config::duration up_to{}; ///< as the operator configured it, for the progress line
    friend bool operator==(const drain_clients&, const drain_clients&) = default;
};
/// Answers. Waits until `replica` has replayed everything its primary has, or `deadline`.
struct wait_caught_up {
    side replica = side::new_side;
    time_point deadline;
    friend bool operator==(const wait_caught_up&, const wait_caught_up&) = default;
};
/// Answers. Makes `which` a primary; a failure is ambiguous (the reply may be what was lost).
struct promote {
    side which = side::new_side;
    time_point deadline;
    friend bool operator==(const promote&, const promote&) = default;
};
/// Answers: ok when `primary` is a primary now. Asked after an ambiguous step, before routing;
/// a server that does not answer is asked again until `until` (unanswered then).
struct check_roles {
    side primary = side::new_side;
    time_point until;
    friend bool operator==(const check_roles&, const check_roles&) = default;
};
/// Answers. Makes `which` refuse every further write from anyone, in a way unfence undoes (redis:
/// min-replicas-to-write; then fence_command). Taken before the other side is promoted, so that
/// no moment has two writable primaries, even should the daemon die and a write pause expire.
/// Answered ok with no_op set when nothing can fence it (postgres without fence_command).
struct fence {
    side which = side::old_side;
    time_point deadline;
    friend bool operator==(const fence&, const fence&) = default;
};
/// Lifts a fence on `which` (the switch was undone before the other side became a primary).
struct unfence {
    side which = side::old_side;
    friend bool operator==(const unfence&, const unfence&) = default;
};
/// Answers. Makes the fenced `which` a read-only replica of the new primary (redis fence =
/// "replicaof": warm for a rollback); no_op where that is not configured.
struct follow {
    side which = side::old_side;
    time_point deadline;
    friend bool operator==(const follow&, const follow&) = default;
};
/// Answers. Reverses a completed switch on the servers (new -> old); changes nothing on failure.
struct roll_back {
    config::duration pause_hold{};
    bool force = false;
    time_point deadline;
    friend bool operator==(const roll_back&, const roll_back&) = default;
};
/// Lifts pause_writes on `on`.
struct unpause {
    side on = side::old_side;
    friend bool operator==(const unpause&, const unpause&) = default;
};
/// Answers. Writes every service's route, fence state and journal to the state file.
struct persist {
    friend bool operator==(const persist&, const persist&) = default;
};
/// Cuts every client on `which` (why: cut_by_switch or drain_timeout).
struct cut {
    side which = side::old_side;
    proxy::close_reason why = proxy::close_reason::cut_by_switch;
    friend bool operator==(const cut&, const cut&) = default;
};
/// Watches `from` and reports side_empty when it has no clients left; says how it goes meanwhile.
struct watch_drain {
    side from = side::old_side;
    config::duration up_to{};
    friend bool operator==(const watch_drain&, const watch_drain&) = default;
};
/// kind = "redis": holds every client on `from` at its next request boundary with no reply
/// outstanding, and waits until each is held or pinned for good, or `until`. Carried out before
/// any server changes, so that no request of this host's clients is inside old when its writes
/// pause. move_clients follows on success, release on failure (the held clients go on there).
struct quiesce_clients {
    side from = side::old_side;
    time_point until;
    friend bool operator==(const quiesce_clients&, const quiesce_clients&) = default;
};
/// kind = "redis": moves every client on `from` to `to` (held ones at once, the others as soon as
/// they unpin), cuts those pinned for good, and at `until` cuts what is left on `from`.
struct move_clients {
    side from = side::old_side;
    side to = side::new_side;
    time_point until;
    friend bool operator==(const move_clients&, const move_clients&) = default;
};
/// Answers with fleet_decision. A fleet switch: this member's clients are held (and quiesced at a
/// request boundary); it acknowledges and waits for the fleet's decision, or `until` (then abort).
struct wait_fleet {
    time_point until;
    friend bool operator==(const wait_fleet&, const wait_fleet&) = default;
};
/// A fleet switch run here (fleet_go::run_here): the servers are switched and this host's route
/// is on disk with them, so the fleet may commit now. The rest of this host's switch (old follows
/// new, the state file again, its own clients' release) goes on meanwhile.
struct fleet_switched {
    friend bool operator==(const fleet_switched&, const fleet_switched&) = default;
};
/// One line of the switch's progress, for the operator who started it.
struct progress {
    std::string line;
    friend bool operator==(const progress&, const progress&) = default;
};
/// One line for the daemon's log (the executor adds `service=NAME`).
struct log_line {
    bool warning = false;
    std::string line;
    friend bool operator==(const log_line&, const log_line&) = default;
};

using effect = std::variant<hold_new_clients, release, pause_writes, drain_clients, wait_caught_up, promote,
                            check_roles, fence, unfence, follow, roll_back, unpause, persist, cut, watch_drain,
                            progress, log_line, quiesce_clients, move_clients, wait_fleet, fleet_switched>;

/// Which answering effect a step_done reports on.
enum class step_kind {
    pause_writes,
    drain_clients,
    wait_caught_up,
    promote,
    check_roles,
    fence,
    follow,
    roll_back,
    persist
};
step_kind kind_of_answer(const effect&) noexcept;
/// True for the effects that end a list and are answered with a step_done.
bool answers(const effect&) noexcept;

// ---- Events ----

/// What the gate and the budgets of one switch are measured against (from the service's config).
struct switch_limits {
    config::duration drain_timeout{};
    config::duration pause_timeout{};
    std::optional<std::uint64_t> max_lag;
    std::optional<config::duration> max_lag_seconds;
    config::duration max_lag_age{}; ///< a lag reading older than this fails the gate
};

struct switch_command {
    std::string id; ///< names the switch in the journal and the log
    switch_request request;
    switch_limits limits;
    bool replicated = false;         ///< the servers' roles are ours to change (a replication is set up)
    std::optional<lag_reading> lag; ///< the newest probe reading, if any
    /// What the servers say now (redis, postgres): a switch whose servers are already at its
    /// target (another host, or a crashed switch, switched them) is adopted: this host flips
    /// without changing them. Unset: not asked (the switch runs as asked).
    std::optional<observations> seen;
    /// A fleet switch (docs/fleet.md): hold and quiesce, then wait_fleet. The lag gate is the
    /// coordinator's, checked before it claims the epoch; the mode is always pause.
    bool fleet = false;
};
/// The answer to wait_fleet.
struct fleet_decision {
    fleet_go go = fleet_go::abort;
    std::string reason; ///< abort: why; adopt: who switched the servers
};
struct pause_command {
    config::duration timeout{};
};
struct resume_command {};
struct split_command {
    unsigned percent = 0;
    bool sticky = false;
};
/// The outcome of the answering effect `which`.
struct step_done {
    step_kind which;
    bool ok = false;
    std::string message; ///< one human line (a persist failure: the error)
    bool no_op = false;  ///< ok, but nothing could be done (no fence configured)
    bool unanswered = false; ///< failed without an answer from the server: its state is not known
};
/// The time in deadline() has come.
struct deadline_reached {};
/// The side under watch_drain has no clients left.
struct side_empty {};
/// State recovering: what the servers say now (the hook of the crashed step has ended).
struct recovered {
    observations seen;
};
/// `tunnelctl resolve SERVICE --to old|new` on an unresolved switch, with what the servers say now.
struct resolve_command {
    side to = side::old_side;
    observations seen;
};

/// The probe, while keeps_fence(): what the servers say when the side clients are not on answers
/// as a primary that does not follow the active one (restarted, its CONFIG SET or REPLICAOF lost;
/// or fenced, but its REPLICAOF failed) while the active side is a writable primary.
struct fence_lost {
    observations seen;
};

using event = std::variant<switch_command, pause_command, resume_command, split_command, step_done,
                           deadline_reached, side_empty, recovered, resolve_command, fence_lost, fleet_decision>;

/// How a command ended, in the words of the control protocol.
enum class verdict { done, refused, busy, failed, unknown_service };
std::string_view to_string(verdict) noexcept;

struct command_outcome {
    verdict result = verdict::done;
    std::string message; ///< done: what happened; otherwise the reason, one line
    bool recorded = true; ///< counts in the service's switch history (switches, last_switch)
    bool adopted = false; ///< done: the servers were already switched; this host only followed
    friend bool operator==(const command_outcome&, const command_outcome&) = default;
};

/// What the executor does after one event: every effect in order, then, if set, answer the command.
struct step {
    std::vector<effect> effects;
    std::optional<command_outcome> done;
};

class switch_machine {
public:
    /// `journal`: a switch the daemon died in (from the state file); the machine starts in state
    /// recovering, holding clients, and waits for `recovered`.
    switch_machine(config::service_kind kind, route initial, std::string name = {}, bool fenced = false,
                   std::optional<switch_journal> journal = std::nullopt, bool new_fenced = false);

    /// The whole life of a switch, a rollback, a pause and a split: takes an event at `now`,
    /// returns the effects to carry out. At most one answering effect is outstanding at a time;
    /// a step_done for anything else is stale and ignored (after undoing what it may have done).
    step on(const event& e, time_point now);

    /// Whether old refuses writes because a switch fenced it (persisted).
    bool fenced() const { return fenced_; }
    /// Whether new refuses writes because this host rolled back to old (a rollback, or a
    /// recovery or resolve that fenced new); persisted, so the fence is kept after a restart.
    bool new_fenced() const { return new_fenced_; }
    /// How many times the side clients are not on was found writable again, and fenced again.
    std::uint64_t fence_reasserted() const { return fence_reasserted_; }
    /// The probe should look for a lost fence (redis, idle, not split): on new with old fenced by
    /// a switch, or on old with new fenced by a rollback.
    bool keeps_fence() const;
    /// The switch under way that changes servers, as persisted (nullopt: none).
    const std::optional<switch_journal>& journal() const { return journal_; }
    /// State unresolved: why, and the way out (empty otherwise).
    const std::string& problem() const { return problem_; }
    /// A switch, rollback or split is being carried out: other commands are refused as busy.
    bool busy() const { return phase_ != phase::idle; }

    const route& current_route() const { return route_; }
    service_state state() const { return state_; }
    /// The side that is being drained (state draining) or that held clients came from (switching).
    std::optional<side> draining_side() const { return draining_; }
    /// When the current pause or drain ends on its own; nullopt when nothing is pending.
    /// A pause switch whose budget ran out while a server was being changed waits for that
    /// step's answer instead: its deadline is spent.
    std::optional<time_point> deadline() const { return budget_spent_ ? std::nullopt : deadline_; }

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
    /// Where a command carried out by on() stands; idle when none is.
    enum class phase {
        idle,
        persisting_flip, ///< kill or drain: the flip is being written down
        draining,        ///< drain: waiting for the old side to empty
        persisting_split,
        persisting_journal, ///< the journal names the next step; it is taken once on disk
        persisting_undo,    ///< an undone switch's journal is being cleared
        pausing_writes, ///< pause switch: the steps before the commit, one at a time
        draining_old,
        catching_up,
        promoting,
        fencing_writes, ///< old is being fenced, before new is promoted
        checking_roles,
        rolling_back,
        persisting_commit, ///< committed: nothing is undone from here on
        following, ///< committed; old becomes a replica of new
        persisting_fence,
        stale, ///< the switch ended early (budget); its last step is still out
        recovering,         ///< waiting for what the servers say about the journal's switch
        recovering_fence,   ///< finishing forward (or resolving): the side left behind is fenced
        recovering_follow,  ///< finishing forward: old becomes a replica of new
        recovering_persist, ///< the recovered route is written, the journal cleared
        unresolved,         ///< clients refused until resolve_command
        refencing,          ///< on new: old was writable again and is being fenced again
        refollowing,        ///< on new: the re-fenced old becomes a replica of new again
        awaiting_fleet,     ///< a fleet switch: clients held, waiting for the fleet's decision
    };

    step start(const switch_command& c, time_point now);
    /// kill, drain: the flip already made goes to disk (phase persisting_flip).
    step flip(step out);
    /// pause: holds new clients (saying `line` when set) and stops redis clients on the side
    /// left at a request boundary.
    void hold_clients(step& out, time_point now, std::string line);
    /// Makes `c` the switch under way: its request and limits, every per-switch flag cleared.
    void take(const switch_command& c);
    /// Flips to a side whose servers are already switched (`saw`: what showed it), in the
    /// request's mode, changing nothing on the servers.
    step adopt(const switch_command& c, const std::string& saw, time_point now);
    step on_recovered(const recovered& r, time_point now);
    step on_resolve(const resolve_command& r, time_point now);
    step on_fence_lost(const fence_lost& f, time_point now);
    step on_fleet(const fleet_decision& d, time_point now);
    /// Routes to `to`, clears the journal and writes it down (phase recovering_persist).
    step finish_recovery(side to, std::string message);
    step on_done(const step_done& d, time_point now);
    step on_deadline(time_point now);
    step pause_step(time_point now);
    /// Writes the journal with `s` as the step about to be taken; once it is on disk, carries out
    /// `next` in phase `then`.
    step journaled(journal_step s, phase then, std::vector<effect> next);
    step catch_up();
    step commit(time_point now);
    /// Releases held clients to the unchanged route; `step_out`: a step is still out on the
    /// servers, and the undo of what it may do waits for its answer.
    step undo(const std::string& why, time_point now, bool step_out);
    step promotion_unknown(side promoted, const std::string& what, time_point now);
    /// Enters `unresolved`: clients refused, `problem` (and how to resolve) in status and the log.
    std::vector<effect> become_unresolved(const std::string& problem);
    step finish_pause_switch(time_point now);
    command_outcome fail(std::string message);
    /// A switch's done outcome; says (and records) whether it was adopted.
    command_outcome done_outcome(std::string message);
    long long held_ms(time_point now) const;
    std::string budget_text() const;
    /// Clients of this kind are moved by a pause switch instead of cut (redis).
    bool moves_clients() const { return kind_ == config::service_kind::redis; }

    config::service_kind kind_;
    std::string name_;
    route route_;
    bool fenced_ = false;
    bool new_fenced_ = false;
    /// Recovery or resolve: the side taking the clients carries our fence; lifted once the other is fenced.
    bool unfence_target_ = false;
    phase phase_ = phase::idle;
    switch_request request_;   ///< the switch under way
    switch_limits limits_;     ///< its limits
    bool replicated_ = false;  ///< its servers' roles are changed
    bool writes_paused_ = false;   ///< pause_writes succeeded and no unpause followed yet
    bool fence_sent_ = false;      ///< a fence on old was asked for and no unfence followed yet
    bool journal_on_disk_ = false; ///< the journal was persisted: an undo clears it on disk too
    bool budget_spent_ = false;    ///< the deadline came while a server-changing step was out
    bool adopted_ = false;         ///< the switch under way adopts servers already switched
    bool fleet_here_ = false;      ///< a fleet switch whose servers' steps run here; fleet_switched not said yet
    std::uint64_t fence_reasserted_ = 0;
    time_point held_since_{};
    std::optional<std::string> persist_error_; ///< first failed persist of a committed switch
    std::string fence_problem_;                ///< a committed switch's failed fence
    std::string failed_step_;                  ///< an ambiguous step's failure, while roles are checked
    service_state state_ = service_state::serving;
    std::optional<time_point> deadline_;
    std::optional<side> draining_;
    std::optional<side> target_; ///< state switching: where the pause switch goes
    std::optional<switch_journal> journal_; ///< set from the first journaled step to the end
    phase journal_then_ = phase::idle;      ///< persisting_journal: the phase of the step it names
    std::string problem_;                   ///< state unresolved: why
    side recovering_to_ = side::old_side;   ///< recovering_*: the side clients go to at the end
    std::optional<command_outcome> resolved_; ///< a resolve_command's answer, given once persisted
    std::vector<effect> journal_next_;      ///< persisting_journal: the step it names
};

} // namespace tunneld::cutover
