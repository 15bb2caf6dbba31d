#pragma once
// Connecting a routed client to its backend (directly or through a tunnel channel) and pumping
// bytes until both directions end. The caller has already chosen the side.

#include "config/config.hpp"
#include "proxy/client_outcome.hpp"
#include "proxy/pump.hpp"
#include "proxy/redis_pump.hpp"
#include "proxy/registry.hpp"
#include "proxy/service.hpp"

#include <algorithm>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <spdlog/spdlog.h>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

namespace tunneld::tunnel {
class channel;
class pool;
} // namespace tunneld::tunnel

namespace tunneld::proxy {

/// Connects `client` to `target` within the service's connect_timeout and pumps until the client
/// ends or `handle` is cut. Returns on the caller's executor. A redis client passes its `carry`:
/// it may then end with close_reason::moved and its socket in the outcome.
asio::awaitable<client_outcome> run_client(asio::ip::tcp::socket client,
                                           std::shared_ptr<client_handle> handle,
                                           const config::service_config& settings,
                                           const config::backend& target, const tunnel_lookup& tunnels,
                                           service_counters& counters, redis_carry* carry = nullptr);

/// Resolves `target` and connects `socket` to it within `timeout` (asio::error::timed_out when
/// the deadline comes first). While it runs, `*stop` (when given) ends it early.
asio::awaitable<boost::system::error_code> connect_within(asio::ip::tcp::socket& socket,
                                                          const config::endpoint& target,
                                                          config::duration timeout,
                                                          std::function<void()>* stop = nullptr);

/// Opens a direct-tcpip channel through `pool` to `target` within `timeout` (std::errc::timed_out
/// when the deadline comes first); the twin of connect_within for the tunnelled side. While it
/// runs, `*stop` (when given) ends it early, also as timed_out. A channel whose open completes
/// after the deadline is closed by the pool. Completes on the caller's executor
/// (proxy/tunnel_path.cpp).
asio::awaitable<std::pair<std::error_code, std::shared_ptr<tunnel::channel>>>
open_channel_within(tunnel::pool& pool, const config::endpoint& target, config::duration timeout,
                    std::function<void()>* stop = nullptr);

/// Opens and closes a TCP connection to `target` within `timeout`: is a direct backend reachable?
asio::awaitable<boost::system::error_code> probe_connect(const config::endpoint& target,
                                                         config::duration timeout);

/// The tunnelled half of run_client (proxy/tunnel_path.cpp).
asio::awaitable<client_outcome> run_tunnelled(asio::ip::tcp::socket client,
                                              std::shared_ptr<client_handle> handle,
                                              const config::service_config& settings,
                                              const config::backend& target, const tunnel_lookup& tunnels,
                                              service_counters& counters, redis_carry* carry);

/// Pumps both directions between `client` and `backend` (same executor) until both end; a read
/// error on either side resets both. Cutting `handle` closes both. Fills the outcome's bytes and
/// reason. A kind = "redis" client (`carry` set) goes to pump_redis instead.
template <class Backend>
asio::awaitable<void> pump_both(asio::ip::tcp::socket& client, Backend& backend, client_handle& handle,
                                const config::service_config& settings, service_counters& counters,
                                client_outcome& outcome, redis_carry* carry)
{
    if (carry) {
        co_await pump_redis(client, backend, handle, settings, counters, outcome, *carry);
        co_return;
    }
    const std::size_t buffer_size = settings.buffer_size;
    handle.on_cut([&] {
        close_all(client);
        close_all(backend);
    });
    if (handle.was_cut()) close_all(client);

    // Not zero-filled: the pages of an idle client's buffers are never touched, so never resident.
    const auto buffers = std::make_unique_for_overwrite<char[]>(2 * buffer_size);
    const std::span<char> up_buffer(buffers.get(), buffer_size);
    const std::span<char> down_buffer(buffers.get() + buffer_size, buffer_size);
    int first = 0; // 1: up ended first, 2: down ended first

    auto up = [&]() -> asio::awaitable<pump_end> {
        const pump_end end = co_await pump(client, backend, up_buffer, outcome.bytes_up, counters.bytes_up);
        if (first == 0) first = 1;
        if (end != pump_end::eof) {
            close_all(client);
            close_all(backend);
        }
        co_return end;
    };
    auto down = [&]() -> asio::awaitable<pump_end> {
        const pump_end end = co_await pump(backend, client, down_buffer, outcome.bytes_down, counters.bytes_down);
        if (first == 0) first = 2;
        if (end != pump_end::eof) {
            close_all(client);
            close_all(backend);
        }
        co_return end;
    };

    // The down pump runs as a coroutine of its own on this executor (this thread) and this frame
    // waits for it. Cheaper than awaitable operator&&, which arms a cancellation slot on every
    // read and write of both pumps.
    const auto executor = co_await asio::this_coro::executor;
    asio::steady_timer down_finished(executor, asio::steady_timer::time_point::max());
    std::optional<pump_end> down_end;
    asio::co_spawn(executor, down(), [&](std::exception_ptr, pump_end end) {
        down_end = end;
        down_finished.cancel();
    });
    const pump_end up_end = co_await up();
    if (!down_end) co_await down_finished.async_wait(asio::as_tuple(asio::use_awaitable));

    handle.on_cut(nullptr); // the sockets die with this frame; a late cut must not touch them
    outcome.reason = handle.was_cut() ? handle.cut_reason()
                                      : reason_from(up_end, down_end.value_or(pump_end::eof), first == 1);
}

} // namespace tunneld::proxy
