#pragma once
// A proxy is two pumps; half-close travels. The same template serves a TCP socket and a tunnel
// channel, so routing and switching never know which kind of backend a client has.

#include "tunnel/drained_read.hpp"

#include <atomic>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/buffer.hpp>
#include <boost/asio/error.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <cstdint>
#include <span>
#include <string_view>
#include <type_traits>
#include <utility>

namespace tunneld::proxy {

namespace asio = boost::asio;

/// How one direction ended.
enum class pump_end : std::uint8_t { eof, read_error, write_error };

/// Sends FIN on a socket; a tunnel channel has its own overload (channel EOF).
inline void close_write(asio::ip::tcp::socket& socket)
{
    boost::system::error_code ignored;
    socket.shutdown(asio::ip::tcp::socket::shutdown_send, ignored);
}

/// Resets a socket: both pumps of the client end promptly.
inline void close_all(asio::ip::tcp::socket& socket)
{
    boost::system::error_code ignored;
    socket.close(ignored);
}

/// Sees nothing: the pump of a client whose bytes nothing follows (kind = "tcp").
struct no_observer {
    void operator()(std::string_view) const noexcept {}
};

/// A direct TCP socket: the pump can write to it without blocking.
template <class Stream> inline constexpr bool is_tcp_socket = std::is_same_v<Stream, asio::ip::tcp::socket>;

/// What a write has sent of its bytes so far, and how it failed (no error: not failed).
struct write_progress {
    boost::system::error_code ec;
    std::size_t written = 0;
    /// Neither failed nor done: the rest of `size` bytes is still to send (write_rest).
    bool unfinished(std::size_t size) const noexcept { return !ec && written < size; }
};

/// Sends what `to` takes of `bytes` at once, without a coroutine frame: a TCP socket (set to
/// non-blocking) nearly always takes all of it in one send(); would_block is no error (0 sent).
/// A tunnel channel takes nothing this way. The caller sends the rest with write_rest. Why:
/// async_write alone completes even an immediate send through the event loop's queue, and a
/// coroutine per write costs a frame and two resumptions, on every request of every client.
template <class To> write_progress write_at_once(To& to, std::string_view bytes)
{
    write_progress sent;
    if constexpr (is_tcp_socket<To>) {
        sent.written = to.write_some(asio::buffer(bytes), sent.ec);
        if (sent.ec == asio::error::would_block) sent.ec = {};
    }
    return sent;
}

/// Sends what write_at_once left of `bytes` (from `sent.written` on) and adds it to `sent`.
template <class To> asio::awaitable<void> write_rest(To& to, std::string_view bytes, write_progress& sent)
{
    auto [ec, n] = co_await asio::async_write(to, asio::buffer(bytes.substr(sent.written)),
                                              asio::as_tuple(asio::use_awaitable));
    sent.ec = ec;
    sent.written += n;
}

/// Switches a TCP socket to non-blocking mode (its synchronous calls then fail with
/// would_block instead of waiting), for write_at_once; a tunnel channel needs nothing.
template <class Stream> void prepare_for_write_at_once(Stream& stream)
{
    if constexpr (is_tcp_socket<Stream>) {
        boost::system::error_code ignored;
        stream.non_blocking(true, ignored);
    }
}

/// Copies `from` to `to` until EOF or an error. Holds at most `buffer.size()` bytes, and reads
/// again only once the last write completed, so a slow reader stalls its writer instead of
/// making tunneld buffer without bound. On EOF it passes the half-close on to `to`. Each chunk
/// read is shown to `observe` before it is written on. A TCP socket it writes to is switched to
/// non-blocking mode (its synchronous calls then fail with would_block instead of waiting). A
/// short read from a TCP socket leaves the next read to the readiness event (no failing recv()
/// first), and a reset that came with the last bytes is found by the reset sweep within
/// tunnel::reset_sweep::interval (tunnel/drained_read.hpp).
template <class From, class To, class Observe = no_observer>
asio::awaitable<pump_end> pump(From& from, To& to, std::span<char> buffer, std::uint64_t& count,
                               std::atomic<std::uint64_t>& total, Observe observe = {})
{
    using asio::as_tuple;
    using asio::use_awaitable;
    prepare_for_write_at_once(to);
    [[maybe_unused]] const auto resets = tunnel::watch_resets(from);
    for (;;) {
        auto [read_ec, n] = co_await from.async_read_some(tunnel::drained(asio::buffer(buffer)), as_tuple(use_awaitable));
        if (read_ec == asio::error::eof) {
            close_write(to);
            co_return pump_end::eof;
        }
        if (read_ec) co_return pump_end::read_error;
        observe(std::string_view(buffer.data(), n));
        const std::string_view chunk(buffer.data(), n);
        auto sent = write_at_once(to, chunk);
        if (sent.unfinished(n)) co_await write_rest(to, chunk, sent);
        count += sent.written;
        total.fetch_add(sent.written, std::memory_order_relaxed);
        if (sent.ec) co_return pump_end::write_error;
    }
}

} // namespace tunneld::proxy
