#include "tunnel/channel.hpp"

#include "tunnel/decisions.hpp"
#include "tunnel/transport.hpp"

#include <boost/asio/append.hpp>
#include <boost/asio/associated_cancellation_slot.hpp>
#include <boost/asio/error.hpp>
#include <boost/asio/post.hpp>
#include <libssh2.h>

namespace tunneld::tunnel {

namespace {

/// Errors that end one channel but say nothing about its session.
bool is_channel_error(int rc) noexcept
{
    return rc == LIBSSH2_ERROR_CHANNEL_CLOSED || rc == LIBSSH2_ERROR_CHANNEL_EOF_SENT ||
           rc == LIBSSH2_ERROR_CHANNEL_UNKNOWN || rc == LIBSSH2_ERROR_CHANNEL_FAILURE ||
           rc == LIBSSH2_ERROR_CHANNEL_WINDOW_EXCEEDED || rc == LIBSSH2_ERROR_CHANNEL_PACKET_EXCEEDED;
}

/// Boost 1.81's any_completion_handler move assignment recurses forever: swap instead.
void assign(channel::io_handler& to, channel::io_handler&& from) noexcept
{
    channel::io_handler moved(std::move(from));
    to.swap(moved);
}

} // namespace

channel::channel(private_tag, std::shared_ptr<detail::transport> transport, _LIBSSH2_CHANNEL* raw,
                 std::shared_ptr<detail::session_stats> stats)
    : executor_(transport->executor()), transport_(std::move(transport)), stats_(std::move(stats)), raw_(raw),
      window_target_(transport_->window_initial())
{
    ++stats_->channels;
}

channel::~channel()
{
    if (read_handler_) complete(read_handler_, asio::error::operation_aborted, 0);
    if (write_handler_) complete(write_handler_, asio::error::operation_aborted, 0);
    // The destructor may run on any thread: hand the raw channel to the session's thread.
    if (counted_) --stats_->channels;
    if (raw_ != nullptr)
        asio::post(executor_, [transport = transport_, raw = raw_] { transport->retire(raw); });
}

bool channel::is_open() const noexcept
{
    return raw_ != nullptr && !closed_;
}

void channel::complete(io_handler& pending, boost::system::error_code ec, std::size_t n)
{
    auto handler = std::move(pending);
    pending = nullptr;
    auto slot = asio::get_associated_cancellation_slot(handler);
    if (slot.is_connected()) slot.clear();
    auto& ex = &pending == &read_handler_ ? read_executor_ : write_executor_;
    asio::post(ex, asio::append(std::move(handler), ec, n));
}

void channel::arm_cancellation(io_handler& handler, bool read)
{
    auto slot = asio::get_associated_cancellation_slot(handler);
    if (!slot.is_connected()) return;
    slot.assign([this, read](asio::cancellation_type type) {
        if (type == asio::cancellation_type::none) return;
        auto& pending = read ? read_handler_ : write_handler_;
        if (pending) complete(pending, asio::error::operation_aborted, 0);
    });
}

void channel::start_read(asio::mutable_buffer buffer, io_handler handler, executor_type handler_executor)
{
    read_executor_ = std::move(handler_executor);
    assign(read_handler_, std::move(handler));
    if (closed_) return complete(read_handler_, asio::error::bad_descriptor, 0);
    if (failure_) return complete(read_handler_, failure_, 0);
    if (eof_received_) return complete(read_handler_, asio::error::eof, 0);
    if (buffer.size() == 0) return complete(read_handler_, {}, 0);
    read_buffer_ = buffer;
    arm_cancellation(read_handler_, true);
    run_now(true);
}

void channel::start_write(asio::const_buffer buffer, io_handler handler, executor_type handler_executor)
{
    write_executor_ = std::move(handler_executor);
    assign(write_handler_, std::move(handler));
    if (closed_) return complete(write_handler_, asio::error::bad_descriptor, 0);
    if (failure_) return complete(write_handler_, failure_, 0);
    if (eof_requested_ || remote_closed_) return complete(write_handler_, asio::error::broken_pipe, 0);
    if (buffer.size() == 0) return complete(write_handler_, {}, 0);
    write_buffer_ = buffer;
    arm_cancellation(write_handler_, false);
    run_now(false);
}

void channel::run_now(bool read)
{
    // A pump starts its next operation as soon as the last one completed: doing it here, when
    // libssh2 may be called, saves a wake-up of the driver (a trip through the event loop) per
    // operation. The driver still services every channel after any I/O.
    if (raw_ == nullptr || !transport_->may_call_now()) return transport_->notify();
    const auto unread_before = transport_->unread_input();
    bool unread_input = unread_before > 0;
    const bool done = read ? try_read(unread_input)
                           : !remote_closed_ && !transport_->output_full() && try_write(unread_input);
    // Not done (no data, no window) or input taken that may hold other channels' data: the driver
    // takes it from here.
    if (!done || transport_->unread_input() != unread_before) transport_->notify();
}

void channel::shutdown_send()
{
    if (closed_ || failure_ || eof_requested_) return;
    eof_requested_ = true;
    transport_->notify();
}

void channel::close()
{
    if (closed_) return;
    closed_ = true;
    if (read_handler_) complete(read_handler_, asio::error::operation_aborted, 0);
    if (write_handler_) complete(write_handler_, asio::error::operation_aborted, 0);
    if (counted_) {
        counted_ = false;
        --stats_->channels;
    }
    if (raw_ != nullptr) transport_->retire(std::exchange(raw_, nullptr));
}

void channel::session_lost()
{
    raw_ = nullptr; // libssh2_session_free frees it
    if (!failure_) failure_ = make_error_code(tunnel_errc::session_lost);
    if (read_handler_) complete(read_handler_, failure_, 0);
    if (write_handler_) complete(write_handler_, failure_, 0);
    if (counted_) {
        counted_ = false;
        --stats_->channels;
    }
}

bool channel::fail_on(int rc, bool reading)
{
    if (!is_channel_error(rc)) {
        // Anything else is the session's failure; it resets every channel, this one included.
        transport_->fail(make_error_code(tunnel_errc::session_lost),
                         detail::libssh2_error_text(nullptr, rc) + " on a channel");
        return true;
    }
    if (reading && read_handler_) {
        eof_received_ = true; // the gateway closed the channel: nothing more will come
        complete(read_handler_, asio::error::eof, 0);
    } else if (!reading && write_handler_) {
        complete(write_handler_, asio::error::broken_pipe, 0);
    }
    return false;
}

bool channel::try_read(bool& unread_input)
{
    // A read call costs a transport drain and a scan of libssh2's packet list: skip it for idle
    // channels, so that thousands of them do not tax a busy one. Skipping is exact: without
    // queued data libssh2 would return nothing, and above this window it would not adjust it.
    unsigned long queued = 0;
    unsigned long window_initial = 0;
    const auto window = libssh2_channel_window_read_ex(raw_, &queued, &window_initial);
    const bool would_adjust = window < window_initial / 4 * 3 + read_buffer_.size();
    long rc = LIBSSH2_ERROR_EAGAIN;
    if (unread_input || queued > 0 || would_adjust) {
        unread_input = false; // libssh2_channel_read drains the transport first
        rc = libssh2_channel_read(raw_, static_cast<char*>(read_buffer_.data()), read_buffer_.size());
    }
    if (rc > 0) {
        const auto n = static_cast<std::size_t>(rc);
        bytes_down_ += n;
        transport_->add_bytes_down(n);
        complete(read_handler_, {}, n);
        drained_ += n;
        grow_window();
        return true;
    }
    if (rc == 0 || rc == LIBSSH2_ERROR_EAGAIN) {
        // 0 is EOF only when libssh2 says so; EAGAIN may hide an EOF already received.
        if (libssh2_channel_eof(raw_) != 1) return false;
        eof_received_ = true;
        complete(read_handler_, asio::error::eof, 0);
        return true;
    }
    fail_on(static_cast<int>(rc), true);
    return true;
}

void channel::grow_window()
{
    unsigned long queued = 0;
    const auto window = libssh2_channel_window_read_ex(raw_, &queued, nullptr);
    const auto step = next_window(window_target_, transport_->window_max(), window, queued, drained_);
    if (step.target != window_target_) drained_ = 0;
    window_target_ = step.target;
    if (step.adjust == 0) return;
    unsigned int granted = 0;
    // force: send it now, not once LIBSSH2_CHANNEL_MINADJUST bytes are due. Never EAGAIN here:
    // the transport takes every packet whole.
    const int rc = libssh2_channel_receive_window_adjust2(raw_, step.adjust, 1, &granted);
    if (rc < 0 && rc != LIBSSH2_ERROR_EAGAIN) fail_on(rc, true);
}

bool channel::try_write(bool& unread_input)
{
    const auto* bytes = static_cast<const char*>(write_buffer_.data());
    const auto size = write_buffer_.size();
    std::size_t written = 0;
    long rc = 0;
    // One libssh2 call sends one packet (at most 32700 bytes): send as many as the gateway's
    // window and the session's output buffer take, and complete the write once.
    while (written < size && !transport_->output_full()) {
        unread_input = false; // libssh2_channel_write drains the transport first
        rc = libssh2_channel_write(raw_, bytes + written, size - written);
        if (rc <= 0) break;
        written += static_cast<std::size_t>(rc);
    }
    // 0 or EAGAIN: the gateway's window is full; its WINDOW_ADJUST wakes the driver.
    write_stalled_ = written < size && (rc == 0 || rc == LIBSSH2_ERROR_EAGAIN);
    if (written > 0) {
        bytes_up_ += written;
        transport_->add_bytes_up(written);
        complete(write_handler_, {}, written);
        return true;
    }
    if (rc < 0 && rc != LIBSSH2_ERROR_EAGAIN) {
        fail_on(static_cast<int>(rc), false);
        return true;
    }
    return false;
}

bool channel::service(bool& unread_input)
{
    bool progress = false;
    // A libssh2 error that fails the whole session resets this channel too (raw_ becomes null).
    if (raw_ != nullptr && read_handler_ && try_read(unread_input)) progress = true;
    if (raw_ != nullptr && !remote_closed_ && (write_handler_ || (eof_requested_ && !eof_sent_)) &&
        (eof_received_ || write_stalled_) && libssh2_channel_eof(raw_) == 1) {
        // The gateway's CLOSE arrives after its EOF, typically while a write waits for window
        // space that will never come (the backend is gone). libssh2 (1.10 and 1.11.1) reports a
        // remote CLOSE only through channel_wait_closed (0 once it was received, EAGAIN before). Without this
        // check the pending write would wait forever; after CLOSE nothing may be sent anyway.
        unread_input = false; // libssh2_channel_wait_closed drains the transport first
        const int rc = libssh2_channel_wait_closed(raw_);
        if (rc == 0) {
            remote_closed_ = true;
            eof_sent_ = true; // never send EOF after CLOSE
            if (write_handler_) complete(write_handler_, asio::error::broken_pipe, 0);
            progress = true;
        } else if (rc != LIBSSH2_ERROR_EAGAIN && rc != LIBSSH2_ERROR_INVAL) {
            if (fail_on(rc, false)) return true;
            progress = true;
        }
    }
    if (raw_ != nullptr && !remote_closed_ && write_handler_ && !transport_->output_full() &&
        try_write(unread_input))
        progress = true;
    if (raw_ != nullptr && !remote_closed_ && eof_requested_ && !eof_sent_ && !write_handler_) {
        const int rc = libssh2_channel_send_eof(raw_);
        if (rc == 0) {
            eof_sent_ = true;
            progress = true;
        } else if (rc != LIBSSH2_ERROR_EAGAIN) {
            eof_sent_ = true;
            if (fail_on(rc, false)) return true;
        }
    }
    return progress;
}

} // namespace tunneld::tunnel
