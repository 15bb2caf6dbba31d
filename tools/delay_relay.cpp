// delay_relay: a TCP relay that holds every byte for a fixed time in each direction, so that a
// loopback test bed gets a long round trip (these kernels have no netem). Used by the tunnel
// tests and tools/bench for the 40 ms path between tunneld (or ssh) and sshd.
//
//     delay_relay HOST:PORT DELAY_MS
//
// Listens on 127.0.0.1 on a free port, prints that port on a line of its own, and relays each
// accepted connection to HOST:PORT, every chunk written DELAY_MS after it was read (one way; a
// round trip through the relay takes twice that). Half-close travels. It exits when its stdin
// closes (its parent died) or on SIGTERM. One thread; a chunk is copied once; each direction
// holds at most 64 MiB, then stops reading (TCP pushes back), which is far more than any SSH
// window in flight.

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/connect.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <deque>
#include <memory>
#include <string>
#include <unistd.h>
#include <vector>

namespace {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using clock_type = std::chrono::steady_clock;
constexpr auto use_tuple = asio::as_tuple(asio::use_awaitable);
constexpr std::size_t chunk_size = 256 * 1024;
constexpr std::size_t max_held = 64 * 1024 * 1024;

struct chunk {
    clock_type::time_point due;
    std::vector<char> bytes; ///< empty: the sender's EOF
};

/// One direction: read, hold for `delay`, write.
struct direction {
    direction(tcp::socket& from, tcp::socket& to, clock_type::duration delay)
        : from(from), to(to), delay(delay), reader_wake(from.get_executor()), writer_wake(from.get_executor())
    {
    }

    asio::awaitable<void> read_side()
    {
        for (;;) {
            while (held >= max_held && !done) {
                reader_wake.expires_at(clock_type::time_point::max());
                co_await reader_wake.async_wait(use_tuple);
            }
            if (done) co_return;
            auto [ec, n] = co_await from.async_read_some(asio::buffer(scratch), use_tuple);
            // A chunk of its own, just as long as what was read: it waits in the queue.
            std::vector<char> buffer(scratch.begin(), scratch.begin() + static_cast<std::ptrdiff_t>(ec ? 0 : n));
            held += buffer.size();
            const bool eof = buffer.empty();
            queue.push_back({clock_type::now() + delay, std::move(buffer)});
            if (queue.size() == 1) writer_wake.cancel();
            if (eof) co_return;
        }
    }

    asio::awaitable<void> write_side()
    {
        for (;;) {
            if (queue.empty()) {
                writer_wake.expires_at(clock_type::time_point::max());
                co_await writer_wake.async_wait(use_tuple);
                continue;
            }
            if (clock_type::now() < queue.front().due) {
                writer_wake.expires_at(queue.front().due);
                co_await writer_wake.async_wait(use_tuple);
                continue;
            }
            auto item = std::move(queue.front());
            queue.pop_front();
            if (item.bytes.empty()) {
                boost::system::error_code ignored;
                to.shutdown(tcp::socket::shutdown_send, ignored);
                co_return;
            }
            auto [ec, n] = co_await asio::async_write(to, asio::buffer(item.bytes), use_tuple);
            held -= item.bytes.size();
            reader_wake.cancel(); // it may read again
            if (ec) {
                done = true;
                boost::system::error_code ignored;
                from.close(ignored);
                co_return;
            }
        }
    }

    tcp::socket& from;
    tcp::socket& to;
    clock_type::duration delay;
    asio::steady_timer reader_wake; ///< cancelled when the writer freed room
    asio::steady_timer writer_wake; ///< cancelled when the queue gets its first chunk
    std::deque<chunk> queue;
    std::vector<char> scratch = std::vector<char>(chunk_size);
    std::size_t held = 0;
    bool done = false;
};

asio::awaitable<void> relay(tcp::socket client, tcp::endpoint target, clock_type::duration delay)
{
    auto executor = co_await asio::this_coro::executor;
    tcp::socket server(executor);
    auto [ec] = co_await server.async_connect(target, use_tuple);
    if (ec) co_return;
    client.set_option(tcp::no_delay(true));
    server.set_option(tcp::no_delay(true));
    auto up = std::make_shared<direction>(client, server, delay);
    auto down = std::make_shared<direction>(server, client, delay);
    int running = 4;
    asio::steady_timer all_done(executor, clock_type::time_point::max());
    auto finished = [&](std::exception_ptr) {
        if (--running == 0) all_done.cancel();
    };
    asio::co_spawn(executor, up->read_side(), finished);
    asio::co_spawn(executor, up->write_side(), finished);
    asio::co_spawn(executor, down->read_side(), finished);
    asio::co_spawn(executor, down->write_side(), finished);
    co_await all_done.async_wait(use_tuple);
}

asio::awaitable<void> accept_loop(tcp::acceptor& acceptor, tcp::endpoint target, clock_type::duration delay)
{
    for (;;) {
        auto [ec, socket] = co_await acceptor.async_accept(use_tuple);
        if (ec) co_return;
        asio::co_spawn(acceptor.get_executor(), relay(std::move(socket), target, delay), asio::detached);
    }
}

} // namespace

int main(int argc, char** argv)
{
    if (argc != 3) {
        std::fprintf(stderr, "usage: %s HOST:PORT DELAY_MS\n", argv[0]);
        return 2;
    }
    const std::string target_text = argv[1];
    const auto colon = target_text.rfind(':');
    if (colon == std::string::npos) {
        std::fprintf(stderr, "delay_relay: expected HOST:PORT, not %s\n", argv[1]);
        return 2;
    }
    asio::io_context io(1);
    tcp::resolver resolver(io);
    const auto target = *resolver.resolve(target_text.substr(0, colon), target_text.substr(colon + 1)).begin();
    const auto delay = std::chrono::milliseconds(std::stol(argv[2]));

    tcp::acceptor acceptor(io, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
    std::printf("%u\n", static_cast<unsigned>(acceptor.local_endpoint().port()));
    std::fflush(stdout);

    asio::co_spawn(io, accept_loop(acceptor, target.endpoint(), delay), asio::detached);
    asio::signal_set signals(io, SIGTERM, SIGINT);
    signals.async_wait([&](auto, int) { io.stop(); });
    asio::posix::stream_descriptor input(io, ::dup(STDIN_FILENO));
    char byte = 0;
    input.async_read_some(asio::buffer(&byte, 1), [&](auto, std::size_t) { io.stop(); });
    io.run();
    return 0;
}
