#pragma once
// Internal to tunnel/: one TCP connection to the gateway and the libssh2 session on it. A
// transport is used once: when it fails, the session drops it and builds a new one.

#include "config/config.hpp"
#include "tunnel/tunnel.hpp"

#include <atomic>
#include <boost/asio/any_completion_handler.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/system/error_code.hpp>
#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <libssh2.h>
#include <memory>
#include <mutex>
#include <string>
#include <tuple>
#include <vector>

namespace tunneld::tunnel {

class channel;

namespace detail {

namespace asio = boost::asio;
using clock = std::chrono::steady_clock;

/// Counters of one pool slot, read by pool::status() from any thread.
struct session_stats {
    std::atomic<bool> up{false};
    std::atomic<unsigned> channels{0};
    std::atomic<std::uint64_t> bytes_up{0};
    std::atomic<std::uint64_t> bytes_down{0};
    std::atomic<std::uint64_t> reconnects{0};
    std::atomic<std::uint64_t> open_failures{0};
    std::atomic<std::int64_t> last_receive_ns{0}; ///< steady clock; 0 = never

    mutable std::mutex mutex;
    std::string last_error; ///< guarded by mutex

    void set_error(std::string text);
    std::string error() const;
};

/// A flag a coroutine can wait for; raise() before wait() is not lost.
class wake_signal {
public:
    explicit wake_signal(asio::any_io_executor ex) : timer_(std::move(ex), clock::time_point::max()) {}
    void raise()
    {
        raised_ = true;
        // Cancelling a timer takes the reactor's lock: only when someone waits.
        if (waiting_) timer_.cancel();
    }
    asio::awaitable<void> wait();

private:
    asio::steady_timer timer_;
    bool raised_ = false;
    bool waiting_ = false;
};

class transport : public std::enable_shared_from_this<transport> {
public:
    using open_handler =
        asio::any_completion_handler<void(boost::system::error_code, std::shared_ptr<channel>)>;

    transport(asio::any_io_executor ex, std::shared_ptr<const config::tunnel_config> settings, unsigned index,
              std::shared_ptr<session_stats> stats);
    ~transport();
    transport(const transport&) = delete;
    transport& operator=(const transport&) = delete;

    asio::any_io_executor executor() const { return executor_; }

    /// TCP connect, SSH handshake, host-key check and authentication. Completes with an error
    /// (and the transport failed) or success. The caller bounds it with connect_timeout.
    asio::awaitable<boost::system::error_code> establish();

    /// Services channels until the transport fails; returns the reason.
    asio::awaitable<boost::system::error_code> serve();

    /// Queues a direct-tcpip open; one open is in flight at a time.
    void async_open(std::string host, std::uint16_t port, open_handler handler);

    /// Fails the transport once: closes the socket, resets channels and pending opens.
    void fail(boost::system::error_code ec, std::string reason);

    bool failed() const noexcept { return failed_; }
    const std::string& failure_reason() const noexcept { return failure_reason_; }

    /// Wakes the driver: a channel has a new operation, or I/O progressed.
    void notify() { wake_.raise(); }

    /// While one lives, what libssh2 sends is held and, at its end, sent at once with one
    /// non-blocking send when no write is in flight; the writer takes what the socket does not.
    /// Saves the writer's trip through the event loop. Only around work that ends a burst (the
    /// driver's passes, an open): a channel operation leaves its packets to the writer, which
    /// sends those of every operation run in the meantime in one go.
    class output_batch {
    public:
        explicit output_batch(transport& t) : transport_(t) { ++transport_.batching_; }
        ~output_batch()
        {
            if (--transport_.batching_ == 0) transport_.flush();
        }
        output_batch(const output_batch&) = delete;
        output_batch& operator=(const output_batch&) = delete;

    private:
        transport& transport_;
    };

    /// True when a channel may call libssh2 right now, outside the driver's pass: the session is
    /// up and no libssh2 call is on the stack. Saves a trip through the driver per operation.
    bool may_call_now() const noexcept { return established_ && !failed_ && !servicing_; }

    /// Bytes received from the gateway that libssh2 has not taken yet.
    std::size_t unread_input() const noexcept { return in_end_ - in_begin_; }

    /// A closed channel's raw handle, freed by the driver (channel_free retried on EAGAIN).
    void retire(LIBSSH2_CHANNEL* raw);

    /// The bounded output buffer is above its high-water mark: stop calling channel writes.
    bool output_full() const noexcept { return out_.size() >= out_high_water; }

    /// A channel's receive window: where it starts, and the most it grows to (channel_window).
    std::uint32_t window_initial() const noexcept { return window_initial_; }
    std::uint32_t window_max() const noexcept { return window_max_; }

    void add_bytes_down(std::size_t n) { stats_->bytes_down += n; }
    void add_bytes_up(std::size_t n) { stats_->bytes_up += n; }

    /// Another session can take new channels: a quiet, channel-less session may be replaced.
    void set_recycle_check(std::function<bool()> check) { may_recycle_ = std::move(check); }

    static constexpr std::size_t out_high_water = 512 * 1024;
    /// A quiet session with no channels is reconnected after this many keepalives (an hour at 5 s).
    static constexpr std::uint64_t recycle_after_keepalives = 720;
    static constexpr std::size_t in_capacity = 4 * 1024 * 1024;
    /// Bytes asked of the gateway socket per read (at most); the input buffer holds
    /// in_capacity + this.
    static constexpr std::size_t read_chunk = 256 * 1024;

private:
    struct open_request {
        std::string host;
        std::uint16_t port;
        std::string message; ///< the direct-tcpip request's type-specific data (RFC 4254 7.2)
        open_handler handler;
        clock::time_point started{};
        bool started_ = false;
    };

    static ssize_t on_send(libssh2_socket_t, const void* buffer, size_t length, int, void** abstract);
    static ssize_t on_recv(libssh2_socket_t, void* buffer, size_t length, int, void** abstract);

    asio::awaitable<void> reader(std::shared_ptr<transport> self);
    asio::awaitable<void> writer(std::shared_ptr<transport> self);
    asio::awaitable<void> ticker(std::shared_ptr<transport> self);
    /// Retries `step` while it returns LIBSSH2_ERROR_EAGAIN, waiting for I/O in between.
    template <class Step> asio::awaitable<int> retry(Step step);

    boost::system::error_code check_host_key();
    asio::awaitable<boost::system::error_code> authenticate();
    bool service_once();
    /// The driver's work: up to 32 passes in one output batch, then the opens they completed
    /// are handed over. True when a pass still made progress (more to do).
    bool run_passes();
    bool service_opens();
    /// Hands over the opens service_opens completed, outside any libssh2 call.
    void deliver_opens();
    /// Sends out_ now if the writer is idle (output_batch); wakes the writer for the rest.
    void flush();
    bool service_retired();
    void complete_open(open_request& request, boost::system::error_code ec, std::shared_ptr<channel> ch);
    std::string label() const;

    asio::any_io_executor executor_;
    std::shared_ptr<const config::tunnel_config> settings_owner_;
    const config::tunnel_config& settings_; ///< *settings_owner_
    unsigned index_;
    std::uint32_t window_initial_;
    std::uint32_t window_max_;
    std::shared_ptr<session_stats> stats_;
    asio::ip::tcp::socket socket_;
    LIBSSH2_SESSION* ssh_ = nullptr;
    int ssh_fd_ = -1;                ///< the gateway socket; other descriptors in callbacks are ssh-agent's
    LIBSSH2_AGENT* agent_ = nullptr; ///< only during agent authentication; allocated from ssh_
    void free_agent();

    /// Received from the gateway, not yet taken by libssh2: in_[in_begin_, in_end_). The socket
    /// reads straight into it; the reader rewinds both indices to 0 before a read whenever
    /// libssh2 took everything, so a quiet session touches only the buffer's first pages.
    /// Allocated at the first read.
    std::unique_ptr<char[]> in_;
    std::size_t in_begin_ = 0;
    std::size_t in_end_ = 0;
    std::vector<char> out_;  ///< whole packets from libssh2, not yet handed to the socket
    wake_signal wake_;       ///< driver
    wake_signal reader_wake_;
    wake_signal writer_wake_;
    clock::time_point last_receive_;
    unsigned libssh2_keepalive_seconds_ = 2;
    std::uint64_t keepalive_replies_ = 0; ///< replies libssh2 keeps until the session is freed
    std::function<bool()> may_recycle_;   ///< true when another session of the pool is up

    std::vector<std::weak_ptr<channel>> channels_;
    std::vector<LIBSSH2_CHANNEL*> retired_;
    std::deque<open_request> opens_;
    /// Opens answered during a pass, handed over when it ends (directly: no trip through the
    /// event loop).
    std::vector<std::tuple<open_handler, boost::system::error_code, std::shared_ptr<channel>>> answered_;

    unsigned batching_ = 0;  ///< output_batch objects alive: on_send leaves the writer asleep
    bool reader_blocked_ = false;
    bool writer_waiting_ = false;
    bool servicing_ = false; ///< the driver's pass is running (libssh2 calls on the stack)
    bool established_ = false;
    bool failed_ = false;
    boost::system::error_code failure_;
    std::string failure_reason_;
};

/// A libssh2 error number as text, for logs.
std::string libssh2_error_text(LIBSSH2_SESSION* ssh, int rc);

} // namespace detail
} // namespace tunneld::tunnel
