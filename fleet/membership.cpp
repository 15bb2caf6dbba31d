#include "fleet/membership.hpp"

#include <algorithm>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <spdlog/spdlog.h>

namespace tunneld::fleet {

namespace asio = boost::asio;
using std::chrono::milliseconds;

namespace {

/// Puts `kv`, the value of the key `named`, into `service`: only this record is decoded.
void put_record(fleet_view::service_entry& service, const key_layout::named& named, const etcd::key_value& kv)
{
    switch (named.what) {
    case key_layout::named::kind::epoch:
        service.epoch.reset();
        service.epoch_malformed = false;
        if (auto record = decode_epoch_record(kv.value))
            service.epoch = epoch_state{std::move(*record), kv.mod_revision};
        else
            service.epoch_malformed = true;
        return;
    case key_layout::named::kind::pause:
        service.pause = decode_pause_record(kv.value);
        return;
    case key_layout::named::kind::member:
        break;
    }
    // Members stay sorted by name within a service.
    auto& members = service.members;
    const auto at = std::lower_bound(members.begin(), members.end(), named.member,
                                     [](const member_entry& m, const std::string& name) { return m.member < name; });
    member_entry entry{named.member, decode_member_record(kv.value), kv.mod_revision};
    if (at != members.end() && at->member == named.member)
        *at = std::move(entry);
    else
        members.insert(at, std::move(entry));
}

void erase_record(fleet_view::service_entry& service, const key_layout::named& named)
{
    switch (named.what) {
    case key_layout::named::kind::epoch:
        service.epoch.reset();
        service.epoch_malformed = false;
        return;
    case key_layout::named::kind::pause:
        service.pause.reset();
        return;
    case key_layout::named::kind::member:
        break;
    }
    auto& members = service.members;
    std::erase_if(members, [&](const member_entry& m) { return m.member == named.member; });
}

/// Whether any key the view reads for `service` is left in `mirror` (make_view lists a service
/// exactly while one is).
bool has_service_keys(const key_layout& keys, const prefix_mirror& mirror, const std::string& service)
{
    const auto prefix = keys.service_prefix(service);
    for (auto it = mirror.entries().lower_bound(prefix); it != mirror.entries().end() && it->first.starts_with(prefix);
         ++it) {
        const auto named = keys.parse(it->first);
        if (named && named->service == service) return true;
    }
    return false;
}

} // namespace

fleet_view make_view(const key_layout& keys, const prefix_mirror& mirror)
{
    fleet_view view;
    view.revision = mirror.revision();
    for (const auto& [key, kv] : mirror.entries())
        if (const auto named = keys.parse(key)) put_record(view.services[named->service], *named, kv);
    return view;
}

void apply_events(fleet_view& view, const key_layout& keys, const prefix_mirror& mirror,
                  const std::vector<etcd::event>& events)
{
    view.revision = mirror.revision();
    for (const etcd::event& e : events) {
        const auto named = keys.parse(e.kv.key);
        if (!named) continue;
        if (e.kind == etcd::event::type::put) {
            put_record(view.services[named->service], *named, e.kv);
            continue;
        }
        const auto service = view.services.find(named->service);
        if (service == view.services.end()) continue;
        erase_record(service->second, *named);
        if (!has_service_keys(keys, mirror, named->service)) view.services.erase(service);
    }
}

namespace {

/// The last committed epoch: while a switch holds the service, its record carries the claimed
/// number, one above the committed one.
std::int64_t committed_epoch(const epoch_record& r) noexcept { return r.held() ? r.epoch - 1 : r.epoch; }

} // namespace

std::int64_t epoch_run(const std::optional<epoch_state>& epoch, side active, std::int64_t current) noexcept
{
    if (!epoch || epoch->record.committed != active) return current;
    return std::max(current, committed_epoch(epoch->record));
}

bool lags_behind(const std::optional<epoch_state>& epoch, const member_record& member) noexcept
{
    const epoch_record none{};
    const epoch_record& fleet = epoch ? epoch->record : none;
    return member.active != fleet.committed || member.epoch < committed_epoch(fleet);
}

bool newer_members_read(const members_read& now, std::int64_t revision) noexcept
{
    return !now.live && revision >= now.revision;
}

std::int64_t unix_ms_now() noexcept
{
    return std::chrono::duration_cast<milliseconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

struct membership::state : std::enable_shared_from_this<state> {
    etcd::client& client;
    key_layout keys;
    std::string member;
    records_source records;
    membership_options options;

    bool started = false;
    bool stopped = false;
    int loops_running = 0;
    bool publish_requested = false;
    asio::steady_timer wake;

    /// A watched service: its epoch and pause keys' watches.
    struct watched_service {
        std::shared_ptr<etcd::watch_handle> epoch = std::make_shared<etcd::watch_handle>();
        std::shared_ptr<etcd::watch_handle> pause = std::make_shared<etcd::watch_handle>();
    };
    std::set<std::string> wanted;                  ///< set_services'
    std::map<std::string, watched_service> watched; ///< the services whose watches run
    /// Each epoch and pause watch's last report, by key (nullopt: none yet): the view's reachability.
    std::map<std::string, std::optional<watch_status>> links;
    /// A service's member records watched live, and how many watch_members guards want it.
    struct members_watch_state {
        std::shared_ptr<etcd::watch_handle> handle = std::make_shared<etcd::watch_handle>();
        int guards = 0;
    };
    std::map<std::string, members_watch_state> members_watches;
    asio::steady_timer read_wake; ///< the member reads' own timer (`wake` is the lease loop's)
    bool read_requested = false;

    std::int64_t lease_id = 0;
    unsigned leases_granted = 0;
    std::chrono::seconds granted_ttl{0}; ///< of the last lease granted (0: none yet)
    std::map<std::string, member_record> published; ///< as last written under lease_id
    etcd::clock::time_point last_heartbeat{};

    prefix_mirror mirror;
    fleet_view view;
    std::function<void(const fleet_view&)> on_change;
    std::map<std::uint64_t, std::function<void()>> listeners; ///< add_view_listener's, by id
    std::uint64_t next_listener = 0;

    void changed()
    {
        if (on_change) on_change(view);
        // A copy: a listener may remove itself (or another) while being called.
        const auto now = listeners;
        for (const auto& [id, listener] : now)
            listener();
    }

    state(etcd::client& c, key_layout k, std::string m, records_source r, membership_options o)
        : client(c), keys(std::move(k)), member(std::move(m)), records(std::move(r)), options(o),
          wake(c.get_executor()), read_wake(c.get_executor())
    {
    }

    void spawn(asio::awaitable<void> loop)
    {
        ++loops_running;
        asio::co_spawn(client.get_executor(), std::move(loop), asio::detached);
    }

    /// The view of the mirror, after a read replaced a range of it.
    void rebuild()
    {
        fleet_view next = make_view(keys, mirror);
        next.reachable = view.reachable;
        next.last_error = std::move(view.last_error);
        next.members_as_of = std::move(view.members_as_of);
        view = std::move(next);
    }

    /// Reachable while every epoch and pause watch is connected; otherwise the first error.
    /// True when that changed.
    bool update_reachable()
    {
        bool reachable = !links.empty();
        std::string error;
        for (const auto& [key, link] : links) {
            if (link && link->connected) continue;
            reachable = false;
            if (link && link->error && error.empty()) error = link->error->to_string();
        }
        if (view.reachable == reachable && view.last_error == error) return false;
        view.reachable = reachable;
        view.last_error = std::move(error);
        return true;
    }

    /// Starts the watches of services newly wanted and stops those of services no longer wanted.
    void sync_watches()
    {
        if (!started || stopped) return;
        bool changed_view = false;
        for (auto it = watched.begin(); it != watched.end();) {
            if (wanted.contains(it->first)) {
                ++it;
                continue;
            }
            it->second.epoch->stop();
            it->second.pause->stop();
            links.erase(keys.epoch_key(it->first));
            links.erase(keys.pause_key(it->first));
            mirror.replace(keys.service_prefix(it->first), {});
            view.members_as_of.erase(it->first);
            it = watched.erase(it);
            changed_view = true;
        }
        for (const auto& name : wanted) {
            if (watched.contains(name)) continue;
            const auto& w = watched[name];
            links[keys.epoch_key(name)] = std::nullopt;
            links[keys.pause_key(name)] = std::nullopt;
            spawn(watch_loop(keys.epoch_key(name), w.epoch, {}));
            spawn(watch_loop(keys.pause_key(name), w.pause, {}));
            read_requested = true;
            read_wake.cancel();
            changed_view = true;
        }
        if (!changed_view) return;
        rebuild();
        update_reachable();
        changed();
    }

    void release_members(const std::string& service)
    {
        const auto it = members_watches.find(service);
        if (it == members_watches.end() || --it->second.guards > 0) return;
        it->second.handle->stop();
        members_watches.erase(it);
        if (const auto read = view.members_as_of.find(service); read != view.members_as_of.end())
            read->second.live = false; // as of the last change seen; the reads take over again
    }

    etcd::clock::time_point deadline() const { return etcd::clock::now() + options.call_timeout; }

    /// Sleeps until `until` or stop(), or publish_now() when `wake_on_publish` (not while
    /// backing off from a failure: a caller's publish_now() must not turn the backoff into a spin).
    asio::awaitable<void> sleep_until(etcd::clock::time_point until, bool wake_on_publish)
    {
        while (!stopped && !(wake_on_publish && publish_requested) && etcd::clock::now() < until) {
            wake.expires_at(until);
            co_await wake.async_wait(asio::as_tuple(asio::use_awaitable));
        }
    }

    /// Writes every record that changed (or all, at a heartbeat) and deletes the ones no
    /// longer offered. False when the lease is gone (re-grant) or etcd failed.
    asio::awaitable<bool> publish(bool heartbeat, bool& lease_lost)
    {
        const std::map<std::string, member_record> now = records ? records() : std::map<std::string, member_record>{};
        const auto stamp = unix_ms_now();
        for (const auto& [service, record] : now) {
            const auto it = published.find(service);
            member_record stamped = record;
            if (it != published.end()) stamped.last_seen_ms = it->second.last_seen_ms;
            if (!heartbeat && it != published.end() && it->second == stamped) continue;
            stamped.last_seen_ms = stamp;
            // Named outside co_await: g++ 12 destroys a co_await expression's temporaries twice (PR 100611).
            etcd::put_request request{keys.member_key(service, member), encode(stamped), lease_id};
            auto put = co_await client.put(std::move(request), deadline());
            if (!put) {
                lease_lost = put.err().code == etcd::errc::lease_not_found;
                spdlog::warn("fleet: member record {} not written: {}", keys.member_key(service, member),
                             put.err().to_string());
                co_return false;
            }
            published[service] = stamped;
        }
        for (auto it = published.begin(); it != published.end();) {
            if (now.count(it->first)) {
                ++it;
                continue;
            }
            etcd::delete_request request{keys.member_key(it->first, member), {}};
            auto erased = co_await client.erase(std::move(request), deadline());
            if (!erased) co_return false;
            it = published.erase(it);
        }
        co_return true;
    }

    asio::awaitable<void> lease_loop()
    {
        auto self = shared_from_this();
        milliseconds retry(100);
        while (!stopped) {
            if (lease_id == 0) {
                auto granted = co_await client.lease_grant(options.lease_ttl, deadline());
                if (stopped) break;
                if (!granted) {
                    spdlog::warn("fleet: lease not granted: {}", granted.err().to_string());
                    co_await sleep_until(etcd::clock::now() + retry, false);
                    retry = std::min(retry * 2, milliseconds(options.lease_ttl) / 3);
                    continue;
                }
                lease_id = granted->id;
                granted_ttl = std::chrono::seconds(granted->ttl);
                ++leases_granted;
                published.clear();
                // Keep-alive at a third of the TTL etcd granted, which may exceed the one asked for.
                keep_alive_every = milliseconds(std::chrono::seconds(granted->ttl)) / 3;
                next_keep_alive = etcd::clock::now() + keep_alive_every;
                if (leases_granted > 1) spdlog::info("fleet: lease lost; new lease {:x} granted", lease_id);
            }
            const bool heartbeat = etcd::clock::now() - last_heartbeat >= options.heartbeat;
            publish_requested = false;
            bool lease_lost = false;
            const bool written = co_await publish(heartbeat, lease_lost);
            if (lease_lost) {
                spdlog::warn("fleet: lease {:x} expired; granting a new one and writing the records again", lease_id);
                lease_id = 0;
                continue;
            }
            if (written && heartbeat) last_heartbeat = etcd::clock::now();
            // After a failed write, publish again soon: `published` still holds what etcd has.
            const auto next_publish = written ? last_heartbeat + options.heartbeat : etcd::clock::now() + retry;
            retry = written ? milliseconds(100) : std::min(retry * 2, keep_alive_every);
            co_await sleep_until(std::min(next_keep_alive, next_publish), written);
            if (stopped) break;
            if (etcd::clock::now() < next_keep_alive) continue;
            auto renewed = co_await client.lease_keep_alive(lease_id, deadline());
            if (stopped) break;
            if (renewed) {
                next_keep_alive = etcd::clock::now() + keep_alive_every;
            } else if (renewed.err().code == etcd::errc::lease_not_found) {
                spdlog::warn("fleet: lease {:x} expired; granting a new one and writing the records again", lease_id);
                lease_id = 0;
            } else {
                // Unreachable for now: the lease may still live; try again soon, within its TTL.
                spdlog::warn("fleet: lease keep-alive failed: {}", renewed.err().to_string());
                next_keep_alive = etcd::clock::now() + std::min(keep_alive_every, retry);
                retry = std::min(retry * 2, keep_alive_every);
            }
        }
        if (lease_id != 0) {
            // Best effort: a member that leaves cleanly disappears at once, not after the TTL.
            co_await client.lease_revoke(lease_id, deadline());
            lease_id = 0;
        }
        --loops_running;
    }

    /// Watches the range under `prefix` into the mirror until `handle` stops: an epoch or a pause
    /// key (whose link is the view's reachability), or with `members_of` that service's member
    /// records (live; members_as_of says so).
    asio::awaitable<void> watch_loop(std::string prefix, std::shared_ptr<etcd::watch_handle> handle,
                                     std::string members_of)
    {
        auto self = shared_from_this();
        // Named outside co_await: g++ 12 destroys a co_await expression's temporaries twice (PR 100611).
        std::function<void(const prefix_update&)> on_update = [this, prefix, handle,
                                                               members_of](const prefix_update& update) {
            if (handle->stopped) return;
            if (update.snapshot) {
                mirror.replace(prefix, {update.revision, update.kvs, 0, false});
                rebuild();
            } else {
                mirror.apply(update.events);
                apply_events(view, keys, mirror, update.events); // only what changed is decoded
            }
            if (!members_of.empty()) {
                auto& read = view.members_as_of[members_of];
                read = {read.live, update.revision, unix_ms_now(), std::chrono::steady_clock::now()};
            }
            changed();
        };
        std::function<void(const watch_status&)> on_status = [this, prefix, handle,
                                                               members_of](const watch_status& status) {
            if (handle->stopped) return;
            if (!members_of.empty()) {
                // Live once the stream is open: a stream opened late replays what it missed in one
                // batch (a switch's acknowledgements all at once), so a coordinator waits for it.
                if (!status.streaming) return;
                auto& read = view.members_as_of[members_of];
                if (read.live) return;
                read.live = true;
                changed();
                return;
            }
            links[prefix] = status;
            if (update_reachable() || status.error) changed();
        };
        co_await watch_prefix(client, std::move(prefix), options.watch, std::move(on_update), std::move(on_status),
                              std::move(handle));
        --loops_running;
    }

    /// Reads the member records of each watched service not watched live; a read that brings
    /// news replaces that service's records in the view. Stops at the first failure (etcd away:
    /// the records stay as of the last read).
    asio::awaitable<void> read_members_now()
    {
        auto self = shared_from_this();
        std::vector<std::string> names;
        for (const auto& [name, w] : watched)
            names.push_back(name);
        bool any = false;
        for (const auto& name : names) {
            if (stopped) co_return;
            if (const auto read = view.members_as_of.find(name); read != view.members_as_of.end() && read->second.live)
                continue;
            auto prefix = keys.members_prefix(name);
            auto request = etcd::range_request::prefix(prefix);
            auto read = co_await client.range(std::move(request), deadline());
            if (stopped) co_return;
            if (!read) {
                spdlog::debug("fleet: member records of {} not read: {}", name, read.err().to_string());
                break;
            }
            if (!watched.contains(name) || !newer_members_read(view.members_as_of[name], read->revision)) continue;
            mirror.replace(prefix, *read);
            view.members_as_of[name] = {false, read->revision, unix_ms_now(), std::chrono::steady_clock::now()};
            any = true;
        }
        if (!any) co_return;
        rebuild();
        changed();
    }

    asio::awaitable<void> read_loop()
    {
        auto self = shared_from_this();
        while (!stopped) {
            read_requested = false;
            co_await read_members_now();
            const auto until = etcd::clock::now() + options.members_read_every;
            while (!stopped && !read_requested && etcd::clock::now() < until) {
                read_wake.expires_at(until);
                co_await read_wake.async_wait(asio::as_tuple(asio::use_awaitable));
            }
        }
        --loops_running;
    }

    milliseconds keep_alive_every{1000};
    etcd::clock::time_point next_keep_alive{};
};

membership::membership(etcd::client& client, key_layout keys, std::string member, records_source records,
                       membership_options options)
    : state_(std::make_shared<state>(client, std::move(keys), std::move(member), std::move(records), options))
{
}

membership::~membership() { stop(); }

void membership::set_services(const std::set<std::string>& services)
{
    if (state_->wanted == services) return;
    state_->wanted = services;
    state_->sync_watches();
}

void membership::start()
{
    if (state_->started) return;
    state_->started = true;
    state_->spawn(state_->lease_loop());
    state_->spawn(state_->read_loop());
    state_->sync_watches();
}

void membership::stop()
{
    state_->stopped = true;
    state_->wake.cancel();
    state_->read_wake.cancel();
    for (auto& [name, w] : state_->watched) {
        w.epoch->stop();
        w.pause->stop();
    }
    for (auto& [name, w] : state_->members_watches)
        w.handle->stop();
}

asio::awaitable<void> membership::read_members()
{
    auto state = state_;
    if (state->view.reachable) co_await state->read_members_now(); // else no wait for a read bound to fail
}

membership::members_watch membership::watch_members(const std::string& service) const
{
    auto state = state_;
    auto& w = state->members_watches[service];
    if (w.guards++ == 0 && state->started && !state->stopped)
        state->spawn(state->watch_loop(state->keys.members_prefix(service), w.handle, service));
    return members_watch(state.get(), [state, service](void*) { state->release_members(service); });
}

bool membership::finished() const { return state_->loops_running == 0; }

void membership::publish_now()
{
    state_->publish_requested = true;
    state_->wake.cancel();
}

void membership::on_view_change(std::function<void(const fleet_view&)> callback)
{
    state_->on_change = std::move(callback);
}

std::uint64_t membership::add_view_listener(std::function<void()> listener) const
{
    const auto id = ++state_->next_listener;
    state_->listeners.emplace(id, std::move(listener));
    return id;
}

void membership::remove_view_listener(std::uint64_t id) const { state_->listeners.erase(id); }

const fleet_view& membership::view() const { return state_->view; }
std::int64_t membership::lease() const { return state_->lease_id; }
std::chrono::seconds membership::lease_ttl() const
{
    return state_->granted_ttl.count() > 0 ? state_->granted_ttl : state_->options.lease_ttl;
}
unsigned membership::leases_granted() const { return state_->leases_granted; }

} // namespace tunneld::fleet
