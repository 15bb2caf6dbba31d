#include "proxy/service.hpp"

#include "proxy/backend_path.hpp"
#include "tunnel/tunnel.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <fmt/format.h>
#include <random>
#include <spdlog/spdlog.h>

namespace tunneld::proxy {

using asio::as_tuple;
using asio::use_awaitable;
using tcp = asio::ip::tcp;

namespace {
/// Connections accepted before the accept loop lets its own loop run (see accept_loop).
constexpr std::size_t max_accepts_per_wakeup = 16;
} // namespace

std::string human_size(std::uint64_t bytes)
{
    if (bytes < 1024) return fmt::format("{}B", bytes);
    if (bytes < 1024 * 1024) return fmt::format("{:.1f}KiB", bytes / 1024.0);
    if (bytes < 1024ull * 1024 * 1024) return fmt::format("{:.1f}MiB", bytes / (1024.0 * 1024));
    return fmt::format("{:.2f}GiB", bytes / (1024.0 * 1024 * 1024));
}

service::service(std::shared_ptr<const config::service_config> settings, std::vector<asio::io_context*> loops,
                 tunnel_lookup tunnels, route initial)
    : name_(settings->name), loops_(std::move(loops)), tunnels_(std::move(tunnels)),
      settings_(std::move(settings)), route_(initial)
{
}

service::~service() = default;

void service::start()
{
    const auto cfg = this->settings();
    auto& loop = *loops_.front();
    const auto address = asio::ip::make_address(cfg->listen.host);
    const tcp::endpoint endpoint(address, cfg->listen.port);
    acceptor_ = std::make_unique<tcp::acceptor>(loop);
    acceptor_->open(endpoint.protocol());
    acceptor_->set_option(tcp::acceptor::reuse_address(true));
    acceptor_->bind(endpoint);
    acceptor_->listen(asio::socket_base::max_listen_connections);
    asio::co_spawn(
        loop, [self = shared_from_this()] { return self->accept_loop(); }, asio::detached);
}

void service::stop_accepting()
{
    if (!acceptor_) return;
    // The acceptor belongs to loops_[0]: close it there so no accept is mid-flight on another thread.
    asio::post(*loops_.front(), [self = shared_from_this()] {
        boost::system::error_code ignored;
        if (self->acceptor_) self->acceptor_->close(ignored);
    });
}

std::shared_ptr<const config::service_config> service::settings() const
{
    std::lock_guard lock(mutex_);
    return settings_;
}

void service::update_settings(std::shared_ptr<const config::service_config> settings)
{
    std::lock_guard lock(mutex_);
    settings_ = std::move(settings);
}

route service::current_route() const
{
    std::lock_guard lock(mutex_);
    return route_;
}

void service::set_route(const route& r)
{
    {
        std::lock_guard lock(mutex_);
        route_ = r;
    }
    if (!r.hold) release_held();
}

std::size_t service::held() const
{
    std::lock_guard lock(mutex_);
    return held_.size();
}

void service::release_held()
{
    std::lock_guard lock(mutex_);
    for (auto& [id, waiter] : held_) {
        // The timer belongs to the client's loop; cancel it there. The client removes its own entry.
        asio::post(waiter.executor, [timer = waiter.timer] { timer->cancel(); });
    }
}

void service::cut_everything(close_reason reason)
{
    stopping_ = true;
    release_held();
    clients_.cut_all(reason);
}

std::size_t service::hold_clients(side from)
{
    const auto clients = clients_.on_side(from);
    // The target lets each held client connect to the other side ahead of its move.
    for (const auto& client : clients)
        client->order(move_order::hold, other(from));
    return clients.size();
}

move_census service::census(side s) const
{
    move_census out;
    for (const auto& client : clients_.on_side(s)) {
        ++out.clients;
        if (client->held())
            ++out.held;
        else if (pin_lasts(client->pin()))
            ++out.pinned_lasting;
    }
    return out;
}

std::size_t service::move_clients(side from, side to)
{
    std::size_t cut = 0;
    for (const auto& client : clients_.on_side(from)) {
        if (!client->held() && pin_lasts(client->pin())) {
            client->cut(close_reason::cut_pinned);
            ++cut;
            continue;
        }
        client->order(move_order::move, to);
    }
    return cut;
}

std::vector<std::int64_t> service::blocked_backend_ids(side s) const
{
    std::vector<std::int64_t> ids;
    for (const auto& client : clients_.on_side(s))
        if (client->pin() == pin_reason::blocking_command && client->backend_id() >= 0)
            ids.push_back(client->backend_id());
    return ids;
}

void service::resume_clients(side s)
{
    for (const auto& client : clients_.on_side(s))
        if (client->current_order() != move_order::none) client->order(move_order::none);
}

std::size_t service::cut_unmoved(side from)
{
    const auto clients = clients_.on_side(from);
    for (const auto& client : clients)
        client->cut(client->pin() != pin_reason::none ? close_reason::cut_pinned : close_reason::cut_by_switch);
    return clients.size();
}

asio::io_context& service::loop_for_next_client()
{
    const route r = current_route();
    if (!r.split_percent && tunnels_) {
        const auto cfg = settings();
        const auto& backend = r.active == side::old_side ? cfg->old_backend : cfg->new_backend;
        if (backend.via) {
            if (const auto pool = tunnels_(*backend.via)) {
                const auto home = pool->open_executor(loops_.front()->get_executor());
                for (auto* loop : loops_)
                    if (home == asio::any_io_executor(loop->get_executor())) return *loop;
            }
        }
    }
    return *loops_[next_loop_++ % loops_.size()];
}

asio::awaitable<void> service::accept_loop()
{
    const auto executor = co_await asio::this_coro::executor;
    asio::steady_timer backoff(executor);
    auto next_accept_warning = std::chrono::steady_clock::time_point{};
    std::uint64_t failed_accepts = 0;
    // Wait for a connection, then choose its loop: the tunnel sessions' loads are those of the
    // moment it arrived, not of the previous accept.
    acceptor_->non_blocking(true);
    // Asio's reactor is edge-triggered: a wait completes only when a new connection arrives, so
    // wait only once accept said the backlog is empty. Connections left behind (the cap, a
    // failure) are accepted again directly.
    bool backlog_empty = true;
    for (;;) {
        if (backlog_empty) {
            auto [wait_ec] = co_await acceptor_->async_wait(tcp::acceptor::wait_read, as_tuple(use_awaitable));
            if (wait_ec == asio::error::operation_aborted || !acceptor_->is_open()) co_return;
        }
        boost::system::error_code ec;
        for (std::size_t accepted = 0; accepted < max_accepts_per_wakeup; ++accepted) {
            auto& target = loop_for_next_client();
            auto client = acceptor_->accept(target, ec);
            if (ec) break;
            // The lambda keeps the service alive as long as any of its clients.
            asio::co_spawn(
                target,
                [self = shared_from_this(), c = std::move(client)]() mutable {
                    return self->serve(std::move(c));
                },
                asio::detached);
        }
        backlog_empty = ec == asio::error::would_block || ec == asio::error::try_again;
        if (!ec) {
            // The cap (HAProxy's tune.maxaccept): the clients just accepted on this loop start,
            // taking their backend descriptors, before more are accepted. A burst at the fd
            // limit then leaves clients in the backlog rather than accepting ones it cannot
            // connect.
            co_await asio::post(executor, use_awaitable);
            if (!acceptor_->is_open()) co_return;
            continue;
        }
        if (backlog_empty) continue;
        if (ec == asio::error::operation_aborted || !acceptor_->is_open()) co_return;
        // Out of file descriptors (or another transient failure): the pending connection stays in
        // the backlog, so retrying at once would spin. Pause briefly, then accept again.
        // One line per 10s at most: a host stuck at its fd limit must not flood the journal.
        const auto now = std::chrono::steady_clock::now();
        ++failed_accepts;
        if (now >= next_accept_warning) {
            spdlog::warn("service={} accept failed: {} ({} times since the last report); retrying every 100ms",
                         name_, ec.message(), failed_accepts);
            failed_accepts = 0;
            next_accept_warning = now + std::chrono::seconds(10);
        }
        backoff.expires_after(std::chrono::milliseconds(100));
        co_await backoff.async_wait(as_tuple(use_awaitable));
        if (!acceptor_->is_open()) co_return;
    }
}

asio::awaitable<bool> service::wait_while_held(std::uint64_t id, tcp::socket& client)
{
    asio::steady_timer timer(client.get_executor());
    for (;;) {
        {
            std::lock_guard lock(mutex_);
            if (stopping_) {
                held_.erase(id);
                co_return false;
            }
            if (route_.refuse) {
                held_.erase(id);
                co_return false;
            }
            if (!route_.hold) {
                held_.erase(id);
                co_return true;
            }
            timer.expires_at(asio::steady_timer::time_point::max());
            held_.insert_or_assign(id, held_client{client.get_executor(), &timer});
        }
        co_await timer.async_wait(as_tuple(use_awaitable));
    }
}

asio::awaitable<void> service::serve(tcp::socket client)
{
    const auto started = std::chrono::steady_clock::now();
    const std::uint64_t id = next_client_id_.fetch_add(1);
    const auto cfg = settings(); // this client keeps the settings it started with, across reloads
    const std::size_t now_active = ++active_;
    struct active_guard {
        std::atomic<std::size_t>& active;
        ~active_guard() { --active; }
    } guard{active_};

    if (now_active > cfg->max_clients) {
        counters_.refused_max_clients.fetch_add(1, std::memory_order_relaxed);
        spdlog::warn("client={} service={} reason=max_clients limit={}", id, name_, cfg->max_clients);
        co_return; // the socket closes as it goes out of scope
    }
    counters_.clients_total.fetch_add(1, std::memory_order_relaxed);

    boost::system::error_code ignored;
    client.set_option(tcp::no_delay(true), ignored);
    const auto peer = client.remote_endpoint(ignored);

    if (current_route().refuse) {
        spdlog::info("client={} service={} reason=refused_unresolved_switch", id, name_);
        co_return;
    }
    if (current_route().hold && !co_await wait_while_held(id, client)) {
        spdlog::info("client={} service={} reason={}", id, name_,
                     current_route().refuse ? "refused_unresolved_switch" : "shutdown_while_held");
        co_return;
    }

    const route r = current_route();
    std::uint32_t roll = 0;
    if (r.split_percent) {
        if (r.sticky) {
            const auto address = peer.address();
            if (address.is_v4())
                roll = sticky_roll(address.to_v4().to_bytes());
            else
                roll = sticky_roll(address.to_v6().to_bytes());
        } else {
            thread_local std::minstd_rand random{std::random_device{}()};
            roll = static_cast<std::uint32_t>(random() % 100);
        }
    }
    const side chosen = choose_side(r, roll);
    const config::backend& target = chosen == side::old_side ? cfg->old_backend : cfg->new_backend;

    const auto executor = client.get_executor();
    auto handle = std::make_shared<client_handle>(id, chosen, executor);
    clients_.add(handle);
    struct registry_guard {
        client_registry& registry;
        std::uint64_t id;
        ~registry_guard() { registry.remove(id); }
    } registered{clients_, id};

    // A redis client's session follows it from backend to backend when a switch moves it.
    const auto carry = cfg->kind == config::service_kind::redis
                           ? std::make_unique<redis_carry>(cfg->buffer_size, tunnels_)
                           : nullptr;
    side on = chosen;
    const config::backend* backend = &target;
    client_outcome outcome =
        co_await run_client(std::move(client), handle, *cfg, *backend, tunnels_, counters_, carry.get());
    while (outcome.reason == close_reason::moved && outcome.client) {
        // Back on this loop: the next backend may be direct, and the tunnelled path moves the
        // socket to its session's loop again if not.
        boost::system::error_code ec;
        const auto protocol = outcome.client->local_endpoint(ec).protocol();
        tcp::socket again(executor, protocol, outcome.client->release(ec));
        outcome.client.reset();
        handle->rehome(executor);
        on = handle->move_target();
        backend = on == side::old_side ? &cfg->old_backend : &cfg->new_backend;
        handle->set_side(on);
        handle->order(move_order::none);
        const auto bytes_up = outcome.bytes_up;
        const auto bytes_down = outcome.bytes_down;
        counters_.moves_in_flight.fetch_add(1, std::memory_order_relaxed);
        outcome = co_await run_client(std::move(again), handle, *cfg, *backend, tunnels_, counters_, carry.get());
        outcome.bytes_up += bytes_up;
        outcome.bytes_down += bytes_down;
        if (carry->replay_due && outcome.reason != close_reason::moved) {
            // The move ended before its replay: no backend (connect failed) or cut meanwhile.
            // (A client moved on again was replayed: only a replayed client can be moved.)
            carry->replay_due = false;
            counters_.moves_in_flight.fetch_sub(1, std::memory_order_relaxed);
            counters_.clients_move_failed.fetch_add(1, std::memory_order_relaxed);
        }
    }
    if (outcome.reason == close_reason::cut_pinned && outcome.detail.empty())
        outcome.detail = fmt::format("pinned: {}", to_string(handle->pin()));

    if (outcome.connect_failed)
        counters_.connect_errors[static_cast<std::size_t>(on)].fetch_add(1, std::memory_order_relaxed);
    const auto elapsed =
        std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - started);
    spdlog::info("client={} service={} side={} via={} reason={} up={} down={} ms={}{}{}", id, name_,
                 to_string(on), backend->via.value_or("-"), to_string(outcome.reason), human_size(outcome.bytes_up),
                 human_size(outcome.bytes_down), elapsed.count(), outcome.detail.empty() ? "" : " error=",
                 outcome.detail.empty() ? "" : fmt::format("\"{}\"", outcome.detail));
}

} // namespace tunneld::proxy
