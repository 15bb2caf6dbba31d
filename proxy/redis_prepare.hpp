#pragma once
// Connecting a held redis client to the side it will move to ahead of the move: while that side
// is still a replica, tunneld opens the client's backend connection there (directly or through
// the tunnel) and replays its session state (AUTH, HELLO, SELECT, CLIENT SETNAME...: commands a
// replica accepts). After promotion and fence, the move only forwards the held request. A hold
// lifted instead (the switch undone) closes the connection.
//
// The preparation runs on the client's pump thread; a prepared_backend is touched only there
// until it is done, and then by whoever owns the client next (the move's path).

#include "config/config.hpp"
#include "proxy/redis_state.hpp"
#include "proxy/router.hpp"
#include "proxy/service.hpp"

#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <functional>
#include <memory>
#include <optional>
#include <string>

namespace tunneld::tunnel {
class channel;
}

namespace tunneld::proxy {

/// A backend connection opened, with the session replayed on it, for a client held before a move.
struct prepared_backend {
    prepared_backend() = default;
    prepared_backend(const prepared_backend&) = delete;
    prepared_backend& operator=(const prepared_backend&) = delete;
    ~prepared_backend() { discard(); }

    /// Ready to take the client: opened and replayed, nothing else sent.
    bool ready() const { return done && failure.empty() && (socket || channel); }
    /// Closes what was opened. Only once done (nothing in flight on it); any thread.
    void discard();

    side to = side::new_side;
    bool done = false;      ///< the preparation ended: ready, or failed with `failure`
    bool abandoned = false; ///< the client no longer wants it: the preparation closes what it opens
    std::string failure;    ///< why it is not ready (no secret in it); the move connects as usual
    std::optional<asio::ip::tcp::socket> socket; ///< a direct backend
    std::shared_ptr<tunnel::channel> channel;    ///< a backend through a tunnel
    std::function<void()> on_done;               ///< set by the pumps while they run (same thread)
    std::function<void()> cancel; ///< set by the preparation while it waits for a connect (same thread)
};

/// Opens a backend connection to `target` within `timeout` and replays `commands` on it,
/// checking each answer; fills `prepared` and calls its on_done. Run it on the client's pump
/// thread. The pool spreads channel opens over its sessions (one open at a time on each).
asio::awaitable<void> prepare_backend(std::shared_ptr<prepared_backend> prepared, replay commands,
                                      config::backend target, config::duration timeout,
                                      tunnel_lookup tunnels);

/// The client gave up the preparation (its hold was lifted, or it ended): closes what is open
/// now, or, while it is in flight, cancels it and lets it close what it opens. Pump thread only.
void abandon(std::shared_ptr<prepared_backend>& prepared);

} // namespace tunneld::proxy
