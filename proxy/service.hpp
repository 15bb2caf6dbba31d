#pragma once
// One service at run time: its listener, its clients, the route new clients follow, and the
// counters monitoring reads. Switching logic lives in cutover/; this only obeys the route.

#include "config/config.hpp"
#include "proxy/registry.hpp"
#include "proxy/router.hpp"

#include <array>
#include <atomic>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <vector>

namespace tunneld::tunnel {
class pool;
}

namespace tunneld::proxy {

namespace asio = boost::asio;

/// Finds the running tunnel pool by name; nullptr when there is none.
using tunnel_lookup = std::function<std::shared_ptr<tunnel::pool>(std::string_view name)>;

/// How the clients on one side stand during a move.
struct move_census {
    std::size_t clients = 0;
    std::size_t held = 0;          ///< at a request boundary, nothing outstanding, nothing sent since
    std::size_t pinned_lasting = 0; ///< pinned by what only the client can lift (pin_lasts)
    /// Neither: replies still outstanding, a transaction open, a blocking command waiting.
    std::size_t busy() const { return clients - held - pinned_lasting; }
};

/// Counters since start; all monotonic except where noted.
struct service_counters {
    std::atomic<std::uint64_t> clients_total{0};
    std::atomic<std::uint64_t> bytes_up{0};                     ///< client -> backend
    std::atomic<std::uint64_t> bytes_down{0};                   ///< backend -> client
    std::array<std::atomic<std::uint64_t>, 2> connect_errors{}; ///< indexed by side
    std::atomic<std::uint64_t> refused_max_clients{0};
    std::atomic<std::uint64_t> clients_moved{0};       ///< redis clients moved to the other side
    std::atomic<std::uint64_t> clients_move_failed{0}; ///< moves that ended the client (replay refused, connect failed)
    std::atomic<std::int64_t> moves_in_flight{0}; ///< not monotonic: moved clients not yet replayed on their new backend
    std::atomic<std::uint64_t> moves_ready_ahead{0}; ///< moves whose backend was ready before the move
};

class service : public std::enable_shared_from_this<service> {
public:
    /// `loops[0]` runs the listener; clients are spread over all loops.
    service(std::shared_ptr<const config::service_config> settings, std::vector<asio::io_context*> loops,
            tunnel_lookup tunnels, route initial);
    ~service();

    /// Binds the listen address and starts accepting. Throws std::system_error if it cannot bind.
    void start();
    /// The bound listen port (useful when the config asked for port 0).
    std::uint16_t local_port() const { return acceptor_ ? acceptor_->local_endpoint().port() : 0; }
    /// Stops accepting; live clients are untouched. Idempotent.
    void stop_accepting();

    const std::string& name() const { return name_; }
    std::shared_ptr<const config::service_config> settings() const;
    /// New clients use `settings` from now on; live clients keep the one they started with.
    void update_settings(std::shared_ptr<const config::service_config> settings);

    route current_route() const;
    /// Applies `r` to new clients; when `r.hold` is false, held clients are released into it.
    void set_route(const route& r);

    client_registry& clients() { return clients_; }
    const client_registry& clients() const { return clients_; }
    std::size_t held() const;
    /// How the clients on `s` stand for a move.
    move_census census(side s) const;
    const service_counters& counters() const { return counters_; }
    /// Clients accepted and not yet ended (held, connecting or pumping).
    std::size_t active() const { return active_.load(); }
    /// Cuts every client, held ones included (shutdown).
    void cut_everything(close_reason reason);

    // ---- Moving clients (kind = "redis"): a switch holds them, then moves them or lets them go on.

    /// Orders every client on `from` to hold at its next request boundary with no reply
    /// outstanding; it keeps its backend and sends it nothing more. Returns how many were ordered.
    std::size_t hold_clients(side from);
    /// Clients on `from` move to `to`: held ones now, the others as soon as they reach a request
    /// boundary unpinned. Clients pinned for good (subscribed, MONITOR, not RESP, ...) are cut now
    /// with close_reason::cut_pinned. Returns how many were cut.
    std::size_t move_clients(side from, side to);
    /// The backend client ids (CLIENT ID) of the clients on `s` blocked in a command (BRPOP,
    /// XREAD BLOCK, ...), where known: a switch unblocks them before their server turns replica.
    std::vector<std::int64_t> blocked_backend_ids(side s) const;
    /// Clients on `s` with a hold order go on where they are.
    void resume_clients(side s);
    /// Cuts every client still on `from` (a move's budget ran out): pinned ones with
    /// close_reason::cut_pinned, the others with cut_by_switch. Returns how many.
    std::size_t cut_unmoved(side from);

private:
    struct held_client {
        asio::any_io_executor executor;
        asio::steady_timer* timer;
    };

    asio::awaitable<void> accept_loop();
    /// The loop a new client is served on: when every new client goes through a tunnel, the loop
    /// of the session its channel would open on (the open and the pumps then stay on the thread
    /// that accepted it when they can); else the next loop in turn.
    asio::io_context& loop_for_next_client();
    asio::awaitable<void> serve(asio::ip::tcp::socket client);
    asio::awaitable<bool> wait_while_held(std::uint64_t id, asio::ip::tcp::socket& client);
    void release_held();

    const std::string name_;
    std::vector<asio::io_context*> loops_;
    tunnel_lookup tunnels_;
    std::unique_ptr<asio::ip::tcp::acceptor> acceptor_;
    std::size_t next_loop_ = 0;
    std::atomic<std::uint64_t> next_client_id_{1};
    std::atomic<std::size_t> active_{0};
    std::atomic<bool> stopping_{false};

    mutable std::mutex mutex_;
    std::shared_ptr<const config::service_config> settings_; // guarded by mutex_
    route route_;                                            // guarded by mutex_
    std::map<std::uint64_t, held_client> held_;              // guarded by mutex_

    client_registry clients_;
    service_counters counters_;
};

/// "1.2MiB", "40KiB", "512B": how sizes appear in log lines.
std::string human_size(std::uint64_t bytes);

} // namespace tunneld::proxy
