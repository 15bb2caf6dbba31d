#pragma once
// Why a client ended: one reason from a fixed set (spiped's habit), written as a word only in
// the client's log line.

#include <cstdint>
#include <string_view>

namespace tunneld::proxy {

enum class close_reason : std::uint8_t {
    client_eof,
    backend_eof,
    client_reset,
    backend_reset,
    connect_failed,
    connect_timeout,
    tunnel_down,
    gateway_lost, ///< the SSH session (its gateway) carrying the client's channel died
    channel_open_timeout,
    channel_open_failed,
    cut_by_switch, ///< a switch cut the side the client was on
    drain_timeout, ///< still on the draining side when drain_timeout ran out
    shutdown,      ///< the daemon stopped and its drain ran out
    moved,          ///< not an end: the client left this backend for the other side (a switch moved it)
    cut_pinned,     ///< a switch moved its side and the client was pinned (SUBSCRIBE, MULTI, ...) until the end
    replay_refused, ///< moved to the other side, whose backend refused the client's session state
};

/// The word in the log line: "client_eof", "cut_by_switch", ...
constexpr std::string_view to_string(close_reason r) noexcept
{
    switch (r) {
    case close_reason::client_eof:
        return "client_eof";
    case close_reason::backend_eof:
        return "backend_eof";
    case close_reason::client_reset:
        return "client_reset";
    case close_reason::backend_reset:
        return "backend_reset";
    case close_reason::connect_failed:
        return "connect_failed";
    case close_reason::connect_timeout:
        return "connect_timeout";
    case close_reason::tunnel_down:
        return "tunnel_down";
    case close_reason::gateway_lost:
        return "gateway_lost";
    case close_reason::channel_open_timeout:
        return "channel_open_timeout";
    case close_reason::channel_open_failed:
        return "channel_open_failed";
    case close_reason::cut_by_switch:
        return "cut_by_switch";
    case close_reason::drain_timeout:
        return "drain_timeout";
    case close_reason::shutdown:
        return "shutdown";
    case close_reason::moved:
        return "moved";
    case close_reason::cut_pinned:
        return "cut_pinned";
    case close_reason::replay_refused:
        return "replay_refused";
    }
    return "unknown";
}

} // namespace tunneld::proxy
