#pragma once
// A read buffer that makes a TCP socket's async_read_some trust a short read as "drained": the
// next read on that socket then waits for the reactor's readiness event instead of trying recv()
// first. Used by every pump read; not by the gateway reader (tunnel/transport.cpp): a gateway's
// reset must mark it down at once, not up to reset_sweep::interval later.
//
// Why: Asio's epoll reactor (Boost 1.81, detail/impl/epoll_reactor.ipp) tries each new read at
// once (a speculative recv()) unless the last read on the descriptor said "exhausted", which its
// own receive says only at EOF. On a request/response stream that attempt fails with EAGAIN
// before every wait: two of the four recv() a proxied redis request cost. Waiting with
// async_wait instead costs an epoll_ctl(EPOLL_CTL_MOD) per wait (measured, docs/benchmarks.md).
//
// Why no readiness is lost: a short recv() of a stream socket returns only once the kernel's
// receive queue is empty, and every byte that arrives after it raises a new event on the
// edge-triggered registration Asio keeps. The reactor sets "try a read at once" again whenever
// an event finds no read waiting (epoll_reactor::descriptor_state::perform_io), under the same
// lock as the flag cleared here, so a byte that came in between is read at once as before.
//
// How: Asio's receive operation takes its perform step from reactive_socket_recv_op_base, a
// class template on the buffer sequence type; it is specialised below for drained_buffer, whose
// perform step is Asio's own (non_blocking_recv1, as recvmsg) with one change: a successful read
// of fewer bytes than asked, after which the kernel's TCP_INQ count says nothing is left and no
// FIN came, reports done_and_exhausted. Everything else (allocation, cancellation,
// completion) is Asio's. Only for the Boost version it was read against; any other falls back to
// Asio's plain behaviour (drained_buffer is still an ordinary one-buffer sequence).
//
// What the kernel does not say with the read: a FIN is reported (TCP_INQ, below), an RST is not.
// When a peer's last bytes and its RST are both in before the read, one readiness event reports
// both, the read returns the bytes short, and no later event comes: the next read would wait
// until the other direction writes (for a client that resets after a request the backend never
// answers, forever). Asking the kernel after each short read (poll, getsockopt) costs a system
// call as dear as the failing recv() this saves (about 1.1-1.3 us each on these machines, against
// 1.2 us for the EAGAIN recv: docs/benchmarks.md, issue 13 sixth pass), and waiting for
// errors with async_wait(wait_error) makes Asio give up speculative reads on the socket and
// call epoll_ctl before every read. So a reset is looked for out of band: a reset_sweep::watch
// (watch_resets; one per socket read this way, alive while it is) puts the socket on its event
// loop's reset_sweep, which every reset_sweep::interval polls all of them in one poll() and
// wakes the read of each that has a pending error. Such a reset is seen within that interval instead of at once; nothing is spent
// per read.

#include <boost/asio/buffer.hpp>
#include <boost/asio/execution_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/version.hpp>
#include <chrono>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <optional>
#include <poll.h>
#include <sys/socket.h>
#include <type_traits>
#include <vector>

namespace tunneld::tunnel {

/// One mutable buffer as a MutableBufferSequence, read as described above.
struct drained_buffer {
    using value_type = boost::asio::mutable_buffer;
    using const_iterator = const boost::asio::mutable_buffer*;

    boost::asio::mutable_buffer buffer;

    const_iterator begin() const noexcept { return &buffer; }
    const_iterator end() const noexcept { return &buffer + 1; }
};

inline drained_buffer drained(boost::asio::mutable_buffer buffer) noexcept
{
    return drained_buffer{buffer};
}

/// Asks the kernel to report, with each read of `fd`, how many bytes are left (TCP_INQ): a
/// drained read trusts a short read only when none are left and no FIN came. Once per socket.
inline void enable_drained_reads(int fd) noexcept
{
    const int on = 1;
    ::setsockopt(fd, SOL_TCP, TCP_INQ, &on, sizeof on); // refused (old kernel): plain reads
}

/// The sockets of one event loop (io_context) read with drained buffers, polled together every
/// `interval` for a pending error (a reset the readiness events did not report, see above). Used
/// from that event loop's thread only.
class reset_sweep final : public boost::asio::execution_context::service {
public:
    using key_type = reset_sweep;
    inline static boost::asio::execution_context::id id;

    /// How long a reset that came in with a peer's last bytes may go unseen.
    static constexpr std::chrono::milliseconds interval{1000};

    explicit reset_sweep(boost::asio::execution_context& context) : service(context) {}

    /// Makes drained reads of `socket` safe while alive: TCP_INQ on, and the socket on its event
    /// loop's sweep. One per socket, created and destroyed on the socket's event loop thread;
    /// the socket outlives it.
    class watch {
    public:
        explicit watch(boost::asio::ip::tcp::socket& socket)
            : sweep_(boost::asio::use_service<reset_sweep>(
                  boost::asio::query(socket.get_executor(), boost::asio::execution::context))),
              socket_(socket)
        {
            enable_drained_reads(socket.native_handle());
            sweep_.add(*this);
        }
        ~watch() { sweep_.remove(*this); }
        watch(const watch&) = delete;
        watch& operator=(const watch&) = delete;

    private:
        friend class reset_sweep;
        reset_sweep& sweep_;
        boost::asio::ip::tcp::socket& socket_;
        watch* prev_ = nullptr; ///< the sweep's list, in no order
        watch* next_ = nullptr;
    };

    /// Polls every watched socket once; wakes the read of each with a pending error. Returns
    /// how many it woke. Also run every `interval` while any socket is watched.
    std::size_t sweep()
    {
        fds_.clear();
        for (watch* w = first_; w != nullptr; w = w->next_)
            if (w->socket_.is_open()) fds_.push_back(pollfd{w->socket_.native_handle(), 0, 0});
        if (fds_.empty() || ::poll(fds_.data(), fds_.size(), 0) <= 0) return 0;
        std::size_t woken = 0;
        for (const pollfd& fd : fds_) {
            if ((fd.revents & POLLERR) == 0) continue;
            // The error stays pending (poll does not take it), and shutting down the read side
            // wakes the socket's waiters (inet_shutdown calls sk_state_change, even on a socket
            // the reset already closed): the event loop gets a readiness event, and the waiting
            // read's recv() returns the error. Only ever done to a socket that has one.
            ::shutdown(fd.fd, SHUT_RD);
            ++woken;
        }
        return woken;
    }

private:
    void add(watch& w)
    {
        w.next_ = first_;
        if (first_ != nullptr) first_->prev_ = &w;
        first_ = &w;
        if (!timer_) timer_.emplace(w.socket_.get_executor());
        if (!armed_) arm();
    }

    void remove(watch& w) noexcept
    {
        (w.prev_ != nullptr ? w.prev_->next_ : first_) = w.next_;
        if (w.next_ != nullptr) w.next_->prev_ = w.prev_;
    }

    void arm()
    {
        armed_ = true;
        timer_->expires_after(interval);
        timer_->async_wait([this](boost::system::error_code ec) {
            armed_ = false;
            if (ec || shut_down_) return;
            sweep();
            if (first_ != nullptr) arm(); // an event loop without watched sockets stays asleep
        });
    }

    void shutdown() override
    {
        // The timer's own service was created after this one, so it is shut down already (its
        // waits abandoned) but not yet destroyed: the last moment the timer may go.
        shut_down_ = true;
        timer_.reset();
    }

    watch* first_ = nullptr;
    std::optional<boost::asio::steady_timer> timer_; ///< made with the first watched socket's executor
    bool armed_ = false;
    bool shut_down_ = false;
    std::vector<pollfd> fds_; ///< sweep()'s, kept to spare an allocation per sweep
};

/// What watch_resets gives for a stream that is not a TCP socket (a tunnel channel).
struct no_reset_watch {};

/// A reset_sweep::watch for a TCP socket read with drained buffers; nothing for another stream.
template <class Stream> auto watch_resets(Stream& stream)
{
    if constexpr (std::is_same_v<Stream, boost::asio::ip::tcp::socket>)
        return reset_sweep::watch(stream);
    else
        return no_reset_watch{};
}

/// True when this build reads drained_buffer as described (else it is a plain buffer).
inline constexpr bool drained_reads_trust_short_reads =
#if BOOST_VERSION == 108100 && defined(BOOST_ASIO_HAS_EPOLL) && !defined(BOOST_ASIO_HAS_IO_URING_AS_DEFAULT)
    true;
#else
    false;
#endif

} // namespace tunneld::tunnel

#if BOOST_VERSION == 108100 && defined(BOOST_ASIO_HAS_EPOLL) && !defined(BOOST_ASIO_HAS_IO_URING_AS_DEFAULT)
#include <boost/asio/socket_base.hpp> // before the detail header, which expects it
#include <cerrno>
#include <cstring>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <boost/asio/detail/reactive_socket_recv_op.hpp>

namespace boost::asio::detail {

template <> class reactive_socket_recv_op_base<tunneld::tunnel::drained_buffer> : public reactor_op {
public:
    reactive_socket_recv_op_base(const boost::system::error_code& success_ec, socket_type socket,
                                 socket_ops::state_type state, const tunneld::tunnel::drained_buffer& buffers,
                                 socket_base::message_flags flags, func_type complete_func)
        : reactor_op(success_ec, &reactive_socket_recv_op_base::do_perform, complete_func), socket_(socket),
          state_(state), buffer_(buffers.buffer), flags_(flags)
    {
    }

    static status do_perform(reactor_op* base)
    {
        auto* o = static_cast<reactive_socket_recv_op_base*>(base);
        const bool stream = (o->state_ & socket_ops::stream_oriented) != 0;
        iovec iov{o->buffer_.data(), o->buffer_.size()};
        alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))];
        msghdr msg{};
        msg.msg_iov = &iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control;
        msg.msg_controllen = sizeof control;
        for (;;) {
            const ssize_t n = ::recvmsg(o->socket_, &msg, o->flags_);
            if (n < 0) {
                if (errno == EINTR) continue;
                if (errno == EAGAIN || errno == EWOULDBLOCK) return not_done;
                o->ec_ = boost::system::error_code(errno, boost::asio::error::get_system_category());
                o->bytes_transferred_ = 0;
                return done_and_exhausted;
            }
            o->bytes_transferred_ = static_cast<std::size_t>(n);
            if (n == 0 && stream) {
                o->ec_ = boost::asio::error::eof;
                return done_and_exhausted;
            }
            break;
        }
        // TCP_INQ (tunneld::tunnel::enable_drained_reads): the bytes left in the receive queue,
        // and non-zero after a FIN. Without it, Asio's plain behaviour.
        int inq = -1;
        for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c))
            if (c->cmsg_level == SOL_TCP && c->cmsg_type == TCP_CM_INQ) std::memcpy(&inq, CMSG_DATA(c), sizeof inq);
        return stream && inq == 0 && o->bytes_transferred_ < o->buffer_.size() ? done_and_exhausted : done;
    }

private:
    socket_type socket_;
    socket_ops::state_type state_;
    boost::asio::mutable_buffer buffer_;
    socket_base::message_flags flags_;
};

} // namespace boost::asio::detail
#endif
