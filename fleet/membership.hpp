#pragma once
// This member's presence in the fleet: its records (one per service) kept alive under a lease,
// and a live view of every member's records and every service's epoch.

#include "fleet/keys.hpp"
#include "fleet/watch.hpp"

#include <map>

namespace tunneld::fleet {

struct membership_options {
    /// The lease's TTL as asked for; etcd may grant more (it raises TTLs below its minimum).
    std::chrono::seconds lease_ttl = std::chrono::seconds(10);
    /// Records are written when they change and at least this often, so that last_seen is a
    /// heartbeat (the lease's keep-alives are not visible to other members).
    std::chrono::milliseconds heartbeat = std::chrono::seconds(10);
    std::chrono::milliseconds call_timeout = std::chrono::seconds(2);
    watch_options watch;
};

/// One member's record for one service as the view last saw it.
struct member_entry {
    std::string member;
    std::optional<member_record> record; ///< nullopt: the value did not decode (reported, not skipped)
    std::int64_t mod_revision = 0;
    friend bool operator==(const member_entry&, const member_entry&) = default;
};

/// Everything under the fleet's prefix, decoded.
struct fleet_view {
    bool reachable = false;     ///< the watch is connected and has read the prefix
    std::string last_error;     ///< why not, when not reachable (for status and logs)
    std::int64_t revision = 0;  ///< etcd's revision this view is at
    struct service_entry {
        std::optional<epoch_state> epoch; ///< nullopt: no epoch key, or one that did not decode
        bool epoch_malformed = false;
        std::vector<member_entry> members; ///< sorted by member name
        std::optional<pause_record> pause; ///< a fleet-wide pause (a malformed one reads as none)
        friend bool operator==(const service_entry&, const service_entry&) = default;
    };
    std::map<std::string, service_entry> services;
    friend bool operator==(const fleet_view&, const fleet_view&) = default;
};

/// The view a mirror of the fleet's prefix stands for. Pure.
fleet_view make_view(const key_layout& keys, const prefix_mirror& mirror);

/// Brings `view` (make_view of the mirror before `events`) to make_view of `mirror`, the mirror
/// after them, decoding only the records the events changed: a watch message costs one decode
/// per changed key, not one per key under the prefix. Pure.
void apply_events(fleet_view& view, const key_layout& keys, const prefix_mirror& mirror,
                  const std::vector<etcd::event>& events);

/// The epoch a member runs once it has seen `epoch`: the committed epoch when the member is on
/// the committed side (it belongs where the fleet is), else `current` (it is behind). Pure.
std::int64_t epoch_run(const std::optional<epoch_state>& epoch, side active, std::int64_t current) noexcept;

/// Whether `member` is behind its service's committed epoch: on another side than the committed
/// one, or on an older epoch. A missing epoch key reads as epoch 0 on old. Pure.
bool lags_behind(const std::optional<epoch_state>& epoch, const member_record& member) noexcept;

/// The wall clock in Unix milliseconds: the one clock of records' last_seen_ms and pause
/// records' until_ms, which every member of the fleet compares.
std::int64_t unix_ms_now() noexcept;

class membership {
public:
    /// This member's record for each service now; called on the client's executor.
    using records_source = std::function<std::map<std::string, member_record>()>;

    /// `client` must outlive the membership's loops (see `finished`).
    membership(etcd::client& client, key_layout keys, std::string member, records_source records,
               membership_options options = {});
    ~membership();
    membership(const membership&) = delete;
    membership& operator=(const membership&) = delete;

    /// Starts the lease loop and the watch on the client's executor.
    void start();
    /// Ends both loops; the lease is revoked on the way out (the records vanish at once) when
    /// etcd answers within call_timeout.
    void stop();
    /// Both loops have ended after stop(): the client may go.
    bool finished() const;
    /// Writes the records now (call after a state change) instead of at the next heartbeat.
    void publish_now();

    /// Called on the client's executor after each change of the view.
    void on_view_change(std::function<void(const fleet_view&)> callback);
    /// Also calls `listener` on the client's executor after each change of the view, until
    /// remove_view_listener(id): for waiters such as the switch executor. Const: it changes no
    /// record, only who is told.
    std::uint64_t add_view_listener(std::function<void()> listener) const;
    void remove_view_listener(std::uint64_t id) const;
    const fleet_view& view() const;
    /// The lease this member's records are bound to (0 while it has none).
    std::int64_t lease() const;
    /// The TTL of this member's lease as etcd granted it (the one asked for before any grant).
    std::chrono::seconds lease_ttl() const;
    /// How many leases were granted so far: more than one means one was lost and replaced.
    unsigned leases_granted() const;

private:
    struct state;
    std::shared_ptr<state> state_;
};

} // namespace tunneld::fleet
