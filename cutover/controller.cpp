#include "cutover/controller.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <chrono>
#include <fmt/chrono.h>
#include <fmt/format.h>
#include <spdlog/spdlog.h>

namespace tunneld::cutover {

using asio::as_tuple;
using asio::use_awaitable;
using steady = std::chrono::steady_clock;

namespace {

std::string utc_now()
{
    return fmt::format("{:%Y-%m-%dT%H:%M:%SZ}",
                       fmt::gmtime(std::chrono::system_clock::to_time_t(std::chrono::system_clock::now())));
}

std::string format_duration(config::duration d)
{
    if (d.count() % 1000 == 0) return fmt::format("{}s", d.count() / 1000);
    return fmt::format("{}ms", d.count());
}

nlohmann::json backend_json(const config::backend& b)
{
    return {{"address", b.address.to_string()},
            {"via", b.via ? nlohmann::json(*b.via) : nlohmann::json(nullptr)}};
}

} // namespace

struct controller::entry {
    entry(std::shared_ptr<proxy::service> s, asio::io_context& loop, route initial, bool fenced_at_start)
        : svc(std::move(s)), settings(svc->settings()), machine(settings->kind, initial),
          deadline_timer(loop), fenced(fenced_at_start)
    {
    }

    std::shared_ptr<proxy::service> svc;
    std::shared_ptr<const config::service_config> settings;
    switch_machine machine;
    asio::steady_timer deadline_timer;
    bool busy = false; ///< a switch or rollback is under way; others are refused, never interleaved
    bool fenced = false;
    std::optional<probe_endpoints> probes;
    std::shared_ptr<replication> probe_replication;  ///< used only by the probe loop
    std::shared_ptr<replication> switch_replication; ///< used only by switches
    std::uint64_t probe_generation = 0;
    std::optional<lag_reading> lag;
    std::map<std::string, std::uint64_t> switches{{"done", 0}, {"refused", 0}, {"failed", 0}};
    nlohmann::json last_switch = nullptr;
};

controller::controller(asio::io_context& loop, std::filesystem::path state_file, state initial)
    : loop_(loop), state_file_(std::move(state_file)), persisted_(std::move(initial))
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

void controller::add_service(std::shared_ptr<proxy::service> svc, std::optional<probe_endpoints> probes)
{
    const auto settings = svc->settings();
    const auto persisted = persisted_.services.find(settings->name);
    const bool fenced = persisted != persisted_.services.end() && persisted->second.fenced;
    auto e = std::make_shared<entry>(svc, loop_, svc->current_route(), fenced);
    {
        std::lock_guard lock(mutex_);
        entries_[settings->name] = e;
    }
    update_service(settings->name, settings, std::move(probes));
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
        e->probe_replication.reset();
        e->switch_replication.reset();
        if (probes && settings->kind != config::service_kind::tcp) {
            e->probe_replication = make_replication(*settings, probes->old_endpoint, probes->new_endpoint);
            e->switch_replication = make_replication(*settings, probes->old_endpoint, probes->new_endpoint);
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
        {
            std::lock_guard lock(mutex_);
            if (stopped_ || e->probe_generation != generation) co_return;
            probe = e->probe_replication;
            interval = e->settings->probe_interval;
        }
        const auto measure = [probe] { return probe->probe(); };
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
        }
        timer.expires_after(interval);
        co_await timer.async_wait(as_tuple(use_awaitable));
    }
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

void controller::apply_route(entry& e)
{
    e.svc->set_route(e.machine.current_route());
}

void controller::cut_other_side(entry& e)
{
    const side gone = proxy::other(e.machine.current_route().active);
    const auto n = e.svc->clients().cut(gone, "cut_by_switch");
    if (n > 0)
        spdlog::info("service={} cut {} clients on side {}", e.settings->name, n, proxy::to_string(gone));
}

void controller::arm_deadline(const std::shared_ptr<entry>& e)
{
    const auto deadline = e->machine.deadline();
    e->deadline_timer.cancel();
    if (!deadline || e->machine.state() == service_state::switching) return;
    e->deadline_timer.expires_at(*deadline);
    e->deadline_timer.async_wait([this, e](boost::system::error_code ec) {
        if (!ec) on_deadline(e);
    });
}

void controller::on_deadline(const std::shared_ptr<entry>& e)
{
    action a;
    {
        std::lock_guard lock(mutex_);
        if (stopped_) return;
        a = e->machine.tick(steady::now());
    }
    switch (a) {
    case action::auto_resumed:
        apply_route(*e);
        spdlog::warn("service={} pause reached its timeout; clients released to {}", e->settings->name,
                     proxy::to_string(e->machine.current_route().active));
        break;
    case action::drain_deadline:
        if (const auto draining = e->machine.draining_side()) {
            const auto n = e->svc->clients().cut(*draining, "drain_timeout");
            spdlog::info("service={} drain_timeout: cut {} clients on side {}", e->settings->name, n,
                         proxy::to_string(*draining));
        }
        break;
    default:
        break;
    }
}

asio::awaitable<void> controller::watch_drain(std::shared_ptr<entry> e, progress_fn progress)
{
    asio::steady_timer poll(loop_);
    // tunnelctl gives up after 120s without a line: a long drain says how it is going every 30s.
    auto next_report = steady::now() + std::chrono::seconds(30);
    for (;;) {
        const auto draining = e->machine.draining_side();
        if (!draining || e->machine.state() != service_state::draining) co_return;
        if (e->svc->clients().count(*draining) == 0) {
            std::lock_guard lock(mutex_);
            e->machine.drained();
            e->deadline_timer.cancel();
            co_return;
        }
        if (steady::now() >= next_report) {
            next_report += std::chrono::seconds(30);
            progress(fmt::format("still draining {} clients on {}", e->svc->clients().count(*draining),
                                 proxy::to_string(*draining)));
        }
        poll.expires_after(std::chrono::milliseconds(50));
        co_await poll.async_wait(as_tuple(use_awaitable));
    }
}

asio::awaitable<std::optional<std::string>> controller::persist()
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
            record.fenced = e->fenced;
            if (!(record == previous) || record.updated.empty()) record.updated = utc_now();
        }
        persisted_ = snapshot;
    }
    {
        std::lock_guard lock(save_mutex_);
        sequence = ++save_sequence_;
    }
    const auto write = [this, snapshot, sequence]() -> std::optional<std::string> {
        std::lock_guard lock(save_mutex_);
        // A newer snapshot already on disk includes this one's changes: writing this would go back in time.
        if (sequence <= saved_sequence_) return std::nullopt;
        auto error = save_state(state_file_, snapshot);
        if (!error) saved_sequence_ = sequence;
        return error;
    };
    auto error = co_await off_loop(write);
    co_return error;
}

void controller::record_result(entry& e, const std::string& result, const std::string& message)
{
    std::lock_guard lock(mutex_);
    e.switches[result]++;
    e.last_switch = {{"result", result}, {"at", utc_now()}, {"message", message}};
}

asio::awaitable<command_result> controller::switch_side(std::string name, side to,
                                                        std::optional<config::switch_mode> requested_mode,
                                                        bool force, progress_fn progress)
{
    auto e = find(name);
    if (!e)
        co_return command_result::failure("unknown_service", fmt::format("no service named \"{}\"", name));
    if (e->busy)
        co_return command_result::failure("busy", fmt::format("another switch of {} is under way", name));
    const auto settings = e->settings;
    const auto mode = requested_mode.value_or(settings->mode);
    const bool replicated = settings->kind != config::service_kind::tcp;

    if (replicated && mode != config::switch_mode::pause && !force) {
        const auto reason =
            fmt::format("switch refused: mode {} on a {} service would let both sides take writes; "
                        "use --mode pause (promotes and fences) or --force",
                        config::to_string(mode), config::to_string(settings->kind));
        record_result(*e, "refused", reason);
        co_return command_result::failure("refused", reason);
    }
    if (replicated && to == side::new_side && mode == config::switch_mode::pause) {
        std::optional<lag_reading> lag;
        {
            std::lock_guard lock(mutex_);
            lag = e->lag;
        }
        const auto max_age = 3 * settings->probe_interval + settings->probe_timeout;
        const auto verdict =
            lag ? check_gate(*lag, settings->max_lag, settings->max_lag_seconds, force, steady::now(),
                             max_age)
                : check_gate(unknown_lag(e->probe_replication ? "no probe has answered yet"
                                                              : "no probe configured for this service",
                                         steady::now()),
                             settings->max_lag, settings->max_lag_seconds, force, steady::now(), max_age);
        if (!verdict.allowed) {
            const auto reason = "switch refused: " + verdict.reason;
            record_result(*e, "refused", reason);
            spdlog::warn("service={} {}", name, reason);
            co_return command_result::failure("refused", reason);
        }
        if (verdict.forced)
            spdlog::warn("service={} switch to new forced by operator: {}", name, verdict.reason);
        progress(verdict.forced ? verdict.reason : fmt::format("lag gate passed: {}", verdict.reason));
    }

    outcome result;
    {
        std::lock_guard lock(mutex_);
        result = e->machine.start_switch(switch_request{to, mode, force}, steady::now(),
                                         settings->drain_timeout, settings->pause_timeout);
    }
    if (const auto* refused = std::get_if<refusal>(&result)) {
        record_result(*e, "refused", refused->reason);
        co_return command_result::failure(refused->busy ? "busy" : "refused",
                                          "switch refused: " + refused->reason);
    }
    const action a = std::get<action>(result);
    if (a == action::none && e->machine.state() == service_state::serving) {
        progress(fmt::format("{} is already on {}", name, proxy::to_string(to)));
        co_return command_result::success(describe(*e));
    }
    spdlog::info("service={} switch to {} mode={} started", name, proxy::to_string(to),
                 config::to_string(mode));

    e->busy = true;
    struct busy_guard {
        entry& e;
        ~busy_guard() { e.busy = false; }
    } guard{*e};

    if (a == action::run_pause_switch) co_return co_await run_pause_switch(e, to, force, progress);

    apply_route(*e);
    if (auto error = co_await persist()) {
        record_result(*e, "failed", *error);
        co_return command_result::failure("failed",
                                          fmt::format("switched {} to {} but could not persist it: {}", name,
                                                      proxy::to_string(to), *error));
    }
    if (a == action::cut_other_side) {
        progress(fmt::format("new clients go to {}; cutting clients on {}", proxy::to_string(to),
                             proxy::to_string(proxy::other(to))));
        cut_other_side(*e);
    } else {
        const auto draining = e->machine.draining_side().value_or(proxy::other(to));
        progress(fmt::format("new clients go to {}; draining {} clients on {} (up to {})",
                             proxy::to_string(to), e->svc->clients().count(draining),
                             proxy::to_string(draining), format_duration(settings->drain_timeout)));
        arm_deadline(e);
        co_await watch_drain(e, progress);
        progress(fmt::format("drained {}", proxy::to_string(draining)));
    }
    const auto message = fmt::format("{} switched to {}", name, proxy::to_string(to));
    record_result(*e, "done", message);
    spdlog::info("service={} switch to {} done", name, proxy::to_string(to));
    co_return command_result::success(describe(*e));
}

asio::awaitable<command_result> controller::run_pause_switch(std::shared_ptr<entry> e, side to, bool force,
                                                             progress_fn progress)
{
    const auto settings = e->settings;
    const auto& name = settings->name;
    const auto deadline = e->machine.deadline().value_or(steady::now() + settings->pause_timeout);
    const auto held_since = steady::now();
    apply_route(*e);
    progress(
        fmt::format("holding new clients of {} (budget {})", name, format_duration(settings->pause_timeout)));

    auto repl = e->switch_replication;
    bool writes_paused = false;
    auto undo = [&](const std::string& why) -> asio::awaitable<command_result> {
        {
            std::lock_guard lock(mutex_);
            e->machine.abort_pause_switch();
        }
        apply_route(*e);
        const auto unpause = [repl] { return repl->unpause(); };
        if (writes_paused) co_await off_loop(unpause);
        const auto held_ms =
            std::chrono::duration_cast<std::chrono::milliseconds>(steady::now() - held_since).count();
        const auto reason =
            fmt::format("switch failed: {}; clients released to {} after {}ms, nothing changed", why,
                        proxy::to_string(e->machine.current_route().active), held_ms);
        record_result(*e, "failed", reason);
        spdlog::warn("service={} {}", name, reason);
        co_return command_result::failure("failed", reason);
    };
    auto remaining = [&] {
        return std::max(config::duration(1),
                        std::chrono::duration_cast<config::duration>(deadline - steady::now()));
    };

    if (repl && to == side::new_side) {
        if (settings->kind == config::service_kind::postgres) {
            // Old-side clients may be mid-transaction: let them finish until drain_timeout, then cut.
            const auto old_clients = e->svc->clients().count(side::old_side);
            if (old_clients > 0) {
                progress(fmt::format("waiting for {} old clients to finish (up to {})", old_clients,
                                     format_duration(settings->drain_timeout)));
                const auto drain_deadline = std::min(deadline, steady::now() + settings->drain_timeout);
                asio::steady_timer poll(loop_);
                while (e->svc->clients().count(side::old_side) > 0 && steady::now() < drain_deadline) {
                    poll.expires_after(std::chrono::milliseconds(20));
                    co_await poll.async_wait(as_tuple(use_awaitable));
                }
                e->svc->clients().cut(side::old_side, "drain_timeout");
            }
        } else {
            // CLIENT PAUSE outlives the budget by the fence's deadline: old must refuse writes until fenced.
            const auto pause_writes = [repl, hold = remaining() + std::chrono::seconds(5)] {
                return repl->pause_writes(hold);
            };
            auto step = co_await off_loop(pause_writes);
            if (!step.ok) co_return co_await undo(step.message);
            writes_paused = true;
            progress(step.message);
        }
        progress("waiting for new to catch up");
        const auto catch_up = [repl, deadline] { return repl->wait_caught_up(deadline); };
        auto step = co_await off_loop(catch_up);
        if (!step.ok) co_return co_await undo(step.message);
        progress(step.message);
        if (steady::now() >= deadline)
            co_return co_await undo(
                fmt::format("pause budget {} ran out", format_duration(settings->pause_timeout)));
        const auto promote = [repl, deadline] { return repl->promote(deadline); };
        step = co_await off_loop(promote);
        if (!step.ok) co_return co_await undo(step.message);
        progress(step.message);
    } else if (repl && to == side::old_side) {
        rollback_options options;
        options.pause_hold = remaining();
        options.force = force;
        options.new_replicaof = settings->rollback_replicaof;
        // The rollback fences new and lifts its write pause itself: cut new's clients first, so
        // that no write they had queued is answered with a refusal. They reconnect and are held.
        e->svc->clients().cut(side::new_side, "cut_by_switch");
        const auto roll_back = [repl, options, deadline] { return repl->rollback(options, deadline); };
        auto step = co_await off_loop(roll_back);
        if (!step.ok) co_return co_await undo(step.message);
        progress(step.message);
    } else if (steady::now() >= deadline) {
        co_return co_await undo(
            fmt::format("pause budget {} ran out", format_duration(settings->pause_timeout)));
    }

    // Committed: new is the primary (or this is a plain tcp service). From here on nothing is undone.
    {
        std::lock_guard lock(mutex_);
        e->machine.complete_pause_switch();
        if (to == side::old_side) e->fenced = false;
    }
    auto persist_error = co_await persist();
    std::string fence_problem;
    if (repl && to == side::new_side) {
        const auto fence = [repl] { return repl->fence(steady::now() + std::chrono::seconds(5)); };
        auto step = co_await off_loop(fence);
        progress(step.message);
        if (step.ok) {
            std::lock_guard lock(mutex_);
            e->fenced = true;
        } else {
            fence_problem = step.message;
        }
        if (!persist_error) persist_error = co_await persist();
    }
    cut_other_side(*e);
    apply_route(*e);
    const auto unpause = [repl] { return repl->unpause(); };
    if (writes_paused) co_await off_loop(unpause);
    const auto held_ms =
        std::chrono::duration_cast<std::chrono::milliseconds>(steady::now() - held_since).count();
    progress(fmt::format("released held clients to {} after {}ms", proxy::to_string(to), held_ms));

    if (persist_error) {
        const auto reason = fmt::format("{} switched to {} but the state file could not be written: {}", name,
                                        proxy::to_string(to), *persist_error);
        record_result(*e, "failed", reason);
        co_return command_result::failure("failed", reason);
    }
    if (!fence_problem.empty()) {
        const auto reason =
            fmt::format("{} switched to new, but fencing the old primary failed: {}; it may still "
                        "accept writes from other hosts",
                        name, fence_problem);
        record_result(*e, "failed", reason);
        co_return command_result::failure("failed", reason);
    }
    const auto message =
        fmt::format("{} switched to {} (clients held {}ms)", name, proxy::to_string(to), held_ms);
    record_result(*e, "done", message);
    spdlog::info("service={} {}", name, message);
    co_return command_result::success(describe(*e));
}

asio::awaitable<command_result> controller::rollback(std::string name, progress_fn progress)
{
    auto e = find(name);
    if (!e)
        co_return command_result::failure("unknown_service", fmt::format("no service named \"{}\"", name));
    // A rollback is an operator's way back: it uses the service's mode and skips the lag gate.
    co_return co_await switch_side(std::move(name), side::old_side, std::nullopt, false, std::move(progress));
}

asio::awaitable<command_result> controller::split(std::string name, unsigned percent, bool sticky)
{
    auto e = find(name);
    if (!e)
        co_return command_result::failure("unknown_service", fmt::format("no service named \"{}\"", name));
    if (e->busy) co_return command_result::failure("busy", fmt::format("a switch of {} is under way", name));
    outcome result;
    {
        std::lock_guard lock(mutex_);
        result = e->machine.split(percent, sticky);
    }
    if (const auto* refused = std::get_if<refusal>(&result))
        co_return command_result::failure(refused->busy ? "busy" : "refused",
                                          "split refused: " + refused->reason);
    apply_route(*e);
    if (auto error = co_await persist())
        co_return command_result::failure("failed", "split applied but could not be persisted: " + *error);
    spdlog::info("service={} split {}% to new{}", name, percent, sticky ? " (sticky)" : "");
    co_return command_result::success(describe(*e));
}

asio::awaitable<command_result> controller::pause(std::string name, std::optional<config::duration> timeout)
{
    auto e = find(name);
    if (!e)
        co_return command_result::failure("unknown_service", fmt::format("no service named \"{}\"", name));
    if (e->busy) co_return command_result::failure("busy", fmt::format("a switch of {} is under way", name));
    const auto budget = timeout.value_or(e->settings->pause_timeout);
    outcome result;
    {
        std::lock_guard lock(mutex_);
        result = e->machine.pause(steady::now(), budget);
    }
    if (const auto* refused = std::get_if<refusal>(&result))
        co_return command_result::failure(refused->busy ? "busy" : "refused",
                                          "pause refused: " + refused->reason);
    apply_route(*e);
    arm_deadline(e);
    spdlog::info("service={} paused for up to {}", name, format_duration(budget));
    co_return command_result::success(describe(*e));
}

asio::awaitable<command_result> controller::resume(std::string name)
{
    auto e = find(name);
    if (!e)
        co_return command_result::failure("unknown_service", fmt::format("no service named \"{}\"", name));
    outcome result;
    {
        std::lock_guard lock(mutex_);
        result = e->machine.resume();
    }
    if (const auto* refused = std::get_if<refusal>(&result))
        co_return command_result::failure("refused", "resume refused: " + refused->reason);
    e->deadline_timer.cancel();
    apply_route(*e);
    spdlog::info("service={} resumed", name);
    co_return command_result::success(describe(*e));
}

nlohmann::json controller::describe(const entry& e) const
{
    const auto& settings = *e.settings;
    const auto& r = e.machine.current_route();
    const auto& counters = e.svc->counters();
    nlohmann::json lag = {{"bytes", nullptr}, {"seconds", nullptr}, {"link", "unknown"}};
    if (e.lag) {
        if (e.lag->bytes) lag["bytes"] = *e.lag->bytes;
        if (e.lag->seconds) lag["seconds"] = *e.lag->seconds;
        lag["link"] = to_string(e.lag->link);
        lag["detail"] = e.lag->detail;
    }
    std::string active = r.split_percent ? "split" : std::string(proxy::to_string(r.active));
    return {
        {"name", settings.name},
        {"kind", config::to_string(settings.kind)},
        {"listen", settings.listen.to_string()},
        {"active", active},
        {"split_percent", r.split_percent.value_or(0)},
        {"sticky", r.sticky},
        {"state", to_string(e.machine.state())},
        {"mode", config::to_string(settings.mode)},
        {"connections",
         {{"old", e.svc->clients().count(side::old_side)}, {"new", e.svc->clients().count(side::new_side)}}},
        {"held", e.svc->held()},
        {"clients_total", counters.clients_total.load()},
        {"bytes_up", counters.bytes_up.load()},
        {"bytes_down", counters.bytes_down.load()},
        {"connect_errors",
         {{"old", counters.connect_errors[0].load()}, {"new", counters.connect_errors[1].load()}}},
        {"refused_max_clients", counters.refused_max_clients.load()},
        {"old", backend_json(settings.old_backend)},
        {"new", backend_json(settings.new_backend)},
        {"lag", lag},
        {"fenced", e.fenced},
        {"switches", e.switches},
        {"last_switch", e.last_switch},
    };
}

nlohmann::json controller::status(const std::string& name) const
{
    std::lock_guard lock(mutex_);
    nlohmann::json services = nlohmann::json::array();
    for (const auto& [service_name, e] : entries_)
        if (name.empty() || name == service_name) services.push_back(describe(*e));
    return services;
}

std::vector<std::string> controller::not_ready_reasons() const
{
    std::lock_guard lock(mutex_);
    std::vector<std::string> reasons;
    for (const auto& [name, e] : entries_) {
        if (e->machine.state() == service_state::paused || e->machine.state() == service_state::switching)
            reasons.push_back(fmt::format("service {} is {}", name, to_string(e->machine.state())));
    }
    return reasons;
}

} // namespace tunneld::cutover
