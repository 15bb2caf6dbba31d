#include "fleet/switch_executor.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <deque>

namespace tunneld::fleet {

namespace asio = boost::asio;

namespace {

/// A write that was sent and whose answer was lost may have applied.
bool maybe_applied(const etcd::error& e)
{
    return e.code == etcd::errc::outcome_unknown || e.code == etcd::errc::timeout;
}

} // namespace

asio::awaitable<fleet_result> run_coordinator(etcd::client& client, key_layout keys, std::string service,
                                              coordinator& machine, const membership& members, executor_hooks hooks,
                                              executor_options options)
{
    const auto deadline = [&] { return etcd::clock::now() + options.call_timeout; };
    std::deque<coordinator_effect> queue;
    std::optional<fleet_result> done;
    const auto take = [&](coordinator_step step) {
        queue.insert(queue.end(), step.effects.begin(), step.effects.end());
        if (step.done) done = std::move(step.done);
    };
    // Every acknowledgement must be seen: the service's member records are watched live for the
    // switch (read at R, then every change from R + 1), not taken from the every-few-seconds reads.
    const auto watching = members.watch_members(service);
    asio::steady_timer pause(client.get_executor());
    // A change of the view (an acknowledgement) ends the pause at once: no polling delay.
    struct listening {
        const membership& members;
        std::uint64_t id;
        ~listening() { members.remove_view_listener(id); }
    } listener{members, members.add_view_listener([&pause] { pause.cancel(); })};
    const auto live = [&] {
        const auto read = members.view().members_as_of.find(service);
        return read != members.view().members_as_of.end() && read->second.live;
    };
    // The claim waits (at most a call's timeout) for that watch's stream: one opened after the
    // hold would replay every acknowledgement at once, late (75 ms at 20 members on 2 cores).
    const auto live_by = clock::now() + options.call_timeout;
    while (!live() && clock::now() < live_by) {
        pause.expires_at(live_by);
        co_await pause.async_wait(asio::as_tuple(asio::use_awaitable));
    }
    take(machine.start(clock::now()));
    std::int64_t seen_revision = -1;
    bool seen_reachable = false;
    bool seen_live = false;

    while (!done || !queue.empty()) {
        if (queue.empty()) {
            const fleet_view& view = members.view();
            if (live() && (view.revision != seen_revision || view.reachable != seen_reachable || !seen_live)) {
                seen_revision = view.revision;
                seen_reachable = view.reachable;
                seen_live = true;
                const auto entry = view.services.find(service);
                take(machine.on(members_seen{entry == view.services.end() ? std::vector<member_entry>{}
                                                                          : entry->second.members},
                                clock::now()));
                continue;
            }
            if (const auto when = machine.deadline(); when && clock::now() >= *when) {
                take(machine.on(coordinator_deadline{}, clock::now()));
                continue;
            }
            // Until the machine's deadline, a change of the view, or (a safety net) options.poll.
            const auto next_look = clock::now() + options.poll;
            const auto when = machine.deadline();
            pause.expires_at(when ? std::min(*when, next_look) : next_look);
            co_await pause.async_wait(asio::as_tuple(asio::use_awaitable));
            continue;
        }
        const coordinator_effect effect = std::move(queue.front());
        queue.pop_front();
        if (const auto* line = std::get_if<report>(&effect)) {
            if (hooks.progress) hooks.progress(line->line);
        } else if (const auto* c = std::get_if<claim_epoch>(&effect)) {
            // Arguments with destructors are named outside co_await (GCC PR 100611, see epoch.cpp).
            std::string name = service, member = machine.member();
            auto claimed = co_await claim_next_epoch(client, keys, std::move(name), std::move(member), c->target,
                                                     deadline());
            if (claimed)
                take(machine.on(claim_answered{std::move(*claimed)}, clock::now()));
            else
                take(machine.on(claim_failed{maybe_applied(claimed.err()), claimed.err().to_string()}, clock::now()));
        } else if (const auto* w = std::get_if<write_epoch>(&effect)) {
            const epoch_state expected = machine.state();
            std::string name = service;
            epoch_record next = w->next;
            auto written = co_await update_epoch(client, keys, std::move(name), expected, std::move(next), deadline());
            if (!written)
                take(machine.on(epoch_not_written{false, maybe_applied(written.err()), written.err().to_string()},
                                clock::now()));
            else if (!*written)
                take(machine.on(epoch_not_written{true, false, "the record's mod_revision moved"}, clock::now()));
            else
                take(machine.on(epoch_written{std::move(**written)}, clock::now()));
        } else if (std::holds_alternative<read_back>(effect)) {
            std::string name = service;
            auto read = co_await read_epoch(client, keys, std::move(name), deadline());
            take(machine.on(epoch_read{read ? std::optional(std::move(*read)) : std::nullopt}, clock::now()));
        } else if (const auto* s = std::get_if<switch_servers>(&effect)) {
            auto result = co_await hooks.switch_servers(s->epoch, s->target);
            take(machine.on(std::move(result), clock::now()));
        }
    }
    co_return *done;
}

} // namespace tunneld::fleet
