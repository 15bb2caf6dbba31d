#include "daemon/runtime.hpp"

#include "daemon/control_server.hpp"
#include "daemon/fleet_member.hpp"
#include "daemon/http_server.hpp"
#include "daemon/metrics.hpp"
#include "daemon/notify.hpp"
#include "proxy/backend_path.hpp"
#include "tunnel/tunnel.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <csignal>
#include <fmt/format.h>
#include <future>
#include <spdlog/spdlog.h>

namespace tunneld::daemon {

namespace {

cutover::state read_state(const std::filesystem::path& path)
{
    auto loaded = cutover::load_state(path);
    if (auto* error = std::get_if<cutover::state_error>(&loaded)) throw std::runtime_error(error->message);
    return std::get<cutover::state>(std::move(loaded));
}

unsigned loop_count(const config::daemon_config& d)
{
    if (d.threads > 0) return d.threads;
    return std::max(1u, std::thread::hardware_concurrency());
}

/// The health listener's endpoint; a name such as "localhost" is resolved once, at start.
asio::ip::tcp::endpoint resolve_listen(const config::endpoint& e)
{
    boost::system::error_code ec;
    const auto address = asio::ip::make_address(e.host, ec);
    if (!ec) return {address, e.port};
    asio::io_context resolver_loop;
    asio::ip::tcp::resolver resolver(resolver_loop);
    const auto results = resolver.resolve(e.host, std::to_string(e.port));
    return results.begin()->endpoint();
}

/// Runs `f` on `loop` and waits for it: used only before the loops carry traffic, and by reload.
template <class F> void run_on(asio::io_context& loop, F f)
{
    if (loop.get_executor().running_in_this_thread()) {
        f();
        return;
    }
    std::promise<void> done;
    asio::post(loop, [&] {
        try {
            f();
            done.set_value();
        } catch (...) {
            done.set_exception(std::current_exception());
        }
    });
    done.get_future().get();
}

} // namespace

runtime::runtime(std::shared_ptr<const config::config> settings)
    : settings_(std::move(settings)), signals_([this]() -> asio::io_context& {
          for (unsigned i = 0; i < loop_count(settings_->daemon); ++i)
              loops_.push_back(std::make_unique<asio::io_context>(1));
          return *loops_.front();
      }()),
      watchdog_timer_(*loops_.front()), shutdown_timer_(*loops_.front())
{
    controller_ = std::make_unique<cutover::controller>(*loops_.front(), settings_->daemon.state_file,
                                                        read_state(settings_->daemon.state_file));
    // The history is a record, not a decision: a corrupt file is set aside and a new one begun.
    history_path_ = cutover::history_path_for(settings_->daemon.state_file);
    auto loaded = cutover::load_history(history_path_);
    if (auto* problem = std::get_if<std::string>(&loaded)) {
        const auto aside = std::filesystem::path(history_path_.string() + ".corrupt");
        std::error_code ignored;
        std::filesystem::rename(history_path_, aside, ignored);
        spdlog::warn("{}; kept as {}, a new history is started", *problem, aside.string());
    } else {
        history_ = std::get<cutover::switch_history>(std::move(loaded));
    }
}

runtime::~runtime()
{
    history_writer_.join(); // every recorded command reaches the file before the process ends
    for (auto& guard : work_)
        guard.reset();
    for (auto& loop : loops_)
        loop->stop();
    for (auto& t : threads_)
        if (t.joinable()) t.join();
}

std::vector<asio::io_context*> runtime::loop_pointers() const
{
    std::vector<asio::io_context*> loops;
    for (const auto& loop : loops_)
        loops.push_back(loop.get());
    return loops;
}

std::shared_ptr<tunnel::pool> runtime::find_tunnel(std::string_view name) const
{
    std::lock_guard lock(tunnels_mutex_);
    const auto it = tunnels_.find(name);
    return it == tunnels_.end() ? nullptr : it->second;
}

void runtime::start_tunnels(const config::config& settings)
{
    const auto loops = loop_pointers();
    for (const auto& t : settings.tunnels) {
        auto existing = find_tunnel(t.name);
        if (existing && existing->settings() == t) continue;
        auto pool = tunnel::start_pool(t, loops);
        std::lock_guard lock(tunnels_mutex_);
        // Make before break: the old pool keeps its live channels until they end.
        if (existing) retiring_.push_back(existing);
        tunnels_[t.name] = std::move(pool);
        std::string gateways;
        for (const auto& g : t.gateways())
            gateways += (gateways.empty() ? "" : ", ") + g.to_string();
        spdlog::info("tunnel={} {} ({} sessions to {}{})", t.name,
                     existing ? "restarted with new settings" : "started", t.sessions,
                     t.more_gateways.empty() ? "" : "each of ", gateways);
    }
}

std::optional<cutover::probe_endpoints> runtime::probe_endpoints_for(const config::service_config& settings)
{
    if (settings.kind == config::service_kind::tcp) return std::nullopt;
    const auto loops = loop_pointers();
    auto& forwarders = forwarders_[settings.name];
    for (auto& f : forwarders)
        f->stop_accepting();
    forwarders.clear();
    // A tunnelled backend is probed through the same tunnel its clients use: a loopback forwarder
    // (an internal tcp service) gives the probe a plain host:port.
    auto reach = [&](const config::backend& b) -> config::endpoint {
        if (!b.via) return b.address;
        auto forward = std::make_shared<config::service_config>();
        forward->name = settings.name + "-probe";
        forward->kind = config::service_kind::tcp;
        forward->listen = config::endpoint{"127.0.0.1", 0};
        forward->old_backend = b;
        forward->new_backend = b;
        forward->connect_timeout = settings.probe_timeout;
        forward->max_clients = 16;
        auto svc = std::make_shared<proxy::service>(
            forward, loops, [this](std::string_view n) { return find_tunnel(n); },
            proxy::route_to(proxy::side::old_side));
        svc->start();
        forwarders.push_back(svc);
        return config::endpoint{"127.0.0.1", svc->local_port()};
    };
    return cutover::probe_endpoints{reach(settings.old_backend), reach(settings.new_backend)};
}

void runtime::start_service(std::shared_ptr<const config::service_config> settings)
{
    const auto loops = loop_pointers();
    auto svc = std::make_shared<proxy::service>(
        settings, loops, [this](std::string_view n) { return find_tunnel(n); },
        controller_->initial_route(*settings));
    svc->start();
    services_[settings->name] = svc;
    controller_->add_service(svc, probe_endpoints_for(*settings));
    const auto r = svc->current_route();
    spdlog::info("service={} listening on {} active={}", settings->name, settings->listen.to_string(),
                 r.split_percent ? fmt::format("split {}%", *r.split_percent)
                                 : std::string(proxy::to_string(r.active)));
}

void runtime::stop_service(const std::string& name)
{
    const auto it = services_.find(name);
    if (it == services_.end()) return;
    it->second->stop_accepting();
    for (auto& f : forwarders_[name])
        f->stop_accepting();
    forwarders_.erase(name);
    controller_->remove_service(name);
    services_.erase(it);
    spdlog::info("service={} removed; its live clients keep running", name);
}

int runtime::run()
{
    for (auto& loop : loops_)
        work_.push_back(asio::make_work_guard(*loop));
    for (auto& loop : loops_)
        threads_.emplace_back([&l = *loop] { l.run(); });

    run_on(control_loop(), [this] {
        start_tunnels(*settings_);
        for (const auto& s : settings_->services)
            start_service(std::make_shared<const config::service_config>(s));
        start_fleet();
        control_ = std::make_unique<control_server>(control_loop(), *this, settings_->daemon.control_socket,
                                                    settings_->daemon.control_group);
        control_->start();
        if (settings_->daemon.health_listen) {
            const auto& h = *settings_->daemon.health_listen;
            http_sources sources{
                .status = [this] { return control::to_json(status()); },
                .metrics = [this] { return metrics_.render(status()); },
                .not_ready_reasons = [this] { return not_ready_reasons(); },
            };
            http_ = std::make_unique<http_server>(control_loop(), resolve_listen(h), std::move(sources));
            http_->start();
        }
        signals_.add(SIGHUP);
        signals_.add(SIGTERM);
        signals_.add(SIGINT);
        handle_signals();
        feed_watchdog();
        retire_idle_tunnels();
        asio::co_spawn(control_loop(), check_backends(), asio::detached);
    });
    spdlog::info("tunneld ready: {} services, {} tunnels, {} event loops", settings_->services.size(),
                 settings_->tunnels.size(), loops_.size());
    notify::ready();

    for (auto& t : threads_)
        t.join();
    threads_.clear();
    return exit_code_;
}

void runtime::start_fleet()
{
    if (!settings_->fleet) return;
    fleet_ = std::make_unique<fleet_member>(
        control_loop(), *settings_->fleet, [this] { return controller_->snapshot(); },
        [this](std::string service, proxy::side to, std::string why) {
            return follow_fleet(std::move(service), to, std::move(why));
        },
        [this](std::string service, proxy::side to, std::shared_ptr<cutover::fleet_gate> gate, bool coordinating,
               cutover::progress_fn progress) {
            return hold_for_fleet(std::move(service), to, std::move(gate), coordinating, std::move(progress));
        },
        [this](std::string service, std::optional<config::duration> timeout) {
            return pause_for_fleet(std::move(service), timeout);
        },
        [this](const std::string& service) {
            const auto settings = controller_->settings(service);
            return settings ? settings->pause_timeout : config::service_config{}.pause_timeout;
        });
    fleet_->start();
}

asio::awaitable<cutover::command_result> runtime::follow_fleet(std::string service, proxy::side to, std::string why)
{
    const auto before = controller_->snapshot(service);
    cutover::progress_fn progress = [service](const std::string& line) {
        spdlog::info("service={} fleet flip: {}", service, line);
    };
    // The service's own mode: a replicated service finds its servers already switched by the
    // fleet (adopted, not switched again), a tcp one just moves its route.
    auto result = co_await controller_->switch_side(service, to, std::nullopt, false, std::move(progress));
    cutover::history_entry e;
    e.time = cutover::utc_now();
    e.service = service;
    e.action = cutover::history_action::switch_side;
    e.from = before.empty() ? "" : std::string(proxy::to_string(before.front().route.active));
    e.to = std::string(proxy::to_string(to));
    e.mode = before.empty() ? "" : std::string(config::to_string(before.front().mode));
    e.user = "fleet";
    if (result.held) e.held_ms = result.held->count();
    e.cut = result.cut;
    e.moved = result.moved;
    e.adopted = result.adopted; // a replicated service finds its servers switched by the fleet
    e.result = result.ok() ? cutover::history_result::done : cutover::history_result::failed;
    e.reason = result.ok() ? why : why + ": " + result.error;
    // A busy or paused service is tried again shortly (and logged): only the attempts that did
    // something are history.
    if (result.result == cutover::verdict::done || result.result == cutover::verdict::failed)
        record_history(std::move(e));
    co_return result;
}

asio::awaitable<cutover::command_result> runtime::pause_for_fleet(std::string service,
                                                                  std::optional<config::duration> timeout)
{
    const auto before = controller_->snapshot(service);
    cutover::command_result result;
    if (timeout)
        result = co_await controller_->pause(service, timeout);
    else
        result = co_await controller_->resume(service);
    if (result.result == cutover::verdict::refused && !timeout) co_return result; // not paused (timed out): nothing done
    cutover::history_entry e;
    e.time = cutover::utc_now();
    e.service = service;
    e.action = timeout ? cutover::history_action::pause : cutover::history_action::resume;
    e.from = e.to = before.empty() ? "" : std::string(proxy::to_string(before.front().route.active));
    e.user = "fleet";
    e.result = result.ok() ? cutover::history_result::done : cutover::history_result::failed;
    e.reason = result.ok() ? fmt::format("fleet {} {}", settings_->fleet->name, timeout ? "paused" : "resumed")
                           : result.error;
    record_history(std::move(e));
    co_return result;
}

asio::awaitable<cutover::command_result> runtime::hold_for_fleet(std::string service, proxy::side to,
                                                                 std::shared_ptr<cutover::fleet_gate> gate,
                                                                 bool coordinating, cutover::progress_fn progress)
{
    const auto before = controller_->snapshot(service);
    const auto epoch = gate->epoch();
    auto result = co_await controller_->switch_side(service, to, std::nullopt, false, std::move(progress),
                                                    std::move(gate));
    // The member the switch was typed on records it with its operator (the control socket).
    if (coordinating || result.result == cutover::verdict::busy || result.result == cutover::verdict::refused)
        co_return result;
    cutover::history_entry e;
    e.time = cutover::utc_now();
    e.service = service;
    e.action = to == proxy::side::old_side ? cutover::history_action::rollback : cutover::history_action::switch_side;
    e.from = before.empty() ? "" : std::string(proxy::to_string(before.front().route.active));
    e.to = std::string(proxy::to_string(to));
    e.mode = "pause";
    e.user = "fleet";
    if (result.held) e.held_ms = result.held->count();
    e.cut = result.cut;
    e.moved = result.moved;
    e.adopted = result.adopted;
    e.result = result.ok() ? cutover::history_result::done : cutover::history_result::failed;
    e.reason = result.ok() ? fmt::format("fleet {} epoch {}", settings_->fleet->name, epoch)
                           : fmt::format("fleet {} epoch {}: {}", settings_->fleet->name, epoch, result.error);
    record_history(std::move(e));
    co_return result;
}

void runtime::handle_signals()
{
    if (stopping_) return;
    signals_.async_wait([this](boost::system::error_code ec, int signal) {
        if (ec) return;
        if (signal == SIGHUP) {
            spdlog::info("SIGHUP: reloading {}", settings_->source.string());
            notify::reloading();
            for (const auto& error : reload())
                spdlog::error("reload refused: {}", error);
            notify::ready();
            handle_signals();
            return;
        }
        spdlog::info("{}: stopping", signal == SIGTERM ? "SIGTERM" : "SIGINT");
        begin_shutdown();
    });
}

void runtime::begin_shutdown()
{
    if (stopping_) return;
    stopping_ = true;
    notify::stopping();
    for (auto& [name, svc] : services_)
        svc->stop_accepting();
    if (control_) control_->stop();
    if (http_) http_->stop();
    controller_->stop();
    if (fleet_) fleet_->stop();
    asio::co_spawn(control_loop(), drain_and_stop(), asio::detached);
}

asio::awaitable<void> runtime::drain_and_stop()
{
    // Let clients finish until shutdown_timeout, checking every 50ms; then cut whoever is left.
    const auto deadline = std::chrono::steady_clock::now() + settings_->daemon.shutdown_timeout;
    auto active_clients = [this] {
        std::size_t active = 0;
        for (auto& [name, svc] : services_)
            active += svc->active();
        return active;
    };
    while (active_clients() > 0 && std::chrono::steady_clock::now() < deadline) {
        shutdown_timer_.expires_after(std::chrono::milliseconds(50));
        co_await shutdown_timer_.async_wait(asio::as_tuple(asio::use_awaitable));
    }
    if (const auto active = active_clients(); active > 0) {
        spdlog::info("shutdown_timeout reached: cutting {} clients", active);
        for (auto& [name, svc] : services_)
            svc->cut_everything(proxy::close_reason::shutdown);
    }
    for (auto& [name, list] : forwarders_)
        for (auto& f : list)
            f->stop_accepting();
    {
        std::lock_guard lock(tunnels_mutex_);
        for (auto& [name, pool] : tunnels_)
            pool->stop();
        for (auto& pool : retiring_)
            pool->stop();
    }
    // The fleet's last etcd calls (the lease's revocation) end by their deadline.
    while (fleet_ && !fleet_->finished()) {
        shutdown_timer_.expires_after(std::chrono::milliseconds(20));
        co_await shutdown_timer_.async_wait(asio::as_tuple(asio::use_awaitable));
    }
    watchdog_timer_.cancel();
    boost::system::error_code ignored;
    signals_.cancel(ignored);
    // Give the cuts a moment to run on their loops, then stop every loop.
    shutdown_timer_.expires_after(std::chrono::milliseconds(100));
    co_await shutdown_timer_.async_wait(asio::as_tuple(asio::use_awaitable));
    for (auto& guard : work_)
        guard.reset();
    for (auto& loop : loops_)
        loop->stop();
}

void runtime::feed_watchdog()
{
    const auto interval = notify::watchdog_interval();
    if (!interval || stopping_) return;
    notify::watchdog();
    // Fed from the control loop: a stuck loop stops the pings and systemd restarts us.
    watchdog_timer_.expires_after(std::chrono::duration_cast<std::chrono::milliseconds>(*interval) / 2);
    watchdog_timer_.async_wait([this](boost::system::error_code ec) {
        if (!ec) feed_watchdog();
    });
}

void runtime::retire_idle_tunnels()
{
    {
        std::lock_guard lock(tunnels_mutex_);
        std::erase_if(retiring_, [](const std::shared_ptr<tunnel::pool>& pool) {
            if (pool->status().channels > 0) return false;
            pool->stop();
            return true;
        });
    }
    if (stopping_) return;
    auto timer = std::make_shared<asio::steady_timer>(control_loop(), std::chrono::seconds(1));
    timer->async_wait([this, timer](boost::system::error_code ec) {
        if (!ec) retire_idle_tunnels();
    });
}

asio::awaitable<void> runtime::check_backends()
{
    // /readyz needs to know whether each active direct backend answers; tunnelled ones are judged
    // by their tunnel's health. One connect per backend every 2s is cheap next to client traffic.
    asio::steady_timer pause(control_loop());
    while (!stopping_) {
        std::map<std::string, std::string> unreachable;
        const auto snapshot = services_;
        for (const auto& [name, svc] : snapshot) {
            const auto settings = svc->settings();
            const auto r = svc->current_route();
            for (const auto s : {proxy::side::old_side, proxy::side::new_side}) {
                if (!r.split_percent && r.active != s) continue;
                if (r.split_percent && *r.split_percent == (s == proxy::side::new_side ? 0 : 100)) continue;
                const auto& b = s == proxy::side::old_side ? settings->old_backend : settings->new_backend;
                if (b.via) continue;
                const auto timeout =
                    std::min(settings->connect_timeout, config::duration(std::chrono::seconds(2)));
                const auto ec = co_await proxy::probe_connect(b.address, timeout);
                if (ec)
                    unreachable[name] = fmt::format("service {}: {} backend {} unreachable: {}", name,
                                                    proxy::to_string(s), b.address.to_string(), ec.message());
            }
        }
        {
            std::lock_guard lock(reachability_mutex_);
            unreachable_ = std::move(unreachable);
        }
        pause.expires_after(std::chrono::seconds(2));
        co_await pause.async_wait(asio::as_tuple(asio::use_awaitable));
    }
}

std::vector<std::string> runtime::reload()
{
    std::vector<std::string> errors;
    auto loaded = config::load(settings_->source);
    if (!loaded) {
        for (const auto& e : loaded.errors)
            errors.push_back(e.to_string());
        return errors;
    }
    auto next = loaded.value;
    try {
        run_on(control_loop(), [&] {
            // Services whose listen address changed are restarted; the old listener goes first so
            // the new one can bind the same port family.
            std::vector<std::string> removed;
            for (const auto& [name, svc] : services_) {
                const auto* wanted = next->find_service(name);
                if (!wanted || wanted->listen != svc->settings()->listen) removed.push_back(name);
            }
            for (const auto& name : removed)
                stop_service(name);
            start_tunnels(*next);
            for (const auto& s : next->services) {
                auto shared = std::make_shared<const config::service_config>(s);
                const auto it = services_.find(s.name);
                if (it == services_.end()) {
                    start_service(shared);
                } else if (!(*it->second->settings() == s)) {
                    controller_->update_service(s.name, shared, probe_endpoints_for(s));
                    spdlog::info("service={} settings reloaded; live clients keep the old ones", s.name);
                }
            }
            {
                std::lock_guard lock(tunnels_mutex_);
                for (auto it = tunnels_.begin(); it != tunnels_.end();) {
                    if (next->find_tunnel(it->first)) {
                        ++it;
                        continue;
                    }
                    retiring_.push_back(it->second);
                    it = tunnels_.erase(it);
                }
            }
            if (next->daemon != settings_->daemon)
                spdlog::warn("[daemon] settings changed; log_level applies now, the rest after a restart");
            if (next->fleet != settings_->fleet) spdlog::warn("[fleet] settings changed; they apply after a restart");
            spdlog::set_level(spdlog::level::from_str(next->daemon.log_level));
            settings_ = next;
        });
    } catch (const std::exception& e) {
        errors.push_back(fmt::format("{}: {}", next->source.string(), e.what()));
        return errors;
    }
    spdlog::info("config reloaded from {}", next->source.string());
    return errors;
}

std::vector<tunnel::tunnel_status> runtime::tunnels_status() const
{
    std::vector<tunnel::tunnel_status> out;
    std::lock_guard lock(tunnels_mutex_);
    for (const auto& [name, pool] : tunnels_)
        out.push_back(pool->status());
    return out;
}

control::status_snapshot runtime::status(const std::string& service) const
{
    // The page and `status` show the recent switches; `tunnelctl history` shows them all.
    return {controller_->snapshot(service), tunnels_status(), history(service, 20),
            fleet_ ? std::optional(fleet_->status()) : std::nullopt};
}

void runtime::record_history(cutover::history_entry entry)
{
    const bool moves_side = entry.action == cutover::history_action::switch_side ||
                            entry.action == cutover::history_action::rollback;
    if (moves_side && entry.held_ms)
        metrics_.observe_hold(entry.service, std::chrono::milliseconds(*entry.held_ms));
    std::lock_guard lock(history_mutex_);
    history_.append(std::move(entry));
    asio::post(history_writer_, [path = history_path_, document = history_] {
        if (auto problem = cutover::save_history(path, document))
            spdlog::warn("switch history not saved: {}", *problem);
    });
}

std::vector<cutover::history_entry> runtime::history(const std::string& service, std::size_t limit) const
{
    std::lock_guard lock(history_mutex_);
    return history_.entries(service, limit);
}

std::vector<std::string> runtime::not_ready_reasons() const
{
    auto reasons = controller_->not_ready_reasons();
    {
        std::lock_guard lock(reachability_mutex_);
        for (const auto& [name, why] : unreachable_)
            reasons.push_back(why);
    }
    for (const auto& svc : controller_->snapshot()) {
        for (const auto s : {proxy::side::old_side, proxy::side::new_side}) {
            if (!svc.receives(s)) continue;
            const auto& via = (s == proxy::side::old_side ? svc.old_backend : svc.new_backend).via;
            if (!via) continue;
            const auto pool = find_tunnel(*via);
            if (!pool || !pool->healthy())
                reasons.push_back(fmt::format(
                    "service {}: tunnel {} for its {} backend has no healthy session{}", svc.name, *via,
                    proxy::to_string(s),
                    pool && !pool->status().last_error.empty() ? " (" + pool->status().last_error + ")" : ""));
        }
    }
    return reasons;
}

} // namespace tunneld::daemon
