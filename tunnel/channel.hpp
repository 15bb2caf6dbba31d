#pragma once
// One direct-tcpip channel as an Asio AsyncReadStream / AsyncWriteStream, so that proxy/ runs the
// same pump template over it as over a tcp::socket.

#include "tunnel/tunnel.hpp"

#include <boost/asio/any_completion_handler.hpp>
#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/associated_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/buffer.hpp>
#include <boost/system/error_code.hpp>
#include <cstddef>
#include <memory>

struct _LIBSSH2_CHANNEL; // libssh2.h: typedef struct _LIBSSH2_CHANNEL LIBSSH2_CHANNEL

namespace tunneld::tunnel {

namespace detail {
class transport;
struct session_stats;
} // namespace detail

/// One direct-tcpip stream. Every member is called on get_executor()'s thread (the session's
/// io_context); only the destructor may run elsewhere. Completion handlers are posted to that
/// executor, never invoked inline.
class channel : public std::enable_shared_from_this<channel> {
public:
    using executor_type = boost::asio::any_io_executor;
    using io_handler = boost::asio::any_completion_handler<void(boost::system::error_code, std::size_t)>;

    channel(const channel&) = delete;
    channel& operator=(const channel&) = delete;
    ~channel();

    /// The session's executor; the pumps of this channel's client run there.
    executor_type get_executor() const noexcept { return executor_; }

    /// Reads some bytes into the first non-empty buffer. Completes with (error_code, n):
    /// asio::error::eof after the backend's EOF, tunnel_errc::session_lost when the session died,
    /// asio::error::operation_aborted after close() or cancellation.
    template <class MutableBufferSequence, class Token>
    auto async_read_some(const MutableBufferSequence& buffers, Token&& token)
    {
        return boost::asio::async_initiate<Token, void(boost::system::error_code, std::size_t)>(
            [this](auto handler, boost::asio::mutable_buffer buffer) {
                auto ex = boost::asio::get_associated_executor(handler, executor_);
                start_read(buffer, io_handler(std::move(handler)), executor_type(ex));
            },
            token, first_buffer<boost::asio::mutable_buffer>(buffers));
    }

    /// Writes some bytes of the first non-empty buffer; completes once the SSH window and the
    /// session's bounded output buffer accepted them (backpressure).
    template <class ConstBufferSequence, class Token>
    auto async_write_some(const ConstBufferSequence& buffers, Token&& token)
    {
        return boost::asio::async_initiate<Token, void(boost::system::error_code, std::size_t)>(
            [this](auto handler, boost::asio::const_buffer buffer) {
                auto ex = boost::asio::get_associated_executor(handler, executor_);
                start_write(buffer, io_handler(std::move(handler)), executor_type(ex));
            },
            token, first_buffer<boost::asio::const_buffer>(buffers));
    }

    /// Half-close: sends channel EOF once pending writes are done. Idempotent.
    void shutdown_send();

    /// Cancels pending operations (operation_aborted) and frees the channel; idempotent. Nothing
    /// is sent on the channel after this.
    void close();

    /// False once closed or once its session died.
    bool is_open() const noexcept;

    /// Why the channel stopped working (tunnel_errc::session_lost when its session died); empty
    /// while it works. Call on get_executor().
    boost::system::error_code failure() const noexcept { return failure_; }

    /// Bytes moved so far (client -> gateway, gateway -> client).
    std::uint64_t bytes_up() const noexcept { return bytes_up_; }
    std::uint64_t bytes_down() const noexcept { return bytes_down_; }

    // --- used by tunnel/ only -------------------------------------------------------------------
    struct private_tag {};
    channel(private_tag, std::shared_ptr<detail::transport> transport, _LIBSSH2_CHANNEL* raw,
            std::shared_ptr<detail::session_stats> stats);
    /// Runs pending operations against libssh2; returns true when something progressed.
    /// `unread_input`: the transport holds bytes libssh2 has not parsed; cleared once a libssh2
    /// call made here has drained them.
    bool service(bool& unread_input);
    /// The session died: libssh2 already freed (or will free) the raw channel.
    void session_lost();

private:
    template <class Buffer, class Sequence> static Buffer first_buffer(const Sequence& buffers)
    {
        auto end = boost::asio::buffer_sequence_end(buffers);
        for (auto it = boost::asio::buffer_sequence_begin(buffers); it != end; ++it) {
            Buffer buffer(*it);
            if (buffer.size() != 0) return buffer;
        }
        return Buffer();
    }

    void start_read(boost::asio::mutable_buffer buffer, io_handler handler, executor_type handler_executor);
    void start_write(boost::asio::const_buffer buffer, io_handler handler, executor_type handler_executor);
    /// Runs a just-started operation against libssh2 at once when the session allows it, else
    /// (and when it cannot complete yet) wakes the driver.
    void run_now(bool read);
    /// Completes the pending read from what libssh2 holds; false when there is nothing yet.
    bool try_read(bool& unread_input);
    /// After a read: grants the gateway more window as the client drains (next_window).
    void grow_window();
    /// Sends as much of the pending write as the window and the output buffer take and completes
    /// it; false when nothing could be sent yet.
    bool try_write(bool& unread_input);
    /// Posts the pending handler to its own executor; never runs it inline.
    void complete(io_handler& pending, boost::system::error_code ec, std::size_t n);
    void arm_cancellation(io_handler& handler, bool read);
    /// A libssh2 error on this channel; returns true when it failed the whole session.
    bool fail_on(int rc, bool reading);

    executor_type executor_;
    std::shared_ptr<detail::transport> transport_;
    std::shared_ptr<detail::session_stats> stats_;
    _LIBSSH2_CHANNEL* raw_; ///< null once freed, closed or lost; owned by the libssh2 session

    io_handler read_handler_; ///< pending read, if any
    executor_type read_executor_;
    boost::asio::mutable_buffer read_buffer_;
    io_handler write_handler_; ///< pending write, if any
    executor_type write_executor_;
    boost::asio::const_buffer write_buffer_;

    std::uint32_t window_target_; ///< the receive window granted to the gateway (tunnel/decisions.hpp)
    std::uint64_t drained_ = 0;   ///< bytes the client took since window_target_ last changed
    boost::system::error_code failure_; ///< set once: every later operation completes with it
    bool eof_received_ = false;
    bool eof_requested_ = false;
    bool eof_sent_ = false;
    bool write_stalled_ = false;  ///< the last channel_write found the gateway's window full
    bool remote_closed_ = false;  ///< the gateway sent CLOSE: nothing may be sent any more
    bool closed_ = false;
    bool counted_ = true; ///< still counted in the session's channel count
    std::uint64_t bytes_up_ = 0;
    std::uint64_t bytes_down_ = 0;
};

} // namespace tunneld::tunnel
