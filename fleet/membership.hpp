#pragma once
// This member's presence in the fleet: its records (one per service) kept alive under a lease,
// and a view of the services it runs: each one's epoch and fleet-wide pause live (watched), every
// member's record as of the last read (read every few seconds and when asked; watched live only
// while a switch coordinated here needs every acknowledgement as it comes). Watching the member
// records all the time would wake every member for every other member's record: etcd fans each
// put out to every watch, 20 acknowledgements and 20 releases per switch (docs/fleet.md).

#include "fleet/keys.hpp"
#include "fleet/watch.hpp"

#include <boost/asio/awaitable.hpp>
#include <map>
#include <set>

namespace tunneld::fleet {

struct membership_options {
    /// The lease's TTL as asked for; etcd may grant more (it raises TTLs below its minimum).
    std::chrono::seconds lease_ttl = std::chrono::seconds(10);
    /// Records are written when they change and at least this often, so that last_seen is a
    /// heartbeat (the lease's keep-alives are not visible to other members).
    std::chrono::milliseconds heartbeat = std::chrono::seconds(10);
    std::chrono::milliseconds call_timeout = std::chrono::seconds(2);
    /// How often the member records of the watched services are read while not watched live:
    /// the age of `tunnelctl fleet`'s metrics counts and of the takeover clock's view.
    std::chrono::milliseconds members_read_every = std::chrono::seconds(2);
    watch_options watch;
};

/// One member's record for one service as the view last saw it.
struct member_entry {
    std::string member;
    std::optional<member_record> record; ///< nullopt: the value did not decode (reported, not skipped)
    std::int64_t mod_revision = 0;
    friend bool operator==(const member_entry&, const member_entry&) = default;
};

/// When a service's member records in the view were read.
struct members_read {
    /// Watched now (membership::watch_members) and the watch's stream is open: every change is in
    /// the view as etcd sends it.
    bool live = false;
    std::int64_t revision = 0; ///< etcd's revision of the read, or of the last change seen live; 0: never read
    std::int64_t read_ms = 0;  ///< the wall clock (Unix ms) then, for `tunnelctl fleet`
    std::chrono::steady_clock::time_point read_at{}; ///< the same on the steady clock (the takeover clock)
    friend bool operator==(const members_read&, const members_read&) = default;
};

/// Whether a read of a service's member records made at `revision` is news for the view whose
/// records are as `now` says: not while they are watched live (the watch is newer), and not
/// when older than what the view has (a read that was slower than a later one). Pure.
bool newer_members_read(const members_read& now, std::int64_t revision) noexcept;

/// The watched services' keys, decoded. What is live and what is not: each service's epoch and
/// pause are watched (`reachable` says whether every one of those watches is connected); its
/// member records are as of `members_as_of` (read every few seconds, or watched live during a
/// switch coordinated here). A service is listed in `services` while any of its keys exists.
struct fleet_view {
    bool reachable = false;     ///< every epoch and pause watch is connected and has read its key
    std::string last_error;     ///< why not, when not reachable (for status and logs)
    std::int64_t revision = 0;  ///< the highest etcd revision of any read or change in the view
    struct service_entry {
        std::optional<epoch_state> epoch; ///< nullopt: no epoch key, or one that did not decode
        bool epoch_malformed = false;
        std::vector<member_entry> members; ///< sorted by member name
        std::optional<pause_record> pause; ///< a fleet-wide pause (a malformed one reads as none)
        friend bool operator==(const service_entry&, const service_entry&) = default;
    };
    std::map<std::string, service_entry> services;
    std::map<std::string, members_read> members_as_of; ///< per watched service, once read
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

    /// The services to watch (this member's configured ones): their epoch and pause keys are
    /// watched and their member records read. May change at any time (a reload); on the
    /// client's executor.
    void set_services(const std::set<std::string>& services);
    /// Starts the lease loop, the watches and the member reads on the client's executor.
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

    /// Reads the member records of every watched service now (for `tunnelctl fleet`, `check`):
    /// the view has them when this returns, unless etcd did not answer or the view is not
    /// reachable (then they stay as of the last read). On the client's executor.
    boost::asio::awaitable<void> read_members();
    /// Keeps `service`'s member records watched live until the returned guard goes (read at R,
    /// then every change from R + 1: no acknowledgement is missed): for a switch coordinated
    /// here. members_as_of says `live` once the read is in and the stream is open. Several
    /// guards share one watch.
    /// Const: it changes no record, only how the view learns them.
    using members_watch = std::shared_ptr<void>;
    members_watch watch_members(const std::string& service) const;
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
