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

asio::awaitable<boost::system::error_code> probe_connect(const config::endpoint& target,
                                                         config::duration timeout)
{
    using namespace asio::experimental::awaitable_operators;
    const auto executor = co_await asio::this_coro::executor;
    tcp::socket socket(executor);
    tcp::resolver resolver(executor);
    asio::steady_timer deadline(executor);
    deadline.expires_after(timeout);
    auto result = co_await (resolve_and_connect(socket, resolver, target) ||
                            deadline.async_wait(as_tuple(use_awaitable)));
    if (result.index() == 1) co_return asio::error::timed_out;
    co_return std::get<0>(result);
}

asio::awaitable<client_outcome> run_client(tcp::socket client, std::shared_ptr<client_handle> handle,
                                           const config::service_config& settings,
                                           const config::backend& target, const tunnel_lookup& tunnels,
                                           service_counters& counters, redis_carry* carry)
{
    using namespace asio::experimental::awaitable_operators;
    if (target.via)
        co_return co_await run_tunnelled(std::move(client), handle, settings, target, tunnels, counters, carry);

    client_outcome outcome;
    const auto executor = co_await asio::this_coro::executor;
    tcp::socket backend(executor);
    tcp::resolver resolver(executor);
    asio::steady_timer deadline(executor);
    deadline.expires_after(settings.connect_timeout);
    handle->on_cut([&] {
        close_all(client);
        resolver.cancel();
        deadline.cancel();
    });

    auto result = co_await (resolve_and_connect(backend, resolver, target.address) ||
                            deadline.async_wait(as_tuple(use_awaitable)));
    handle->on_cut(nullptr);
    if (handle->was_cut()) {
        outcome.reason = handle->cut_reason();
        co_return outcome;
    }
    if (result.index() == 1) {
        outcome.reason = close_reason::connect_timeout;
        outcome.connect_failed = true;
        co_return outcome;
    }
    if (const auto ec = std::get<0>(result)) {
        outcome.reason = close_reason::connect_failed;
        outcome.detail = ec.message();
        outcome.connect_failed = true;
        co_return outcome;
    }
    boost::system::error_code ignored;
    backend.set_option(tcp::no_delay(true), ignored);
    co_await pump_both(client, backend, *handle, settings, counters, outcome, carry);
    if (outcome.reason == close_reason::moved) outcome.client.emplace(std::move(client));
    co_return outcome;
}

} // namespace tunneld::proxy
