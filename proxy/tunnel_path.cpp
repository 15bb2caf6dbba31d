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

/// Opens a channel to `target` for `client` within connect_timeout; nullptr (with the outcome's
/// reason) when it cannot, or when the client is cut meanwhile.
asio::awaitable<std::shared_ptr<tunnel::channel>>
open_backend_channel(tcp::socket& client, client_handle& handle, const config::service_config& settings,
                     const config::backend& target, const tunnel_lookup& tunnels, client_outcome& outcome)
{
    using namespace asio::experimental::awaitable_operators;
    auto pool = tunnels ? tunnels(*target.via) : nullptr;
    if (!pool || !pool->healthy()) {
        // Refuse at once: waiting for a reconnect would hang the application instead of failing it.
        outcome.reason = close_reason::tunnel_down;
        outcome.detail = pool ? pool->status().last_error : "no tunnel named " + *target.via;
        outcome.connect_failed = true;
        co_return nullptr;
    }

    asio::steady_timer deadline(co_await asio::this_coro::executor);
    deadline.expires_after(settings.connect_timeout);
    handle.on_cut([&] {
        close_all(client);
        deadline.cancel();
    });
    auto result = co_await (pool->open_channel(target.address.host, target.address.port) ||
                            deadline.async_wait(as_tuple(use_awaitable)));
    handle.on_cut(nullptr);
    if (result.index() == 1) {
        outcome.reason = handle.was_cut() ? handle.cut_reason() : close_reason::channel_open_timeout;
        outcome.connect_failed = !handle.was_cut();
        co_return nullptr;
    }
    auto [ec, channel] = std::move(std::get<0>(result));
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

} // namespace

asio::awaitable<client_outcome> run_tunnelled(tcp::socket client, std::shared_ptr<client_handle> handle,
                                              const config::service_config& settings,
                                              const config::backend& target, const tunnel_lookup& tunnels,
                                              service_counters& counters, redis_carry* carry)
{
    client_outcome outcome;
    std::shared_ptr<tunnel::channel> channel;
    const auto prepared = take_prepared(carry, handle->current_side(), true);
    if (prepared) {
        channel = std::move(prepared->channel); // opened and replayed during the hold
    } else {
        channel = co_await open_backend_channel(client, *handle, settings, target, tunnels, outcome);
        if (!channel) co_return outcome;
    }

    // An SSH session and its channels live on one loop: move the client socket there so its pumps
    // never cross threads.
    const auto channel_executor = channel->get_executor();
    const auto protocol = client.local_endpoint().protocol();
    tcp::socket moved(channel_executor, protocol, client.release());
    handle->rehome(channel_executor);

    auto run = [&, channel, moved = std::move(moved)]() mutable -> asio::awaitable<void> {
        co_await pump_both(moved, *channel, *handle, settings, counters, outcome, carry);
        if (!handle->was_cut() && outcome.reason != close_reason::moved &&
            channel->failure() == tunnel::tunnel_errc::session_lost) {
            // Its gateway died or went silent: say so rather than a plain backend reset.
            outcome.reason = close_reason::gateway_lost;
            outcome.detail = channel->failure().message();
        }
        channel->close();
        if (outcome.reason == close_reason::moved) outcome.client.emplace(std::move(moved));
    };
    co_await asio::co_spawn(channel_executor, run(), use_awaitable);
    co_return outcome;
}

} // namespace tunneld::proxy
