#include "proxy/backend_path.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/connect.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <string>

namespace tunneld::proxy {

using asio::as_tuple;
using asio::use_awaitable;
using tcp = asio::ip::tcp;

close_reason reason_from(pump_end up, pump_end down, bool up_ended_first)
{
    if (up_ended_first) {
        switch (up) {
        case pump_end::eof:
            return close_reason::client_eof;
        case pump_end::read_error:
            return close_reason::client_reset;
        case pump_end::write_error:
            return close_reason::backend_reset;
        }
    }
    switch (down) {
    case pump_end::eof:
        return close_reason::backend_eof;
    case pump_end::read_error:
        return close_reason::backend_reset;
    case pump_end::write_error:
        return close_reason::client_reset;
    }
    return close_reason::backend_eof; // every pump_end is handled above
}

namespace {

/// Resolves `target` and connects `socket` to it; the caller races this against its deadline.
asio::awaitable<boost::system::error_code> resolve_and_connect(tcp::socket& socket, tcp::resolver& resolver,
                                                               const config::endpoint& target)
{
    auto [resolve_ec, endpoints] =
        co_await resolver.async_resolve(target.host, std::to_string(target.port), as_tuple(use_awaitable));
    if (resolve_ec) co_return resolve_ec;
    // Opening first makes "Too many open files" the reported error, not a cancelled connect.
    boost::system::error_code open_ec;
    socket.open(endpoints.begin()->endpoint().protocol(), open_ec);
    if (open_ec) co_return open_ec;
    auto [connect_ec, endpoint] = co_await asio::async_connect(socket, endpoints, as_tuple(use_awaitable));
    co_return connect_ec;
}

} // namespace

asio::awaitable<boost::system::error_code> connect_within(tcp::socket& socket, const config::endpoint& target,
                                                          config::duration timeout,
                                                          std::function<void()>* stop)
{
    using namespace asio::experimental::awaitable_operators;
    const auto executor = co_await asio::this_coro::executor;
    tcp::resolver resolver(executor);
    asio::steady_timer deadline(executor);
    deadline.expires_after(timeout);
    if (stop)
        *stop = [&] {
            resolver.cancel();
            deadline.cancel();
        };
    auto result = co_await (resolve_and_connect(socket, resolver, target) ||
                            deadline.async_wait(as_tuple(use_awaitable)));
    if (stop) *stop = nullptr;
    if (result.index() == 1) co_return asio::error::timed_out;
    co_return std::get<0>(result);
}

asio::awaitable<boost::system::error_code> probe_connect(const config::endpoint& target,
                                                         config::duration timeout)
{
    tcp::socket socket(co_await asio::this_coro::executor);
    co_return co_await connect_within(socket, target, timeout);
}

namespace {

/// Connects a new backend connection for `client` within connect_timeout; nullopt (with the
/// outcome's reason) when it cannot, or when the client is cut meanwhile.
asio::awaitable<std::optional<tcp::socket>> connect_backend(tcp::socket& client, client_handle& handle,
                                                            const config::service_config& settings,
                                                            const config::endpoint& target,
                                                            client_outcome& outcome)
{
    tcp::socket backend(co_await asio::this_coro::executor);
    std::function<void()> stop;
    handle.on_cut([&] {
        close_all(client);
        if (stop) stop();
    });
    const auto ec = co_await connect_within(backend, target, settings.connect_timeout, &stop);
    handle.on_cut(nullptr);
    if (handle.was_cut()) {
        outcome.reason = handle.cut_reason();
        co_return std::nullopt;
    }
    if (ec == asio::error::timed_out) {
        outcome.reason = close_reason::connect_timeout;
        outcome.connect_failed = true;
        co_return std::nullopt;
    }
    if (ec) {
        outcome.reason = close_reason::connect_failed;
        outcome.detail = ec.message();
        outcome.connect_failed = true;
        co_return std::nullopt;
    }
    boost::system::error_code ignored;
    backend.set_option(tcp::no_delay(true), ignored);
    co_return std::move(backend);
}

} // namespace

asio::awaitable<client_outcome> run_client(tcp::socket client, std::shared_ptr<client_handle> handle,
                                           const config::service_config& settings,
                                           const config::backend& target, const tunnel_lookup& tunnels,
                                           service_counters& counters, redis_carry* carry)
{
    if (target.via)
        co_return co_await run_tunnelled(std::move(client), handle, settings, target, tunnels, counters,
                                         carry);

    client_outcome outcome;
    std::optional<tcp::socket> backend;
    const auto prepared = take_prepared(carry, handle->current_side(), false);
    if (prepared) {
        // Opened and replayed during the hold, on the thread the client was on then.
        boost::system::error_code ec;
        const auto protocol = prepared->socket->local_endpoint(ec).protocol();
        backend.emplace(co_await asio::this_coro::executor, protocol, prepared->socket->release(ec));
        prepared->socket.reset();
    } else {
        backend = co_await connect_backend(client, *handle, settings, target.address, outcome);
        if (!backend) co_return outcome;
    }
    co_await pump_both(client, *backend, *handle, settings, counters, outcome, carry);
    if (outcome.reason == close_reason::moved) outcome.client.emplace(std::move(client));
    co_return outcome;
}

} // namespace tunneld::proxy
