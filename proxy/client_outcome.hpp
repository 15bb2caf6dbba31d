#pragma once
// How a client ended (or left its backend), as the pumps report it to the path that connected it.

#include "proxy/close_reason.hpp"
#include "proxy/pump.hpp"

#include <boost/asio/ip/tcp.hpp>
#include <cstdint>
#include <optional>
#include <string>

namespace tunneld::proxy {

/// How a client ended, for its log line and the counters.
struct client_outcome {
    close_reason reason = close_reason::client_eof;
    std::string detail; ///< why a connect failed, for the log line
    bool connect_failed = false;
    std::uint64_t bytes_up = 0;
    std::uint64_t bytes_down = 0;
    /// close_reason::moved: the client's socket, to be connected to the other side.
    std::optional<boost::asio::ip::tcp::socket> client;
};

/// Close reason from how each direction ended; `up` is client -> backend, `up_ended_first` says
/// which direction finished first. Pure.
close_reason reason_from(pump_end up, pump_end down, bool up_ended_first);

} // namespace tunneld::proxy
