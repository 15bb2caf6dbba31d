// tunnel/drained_read.hpp: a read after a short read waits for the readiness event instead of
// trying recv() first. What can go wrong is a lost wake-up (bytes that arrive around the short
// read never complete the next read): these tests move bytes on real loopback sockets in each
// order that matters and fail (instead of hanging) when a read does not complete.

#include "tunnel/drained_read.hpp"

#include <array>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <chrono>
#include <gtest/gtest.h>
#include <optional>
#include <poll.h>
#include <span>
#include <string>

namespace asio = boost::asio;
using asio::ip::tcp;
using tunneld::tunnel::drained;
using namespace std::chrono_literals;

namespace {

struct socket_pair {
    explicit socket_pair(asio::io_context& io) : near(io), far(io)
    {
        tcp::acceptor acceptor(io, tcp::endpoint(asio::ip::address_v4::loopback(), 0));
        near.connect(acceptor.local_endpoint());
        acceptor.accept(far);
        near.set_option(tcp::no_delay(true));
        far.set_option(tcp::no_delay(true));
        tunneld::tunnel::enable_drained_reads(near.native_handle());
        tunneld::tunnel::enable_drained_reads(far.native_handle());
    }
    tcp::socket near;
    tcp::socket far;
};

struct read_result {
    boost::system::error_code ec;
    std::size_t n = 0;
};

/// Starts a drained read of up to buffer.size() bytes on `s`; the result lands in `out`.
void start_read(tcp::socket& s, std::span<char> buffer, std::optional<read_result>& out)
{
    s.async_read_some(drained(asio::buffer(buffer.data(), buffer.size())),
                      [&out](boost::system::error_code ec, std::size_t n) { out = read_result{ec, n}; });
}

/// Runs `io` until `done` holds, for at most 20 s of a loaded machine.
template <class Done> bool run_until(asio::io_context& io, Done done)
{
    const auto deadline = std::chrono::steady_clock::now() + 20s;
    while (!done() && std::chrono::steady_clock::now() < deadline) {
        io.restart();
        io.run_for(50ms);
    }
    return done();
}

/// One short read: `far` sends "ping", the near side asks for 64 bytes and gets 4.
void short_read(asio::io_context& io, socket_pair& p, std::array<char, 64>& buffer)
{
    asio::write(p.far, asio::buffer(std::string_view("ping")));
    std::optional<read_result> first;
    start_read(p.near, buffer, first);
    ASSERT_TRUE(run_until(io, [&] { return first.has_value(); }));
    ASSERT_FALSE(first->ec);
    ASSERT_EQ(first->n, 4U);
}

} // namespace

/// A short read on the near side, then `far` sends "pong".
void short_read_then_pong(asio::io_context& io, socket_pair& p, std::array<char, 64>& buffer)
{
    short_read(io, p, buffer);
    asio::write(p.far, asio::buffer(std::string_view("pong")));
}

/// The next read on the near side gets the "pong" `far` sent.
void expect_pong(asio::io_context& io, socket_pair& p, std::array<char, 64>& buffer)
{
    std::optional<read_result> next;
    start_read(p.near, buffer, next);
    ASSERT_TRUE(run_until(io, [&] { return next.has_value(); })) << "the bytes after a short read were lost";
    EXPECT_FALSE(next->ec);
    EXPECT_EQ(std::string_view(buffer.data(), next->n), "pong");
}

TEST(DrainedRead, IsOneBufferSequence)
{
    std::array<char, 8> bytes{};
    const auto b = drained(asio::buffer(bytes));
    EXPECT_EQ(asio::buffer_size(b), 8U);
    EXPECT_EQ(asio::buffer_sequence_begin(b)->data(), bytes.data());
}

TEST(DrainedRead, BytesSentAfterAShortReadAndBeforeTheNextReadStartsAreRead)
{
    // The event for "pong" arrives while no read waits (poll() runs the reactor once): the next
    // read must still find the bytes.
    asio::io_context io;
    socket_pair p(io);
    std::array<char, 64> buffer{};
    short_read_then_pong(io, p, buffer);
    auto guard = asio::make_work_guard(io); // poll() runs the reactor only with work outstanding
    for (int i = 0; i < 20; ++i) {
        io.restart();
        io.poll();
    }
    guard.reset();
    expect_pong(io, p, buffer);
}

TEST(DrainedRead, BytesAlreadyThereWhenTheNextReadStartsAreRead)
{
    // No reactor run between the peer's send and the next read: the read waits for the event.
    asio::io_context io;
    socket_pair p(io);
    std::array<char, 64> buffer{};
    short_read_then_pong(io, p, buffer);
    expect_pong(io, p, buffer);
}

TEST(DrainedRead, AFullReadLeavesTheRestToTheNextRead)
{
    asio::io_context io;
    socket_pair p(io);
    asio::write(p.far, asio::buffer(std::string_view("0123456789")));
    std::array<char, 4> buffer{};
    std::string got;
    while (got.size() < 10) {
        std::optional<read_result> r;
        start_read(p.near, buffer, r);
        ASSERT_TRUE(run_until(io, [&] { return r.has_value(); })) << "after " << got;
        ASSERT_FALSE(r->ec);
        got.append(buffer.data(), r->n);
    }
    EXPECT_EQ(got, "0123456789");
}

TEST(DrainedRead, EndOfStreamAfterAShortReadIsReported)
{
    asio::io_context io;
    socket_pair p(io);
    std::array<char, 64> buffer{};
    short_read(io, p, buffer);
    p.far.shutdown(tcp::socket::shutdown_send);
    std::optional<read_result> second;
    start_read(p.near, buffer, second);
    ASSERT_TRUE(run_until(io, [&] { return second.has_value(); }));
    EXPECT_EQ(second->ec, asio::error::eof);
}

/// Waits (at most 20 s) until the kernel reports `revents` on `s` (the peer's FIN or reset is in).
bool kernel_reports(tcp::socket& s, short revents)
{
    const auto deadline = std::chrono::steady_clock::now() + 20s;
    for (;;) {
        pollfd fd{s.native_handle(), POLLRDHUP, 0};
        if (::poll(&fd, 1, 10) == 1 && (fd.revents & revents) != 0) return true;
        if (std::chrono::steady_clock::now() >= deadline) return false;
    }
}

/// The near side's first read waits before `far` sends anything, as a pump's read does; then
/// `far` sends "last words" and `end_far()` ends it, and once the kernel reports `revents` on the
/// near side, one readiness event brings both to that read. Reads until an error, which it
/// returns; fails the test if a read does not complete.
boost::system::error_code last_words_then(asio::io_context& io, socket_pair& p, void (*end_far)(tcp::socket&),
                                          short revents)
{
    std::array<char, 64> buffer{};
    std::optional<read_result> r;
    start_read(p.near, buffer, r);
    io.restart();
    io.poll();
    EXPECT_FALSE(r.has_value());
    asio::write(p.far, asio::buffer(std::string_view("last words")));
    end_far(p.far);
    EXPECT_TRUE(kernel_reports(p.near, revents));
    std::string got;
    for (;;) {
        if (!run_until(io, [&] { return r.has_value(); })) {
            ADD_FAILURE() << "a read never completed, after " << got;
            return {};
        }
        if (r->ec) break;
        got.append(buffer.data(), r->n);
        r.reset();
        start_read(p.near, buffer, r);
    }
    EXPECT_EQ(got, "last words");
    return r->ec;
}

TEST(DrainedRead, EndOfStreamThatCameWithTheDataIsReported)
{
    // Data and FIN in before the read: the short read consumes the FIN, and no later event
    // comes. The kernel's TCP_INQ says a FIN came, so the next read tries recv() at once.
    asio::io_context io;
    socket_pair p(io);
    EXPECT_EQ(last_words_then(io, p, [](tcp::socket& far) { far.shutdown(tcp::socket::shutdown_send); }, POLLRDHUP),
              asio::error::eof);
}

TEST(DrainedRead, ResetThatCameWithTheDataIsReportedWithinTheSweepInterval)
{
    // Data and RST in before the read: the short read returns the data, trusts the queue as
    // drained (an RST sets no TCP_INQ mark), and no later event comes. The reset sweep finds the
    // pending error and wakes the read, which reports the reset (without the watch below the
    // second read never completes: checked by hand).
    asio::io_context io;
    socket_pair p(io);
    const tunneld::tunnel::reset_sweep::watch resets(p.near);
    auto reset = [](tcp::socket& far) {
        far.set_option(asio::socket_base::linger(true, 0));
        far.close();
    };
    EXPECT_EQ(last_words_then(io, p, reset, POLLERR), asio::error::connection_reset);
}

TEST(DrainedRead, TheSweepLeavesHealthySocketsAlone)
{
    // A sweep over sockets without a pending error wakes none, and they carry bytes as before.
    asio::io_context io;
    socket_pair p(io);
    const tunneld::tunnel::reset_sweep::watch near_resets(p.near);
    const tunneld::tunnel::reset_sweep::watch far_resets(p.far);
    std::array<char, 64> buffer{};
    short_read(io, p, buffer);
    EXPECT_EQ(asio::use_service<tunneld::tunnel::reset_sweep>(io).sweep(), 0U);
    asio::write(p.far, asio::buffer(std::string_view("pong")));
    expect_pong(io, p, buffer);
}

TEST(DrainedRead, ManyRequestResponseRoundTripsAllComplete)
{
    // Two pumps' worth of short reads in a request/response rhythm, as a proxied redis client
    // has: every round trip waits for a readiness event on both sockets.
    asio::io_context io;
    socket_pair p(io);
    constexpr int rounds = 2000;
    int echoed = 0;
    int answered = 0;
    asio::co_spawn(
        io,
        [&]() -> asio::awaitable<void> {
            std::array<char, 256> buffer{};
            for (;;) {
                auto [ec, n] = co_await p.far.async_read_some(drained(asio::buffer(buffer)),
                                                              asio::as_tuple(asio::use_awaitable));
                if (ec) co_return;
                co_await asio::async_write(p.far, asio::buffer(buffer.data(), n), asio::use_awaitable);
                ++echoed;
            }
        },
        asio::detached);
    asio::co_spawn(
        io,
        [&]() -> asio::awaitable<void> {
            std::array<char, 256> buffer{};
            for (int i = 0; i < rounds; ++i) {
                const std::string request = "GET key:" + std::to_string(i);
                co_await asio::async_write(p.near, asio::buffer(request), asio::use_awaitable);
                std::size_t got = 0;
                while (got < request.size()) {
                    auto [ec, n] = co_await p.near.async_read_some(drained(asio::buffer(buffer.data() + got, 256 - got)),
                                                                   asio::as_tuple(asio::use_awaitable));
                    if (ec) co_return;
                    got += n;
                }
                if (std::string_view(buffer.data(), got) != request) co_return;
                ++answered;
            }
            p.near.shutdown(tcp::socket::shutdown_send);
        },
        asio::detached);
    EXPECT_TRUE(run_until(io, [&] { return answered == rounds; })) << answered << " of " << rounds << " answered";
    EXPECT_EQ(echoed, rounds);
}

TEST(DrainedRead, ShortReadsAreTrustedOnThisBuild)
{
    // The Boost version the specialisation was written against (else reads fall back to Asio's
    // plain behaviour and the benchmark's system-call counts say so).
    EXPECT_TRUE(tunneld::tunnel::drained_reads_trust_short_reads);
}
