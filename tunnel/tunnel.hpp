#pragma once
// The public face of tunnel/: a pool of libssh2 sessions per [tunnels.NAME], handing out
// direct-tcpip channels that look like any other Asio byte stream to proxy/.

#include "config/config.hpp"

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <array>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <system_error>
#include <vector>

namespace tunneld::tunnel {

namespace asio = boost::asio;

class channel; // tunnel/channel.hpp: async_read_some / async_write_some / shutdown_send / close

/// One gateway of a tunnel, as `tunnelctl tunnels` shows it.
struct gateway_status {
    std::string address;          ///< "host:port" as configured
    std::string state;            ///< "connecting" | "up" | "down" (tunnel/decisions.hpp gateway_state)
    unsigned sessions = 0;        ///< configured per gateway
    unsigned sessions_up = 0;
    unsigned channels = 0;        ///< open now on this gateway's sessions
    std::uint64_t failures = 0;   ///< sessions of this gateway that failed or could not connect
    std::string last_error;       ///< empty when none; never contains secrets
};

/// One session of a tunnel, as `tunnelctl tunnels --json` shows it (`by_session`).
struct session_status {
    std::string gateway;   ///< "host:port" of the gateway it connects to
    bool up = false;
    unsigned channels = 0; ///< open now on this session
    unsigned loop = 0;     ///< the event loop (thread) it runs on, 0-based: its channels' pumps run there too
};

/// Upper bounds, in seconds, of the channel-open latency buckets (tunnel_status::channel_open).
inline constexpr std::array<double, 12> channel_open_bounds{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                                             0.1,   0.25,   0.5,   1.0,  2.5,   5.0};

/// How long the channels a pool handed out took to open, from open_channel's call to its result.
struct channel_open_latency {
    /// counts[i]: opens that took at most channel_open_bounds[i] seconds and more than the bound
    /// before it (not cumulative); the last one counts the opens slower than every bound.
    std::array<std::uint64_t, channel_open_bounds.size() + 1> counts{};
    std::chrono::nanoseconds sum{}; ///< of every open counted
};

/// What `tunnelctl tunnels` and `status --json` show for one tunnel.
struct tunnel_status {
    std::string name;
    std::string address;          ///< the gateways, comma-separated ("host:port" for one)
    unsigned sessions = 0;        ///< configured pool size: `sessions` x gateways
    unsigned sessions_up = 0;     ///< authenticated and healthy
    unsigned channels = 0;        ///< open now
    std::uint64_t bytes_up = 0;   ///< client -> gateway, all channels ever
    std::uint64_t bytes_down = 0; ///< gateway -> client
    std::uint64_t reconnects = 0;
    std::uint64_t channel_open_failures = 0;
    std::string last_error;                                      ///< empty when none; never contains secrets
    std::optional<std::chrono::milliseconds> since_last_receive; ///< nullopt: nothing received yet
    std::vector<gateway_status> gateways;                        ///< in configuration order
    std::vector<session_status> by_session;                      ///< grouped by gateway
    channel_open_latency channel_open;                           ///< successful opens since the pool started
};

/// One tunnel: `sessions` libssh2 sessions to each of its gateways, each living on one io_context.
/// Thread-safe: open_channel and status may be called from any thread (open_channel's caller
/// runs on a one-thread executor, as every event loop here does).
class pool {
public:
    virtual ~pool() = default;

    /// Opens a direct-tcpip channel to host:port on the least-loaded healthy session of any gateway
    /// that is not down; never waits for a reconnect: fails at once with
    /// tunnel_errc::no_healthy_session when none is up. An open unanswered after race_delay is
    /// also tried on another gateway; the first channel wins and the other is closed.
    /// The channel lives on its session's executor (channel::get_executor()); the caller moves its
    /// client socket there so that the pumps never cross threads. Completes on the caller's executor.
    virtual asio::awaitable<std::pair<std::error_code, std::shared_ptr<channel>>>
    open_channel(std::string host, std::uint16_t port) = 0;

    /// Where an open_channel called from `caller` would run now: the executor of the session it
    /// would choose (the caller's own when that session is as idle as any), or `caller` when none
    /// is up. A caller that moves its client there first opens and pumps on one thread.
    virtual asio::any_io_executor open_executor(const asio::any_io_executor& caller) const = 0;

    virtual tunnel_status status() const = 0;
    virtual bool healthy() const = 0; ///< at least one session up, on any gateway
    virtual const config::tunnel_config& settings() const = 0;

    /// Closes every session and channel; idempotent.
    virtual void stop() = 0;
};

/// Starts the sessions of `settings`, spreading them over `loops` (each run by its own thread).
/// Lifetimes: call stop() (or drop the pool) and release every channel while the loops still run;
/// a channel's destructor and stop() post work to the session's io_context.
/// Connecting happens in the background; check healthy()/status(). Throws std::system_error
/// only for problems found before any network I/O (unreadable or group/other-readable key,
/// unreadable known_hosts).
std::shared_ptr<pool> start_pool(const config::tunnel_config& settings, std::vector<asio::io_context*> loops);

/// Initializes libssh2 (libssh2_init(0)); call once before starting threads. start_pool calls it
/// too (thread-safe, once), for callers that start pools before their threads.
void init_library();

enum class tunnel_errc {
    no_healthy_session = 1,
    host_key_unknown,
    host_key_mismatch,
    authentication_failed,
    channel_open_refused,
    session_lost,
    connect_timeout,
    key_permissions,
    handshake_failed, ///< TCP connected but no SSH session could be negotiated
};
const std::error_category& tunnel_category() noexcept;
std::error_code make_error_code(tunnel_errc) noexcept;

} // namespace tunneld::tunnel

template <> struct std::is_error_code_enum<tunneld::tunnel::tunnel_errc> : std::true_type {
};
