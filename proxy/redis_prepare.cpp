#include "proxy/redis_prepare.hpp"

#include "proxy/backend_path.hpp"
#include "proxy/channel_io.hpp"
#include "proxy/redis_pump.hpp"
#include "tunnel/tunnel.hpp"

#include <array>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_awaitable.hpp>

namespace tunneld::proxy {

using asio::use_awaitable;
using tcp = asio::ip::tcp;

void prepared_backend::discard()
{
    if (socket) {
        boost::system::error_code ignored;
        socket->close(ignored);
        socket.reset();
    }
    // A channel is closed on its session's thread.
    if (auto c = std::move(channel)) asio::post(c->get_executor(), [c] { c->close(); });
}

void abandon(std::shared_ptr<prepared_backend>& prepared)
{
    if (!prepared) return;
    prepared->on_done = nullptr;
    if (prepared->done) {
        prepared->discard();
    } else {
        prepared->abandoned = true;
        if (prepared->cancel) prepared->cancel();
    }
    prepared.reset();
}

namespace {

/// Replies to a replay are a few hundred bytes (HELLO's map the longest).
constexpr std::size_t replay_buffer_size = 4096;

asio::awaitable<std::string> connect_direct(prepared_backend& p, const config::endpoint& target,
                                            config::duration timeout, std::span<char> buffer,
                                            const replay& commands)
{
    tcp::socket backend(co_await asio::this_coro::executor);
    const auto ec = co_await connect_within(backend, target, timeout, &p.cancel);
    if (p.abandoned) co_return "abandoned";
    if (ec == asio::error::timed_out) co_return "connect timed out";
    if (ec) co_return "connect: " + ec.message();
    boost::system::error_code ignored;
    backend.set_option(tcp::no_delay(true), ignored);
    p.cancel = [&] { close_all(backend); };
    auto refused = co_await replay_session(backend, commands, buffer, timeout);
    p.cancel = nullptr;
    if (p.abandoned) co_return "abandoned";
    if (refused) co_return std::move(*refused);
    p.socket.emplace(std::move(backend));
    co_return std::string();
}

asio::awaitable<std::string> connect_tunnelled(prepared_backend& p, const config::backend& target,
                                               config::duration timeout, std::span<char> buffer,
                                               const replay& commands, const tunnel_lookup& tunnels)
{
    auto pool = tunnels ? tunnels(*target.via) : nullptr;
    if (!pool || !pool->healthy()) co_return "tunnel " + *target.via + " is down";
    auto [ec, channel] = co_await open_channel_within(*pool, target.address, timeout, &p.cancel);
    if (p.abandoned) {
        if (channel) asio::post(channel->get_executor(), [channel] { channel->close(); });
        co_return "abandoned";
    }
    if (ec == std::errc::timed_out) co_return "channel open timed out";
    if (ec || !channel) co_return "channel open: " + (ec ? ec.message() : std::string("no channel"));
    // A channel lives on its session's thread: replay there, and come back here.
    auto refused = co_await asio::co_spawn(
        channel->get_executor(),
        [&]() -> asio::awaitable<std::optional<std::string>> {
            auto r = co_await replay_session(*channel, commands, buffer, timeout);
            if (r) channel->close();
            co_return r;
        },
        use_awaitable);
    if (refused) co_return std::move(*refused);
    p.channel = std::move(channel);
    co_return std::string();
}

} // namespace

asio::awaitable<void> prepare_backend(std::shared_ptr<prepared_backend> prepared, replay commands,
                                      config::backend target, config::duration timeout, tunnel_lookup tunnels)
{
    std::array<char, replay_buffer_size> buffer;
    std::string failure;
    try {
        // An if, not ?: : g++ 12 runs both arms of a conditional holding a co_await.
        if (target.via)
            failure = co_await connect_tunnelled(*prepared, target, timeout, buffer, commands, tunnels);
        else
            failure = co_await connect_direct(*prepared, target.address, timeout, buffer, commands);
    } catch (const std::exception& e) {
        failure = e.what();
    }
    prepared->cancel = nullptr;
    prepared->done = true;
    prepared->failure = std::move(failure);
    if (prepared->abandoned || !prepared->failure.empty()) {
        prepared->discard();
        if (prepared->failure.empty()) prepared->failure = "abandoned";
    }
    const auto wake = prepared->on_done;
    if (wake) wake();
}

} // namespace tunneld::proxy
