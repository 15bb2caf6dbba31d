#pragma once
// The fleet switch as pure machines (docs/fleet.md, "The fleet switch"): the coordinator's
// (claim the epoch, ask every member to hold, wait for their acknowledgements, switch the servers
// once, commit or abort) and a member's (hold, release, flip, from the epoch record it sees).
// Like the single-host switch machine they take events and return effects as data; no socket,
// clock or thread inside. Every phase is written to the epoch record before it is acted on.

#include "fleet/epoch.hpp"
#include "fleet/membership.hpp"

#include <chrono>
#include <optional>
#include <set>
#include <string>
#include <variant>
#include <vector>

namespace tunneld::fleet {

using clock = std::chrono::steady_clock;

/// The epoch record's phases, in the order a switch goes through them.
namespace phase {
inline constexpr std::string_view claimed = "claimed";     ///< the epoch is the coordinator's; nobody asked yet
inline constexpr std::string_view hold = "hold";           ///< every member: hold new clients, quiesce, acknowledge
inline constexpr std::string_view switching = "switch";    ///< all acknowledged: the servers are being switched, once
inline constexpr std::string_view committed = "committed"; ///< done (side = target) or aborted (side unchanged)
} // namespace phase

/// A member's acknowledgement of the hold of `epoch`, as its member record carries it.
inline constexpr std::string_view held_state = "held";
bool acknowledged(const member_entry& m, std::int64_t epoch) noexcept;

// ---- The coordinator's effects: the executor performs each and feeds the answer back ----

/// claim_next_epoch towards `target` -> claim_answered, or claim_failed.
struct claim_epoch {
    side target = side::new_side;
};
/// update_epoch from the state last written to `next` -> epoch_written, or epoch_not_written.
struct write_epoch {
    epoch_record next;
};
/// read_epoch, after a write or claim whose answer was lost -> epoch_read.
struct read_back {};
/// The servers' part of the switch, run once: lag gate, catch-up, fence, promote (the local
/// controller's steps, journalled under `epoch`) -> servers_switched.
struct switch_servers {
    std::int64_t epoch = 0;
    side target = side::new_side;
};
/// A progress line for the operator.
struct report {
    std::string line;
};
using coordinator_effect = std::variant<claim_epoch, write_epoch, read_back, switch_servers, report>;

// ---- Events ----

struct claim_answered {
    claim result;
};
struct claim_failed {
    bool maybe_applied = false; ///< the transaction was sent and its answer lost
    std::string reason;
};
struct epoch_written {
    epoch_state now;
};
struct epoch_not_written {
    bool lost = false;          ///< another writer changed the record first
    bool maybe_applied = false; ///< sent, answer lost: read it back
    std::string reason;
};
/// The answer to read_back; nullopt when etcd could not be read either.
struct epoch_read {
    std::optional<epoch_state> state;
};
/// The service's member records as the view has them now (every live member).
struct members_seen {
    std::vector<member_entry> members;
};
struct servers_switched {
    bool ok = false;
    std::string reason; ///< why not, one line
};
/// The time in deadline() has come.
struct coordinator_deadline {};
using coordinator_event = std::variant<claim_answered, claim_failed, epoch_written, epoch_not_written, epoch_read,
                                       members_seen, servers_switched, coordinator_deadline>;

enum class fleet_outcome {
    committed,  ///< every member is released onto the target
    refused,    ///< nothing started: another switch holds the service, or etcd did not answer
    aborted,    ///< committed with the side unchanged: every member resumes on the old side
    unresolved, ///< the record stays held (etcd lost, or taken over): the others resolve it
};
std::string_view to_string(fleet_outcome) noexcept;

struct fleet_result {
    fleet_outcome outcome = fleet_outcome::refused;
    std::int64_t epoch = 0;
    std::string reason;
    friend bool operator==(const fleet_result&, const fleet_result&) = default;
};

struct coordinator_step {
    std::vector<coordinator_effect> effects;
    std::optional<fleet_result> done;
};

struct coordinator_options {
    std::chrono::milliseconds ack_timeout{2000}; ///< `[fleet] ack_timeout`
    std::chrono::milliseconds retry{100};        ///< between attempts while etcd does not answer
    /// How long a phase write is tried before the switch is left unresolved; the commit after the
    /// servers were switched is tried for ten times as long (members must not go back to old).
    std::chrono::milliseconds write_budget{2000};
};

class coordinator {
public:
    /// A switch of `service` towards `target`, coordinated by `member`.
    coordinator(std::string member, side target, coordinator_options options = {});
    /// Takes over a switch whose coordinator is gone (see takeover_watch): rewrites `found` with
    /// this member as coordinator, then aborts it (claimed, hold: nothing was changed) or
    /// switches the servers again and commits (switch: they may have been changed; every step is
    /// idempotent).
    static coordinator take_over(std::string member, epoch_state found, coordinator_options options = {});

    coordinator_step start(clock::time_point now);
    coordinator_step on(const coordinator_event& e, clock::time_point now);
    /// When to send coordinator_deadline (the acknowledgements' deadline, or the next retry).
    std::optional<clock::time_point> deadline() const;
    /// The epoch record as last written (or claimed) by this coordinator.
    const epoch_state& state() const { return state_; }
    const std::string& member() const { return member_; }
    bool finished() const { return stage_ == stage::done; }

private:
    enum class stage { idle, claiming, writing, holding, switching, reading_back, done };
    /// What the write under way stands for, so its success knows what to do next.
    enum class intent { none, take_over, hold, switch_servers, commit, abort };

    coordinator_step write(intent why, epoch_record next, clock::time_point now);
    coordinator_step written(const epoch_state& now_state, clock::time_point now);
    coordinator_step abort(std::string reason, clock::time_point now);
    coordinator_step check_acks(clock::time_point now);
    /// check_acks' decision once the acknowledgements are counted: go on, wait, or abort.
    coordinator_step decide_on_acks(const std::vector<std::string>& waiting, clock::time_point now);
    coordinator_step retry_or_give_up(std::string reason, clock::time_point now);
    coordinator_step finish(fleet_outcome outcome, std::string reason);
    epoch_record with_phase(std::string_view p) const;

    std::string member_;
    side target_;
    coordinator_options options_;
    stage stage_ = stage::idle;
    intent intent_ = intent::none;
    epoch_state state_;                  ///< the record as last written by us
    epoch_record pending_;               ///< the record being written
    bool claim_pending_ = false;         ///< the read-back is for a claim, not a write
    std::vector<member_entry> members_;  ///< the live members as last seen
    std::set<std::string> acked_;        ///< members whose acknowledgement was reported
    clock::time_point hold_written_{};   ///< when phase hold was written (acknowledgements count from it)
    std::optional<clock::time_point> ack_deadline_;
    std::optional<clock::time_point> retry_at_;
    std::optional<clock::time_point> write_started_;
    std::string abort_reason_;
    std::optional<epoch_state> takeover_from_;
};

// ---- A member's side ----

/// A member's own view of one service, for `react`.
struct member_local {
    side active = side::old_side;
    std::int64_t epoch = 0;               ///< the epoch it runs
    std::optional<std::int64_t> holding;  ///< the epoch whose hold it carries out now
};

struct member_action {
    enum class kind {
        none,
        hold,    ///< hold new clients and quiesce the old side for `epoch`, then acknowledge
        release, ///< end the hold of `epoch` onto `to` (the switch committed, or was aborted)
        flip,    ///< not held, but the fleet committed `to` at `epoch` while this member was away
    };
    kind what = kind::none;
    std::int64_t epoch = 0;
    side to = side::old_side;
    friend bool operator==(const member_action&, const member_action&) = default;
};

/// What a member does about its service's epoch record (nullopt: no key, epoch 0 on old). Pure.
member_action react(const std::optional<epoch_state>& epoch, const member_local& local) noexcept;

/// How long a held switch's coordinator must have been gone before another member takes it over
/// (docs/fleet.md, "Takeover"): the lease TTL (`lease_ttl`, as etcd granted it) plus the longest
/// step the coordinator may still be taking while cut off from etcd, `longest_step`: the budget of
/// its pause switch (the service's pause_timeout), which is the deadline of its catch-up, fence
/// and promotion and of the hooks they run. Pure.
std::chrono::milliseconds takeover_wait(std::chrono::seconds lease_ttl, std::chrono::milliseconds longest_step) noexcept;

/// Tells when a held epoch's coordinator has been gone long enough to take its switch over:
/// its member record absent (its lease ended) for `wait` (takeover_wait). The epoch record is
/// watched, the member records are read every few seconds: absence counts only as reads show it,
/// from the first read after the record's last write that misses the coordinator to a read at
/// least `wait` later that still misses it (a few seconds late, never early).
class takeover_watch {
public:
    explicit takeover_watch(std::chrono::milliseconds wait) : wait_(wait) {}
    /// A new wait (the service's budget changed in a reload, a lease with another TTL); applies
    /// to the wait under way too.
    void set_wait(std::chrono::milliseconds wait) noexcept { wait_ = wait; }
    /// True once the record is held by a coordinator whose member record has been missing from
    /// every read for `wait` without a change of the record in between. `members` are as `read`
    /// says: a read older than the record's last write (read.revision below its mod_revision)
    /// tells nothing about this hold.
    bool due(const std::optional<epoch_state>& epoch, const std::vector<member_entry>& members,
             const members_read& read);

private:
    std::chrono::milliseconds wait_;
    std::int64_t watched_revision_ = 0; ///< the held record's mod_revision being watched
    std::optional<clock::time_point> gone_since_;
};

} // namespace tunneld::fleet
