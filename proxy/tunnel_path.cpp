#include "proxy/backend_path.hpp"
#include "proxy/channel_io.hpp"
#include "tunnel/tunnel.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

namespace tunneld::proxy {

using asio::as_tuple;
using asio::use_awaitable;
using tcp = asio::ip::tcp;

namespace {

/// The same connection, waited on by `executor`'s loop from now on.
tcp::socket rehomed(tcp::socket& client, const asio::any_io_executor& executor)
{
    const auto protocol = client.local_endpoint().protocol();
    return tcp::socket(executor, protocol, client.release());
}

/// Opens a channel to `target` for `client` within connect_timeout; nullptr (with the outcome's
/// reason) when it cannot, or when the client is cut meanwhile.
asio::awaitable<std::shared_ptr<tunnel::channel>>
open_backend_channel(tcp::socket& client, client_handle& handle, const config::service_config& settings,
                     const config::backend& target, tunnel::pool& pool, client_outcome& outcome)
{
    std::function<void()> stop;
    handle.on_cut([&] {
        close_all(client);
        if (stop) stop();
    });
    auto [ec, channel] = co_await open_channel_within(pool, target.address, settings.connect_timeout, &stop);
    handle.on_cut(nullptr);
    if (ec == std::errc::timed_out) {
        outcome.reason = handle.was_cut() ? handle.cut_reason() : close_reason::channel_open_timeout;
        outcome.connect_failed = !handle.was_cut();
        co_return nullptr;
    }
    if (ec || !channel) {
        outcome.reason = close_reason::channel_open_failed;
        outcome.detail = ec ? ec.message() : "no channel";
        outcome.connect_failed = true;
        co_return nullptr;
    }
    if (handle.was_cut()) {
        channel->close();
        outcome.reason = handle.cut_reason();
        co_return nullptr;
    }
    co_return channel;
}

/// Opens a channel to `target` (unless `ready` is one: opened during a move's hold) and pumps
/// until the client ends. Runs on the loop the pool would open on (run_tunnelled moved it
/// there), so that the open and the pumps stay on one thread; moves the client again only when
/// the channel is on another session's loop.
asio::awaitable<client_outcome> open_and_pump(tcp::socket client, std::shared_ptr<client_handle> handle,
                                              const config::service_config& settings,
                                              const config::backend& target,
                                              std::shared_ptr<tunnel::pool> pool,
                                              std::shared_ptr<tunnel::channel> ready,
                                              service_counters& counters, redis_carry* carry)
{
    client_outcome outcome;
    const auto executor = co_await asio::this_coro::executor;
    auto channel = std::move(ready);
    if (!channel) channel = co_await open_backend_channel(client, *handle, settings, target, *pool, outcome);
    if (!channel) co_return outcome;

    auto run = [&, channel](tcp::socket& on_loop) -> asio::awaitable<void> {
        co_await pump_both(on_loop, *channel, *handle, settings, counters, outcome, carry);
        if (!handle->was_cut() && outcome.reason != close_reason::moved &&
            channel->failure() == tunnel::tunnel_errc::session_lost) {
            // Its gateway died or went silent: say so rather than a plain backend reset.
            outcome.reason = close_reason::gateway_lost;
            outcome.detail = channel->failure().message();
        }
        channel->close();
        if (outcome.reason == close_reason::moved) outcome.client.emplace(std::move(on_loop));
    };
    const auto channel_executor = channel->get_executor();
    if (channel_executor == executor) {
        co_await run(client);
        co_return outcome;
    }
    // The open went to another session (the chosen one was busy or died meanwhile). An SSH
    // session and its channels live on one loop: move the client socket there so its pumps
    // never cross threads.
    auto moved = rehomed(client, channel_executor);
    handle->rehome(channel_executor);
    co_await asio::co_spawn(channel_executor, run(moved), use_awaitable);
    co_return outcome;
}

} // namespace

asio::awaitable<std::pair<std::error_code, std::shared_ptr<tunnel::channel>>>
open_channel_within(tunnel::pool& pool, const config::endpoint& target, config::duration timeout,
                    std::function<void()>* stop)
{
    using namespace asio::experimental::awaitable_operators;
    asio::steady_timer deadline(co_await asio::this_coro::executor);
    deadline.expires_after(timeout);
    if (stop) *stop = [&] { deadline.cancel(); };
    auto result = co_await (pool.open_channel(target.host, target.port) ||
                            deadline.async_wait(as_tuple(use_awaitable)));
    if (stop) *stop = nullptr;
    if (result.index() == 1) co_return std::pair{std::make_error_code(std::errc::timed_out), nullptr};
    co_return std::move(std::get<0>(result));
}

asio::awaitable<client_outcome> run_tunnelled(tcp::socket client, std::shared_ptr<client_handle> handle,
                                              const config::service_config& settings,
                                              const config::backend& target, const tunnel_lookup& tunnels,
                                              service_counters& counters, redis_carry* carry)
{
    const auto prepared = take_prepared(carry, handle->current_side(), true);
    if (prepared)
        co_return co_await open_and_pump(std::move(client), handle, settings, target, nullptr,
                                         std::move(prepared->channel), counters, carry);
    client_outcome outcome;
    auto pool = tunnels ? tunnels(*target.via) : nullptr;
    if (!pool || !pool->healthy()) {
        // Refuse at once: waiting for a reconnect would hang the application instead of failing it.
        outcome.reason = close_reason::tunnel_down;
        outcome.detail = pool ? pool->status().last_error : "no tunnel named " + *target.via;
        outcome.connect_failed = true;
        co_return outcome;
    }
    const auto executor = co_await asio::this_coro::executor;
    const auto home = pool->open_executor(executor);
    if (home == executor)
        co_return co_await open_and_pump(std::move(client), handle, settings, target, pool, nullptr, counters,
                                         carry);
    // Move to the loop of the session that will open the channel before opening it: the open's
    // reply and the pumps then need no hop between threads (each hop is a wake-up of another
    // thread, the largest part of an open on a busy host).
    auto moved = rehomed(client, home);
    handle->rehome(home);
    co_return co_await asio::co_spawn(
        home,
        open_and_pump(std::move(moved), handle, settings, target, std::move(pool), nullptr, counters, carry),
        use_awaitable);
}

} // namespace tunneld::proxy
