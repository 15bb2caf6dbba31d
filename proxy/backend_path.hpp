#pragma once
// Connecting a routed client to its backend (directly or through a tunnel channel) and pumping
// bytes until both directions end. The caller has already chosen the side.

#include "config/config.hpp"
#include "proxy/close_reason.hpp"
#include "proxy/pump.hpp"
#include "proxy/redis_session.hpp"
#include "proxy/registry.hpp"
#include "proxy/service.hpp"

#include <algorithm>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <memory>
#include <optional>
#include <span>
#include <spdlog/spdlog.h>
#include <string>
#include <vector>

namespace tunneld::proxy {

/// How a client ended, for its log line and the counters.
struct client_outcome {
    close_reason reason = close_reason::client_eof;
    std::string detail; ///< why a connect failed, for the log line
    bool connect_failed = false;
    std::uint64_t bytes_up = 0;
    std::uint64_t bytes_down = 0;
};

/// Close reason from how each direction ended; `up` is client -> backend, `up_ended_first` says
/// which direction finished first. Pure.
close_reason reason_from(pump_end up, pump_end down, bool up_ended_first);

/// Connects `client` to `target` within the service's connect_timeout and pumps until the client
/// ends or `handle` is cut. Returns on the caller's executor.
asio::awaitable<client_outcome> run_client(asio::ip::tcp::socket client,
                                           std::shared_ptr<client_handle> handle,
                                           const config::service_config& settings,
                                           const config::backend& target, const tunnel_lookup& tunnels,
                                           service_counters& counters);

/// Opens and closes a TCP connection to `target` within `timeout`: is a direct backend reachable?
asio::awaitable<boost::system::error_code> probe_connect(const config::endpoint& target,
                                                         config::duration timeout);

/// The tunnelled half of run_client (proxy/tunnel_path.cpp).
asio::awaitable<client_outcome> run_tunnelled(asio::ip::tcp::socket client,
                                              std::shared_ptr<client_handle> handle,
                                              const config::service_config& settings,
                                              const config::backend& target, const tunnel_lookup& tunnels,
                                              service_counters& counters);

/// Pumps both directions between `client` and `backend` (same executor) until both end; a read
/// error on either side resets both. Cutting `handle` closes both. Fills the outcome's bytes and
/// reason. A kind = "redis" client's bytes are followed by a redis_session as they flow (nothing
/// changes for the client); one whose bytes are not RESP is logged once as not movable.
template <class Backend>
asio::awaitable<void> pump_both(asio::ip::tcp::socket& client, Backend& backend, client_handle& handle,
                                const config::service_config& settings, service_counters& counters,
                                client_outcome& outcome)
{
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

    // Both pumps run on this thread, and the up pump shows a request to the session before it
    // writes it: its reply cannot be seen first.
    const auto session =
        settings.kind == config::service_kind::redis ? std::make_unique<redis_session>() : nullptr;
    bool not_resp_logged = false;
    auto log_not_resp_once = [&] {
        if (not_resp_logged || session->pinned() != pin_reason::not_resp) return;
        not_resp_logged = true;
        const bool from_client = session->client_error() != resp_error::none;
        spdlog::info("client={} service={} not_movable=not_resp from={} error={}", handle.id(), settings.name,
                     from_client ? "client" : "backend",
                     to_string(from_client ? session->client_error() : session->backend_error()));
    };
    std::size_t up_used = 0; // how much of up_buffer has held client bytes (an AUTH among them)
    auto observe_up = [&](std::string_view bytes) {
        up_used = std::max(up_used, bytes.size());
        session->observe_client(bytes);
        log_not_resp_once();
    };
    auto observe_down = [&](std::string_view bytes) {
        session->observe_backend(bytes);
        log_not_resp_once();
    };

    auto up = [&]() -> asio::awaitable<pump_end> {
        const pump_end end =
            session
                ? co_await pump(client, backend, up_buffer, outcome.bytes_up, counters.bytes_up, observe_up)
                : co_await pump(client, backend, up_buffer, outcome.bytes_up, counters.bytes_up);
        if (first == 0) first = 1;
        if (end != pump_end::eof) {
            close_all(client);
            close_all(backend);
        }
        co_return end;
    };
    auto down = [&]() -> asio::awaitable<pump_end> {
        const pump_end end =
            session ? co_await pump(backend, client, down_buffer, outcome.bytes_down, counters.bytes_down,
                                    observe_down)
                    : co_await pump(backend, client, down_buffer, outcome.bytes_down, counters.bytes_down);
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
    // A redis client's AUTH or HELLO passed through up_buffer: wipe what was used, and only that,
    // so an idle client's untouched pages stay untouched.
    if (session) wipe_bytes(up_buffer.data(), up_used);
    outcome.reason = handle.was_cut() ? handle.cut_reason()
                                      : reason_from(up_end, down_end.value_or(pump_end::eof), first == 1);
}

} // namespace tunneld::proxy
