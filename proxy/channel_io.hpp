#pragma once
// The pump templates' close operations for a tunnel channel, next to the socket overloads in
// proxy/pump.hpp (found by argument-dependent lookup).

#include "tunnel/channel.hpp"

namespace tunneld::tunnel {

/// Half-close towards the gateway: channel EOF after the pending writes.
inline void close_write(channel& c)
{
    c.shutdown_send();
}

inline void close_all(channel& c)
{
    c.close();
}

} // namespace tunneld::tunnel
