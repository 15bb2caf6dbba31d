#include "daemon/fleet_member.hpp"

#include "control/fleet_json.hpp"
#include "fleet/switch_executor.hpp"

#include <algorithm>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <fmt/format.h>
#include <spdlog/spdlog.h>

namespace tunneld::daemon {

namespace {

/// How often the services are looked at for a changed record (a switch, held clients): cheap,
/// and a change reaches etcd this soon instead of at the next heartbeat.
constexpr auto poll_interval = std::chrono::milliseconds(250);
/// After a flip that failed (the service was busy with a switch of its own, a server step
/// failed), the next attempt waits this long.
constexpr auto flip_retry = std::chrono::seconds(5);

fleet::side fleet_side(proxy::side s)
{
    return s == proxy::side::new_side ? fleet::side::new_side : fleet::side::old_side;
}

proxy::side proxy_side(fleet::side s)
{
    return s == fleet::side::new_side ? proxy::side::new_side : proxy::side::old_side;
}

/// Waits until `task` has its result (the member was released), or with `or_switched` until
/// the servers' steps run here are done (the fleet may commit before this host releases).
template <class Task> boost::asio::awaitable<void> released(Task& task, bool or_switched = false)
{
    while (!task.result && !(or_switched && task.switched))
        co_await task.done.async_wait(boost::asio::as_tuple(boost::asio::use_awaitable));
}

} // namespace

fleet::member_record member_record_of(const cutover::service_snapshot& s, std::int64_t epoch)
{
    // A split service is reported by its route's active side; the state says it is split only
    // through `status` (fleets switch redis and postgres, which never split).
    return {fleet_side(s.route.active), epoch, std::string(cutover::to_string(s.state)), s.held, 0};
}

std::string unreachable_refusal(const std::string& service, std::string_view command, proxy::side active,
                                const std::string& last_error)
{
    return fmt::format("{} refused: the fleet is unreachable (etcd: {}). With [fleet] a {} acts on every member "
                       "together, so it waits for etcd; this member keeps serving {} on {}. Bring etcd back (or "
                       "fix [fleet] etcd), check with `tunnelctl fleet`, then run it again",
                       command, last_error.empty() ? "not reached yet" : last_error, command, service,
                       proxy::to_string(active));
}

std::optional<std::string> fleet_switch_refusal(const config::service_config& service, proxy::side to)
{
    if (service.kind != config::service_kind::postgres) return std::nullopt;
    if (to == proxy::side::old_side)
        return fmt::format("rollback refused: a fleet-wide postgres rollback is not supported: old cannot take back "
                           "the writes made on new since the switch (rebuild old from new with pg_rewind or a new "
                           "base backup, then switch to it as the next new). Every member keeps serving {}",
                           service.name);
    if (!service.fence_command)
        return fmt::format("switch refused: {} is postgres without fence_command. With [fleet] a member whose hold "
                           "ends by its pause_timeout serves old again, and postgres has no built-in fence: set "
                           "fence_command (it makes old refuse writes before new is promoted), then switch again",
                           service.name);
    return std::nullopt;
}

std::optional<std::string> paused_refusal(const std::string& service, std::string_view command,
                                          const std::optional<fleet::pause_record>& pause, std::int64_t now_ms)
{
    if (!pause || pause->until_ms <= now_ms) return std::nullopt;
    return fmt::format("{} refused: {} is paused fleet-wide (by {}, {} s left); a {} holds every member's clients "
                       "itself and cannot start inside a pause. Run `tunnelctl resume {}` first, then {} again",
                       command, service, pause->by, (pause->until_ms - now_ms + 999) / 1000, command, service,
                       command);
}

std::vector<cutover::preflight_check> fleet_readiness(const fleet::fleet_view& view,
                                                      const config::service_config& settings, proxy::side to,
                                                      std::int64_t now_ms)
{
    using cutover::check_verdict;
    std::vector<cutover::preflight_check> checks;
    const auto add = [&](std::string name, bool ok, std::string detail) {
        checks.push_back({std::move(name), ok ? check_verdict::pass : check_verdict::fail, std::move(detail), {}});
    };
    add("fleet etcd reachable", view.reachable,
        view.reachable ? "etcd answers"
                       : "etcd unreachable (" + (view.last_error.empty() ? "not reached yet" : view.last_error) +
                             "): a fleet switch is refused; the members below are as last seen");
    const auto command = to == proxy::side::old_side ? "rollback" : "switch";
    if (auto refused = fleet_switch_refusal(settings, to)) add("fleet postgres rules", false, std::move(*refused));
    const auto entry = view.services.find(settings.name);
    if (entry == view.services.end()) {
        add("fleet members", false, "no member of the fleet lists " + settings.name);
        return checks;
    }
    const auto& service = entry->second;
    if (service.epoch_malformed)
        add("fleet epoch", false, "the epoch record does not decode: fix it in etcd first");
    else if (!service.epoch)
        add("fleet epoch", true, "epoch 0 (no fleet switch yet), on old");
    else if (const auto& r = service.epoch->record; r.held())
        add("fleet epoch", false,
            fmt::format("epoch {} is held by {} (switching to {}, phase {}): a second switch is refused", r.epoch,
                        r.coordinator, r.target ? fleet::to_string(*r.target) : "?", r.phase));
    else
        add("fleet epoch", true, fmt::format("epoch {} committed on {}", r.epoch, fleet::to_string(r.committed)));
    if (auto refused = paused_refusal(settings.name, command, service.pause, now_ms))
        add("fleet-wide pause", false, std::move(*refused));
    if (service.members.empty()) add("fleet members", false, "no member record: no member would acknowledge");
    for (const auto& m : service.members) {
        const auto name = "fleet member " + m.member;
        if (!m.record) {
            add(name, false, "its record does not decode: it would not acknowledge");
            continue;
        }
        const auto& r = *m.record;
        const bool there = r.active == fleet_side(to) && r.state == "serving";
        const bool ready = r.state == "serving";
        const auto seen = r.last_seen_ms > 0 ? fmt::format(", seen {} s ago", std::max<std::int64_t>(0, now_ms - r.last_seen_ms) / 1000)
                                             : std::string();
        add(name, ready,
            fmt::format("on {}, epoch {}, {}{}, held {}{}{}", fleet::to_string(r.active), r.epoch, r.state,
                        fleet::lags_behind(service.epoch, r) ? " (behind the fleet)" : "", r.held, seen,
                        ready ? (there ? "; already on the target: acknowledges at once" : "")
                              : "; it cannot hold for the switch, which would abort"));
    }
    return checks;
}

fleet_member::fleet_member(boost::asio::io_context& loop, const config::fleet_config& settings,
                           services_source services, flip_fn flip, hold_fn hold, pause_fn pause,
                           budget_fn budget)
    : settings_(settings), services_(std::move(services)), flip_(std::move(flip)), hold_(std::move(hold)),
      pause_(std::move(pause)), budget_(std::move(budget)), loop_(loop),
      client_(loop.get_executor(), fleet::etcd::options_for(settings)),
      membership_(client_, fleet::key_layout(settings.name), settings.member, [this] { return records(); }),
      poll_(loop)
{
}

fleet_member::~fleet_member() = default;

void fleet_member::start()
{
    membership_.on_view_change([this](const fleet::fleet_view& view) { on_view(view); });
    membership_.start();
    spdlog::info("fleet {}: member {} joining through {}", settings_.name, settings_.member,
                 settings_.etcd.front().to_string());
    watch_services();
}

void fleet_member::stop()
{
    stopped_ = true;
    poll_.cancel();
    membership_.stop();
}

bool fleet_member::finished() const { return membership_.finished(); }

std::map<std::string, fleet::member_record> fleet_member::records()
{
    std::map<std::string, fleet::member_record> out;
    const auto snapshots = services_(); // the controller's own lock: never taken inside ours
    std::lock_guard lock(mutex_);
    for (const auto& s : snapshots) {
        sides_[s.name] = fleet_side(s.route.active);
        const auto epoch = status_.epochs.find(s.name);
        out[s.name] = member_record_of(s, epoch == status_.epochs.end() ? 0 : epoch->second);
        // Holding for a fleet switch, clients quiesced: the acknowledgement the coordinator waits for.
        if (const auto task = holds_.find(s.name);
            task != holds_.end() && task->second->acknowledged && !task->second->result) {
            out[s.name].state = std::string(fleet::held_state);
            out[s.name].epoch = task->second->gate->epoch();
        }
    }
    return out;
}

void fleet_member::watch_services()
{
    if (stopped_) return;
    // Published only when something changed: membership writes changed records at once.
    auto now = records();
    // Watched: the services configured here (a reload may add or remove one).
    std::set<std::string> names;
    for (const auto& [name, record] : now)
        names.insert(name);
    membership_.set_services(names);
    if (now != offered_) {
        offered_ = std::move(now);
        membership_.publish_now();
    }
    follow_committed();
    follow_pause();
    poll_.expires_after(poll_interval);
    poll_.async_wait([this](boost::system::error_code ec) {
        if (!ec) watch_services();
    });
}

void fleet_member::on_view(const fleet::fleet_view& view)
{
    bool epochs_changed = false;
    {
        std::lock_guard lock(mutex_);
        if (status_.reachable != view.reachable) {
            if (view.reachable)
                spdlog::info("fleet {}: etcd reachable", settings_.name);
            else
                spdlog::warn("fleet {}: etcd unreachable: {}", settings_.name, view.last_error);
        }
        status_.reachable = view.reachable;
        for (const auto& [name, active] : sides_) {
            const auto entry = view.services.find(name);
            if (entry == view.services.end()) continue;
            auto& epoch = status_.epochs[name];
            const auto next = fleet::epoch_run(entry->second.epoch, active, epoch);
            epochs_changed |= next != epoch;
            epoch = next;
            const auto& members = entry->second.members;
            status_.members[name] = members.size();
            status_.behind[name] = static_cast<std::size_t>(
                std::count_if(members.begin(), members.end(), [&](const fleet::member_entry& m) {
                    return m.record && fleet::lags_behind(entry->second.epoch, *m.record);
                }));
        }
    }
    if (epochs_changed) membership_.publish_now();
    follow_committed();
    follow_pause();
}

void fleet_member::follow_committed()
{
    const auto& view = membership_.view();
    // Only what etcd says now: a member that cannot reach it stays where its state file put it
    // (a hold under way ends by its pause budget).
    if (stopped_ || !view.reachable) return;
    const auto now = std::chrono::steady_clock::now();
    for (const auto& [name, active] : sides_) {
        const auto entry = view.services.find(name);
        if (entry == view.services.end() || flipping_.contains(name)) continue;
        const auto& epoch = entry->second.epoch;
        if (const auto held = holds_.find(name); held != holds_.end()) {
            // A hold ends when the record is committed: onto the target (done) or not (aborted).
            auto& task = *held->second;
            if (epoch && !epoch->record.held() && epoch->record.epoch >= task.gate->epoch()) {
                if (epoch->record.epoch == task.gate->epoch() && epoch->record.committed == task.to)
                    task.gate->decide(cutover::fleet_go::adopt,
                                      fmt::format("fleet {} committed epoch {} on {}", settings_.name,
                                                  epoch->record.epoch, fleet::to_string(task.to)));
                else
                    task.gate->decide(cutover::fleet_go::abort,
                                      fmt::format("fleet {} aborted epoch {}", settings_.name, task.gate->epoch()));
            }
            continue;
        }
        // A held switch whose coordinator is gone is resolved by one of the others. One that names
        // this member, which does not run it (its run ended unresolved while etcd did not answer,
        // or this member was restarted), is resolved here at once: no step of it is under way.
        const auto wait = fleet::takeover_wait(membership_.lease_ttl(),
                                               std::chrono::duration_cast<std::chrono::milliseconds>(budget_(name)));
        auto& watch = takeovers_.try_emplace(name, wait).first->second;
        watch.set_wait(wait);
        // The member records are as of the last read (every few seconds): the wait counts reads.
        const auto read = view.members_as_of.find(name);
        const bool due = read != view.members_as_of.end() && watch.due(epoch, entry->second.members, read->second);
        const bool ours = epoch && epoch->record.held() && epoch->record.coordinator == settings_.member;
        if ((due || ours) && !coordinating_.contains(name)) {
            coordinating_[name] = nullptr;
            boost::asio::co_spawn(loop_, take_over(name, *epoch), boost::asio::detached);
        }
        // Held for this epoch already (released before the record was committed: the coordinator).
        if (epoch && epoch->record.held() && last_hold_[name] == epoch->record.epoch) continue;
        fleet::member_local local;
        local.active = active;
        {
            std::lock_guard lock(mutex_);
            const auto run = status_.epochs.find(name);
            local.epoch = run == status_.epochs.end() ? 0 : run->second;
        }
        const auto action = fleet::react(epoch, local);
        if (action.what == fleet::member_action::kind::hold && epoch->record.target) {
            last_hold_[name] = action.epoch;
            auto task = std::make_shared<hold_task>(loop_, action.epoch, *epoch->record.target);
            holds_[name] = task;
            boost::asio::co_spawn(loop_, hold(name, task), boost::asio::detached);
            continue;
        }
        if (action.what != fleet::member_action::kind::flip) continue;
        if (const auto retry = retry_flip_at_.find(name); retry != retry_flip_at_.end() && now < retry->second)
            continue;
        flipping_.insert(name);
        boost::asio::co_spawn(loop_, flip(name, action), boost::asio::detached);
    }
}

void fleet_member::follow_pause()
{
    const auto& view = membership_.view();
    if (stopped_ || !view.reachable) return; // a pause ends by its own timeout here
    const auto now_ms = fleet::unix_ms_now();
    for (const auto& [name, active] : sides_) {
        if (pausing_.contains(name) || holds_.contains(name)) continue;
        const auto entry = view.services.find(name);
        std::optional<fleet::pause_record> pause;
        if (entry != view.services.end() && entry->second.pause && entry->second.pause->until_ms > now_ms)
            pause = entry->second.pause;
        const auto here = paused_by_fleet_.find(name);
        std::optional<config::duration> timeout; // nullopt: resume
        if (pause && (here == paused_by_fleet_.end() || here->second != pause->until_ms))
            timeout = std::chrono::milliseconds(pause->until_ms - now_ms);
        else if (pause || here == paused_by_fleet_.end())
            continue; // paused as the fleet says, or neither paused nor asked to
        pausing_.insert(name);
        boost::asio::co_spawn(
            loop_,
            [this, name, timeout, until = pause ? pause->until_ms : 0]() -> boost::asio::awaitable<void> {
                std::string service = name;
                cutover::command_result result;
                try {
                    result = co_await pause_(service, timeout);
                } catch (const std::exception& e) {
                    result = cutover::command_result::failure(cutover::verdict::failed, e.what());
                }
                pausing_.erase(name);
                if (timeout && result.ok()) paused_by_fleet_[name] = until;
                if (!timeout) paused_by_fleet_.erase(name); // resumed, or it had timed out already
                if (!result.ok())
                    spdlog::warn("service={} fleet {}: {} as the fleet says failed: {}", name, settings_.name,
                                 timeout ? "pause" : "resume", result.error);
            },
            boost::asio::detached);
    }
}

boost::asio::awaitable<cutover::command_result> fleet_member::pause_fleet(std::string service,
                                                                          config::duration timeout)
{
    const auto until = fleet::unix_ms_now() + std::chrono::duration_cast<std::chrono::milliseconds>(timeout).count();
    fleet::key_layout keys(settings_.name);
    fleet::etcd::put_request request{keys.pause_key(service), fleet::encode(fleet::pause_record{until, settings_.member}),
                                     0};
    auto put = co_await client_.put(std::move(request), fleet::etcd::clock::now() + std::chrono::seconds(2));
    co_return recorded(service, "pause", put ? std::nullopt : std::optional(put.err().to_string()));
}

boost::asio::awaitable<cutover::command_result> fleet_member::resume_fleet(std::string service)
{
    fleet::key_layout keys(settings_.name);
    fleet::etcd::delete_request request{keys.pause_key(service), {}};
    auto erased = co_await client_.erase(std::move(request), fleet::etcd::clock::now() + std::chrono::seconds(2));
    co_return recorded(service, "resume", erased ? std::nullopt : std::optional(erased.err().to_string()));
}

cutover::command_result fleet_member::recorded(const std::string& service, std::string_view what,
                                               const std::optional<std::string>& etcd_error)
{
    if (etcd_error)
        return cutover::command_result::failure(cutover::verdict::failed,
                                                fmt::format("{} not recorded in etcd: {}", what, *etcd_error));
    for (auto& s : services_())
        if (s.name == service) return cutover::command_result::success(std::move(s));
    return cutover::command_result{};
}

boost::asio::awaitable<void> fleet_member::hold(std::string service, std::shared_ptr<hold_task> task)
{
    task->gate->on_held = [this, task, service] {
        task->acknowledged = true;
        spdlog::info("service={} fleet {} epoch {}: held, acknowledging", service, settings_.name, task->gate->epoch());
        membership_.publish_now();
    };
    task->gate->on_switched = [task] {
        task->switched = true;
        task->done.cancel();
    };
    // The operator sees this member's steps when the switch was typed here; the log has them anyway.
    cutover::progress_fn progress = [this, service](const std::string& line) {
        spdlog::info("service={} fleet switch: {}", service, line);
        if (const auto c = coordinating_.find(service); c != coordinating_.end() && c->second) c->second(line);
    };
    spdlog::info("service={} fleet {} epoch {}: holding towards {}", service, settings_.name, task->gate->epoch(),
                 fleet::to_string(task->to));
    bool already = false; // on the target already (it followed the fleet, or never left it)
    for (const auto& s : services_())
        if (s.name == service)
            already = !s.route.split_percent && s.state == cutover::service_state::serving &&
                      fleet_side(s.route.active) == task->to;
    cutover::command_result result;
    try {
        if (already) {
            // Nothing to hold: it acknowledges at once and stays where it is.
            auto until = std::chrono::steady_clock::now() + std::chrono::seconds(60);
            auto decision = co_await task->gate->wait(until);
            result = cutover::command_result::success(cutover::service_snapshot{});
            for (auto& s : services_())
                if (s.name == service) result.service = std::move(s);
            (void)decision;
        } else {
            result = co_await hold_(service, proxy_side(task->to), task->gate, coordinating_.contains(service),
                                    std::move(progress));
        }
    } catch (const std::exception& e) {
        result = cutover::command_result::failure(cutover::verdict::failed, e.what());
    }
    task->result = result;
    task->done.cancel();
    if (const auto held = holds_.find(service); held != holds_.end() && held->second == task) holds_.erase(held);
    if (stopped_) co_return;
    for (const auto& s : services_())
        if (s.name == service) sides_[service] = fleet_side(s.route.active);
    if (sides_[service] == task->to) {
        // Released onto the target: it runs the new epoch (the record may not say committed yet).
        std::lock_guard lock(mutex_);
        auto& epoch = status_.epochs[service];
        epoch = std::max(epoch, task->gate->epoch());
    }
    if (!result.ok())
        spdlog::warn("service={} fleet {} epoch {}: {}", service, settings_.name, task->gate->epoch(), result.error);
    on_view(membership_.view());
    membership_.publish_now();
}

boost::asio::awaitable<fleet::servers_switched> fleet_member::switch_servers_here(std::string service,
                                                                                   std::int64_t epoch, fleet::side to)
{
    const auto held = holds_.find(service);
    if (held == holds_.end() || held->second->gate->epoch() != epoch) {
        // A takeover (this member's hold ended by its budget, or never began): this host's own
        // switch, which adopts servers another member already switched.
        const auto why = fmt::format("fleet {} epoch {} taken over by {}", settings_.name, epoch, settings_.member);
        auto result = co_await flip_(service, proxy_side(to), why);
        for (const auto& s : services_())
            if (s.name == service && fleet_side(s.route.active) == to) co_return fleet::servers_switched{true, {}};
        co_return fleet::servers_switched{false, result.error};
    }
    auto task = held->second;
    task->gate->decide(cutover::fleet_go::run_here, {});
    // The commit need not wait for old to follow new, nor for this host's own clients' release.
    co_await released(*task, true);
    // Switched when this host's route is on the target, even if a later step (the state file,
    // old following new) failed: the others must then go there too.
    for (const auto& s : services_())
        if (s.name == service && fleet_side(s.route.active) == to) co_return fleet::servers_switched{true, {}};
    co_return fleet::servers_switched{false, task->result ? task->result->error : "the route is not on the target"};
}

boost::asio::awaitable<void> fleet_member::take_over(std::string service, fleet::epoch_state found)
{
    spdlog::warn("service={} fleet {}: epoch {} is held by {}, {}; taking it over (phase {})", service, settings_.name,
                 found.record.epoch, found.record.coordinator,
                 found.record.coordinator == settings_.member ? "this member, which no longer runs it" : "which is gone",
                 found.record.phase);
    coordinating_[service] = [service](const std::string& line) {
        spdlog::info("service={} fleet takeover: {}", service, line);
    };
    fleet::coordinator_options options;
    options.ack_timeout = std::chrono::duration_cast<std::chrono::milliseconds>(settings_.ack_timeout);
    auto machine = fleet::coordinator::take_over(settings_.member, std::move(found), options);
    fleet::executor_hooks hooks;
    hooks.switch_servers = [this, service](std::int64_t epoch, fleet::side target) {
        return switch_servers_here(service, epoch, target);
    };
    hooks.progress = coordinating_[service];
    fleet::key_layout keys(settings_.name);
    std::string name = service;
    fleet::fleet_result outcome;
    try {
        outcome = co_await fleet::run_coordinator(client_, std::move(keys), std::move(name), machine, membership_,
                                                  std::move(hooks));
    } catch (const std::exception& e) {
        outcome = {fleet::fleet_outcome::unresolved, 0, e.what()};
    }
    coordinating_.erase(service);
    spdlog::warn("service={} fleet {}: takeover of epoch {} ended {}{}{}", service, settings_.name, outcome.epoch,
                 fleet::to_string(outcome.outcome), outcome.reason.empty() ? "" : ": ", outcome.reason);
}

boost::asio::awaitable<cutover::command_result> fleet_member::switch_fleet(std::string service, proxy::side to,
                                                                           cutover::progress_fn progress)
{
    if (coordinating_.contains(service))
        co_return cutover::command_result::failure(
            cutover::verdict::busy, fmt::format("a fleet switch of {} is already coordinated by this member", service));
    {
        // Already there: nothing is claimed (a claim would hold every member for nothing).
        const auto& view = membership_.view();
        const auto entry = view.services.find(service);
        const auto here = sides_.find(service);
        if (entry != view.services.end() && entry->second.epoch && !entry->second.epoch->record.held() &&
            entry->second.epoch->record.committed == fleet_side(to) && here != sides_.end() &&
            here->second == fleet_side(to)) {
            progress(fmt::format("{} is already on {} (fleet {} epoch {})", service, proxy::to_string(to),
                                 settings_.name, entry->second.epoch->record.epoch));
            for (auto& s : services_())
                if (s.name == service) co_return cutover::command_result::success(std::move(s));
        }
        // Inside a fleet-wide pause the members' holds could not start: refused before any claim.
        if (auto refused = paused_refusal(service, to == proxy::side::old_side ? "rollback" : "switch",
                                          entry != view.services.end() ? entry->second.pause : std::nullopt,
                                          fleet::unix_ms_now()))
            co_return cutover::command_result::failure(cutover::verdict::refused, std::move(*refused));
    }
    coordinating_[service] = progress;
    // Each acknowledgement and release as it comes: the member records are watched live until
    // this switch's last release is seen (the others only read them every few seconds).
    const auto watching = membership_.watch_members(service);
    struct forget {
        std::map<std::string, cutover::progress_fn>& coordinating;
        std::string service;
        ~forget() { coordinating.erase(service); }
    } at_end{coordinating_, service};

    // What the view shows of this switch's members: when each acknowledged, when all were released.
    struct seen_members {
        explicit seen_members(boost::asio::io_context& loop) : wake(loop) {}
        std::int64_t epoch = 0;
        std::optional<std::chrono::steady_clock::time_point> hold_at; ///< phase hold seen
        std::map<std::string, std::chrono::steady_clock::time_point> acks;
        boost::asio::steady_timer wake; ///< cancelled at each change of the view
    };
    auto seen = std::make_shared<seen_members>(loop_);
    struct listening {
        fleet::membership& members;
        std::uint64_t id;
        ~listening() { members.remove_view_listener(id); }
    } listener{membership_, membership_.add_view_listener([this, service, seen] {
                   seen->wake.cancel();
                   const auto& view = membership_.view();
                   const auto entry = view.services.find(service);
                   if (entry == view.services.end()) return;
                   const auto now = std::chrono::steady_clock::now();
                   const auto& e = entry->second.epoch;
                   if (e && e->record.held() && e->record.coordinator == settings_.member &&
                       e->record.phase != fleet::phase::claimed) {
                       seen->epoch = e->record.epoch;
                       if (!seen->hold_at) seen->hold_at = now;
                   }
                   if (seen->epoch == 0) return;
                   for (const auto& m : entry->second.members)
                       if (fleet::acknowledged(m, seen->epoch)) seen->acks.try_emplace(m.member, now);
               })};

    fleet::coordinator_options options;
    options.ack_timeout = std::chrono::duration_cast<std::chrono::milliseconds>(settings_.ack_timeout);
    fleet::coordinator machine(settings_.member, fleet_side(to), options);
    fleet::executor_hooks hooks;
    hooks.switch_servers = [this, service](std::int64_t epoch, fleet::side target) {
        return switch_servers_here(service, epoch, target);
    };
    // The operator's lines, and the log's (with their times: where a switch's hold went).
    hooks.progress = [progress, service](const std::string& line) {
        spdlog::info("service={} fleet coordinator: {}", service, line);
        progress(line);
    };
    // Named, not temporaries: g++ 12 destroys a co_await expression's temporaries twice.
    fleet::key_layout keys(settings_.name);
    std::string name = service;
    const auto outcome = co_await fleet::run_coordinator(client_, std::move(keys), std::move(name), machine,
                                                         membership_, std::move(hooks));
    spdlog::info("service={} fleet {} epoch {}: {} (etcd has it)", service, settings_.name, outcome.epoch,
                 fleet::to_string(outcome.outcome));
    // This member's own hold ends with the others' (the committed record releases it).
    std::optional<cutover::command_result> here;
    if (const auto held = holds_.find(service); held != holds_.end() && held->second->gate->epoch() == outcome.epoch) {
        auto task = held->second;
        co_await released(*task);
        here = task->result;
    }
    std::optional<std::chrono::milliseconds> hold_time;
    if (outcome.outcome == fleet::fleet_outcome::committed && seen->hold_at) {
        // The last release, as the members' records show it (each writes its record at once).
        const auto released = [&] {
            const auto& view = membership_.view();
            const auto entry = view.services.find(service);
            return entry != view.services.end() &&
                   std::all_of(entry->second.members.begin(), entry->second.members.end(), [&](const auto& m) {
                       return m.record && m.record->epoch >= outcome.epoch &&
                              m.record->state != fleet::held_state && m.record->active == fleet_side(to);
                   });
        };
        const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(10);
        while (!released() && std::chrono::steady_clock::now() < give_up) {
            seen->wake.expires_at(give_up);
            co_await seen->wake.async_wait(boost::asio::as_tuple(boost::asio::use_awaitable));
        }
        if (released())
            hold_time = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() -
                                                                              *seen->hold_at);
    }
    {
        std::lock_guard lock(mutex_);
        ++status_.switches[service][std::string(fleet::to_string(outcome.outcome))];
        if (outcome.outcome != fleet::fleet_outcome::refused) {
            status_.last_acks[service] = seen->acks.size();
            std::chrono::milliseconds slowest{0};
            for (const auto& [member, at] : seen->acks)
                if (seen->hold_at)
                    slowest = std::max(slowest, std::chrono::duration_cast<std::chrono::milliseconds>(at - *seen->hold_at));
            status_.last_ack[service] = slowest;
            if (hold_time) status_.last_hold[service] = *hold_time;
        }
    }
    const auto from = proxy::other(to);
    switch (outcome.outcome) {
    case fleet::fleet_outcome::committed: {
        progress(fmt::format("epoch {} committed: every member released onto {}", outcome.epoch, proxy::to_string(to)));
        if (hold_time)
            progress(fmt::format("epoch {}: {} ms from the first hold to the last release", outcome.epoch,
                                 hold_time->count()));
        if (here) co_return *here;
        for (auto& s : services_())
            if (s.name == service) co_return cutover::command_result::success(std::move(s));
        co_return cutover::command_result{};
    }
    case fleet::fleet_outcome::refused:
        co_return cutover::command_result::failure(cutover::verdict::refused, "switch refused: " + outcome.reason);
    case fleet::fleet_outcome::aborted:
        co_return cutover::command_result::failure(
            cutover::verdict::failed, fmt::format("fleet switch epoch {} aborted: {}; every member resumes on {}",
                                                  outcome.epoch, outcome.reason, proxy::to_string(from)));
    case fleet::fleet_outcome::unresolved:
        break;
    }
    co_return cutover::command_result::failure(
        cutover::verdict::failed,
        fmt::format("fleet switch epoch {} unresolved: {}; members resume on {} within their pause budget unless the "
                    "servers were switched, and another member takes the switch over",
                    outcome.epoch, outcome.reason, proxy::to_string(from)));
}

boost::asio::awaitable<void> fleet_member::flip(std::string service, fleet::member_action action)
{
    const auto to = action.to == fleet::side::new_side ? proxy::side::new_side : proxy::side::old_side;
    const auto why = fmt::format("fleet {} committed epoch {} on {} while this member was away", settings_.name,
                                 action.epoch, proxy::to_string(to));
    spdlog::warn("service={} {}: following it", service, why);
    cutover::command_result result;
    try {
        result = co_await flip_(service, to, why);
    } catch (const std::exception& e) {
        result = cutover::command_result::failure(cutover::verdict::failed, e.what());
    }
    flipping_.erase(service);
    if (stopped_) co_return;
    if (!result.ok()) {
        spdlog::warn("service={} could not follow the fleet to {} yet ({}); trying again in {}s", service,
                     proxy::to_string(to), result.error, flip_retry.count());
        retry_flip_at_[service] = std::chrono::steady_clock::now() + flip_retry;
        co_return;
    }
    retry_flip_at_.erase(service);
    sides_[service] = action.to;
    {
        std::lock_guard lock(mutex_);
        auto& epoch = status_.epochs[service];
        epoch = std::max(epoch, action.epoch);
        ++status_.follows[service];
    }
    membership_.publish_now();
}

control::fleet_status fleet_member::status() const
{
    std::lock_guard lock(mutex_);
    return status_;
}

boost::asio::awaitable<nlohmann::json> fleet_member::listing(std::string service)
{
    co_await membership_.read_members(); // the member records as etcd has them now, when it answers
    co_return control::fleet_json(membership_.view(), settings_.name, settings_.member, service);
}

boost::asio::awaitable<std::vector<cutover::preflight_check>>
fleet_member::readiness(config::service_config settings, proxy::side to)
{
    co_await membership_.read_members();
    co_return fleet_readiness(membership_.view(), settings, to, fleet::unix_ms_now());
}

std::optional<std::string> fleet_member::refusal(const std::string& service, std::string_view command) const
{
    const auto& view = membership_.view();
    if (view.reachable) return std::nullopt;
    const auto side = sides_.find(service);
    const auto active = side != sides_.end() && side->second == fleet::side::new_side ? proxy::side::new_side
                                                                                       : proxy::side::old_side;
    return unreachable_refusal(service, command, active, view.last_error);
}

} // namespace tunneld::daemon
