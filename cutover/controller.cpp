#include "cutover/controller.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <chrono>
#include <csignal>
#include <fmt/chrono.h>
#include <fmt/format.h>
#include <set>
#include <spdlog/spdlog.h>

namespace tunneld::cutover {

using asio::as_tuple;
using asio::use_awaitable;
using steady = std::chrono::steady_clock;

namespace {

std::int64_t unix_ms_now()
{
    return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
        .count();
}

/// The reading a switch to new is gated on: none when the newest one measured old behind new
/// (the route just changed; the next probe measures new behind old again).
std::optional<lag_reading> gate_reading(const std::optional<lag_reading>& newest)
{
    if (newest && newest->replica == proxy::side::old_side) return std::nullopt;
    return newest;
}

/// The journal as stored: the write pause's wall-clock expiry is fixed when its step is first
/// journaled (kept from `previous` after that); a running hook's process group comes from `hook_pgid`.
std::optional<journal_record> journal_to_record(const std::optional<switch_journal>& j,
                                                const std::optional<journal_record>& previous, int hook_pgid)
{
    if (!j) return std::nullopt;
    journal_record r;
    r.id = j->id;
    r.from = proxy::to_string(j->from);
    r.to = proxy::to_string(j->to);
    r.mode = config::to_string(j->mode);
    r.step = to_string(j->step);
    if (previous && previous->id == r.id && previous->pause_expires_unix_ms)
        r.pause_expires_unix_ms = previous->pause_expires_unix_ms;
    else if (j->pause_hold)
        r.pause_expires_unix_ms = unix_ms_now() + j->pause_hold->count();
    if (hook_pgid > 0) r.hook_pgid = hook_pgid;
    return r;
}

/// Per-side values as the state file keeps them ("old", "new") and back.
std::map<std::string, unsigned> sides_to_record(const std::map<side, unsigned>& values)
{
    std::map<std::string, unsigned> stored;
    for (const auto& [which, value] : values) stored[std::string(proxy::to_string(which))] = value;
    return stored;
}
std::map<side, unsigned> sides_from_record(const std::map<std::string, unsigned>& stored)
{
    std::map<side, unsigned> values;
    for (const auto& [which, value] : stored) values[which == "new" ? side::new_side : side::old_side] = value;
    return values;
}

} // namespace

struct controller::entry {
    entry(std::shared_ptr<proxy::service> s, asio::io_context& loop, route initial, bool fenced_at_start,
          std::optional<switch_journal> journal, bool new_fenced_at_start)
        : svc(std::move(s)), settings(svc->settings()),
          machine(settings->kind, initial, settings->name, fenced_at_start, std::move(journal), new_fenced_at_start),
          deadline_timer(loop)
    {
    }

    std::shared_ptr<proxy::service> svc;
    std::shared_ptr<const config::service_config> settings;
    switch_machine machine; ///< decides; everything below carries out or reports
    asio::steady_timer deadline_timer;
    /// A switch ended by its deadline, for the command still waiting for its last step.
    std::optional<command_outcome> finished;
    std::optional<probe_endpoints> probes;
    std::shared_ptr<replication> probe_replication;  ///< used only by the probe loop
    std::shared_ptr<replication> switch_replication; ///< used only by switches
    std::uint64_t probe_generation = 0;
    std::optional<lag_reading> lag;
    lag_history history; ///< guarded by the controller's mutex
    std::map<std::string, std::uint64_t> switches{{"done", 0}, {"refused", 0}, {"failed", 0}};
    std::optional<switch_record> last_switch;
    std::optional<switch_progress> current; ///< the switch under way; guarded by the controller's mutex
    // What the command under way did to clients (loop only): reset when a command starts.
    std::optional<steady::time_point> held_since;
    std::optional<std::chrono::milliseconds> held;
    std::uint64_t cut = 0;
    std::optional<std::uint64_t> moved;
    std::shared_ptr<fleet_gate> gate; ///< the fleet switch under way (loop only)
    int hook_pgid = 0; ///< process group of a hook a switch step is running (0: none); guarded by the mutex
};

void fleet_gate::decide(fleet_go go, std::string reason)
{
    if (decision_) return;
    decision_ = fleet_decision{go, std::move(reason)};
    signal_.cancel();
}

asio::awaitable<fleet_decision> fleet_gate::wait(std::chrono::steady_clock::time_point until)
{
    if (on_held) on_held();
    signal_.expires_at(until);
    while (!decision_) {
        auto [ec] = co_await signal_.async_wait(as_tuple(use_awaitable));
        if (!ec) break; // the budget's end: no decision came
    }
    co_return decision_.value_or(fleet_decision{fleet_go::abort, "no decision from the fleet within the pause budget"});
}

controller::controller(asio::io_context& loop, std::filesystem::path state_file, state initial,
                       replication_factory make)
    : loop_(loop), state_file_(std::move(state_file)), make_replication_(std::move(make)),
      persisted_(std::move(initial))
{
}

controller::~controller()
{
    stop();
    blocking_.join();
}

void controller::stop()
{
    std::lock_guard lock(mutex_);
    stopped_ = true;
    for (auto& [name, e] : entries_) {
        e->probe_generation++;
        e->deadline_timer.cancel();
    }
}

route controller::initial_route(const config::service_config& settings) const
{
    if (const auto it = persisted_.services.find(settings.name); it != persisted_.services.end()) {
        const auto& record = it->second;
        route r = proxy::route_to(record.active == "new" ? side::new_side : side::old_side);
        if (record.split && settings.kind == config::service_kind::tcp) {
            r.split_percent = static_cast<std::uint8_t>(record.split_percent);
            r.sticky = record.sticky;
        }
        return r;
    }
    if (settings.split_percent && settings.kind == config::service_kind::tcp) {
        route r;
        r.split_percent = static_cast<std::uint8_t>(*settings.split_percent);
        r.sticky = settings.split_sticky;
        return r;
    }
    return route{};
}

std::shared_ptr<controller::entry> controller::find(const std::string& name) const
{
    std::lock_guard lock(mutex_);
    const auto it = entries_.find(name);
    return it == entries_.end() ? nullptr : it->second;
}

bool controller::has_service(const std::string& name) const
{
    return find(name) != nullptr;
}

std::shared_ptr<const config::service_config> controller::settings(const std::string& name) const
{
    const auto e = find(name);
    if (!e) return nullptr;
    std::lock_guard lock(mutex_);
    return e->settings;
}

void controller::add_service(std::shared_ptr<proxy::service> svc, std::optional<probe_endpoints> probes)
{
    const auto settings = svc->settings();
    const auto persisted = persisted_.services.find(settings->name);
    const bool fenced = persisted != persisted_.services.end() && persisted->second.fenced;
    const bool new_fenced = persisted != persisted_.services.end() && persisted->second.new_fenced;
    std::optional<switch_journal> journal;
    if (persisted != persisted_.services.end() && persisted->second.journal) {
        const auto& r = *persisted->second.journal;
        journal = switch_journal{r.id,
                                 r.from == "new" ? side::new_side : side::old_side,
                                 r.to == "new" ? side::new_side : side::old_side,
                                 config::switch_mode::pause,
                                 parse_journal_step(r.step).value_or(journal_step::pause_writes),
                                 std::nullopt};
    }
    auto e = std::make_shared<entry>(svc, loop_, svc->current_route(), fenced, journal, new_fenced);
    if (journal) svc->set_route(e->machine.current_route()); // held until recovered
    {
        std::lock_guard lock(mutex_);
        entries_[settings->name] = e;
    }
    update_service(settings->name, settings, std::move(probes));
    if (journal) {
        const auto pgid = persisted->second.journal->hook_pgid.value_or(0);
        asio::co_spawn(loop_, recover(e, pgid), asio::detached);
    }
}

void controller::remove_service(const std::string& name)
{
    std::lock_guard lock(mutex_);
    if (const auto it = entries_.find(name); it != entries_.end()) {
        it->second->probe_generation++;
        it->second->deadline_timer.cancel();
        entries_.erase(it);
    }
}

void controller::update_service(const std::string& name,
                                std::shared_ptr<const config::service_config> settings,
                                std::optional<probe_endpoints> probes)
{
    auto e = find(name);
    if (!e) return;
    std::uint64_t generation = 0;
    {
        std::lock_guard lock(mutex_);
        e->settings = settings;
        e->probes = probes;
        generation = ++e->probe_generation;
        e->lag.reset();
        // What old had before our fence outlives the replication object: a reload hands it from
        // the one it replaces, a start from the state file.
        std::map<side, unsigned> before_fence;
        if (e->switch_replication)
            before_fence = e->switch_replication->values_before_fence();
        else if (const auto it = persisted_.services.find(name); it != persisted_.services.end())
            before_fence = sides_from_record(it->second.min_replicas_before_fence);
        e->probe_replication.reset();
        e->switch_replication.reset();
        if (probes && settings->kind != config::service_kind::tcp) {
            e->probe_replication = make_replication_(*settings, probes->old_endpoint, probes->new_endpoint);
            e->switch_replication = make_replication_(*settings, probes->old_endpoint, probes->new_endpoint);
            if (e->switch_replication) {
                e->switch_replication->remember_values_before_fence(before_fence);
                // A hook's process group goes into the journal as soon as it runs (on the worker
                // thread): a daemon killed meanwhile finds it at start, and waits for it or kills it.
                std::weak_ptr<entry> weak = e;
                e->switch_replication->observe_hooks([this, weak](int pgid) {
                    auto held = weak.lock();
                    if (!held) return;
                    {
                        std::lock_guard lock(mutex_);
                        held->hook_pgid = pgid;
                        if (pgid == 0 || !held->machine.journal()) return;
                    }
                    if (auto error = save_now())
                        spdlog::warn("service={} the journal could not record the hook's process group: {}",
                                     held->settings->name, *error);
                });
            }
        }
    }
    e->svc->update_settings(settings);
    if (e->probe_replication) asio::co_spawn(loop_, probe_loop(e, generation), asio::detached);
}

asio::awaitable<void> controller::probe_loop(std::shared_ptr<entry> e, std::uint64_t generation)
{
    asio::steady_timer timer(loop_);
    for (;;) {
        std::shared_ptr<replication> probe;
        config::duration interval;
        side active = side::old_side;
        {
            std::lock_guard lock(mutex_);
            if (stopped_ || e->probe_generation != generation) co_return;
            probe = e->probe_replication;
            interval = e->settings->probe_interval;
            active = e->machine.current_route().active;
        }
        // The lag of whichever side follows the active one: new before a switch, old after it.
        const auto measure = [probe, active] { return probe->probe(active); };
        const lag_reading reading = co_await off_loop(measure);
        {
            std::lock_guard lock(mutex_);
            if (stopped_ || e->probe_generation != generation) co_return;
            // A probe that starts or stops failing is worth one line; every reading is not.
            const auto before = e->lag ? e->lag->link : link_state::unknown;
            const bool first = !e->lag;
            if (first || before != reading.link) {
                if (reading.link == link_state::up)
                    spdlog::info("service={} replication link up ({})", e->settings->name, reading.detail);
                else
                    spdlog::warn("service={} replication link {}: {}", e->settings->name,
                                 to_string(reading.link), reading.detail);
            }
            e->lag = reading;
            e->history.add(reading, unix_ms_now());
        }
        co_await keep_fence(e, probe);
        timer.expires_after(interval);
        co_await timer.async_wait(as_tuple(use_awaitable));
    }
}

asio::awaitable<void> controller::keep_fence(std::shared_ptr<entry> e, std::shared_ptr<replication> probe)
{
    config::duration timeout{};
    side left = side::old_side;
    bool left_follows = false; // configured to be a replica of the active side once fenced
    {
        std::lock_guard lock(mutex_);
        if (!e->machine.keeps_fence() || e->settings->fence == config::redis_fence::none) co_return;
        timeout = e->settings->probe_timeout;
        left = proxy::other(e->machine.current_route().active);
        left_follows = followed_primary(*e->settings, left).has_value();
    }
    // A fence set with CONFIG SET or REPLICAOF does not survive a restart: look for it on the
    // side clients are not on; a fenced primary that should follow and does not is retried too.
    const auto look = [probe, timeout] { return probe->observe(steady::now() + 2 * timeout); };
    observations seen = co_await off_loop(look);
    const auto& watched = seen.of(left);
    if (watched.role != server_role::primary || (watched.fenced && !left_follows)) co_return;
    event ev = fence_lost{std::move(seen)};
    progress_fn nobody = [](const std::string&) {};
    co_await execute(e, std::move(ev), std::move(nobody));
}

template <class F> asio::awaitable<std::invoke_result_t<F>> controller::off_loop(const F& f)
{
    // Blocking work (probes, replication steps, fsync) runs on the pool; the loop keeps pumping.
    // Not a coroutine, and `f` by reference: g++ 12 destroys by-value temporaries of a co_await
    // expression twice, so callers pass named lambdas and nothing temporary is owned here.
    return asio::co_spawn(
        blocking_, [f]() mutable -> asio::awaitable<std::invoke_result_t<F>> { co_return f(); },
        use_awaitable);
}

void controller::arm_deadline(const std::shared_ptr<entry>& e)
{
    e->deadline_timer.cancel();
    const auto deadline = e->machine.deadline();
    if (!deadline) return;
    e->deadline_timer.expires_at(*deadline);
    e->deadline_timer.async_wait([this, e](boost::system::error_code ec) {
        if (!ec) on_deadline(e);
    });
}

void controller::on_deadline(const std::shared_ptr<entry>& e)
{
    {
        std::lock_guard lock(mutex_);
        if (stopped_) return;
    }
    // The budget of a pause switch, a manual pause or a drain: whoever started it may still be
    // waiting for a step; this path only routes and cuts, the machine keeps the servers' steps in order.
    asio::co_spawn(
        loop_,
        [this, e]() -> asio::awaitable<void> {
            // A switch ended here is answered by the coroutine still waiting for its step.
            // Named, not temporaries: g++ 12 destroys a co_await expression's temporaries twice.
            event ev = deadline_reached{};
            progress_fn nobody = [](const std::string&) {};
            if (auto outcome = co_await execute(e, std::move(ev), std::move(nobody)))
                e->finished = std::move(outcome);
        },
        asio::detached);
}

asio::awaitable<std::optional<command_outcome>> controller::execute(std::shared_ptr<entry> e, event ev,
                                                                    progress_fn progress)
{
    std::optional<command_outcome> outcome;
    for (;;) {
        step next;
        {
            std::lock_guard lock(mutex_);
            next = e->machine.on(ev, steady::now());
        }
        arm_deadline(e);
        auto answer = co_await perform(e, std::move(next.effects), progress);
        if (next.done) {
            record_result(*e, *next.done);
            outcome = next.done;
        }
        if (!answer) break;
        ev = std::move(*answer);
    }
    co_return outcome;
}

asio::awaitable<command_result> controller::command(std::shared_ptr<entry> e, event ev, progress_fn progress)
{
    e->held.reset();
    e->cut = 0;
    e->moved.reset();
    auto outcome = co_await execute(e, std::move(ev), std::move(progress));
    if (!outcome) outcome = std::exchange(e->finished, std::nullopt);
    command_result result =
        !outcome ? command_result::failure(verdict::failed, "the command ended without an outcome")
        : outcome->result != verdict::done ? command_result::failure(outcome->result, outcome->message)
                                            : command_result{};
    if (outcome && outcome->result == verdict::done) {
        std::lock_guard lock(mutex_);
        result.service = describe(*e);
    }
    result.held = e->held;
    result.cut = e->cut;
    result.moved = e->moved;
    result.adopted = outcome && outcome->adopted;
    co_return result;
}

asio::awaitable<std::optional<event>> controller::perform(std::shared_ptr<entry> e, std::vector<effect> effects,
                                                          progress_fn progress)
{
    std::optional<event> answer;
    for (const auto& what : effects) answer = co_await perform_one(e, what, progress);
    co_return answer;
}

asio::awaitable<std::optional<event>> controller::perform_one(const std::shared_ptr<entry>& e, const effect& what,
                                                              const progress_fn& progress)
{
    const auto& name = e->settings->name;
    auto repl = e->switch_replication;
    const auto asked = [&](step_kind which, const step_result& r) -> std::optional<event> {
        return step_done{which, r.ok, r.message, r.no_op, r.unanswered};
    };
    // The machine asks a server step only of a service whose replication is set up.
    const auto missing = step_result::failure("no replication is set up for this service");
    if (const auto* p = std::get_if<cutover::progress>(&what)) {
        progress(p->line);
    } else if (const auto* l = std::get_if<log_line>(&what)) {
        if (l->warning)
            spdlog::warn("service={} {}", name, l->line);
        else
            spdlog::info("service={} {}", name, l->line);
    } else if (std::holds_alternative<hold_new_clients>(what)) {
        if (!e->held_since) e->held_since = steady::now();
        auto r = e->svc->current_route();
        r.hold = true;
        e->svc->set_route(r);
    } else if (const auto* r = std::get_if<release>(&what)) {
        if (e->held_since && !r->to.hold) {
            e->held = std::chrono::duration_cast<std::chrono::milliseconds>(steady::now() - *e->held_since);
            e->held_since.reset();
        }
        e->svc->set_route(r->to);
        // Clients held at a request boundary on the side that stays go on there.
        if (!r->to.hold && !r->to.split_percent) e->svc->resume_clients(r->to.active);
    } else if (const auto* q = std::get_if<quiesce_clients>(&what)) {
        co_await quiesce_step(e, *q, progress);
    } else if (const auto* m = std::get_if<move_clients>(&what)) {
        co_await move_step(e, *m, progress);
    } else if (const auto* c = std::get_if<cut>(&what)) {
        const auto n = e->svc->clients().cut(c->which, c->why);
        e->cut += n;
        if (c->why == proxy::close_reason::drain_timeout)
            spdlog::info("service={} drain_timeout: cut {} clients on side {}", name, n, proxy::to_string(c->which));
        else if (n > 0)
            spdlog::info("service={} cut {} clients on side {}", name, n, proxy::to_string(c->which));
    } else if (std::holds_alternative<cutover::persist>(what)) {
        const auto error = co_await persist();
        co_return step_done{step_kind::persist, !error, error.value_or("")};
    } else if (const auto* d = std::get_if<drain_clients>(&what)) {
        co_return co_await drain_clients_step(e, *d, progress);
    } else if (const auto* w = std::get_if<watch_drain>(&what)) {
        co_return co_await watch_drain_step(e, *w, progress);
    } else if (std::holds_alternative<fleet_switched>(what)) {
        if (e->gate && e->gate->on_switched) e->gate->on_switched();
    } else if (const auto* f = std::get_if<wait_fleet>(&what)) {
        auto gate = e->gate;
        if (!gate) co_return fleet_decision{fleet_go::abort, "no fleet switch is under way"};
        co_return co_await gate->wait(f->until);
    } else if (!repl) {
        if (answers(what)) co_return asked(kind_of_answer(what), missing);
    } else if (const auto* p = std::get_if<pause_writes>(&what)) {
        const auto run = [repl, hold = p->hold] { return repl->pause_writes(hold); };
        co_return asked(step_kind::pause_writes, co_await off_loop(run));
    } else if (const auto* w = std::get_if<wait_caught_up>(&what)) {
        const auto run = [repl, deadline = w->deadline] { return repl->wait_caught_up(deadline); };
        co_return asked(step_kind::wait_caught_up, co_await off_loop(run));
    } else if (const auto* p = std::get_if<promote>(&what)) {
        const auto run = [repl, deadline = p->deadline] { return repl->promote(deadline); };
        co_return asked(step_kind::promote, co_await off_loop(run));
    } else if (const auto* c = std::get_if<check_roles>(&what)) {
        const auto run = [repl, until = c->until] { return repl->verify_promoted(until); };
        co_return asked(step_kind::check_roles, co_await off_loop(run));
    } else if (const auto* f = std::get_if<fence>(&what)) {
        const auto run = [repl, which = f->which, deadline = f->deadline] { return repl->fence(which, deadline); };
        co_return asked(step_kind::fence, co_await off_loop(run));
    } else if (const auto* f = std::get_if<follow>(&what)) {
        const auto run = [repl, which = f->which, deadline = f->deadline] { return repl->follow(which, deadline); };
        co_return asked(step_kind::follow, co_await off_loop(run));
    } else if (const auto* u = std::get_if<unfence>(&what)) {
        const auto run = [repl, which = u->which] { return repl->unfence(which); };
        const auto result = co_await off_loop(run);
        if (!result.ok)
            spdlog::warn("service={} {}", name, result.message);
        else
            spdlog::info("service={} {}", name, result.message);
    } else if (const auto* b = std::get_if<roll_back>(&what)) {
        rollback_options options;
        options.pause_hold = b->pause_hold;
        options.force = b->force;
        options.new_replicaof = e->settings->rollback_replicaof;
        const auto run = [repl, options, deadline = b->deadline] { return repl->rollback(options, deadline); };
        co_return asked(step_kind::roll_back, co_await off_loop(run));
    } else if (const auto* u = std::get_if<unpause>(&what)) {
        const auto run = [repl, which = u->on] { return repl->unpause(which); };
        const auto result = co_await off_loop(run);
        if (!result.ok) spdlog::warn("service={} {}", name, result.message);
    }
    co_return std::nullopt;
}

namespace {

} // namespace

std::chrono::microseconds client_poll_after(unsigned looks) noexcept
{
    // A client ordered to hold or move usually gets there within one request's round trip
    // (its next backend socket was prepared during the hold), so the first looks come soon;
    // a client still busy then (a transaction, a slow command) is looked at every 2 ms.
    constexpr std::chrono::microseconds first{250}, most{2000};
    return looks >= 3 ? most : first * (1u << looks);
}

asio::awaitable<void> controller::quiesce_step(std::shared_ptr<entry> e, quiesce_clients what, progress_fn progress)
{
    const auto& svc = *e->svc;
    const auto ordered = e->svc->hold_clients(what.from);
    const auto started = steady::now();
    asio::steady_timer poll(loop_);
    auto census = svc.census(what.from);
    // A client blocked in BRPOP (or XREAD BLOCK, ...) would wait out its timeout, and Redis
    // answers it -UNBLOCKED when its server turns replica: end its wait as a timeout would.
    std::set<std::int64_t> unblocked;
    std::size_t unblocked_count = 0;
    for (unsigned looks = 0; census.busy() > 0 && steady::now() < what.until; ++looks) {
        poll.expires_after(client_poll_after(looks));
        co_await poll.async_wait(as_tuple(use_awaitable));
        std::vector<std::int64_t> blocked;
        if (e->switch_replication)
            for (const auto id : svc.blocked_backend_ids(what.from))
                if (unblocked.insert(id).second) blocked.push_back(id);
        if (!blocked.empty()) {
            const auto repl = e->switch_replication;
            const auto run = [repl, which = what.from, &blocked] { return repl->unblock_clients(which, blocked); };
            const auto result = co_await off_loop(run);
            if (!result.ok) spdlog::warn("service={} {}", e->settings->name, result.message);
            if (result.ok) unblocked_count += blocked.size();
        }
        census = svc.census(what.from);
    }
    if (ordered == 0) co_return;
    const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(steady::now() - started).count();
    std::string line = fmt::format("{} clients on {} held at a request boundary in {}ms", census.held,
                                   proxy::to_string(what.from), ms);
    if (unblocked_count > 0) line += fmt::format(" ({} unblocked from a blocking command)", unblocked_count);
    if (census.pinned_lasting > 0) line += fmt::format(", {} pinned for good (cut at the move)", census.pinned_lasting);
    if (census.busy() > 0)
        line += fmt::format(", {} still busy (a transaction or a blocking command): they move when they unpin",
                            census.busy());
    progress(line);
}

asio::awaitable<void> controller::move_step(std::shared_ptr<entry> e, move_clients what, progress_fn progress)
{
    auto& svc = *e->svc;
    const auto& counters = svc.counters();
    const auto moved_before = counters.clients_moved.load();
    const auto failed_before = counters.clients_move_failed.load();
    const auto ahead_before = counters.moves_ready_ahead.load();
    const auto started = steady::now();
    std::uint64_t cut = svc.move_clients(what.from, what.to);
    asio::steady_timer poll(loop_);
    // Pinned clients move as they unpin; whoever is still on `from` at `until` is cut.
    for (unsigned looks = 0; svc.clients().count(what.from) > 0 && steady::now() < what.until; ++looks) {
        poll.expires_after(client_poll_after(looks));
        co_await poll.async_wait(as_tuple(use_awaitable));
    }
    cut += svc.cut_unmoved(what.from);
    // The last moves replay their session on the other side: wait for their answers (each is
    // bounded by connect_timeout).
    for (unsigned looks = 0;
         counters.moves_in_flight.load() > 0 && steady::now() < what.until + e->settings->connect_timeout; ++looks) {
        poll.expires_after(client_poll_after(looks));
        co_await poll.async_wait(as_tuple(use_awaitable));
    }
    const auto moved = counters.clients_moved.load() - moved_before;
    const auto failed = counters.clients_move_failed.load() - failed_before;
    const auto ahead = counters.moves_ready_ahead.load() - ahead_before;
    e->moved = e->moved.value_or(0) + moved;
    e->cut += cut + failed;
    const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(steady::now() - started).count();
    std::string line = fmt::format("moved {} clients from {} to {} in {}ms", moved, proxy::to_string(what.from),
                                   proxy::to_string(what.to), ms);
    if (ahead > 0)
        line += fmt::format(" ({} connected and replayed on {} during the hold)", ahead,
                            proxy::to_string(what.to));
    if (cut > 0) line += fmt::format("; cut {} pinned", cut);
    if (failed > 0) line += fmt::format("; {} could not be moved (see the log)", failed);
    progress(line);
    spdlog::info("service={} {}", e->settings->name, line);
}

asio::awaitable<event> controller::drain_clients_step(std::shared_ptr<entry> e, drain_clients what,
                                                      progress_fn progress)
{
    const auto clients = e->svc->clients().count(what.from);
    if (clients > 0) {
        progress(fmt::format("waiting for {} {} clients to finish (up to {})", clients, proxy::to_string(what.from),
                             format_duration(what.up_to)));
        asio::steady_timer poll(loop_);
        while (e->svc->clients().count(what.from) > 0 && steady::now() < what.until) {
            poll.expires_after(std::chrono::milliseconds(20));
            co_await poll.async_wait(as_tuple(use_awaitable));
        }
    }
    co_return step_done{step_kind::drain_clients, true, {}};
}

asio::awaitable<event> controller::watch_drain_step(std::shared_ptr<entry> e, watch_drain what, progress_fn progress)
{
    progress(fmt::format("new clients go to {}; draining {} clients on {} (up to {})",
                         proxy::to_string(proxy::other(what.from)), e->svc->clients().count(what.from),
                         proxy::to_string(what.from), format_duration(what.up_to)));
    asio::steady_timer poll(loop_);
    // tunnelctl gives up after 120s without a line: a long drain says how it is going every 30s.
    auto next_report = steady::now() + std::chrono::seconds(30);
    for (;;) {
        if (e->machine.state() != service_state::draining) break;
        if (e->svc->clients().count(what.from) == 0) break;
        if (steady::now() >= next_report) {
            next_report += std::chrono::seconds(30);
            progress(fmt::format("still draining {} clients on {}", e->svc->clients().count(what.from),
                                 proxy::to_string(what.from)));
        }
        poll.expires_after(std::chrono::milliseconds(50));
        co_await poll.async_wait(as_tuple(use_awaitable));
    }
    co_return side_empty{};
}

std::optional<std::string> controller::save_now()
{
    std::uint64_t sequence = 0;
    state snapshot;
    {
        std::lock_guard lock(mutex_);
        snapshot = persisted_;
        for (const auto& [name, e] : entries_) {
            const auto& r = e->machine.current_route();
            auto& record = snapshot.services[name];
            const auto previous = record;
            record.active = proxy::to_string(r.active);
            record.split = r.split_percent.has_value();
            record.split_percent = r.split_percent.value_or(0);
            record.sticky = r.sticky;
            record.fenced = e->machine.fenced();
            record.new_fenced = e->machine.new_fenced();
            if (e->switch_replication)
                record.min_replicas_before_fence = sides_to_record(e->switch_replication->values_before_fence());
            record.journal = journal_to_record(e->machine.journal(), previous.journal, e->hook_pgid);
            if (!(record == previous) || record.updated.empty()) record.updated = utc_now();
        }
        persisted_ = snapshot;
        std::lock_guard save_lock(save_mutex_);
        sequence = ++save_sequence_;
    }
    std::lock_guard lock(save_mutex_);
    // A newer snapshot already on disk includes this one's changes: writing this would go back in time.
    if (sequence <= saved_sequence_) return std::nullopt;
    auto error = save_state(state_file_, snapshot);
    if (!error) saved_sequence_ = sequence;
    return error;
}

asio::awaitable<std::optional<std::string>> controller::persist()
{
    const auto write = [this] { return save_now(); };
    auto error = co_await off_loop(write);
    co_return error;
}

void controller::record_result(entry& e, const command_outcome& outcome)
{
    if (!outcome.recorded) return;
    // A switch refused as busy counts as refused in the history, as it always has.
    const std::string result(to_string(outcome.result == verdict::busy ? verdict::refused : outcome.result));
    std::lock_guard lock(mutex_);
    e.switches[result]++;
    e.last_switch = switch_record{result, utc_now(), outcome.message, e.cut, e.moved, outcome.adopted};
}

asio::awaitable<command_result> controller::switch_side(std::string name, side to,
                                                        std::optional<config::switch_mode> requested_mode,
                                                        bool force, progress_fn progress,
                                                        std::shared_ptr<fleet_gate> gate)
{
    auto e = find(name);
    if (!e)
        co_return command_result::failure(verdict::unknown_service, fmt::format("no service named \"{}\"", name));
    const auto settings = e->settings;
    switch_command request;
    request.id = gate ? fmt::format("{}-epoch-{}", name, gate->epoch()) : fmt::format("{}-{}", name, unix_ms_now());
    if (gate) requested_mode = config::switch_mode::pause;
    request.request = switch_request{to, requested_mode.value_or(settings->mode), force};
    request.fleet = gate != nullptr;
    bool started_here = false;
    {
        // What the status page shows while this runs; cleared when the command ends.
        std::lock_guard lock(mutex_);
        if (!e->current && e->machine.state() == service_state::serving) {
            started_here = true;
            e->current = switch_progress{.action = to == side::old_side ? "rollback" : "switch",
                                         .from = e->machine.current_route().active,
                                         .to = to,
                                         .mode = requested_mode.value_or(settings->mode),
                                         .started_unix_ms = unix_ms_now(),
                                         .started = steady::now(),
                                         .steps = {}};
        }
    }
    struct progress_clear {
        controller& c;
        std::shared_ptr<entry> e;
        bool mine;
        ~progress_clear()
        {
            if (!mine) return; // a refused second command leaves the running one's progress alone
            std::lock_guard lock(c.mutex_);
            e->current.reset();
        }
    } clear_at_end{*this, e, started_here};
    progress_fn recorded = [this, e, progress = std::move(progress)](const std::string& line) {
        {
            std::lock_guard lock(mutex_);
            if (e->current) e->current->steps.push_back(line);
        }
        progress(line);
    };
    request.limits = switch_limits{
        .drain_timeout = settings->drain_timeout,
        .pause_timeout = settings->pause_timeout,
        .max_lag = settings->max_lag,
        .max_lag_seconds = settings->max_lag_seconds,
        .max_lag_age = 3 * settings->probe_interval + settings->probe_timeout,
    };
    std::optional<probe_endpoints> probes;
    bool other_side = false;
    {
        std::lock_guard lock(mutex_);
        request.replicated = e->switch_replication != nullptr;
        request.lag = gate_reading(e->lag);
        probes = e->probes;
        const auto& r = e->machine.current_route();
        other_side = !e->machine.busy() && (r.split_percent || r.active != to);
    }
    if (request.replicated && probes && other_side && !gate) {
        // Whether the servers are at the start, already switched (adopt), or neither. On
        // connections of its own: a switch under way keeps its replication to itself.
        const auto look = [this, settings, probes] {
            auto repl = make_replication_(*settings, probes->old_endpoint, probes->new_endpoint);
            return repl->observe(steady::now() + 2 * settings->probe_timeout);
        };
        // Named, not a temporary: g++ 12 destroys a co_await expression's temporaries twice.
        observations seen = co_await off_loop(look);
        request.seen = std::move(seen);
    }
    event ev = std::move(request);
    if (!gate) co_return co_await command(e, std::move(ev), std::move(recorded));
    if (e->gate) co_return command_result::failure(verdict::busy, fmt::format("a fleet switch of {} is under way", name));
    e->gate = gate;
    auto result = co_await command(e, std::move(ev), std::move(recorded));
    e->gate.reset();
    co_return result;
}

std::optional<std::string> controller::gate_refusal(const std::string& name, side to,
                                                    std::optional<config::switch_mode> mode, bool force) const
{
    auto e = find(name);
    if (!e) return std::nullopt;
    const auto settings = e->settings;
    if (settings->kind == config::service_kind::tcp || to != side::new_side ||
        mode.value_or(settings->mode) != config::switch_mode::pause)
        return std::nullopt;
    std::lock_guard lock(mutex_);
    const auto now = steady::now();
    const auto reading = gate_reading(e->lag);
    const auto gate = check_gate(reading ? *reading : unknown_lag("no probe has answered yet", now), settings->max_lag,
                                 settings->max_lag_seconds, force, now,
                                 3 * settings->probe_interval + settings->probe_timeout);
    if (gate.allowed) return std::nullopt;
    return "switch refused: " + gate.reason;
}

asio::awaitable<command_result> controller::rollback(std::string name, progress_fn progress)
{
    auto e = find(name);
    if (!e)
        co_return command_result::failure(verdict::unknown_service, fmt::format("no service named \"{}\"", name));
    // A rollback is an operator's way back: it uses the service's mode and skips the lag gate.
    co_return co_await switch_side(std::move(name), side::old_side, std::nullopt, false, std::move(progress));
}

asio::awaitable<command_result> controller::split(std::string name, unsigned percent, bool sticky)
{
    auto e = find(name);
    if (!e)
        co_return command_result::failure(verdict::unknown_service, fmt::format("no service named \"{}\"", name));
    event ev = split_command{percent, sticky};
    progress_fn nobody = [](const std::string&) {};
    co_return co_await command(e, std::move(ev), std::move(nobody));
}

asio::awaitable<command_result> controller::pause(std::string name, std::optional<config::duration> timeout)
{
    auto e = find(name);
    if (!e)
        co_return command_result::failure(verdict::unknown_service, fmt::format("no service named \"{}\"", name));
    event ev = pause_command{timeout.value_or(e->settings->pause_timeout)};
    progress_fn nobody = [](const std::string&) {};
    co_return co_await command(e, std::move(ev), std::move(nobody));
}

asio::awaitable<command_result> controller::resume(std::string name)
{
    auto e = find(name);
    if (!e)
        co_return command_result::failure(verdict::unknown_service, fmt::format("no service named \"{}\"", name));
    event ev = resume_command{};
    progress_fn nobody = [](const std::string&) {};
    co_return co_await command(e, std::move(ev), std::move(nobody));
}

asio::awaitable<std::optional<dry_run_report>> controller::check(std::string name, side to,
                                                               std::optional<config::switch_mode> mode,
                                                               bool force, std::string& error)
{
    auto e = find(name);
    if (!e) {
        error = fmt::format("no service named \"{}\"", name);
        co_return std::nullopt;
    }
    const auto settings = e->settings;
    dry_run_input in;
    in.settings = settings.get();
    in.to = to;
    in.mode = mode.value_or(settings->mode);
    in.force = force;
    in.state_file = state_file_.string();
    std::optional<probe_endpoints> probes;
    {
        std::lock_guard lock(mutex_);
        in.from = e->machine.current_route().active;
        in.lag = gate_reading(e->lag);
        in.catch_up_bytes_per_second = e->history.replay_rate();
        probes = e->probes;
    }
    in.clients_old = e->svc->clients().count(side::old_side);
    in.clients_new = e->svc->clients().count(side::new_side);
    const bool replicated = settings->kind != config::service_kind::tcp;
    if (replicated && to == side::new_side && in.mode == config::switch_mode::pause) {
        const auto now = steady::now();
        const auto reading = in.lag ? *in.lag : unknown_lag("no probe has answered yet", now);
        in.gate = check_gate(reading, settings->max_lag, settings->max_lag_seconds, force, now,
                             3 * settings->probe_interval + settings->probe_timeout);
    }
    if (replicated && to == side::new_side && probes) {
        // Connections of its own: a switch under way keeps its replication to itself.
        const auto preflight = [this, settings, probes] {
            auto repl = make_replication_(*settings, probes->old_endpoint, probes->new_endpoint);
            return repl ? repl->preflight(steady::now() + 2 * settings->probe_timeout)
                        : std::vector<preflight_check>{};
        };
        in.server_checks = co_await off_loop(preflight);
    }
    // The state file's directory must take a new file: the switch persists before it reports.
    const auto writable = [path = state_file_] {
        const auto probe = std::filesystem::path(path.string() + ".check");
        auto problem = write_file_atomically(probe, "");
        std::error_code ignored;
        std::filesystem::remove(probe, ignored);
        return problem;
    };
    in.state_file_problem = co_await off_loop(writable);
    co_return make_dry_run_report(in);
}

asio::awaitable<void> controller::recover(std::shared_ptr<entry> e, int hook_pgid)
{
    const auto name = e->settings->name;
    if (hook_pgid > 1 && ::kill(-hook_pgid, 0) == 0) {
        // The hook of the step we died in may still be changing a server: its end decides what
        // the servers say. Waited for up to 10s, then its whole group is killed.
        spdlog::warn("service={} waiting for the hook still running from before the restart (process group {})",
                     name, hook_pgid);
        asio::steady_timer poll(loop_);
        const auto until = steady::now() + std::chrono::seconds(10);
        while (::kill(-hook_pgid, 0) == 0 && steady::now() < until) {
            poll.expires_after(std::chrono::milliseconds(50));
            co_await poll.async_wait(as_tuple(use_awaitable));
        }
        if (::kill(-hook_pgid, 0) == 0) {
            spdlog::warn("service={} killing the hook's process group {}", name, hook_pgid);
            ::kill(-hook_pgid, SIGKILL);
        }
    }
    std::shared_ptr<replication> repl;
    config::duration timeout{};
    {
        std::lock_guard lock(mutex_);
        repl = e->switch_replication;
        timeout = e->settings->probe_timeout;
    }
    observations seen;
    if (!repl) {
        seen.old_server.error = seen.new_server.error = "no replication is set up for this service";
    } else {
        const auto look = [repl, timeout] { return repl->observe(steady::now() + 2 * timeout); };
        seen = co_await off_loop(look);
        // Right after a start a side reached through a tunnel answers only once a session is
        // up, and a server restarting with tunneld is briefly away: look again for up to 10s
        // before calling the switch unresolved (clients stay held meanwhile).
        asio::steady_timer again(loop_);
        const auto until = steady::now() + std::chrono::seconds(10);
        while ((!seen.old_server.reachable || !seen.new_server.reachable) && steady::now() < until) {
            again.expires_after(std::chrono::milliseconds(250));
            co_await again.async_wait(as_tuple(use_awaitable));
            seen = co_await off_loop(look);
        }
    }
    event ev = recovered{seen};
    progress_fn nobody = [](const std::string&) {};
    co_await execute(e, std::move(ev), std::move(nobody));
}

asio::awaitable<command_result> controller::resolve(std::string name, side to)
{
    auto e = find(name);
    if (!e)
        co_return command_result::failure(verdict::unknown_service, fmt::format("no service named \"{}\"", name));
    std::shared_ptr<replication> repl;
    config::duration timeout{};
    {
        std::lock_guard lock(mutex_);
        repl = e->switch_replication;
        timeout = e->settings->probe_timeout;
    }
    if (!repl)
        co_return command_result::failure(verdict::refused,
                                          "resolve refused: no replication is set up to check the servers");
    const auto look = [repl, timeout] { return repl->observe(steady::now() + 2 * timeout); };
    // co_await in a braced initializer: g++ 12 destroys the awaited temporary twice (a double
    // free of its strings); await into a named value first.
    auto seen = co_await off_loop(look);
    event ev = resolve_command{to, std::move(seen)};
    progress_fn nobody = [](const std::string&) {};
    co_return co_await command(e, std::move(ev), std::move(nobody));
}

service_snapshot controller::describe(const entry& e) const
{
    const auto& counters = e.svc->counters();
    service_snapshot s;
    s.name = e.settings->name;
    s.kind = e.settings->kind;
    s.mode = e.settings->mode;
    s.listen = e.settings->listen;
    s.old_backend = e.settings->old_backend;
    s.new_backend = e.settings->new_backend;
    s.route = e.machine.current_route();
    s.state = e.machine.state();
    s.connections = {e.svc->clients().count(side::old_side), e.svc->clients().count(side::new_side)};
    s.held = e.svc->held();
    s.clients_total = counters.clients_total.load();
    s.bytes_up = counters.bytes_up.load();
    s.bytes_down = counters.bytes_down.load();
    s.connect_errors = {counters.connect_errors[0].load(), counters.connect_errors[1].load()};
    s.refused_max_clients = counters.refused_max_clients.load();
    s.clients_moved = counters.clients_moved.load();
    s.clients_move_failed = counters.clients_move_failed.load();
    s.lag = e.lag;
    s.fenced = e.machine.fenced();
    s.fence_reasserted = e.machine.fence_reasserted();
    s.switches = e.switches;
    s.last_switch = e.last_switch;
    s.lag_history.assign(e.history.samples().begin(), e.history.samples().end());
    s.progress = e.current;
    s.problem = e.machine.problem();
    return s;
}

std::vector<service_snapshot> controller::snapshot(const std::string& name) const
{
    std::lock_guard lock(mutex_);
    std::vector<service_snapshot> services;
    for (const auto& [service_name, e] : entries_)
        if (name.empty() || name == service_name) services.push_back(describe(*e));
    return services;
}

std::vector<std::string> controller::not_ready_reasons() const
{
    std::lock_guard lock(mutex_);
    std::vector<std::string> reasons;
    for (const auto& [name, e] : entries_) {
        if (e->machine.state() == service_state::unresolved)
            reasons.push_back(fmt::format("service {} is unresolved: {}", name, e->machine.problem()));
        else if (e->machine.state() != service_state::serving && e->machine.state() != service_state::draining)
            reasons.push_back(fmt::format("service {} is {}", name, to_string(e->machine.state())));
    }
    return reasons;
}

} // namespace tunneld::cutover
