#pragma once
// tunnelctl's side of the control socket: blocking calls, each bounded by a deadline.

#include "control/protocol.hpp"

#include <array>
#include <boost/asio/io_context.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/system/error_code.hpp>
#include <chrono>
#include <string>
#include <string_view>
#include <variant>

namespace tunneld::tools {

/// One connection to tunneld's control socket. Every call returns within its timeout; a call
/// that times out returns boost::asio::error::timed_out and leaves the connection closed.
class control_client {
public:
    using duration = std::chrono::steady_clock::duration;

    /// Longest reply line accepted: results (a big status) may exceed the request limit.
    static constexpr std::size_t max_reply_line = 16 * 1024 * 1024;

    control_client() = default;

    /// Connects to the Unix socket at `path`.
    boost::system::error_code connect(const std::string& path, duration timeout);

    /// Writes all of `bytes`.
    boost::system::error_code write(std::string_view bytes, duration timeout);

    /// The next non-empty reply line, waiting at most `idle` for more bytes each time; an error
    /// (eof when the daemon closed, message_size when a line exceeds max_reply_line) otherwise.
    std::variant<std::string, boost::system::error_code> read_line(duration idle);

private:
    // Runs the io_context until the started operation completes or `timeout` passes; on a
    // timeout closes the socket, lets the operation finish as aborted, and returns false.
    bool run_for(duration timeout);

    boost::asio::io_context io_;
    boost::asio::local::stream_protocol::socket socket_{io_};
    control::line_reader reader_{max_reply_line};
    std::array<char, 16 * 1024> buffer_{};
};

} // namespace tunneld::tools
