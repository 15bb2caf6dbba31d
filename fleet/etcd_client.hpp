#pragma once
// An etcd v3 client over the JSON gateway (HTTP/1.1 with Beast, TLS when the endpoint is
// https://). Every call has a deadline; the endpoints are tried in turn until one answers or the
// deadline passes. With a credentials file it authenticates, sends the token with each call and
// authenticates again when etcd says the token is no longer valid (simple tokens last 300 s).
//
// One client lives on one event loop: its calls and watches run on the executor it was made
// with and must be started from that executor's thread; it must outlive the calls it runs.

#include "config/config.hpp"
#include "fleet/etcd.hpp"

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <chrono>
#include <functional>
#include <memory>

namespace tunneld::fleet::etcd {

using clock = std::chrono::steady_clock;

struct client_options {
    std::vector<config::etcd_endpoint> endpoints; ///< never empty
    std::optional<std::filesystem::path> ca_file;
    std::optional<std::filesystem::path> cert_file;
    std::optional<std::filesystem::path> key_file;
    std::optional<std::filesystem::path> credentials_file; ///< "user password"; read at each authentication
    std::chrono::milliseconds call_timeout = std::chrono::seconds(2); ///< the deadline of a call given none
    std::chrono::milliseconds retry_pause = std::chrono::milliseconds(50); ///< after every endpoint refused
};

/// The client options a `[fleet]` table asks for.
client_options options_for(const config::fleet_config& fleet);

/// Lets a running watch be ended from outside (stop, shutdown): `abort()` closes its stream.
struct watch_handle {
    std::function<void()> abort; ///< set by the client while a stream is open
    bool stopped = false;
    void stop()
    {
        stopped = true;
        if (abort) abort();
    }
};

class client {
public:
    /// Fails (throws std::runtime_error naming the file) only when a TLS file cannot be loaded.
    client(boost::asio::any_io_executor executor, client_options options);
    ~client();
    client(const client&) = delete;
    client& operator=(const client&) = delete;

    boost::asio::any_io_executor get_executor() const;
    const client_options& options() const;
    clock::time_point default_deadline() const { return clock::now() + options().call_timeout; }

    boost::asio::awaitable<result<range_response>> range(range_request request, clock::time_point deadline);
    boost::asio::awaitable<result<put_response>> put(put_request request, clock::time_point deadline);
    boost::asio::awaitable<result<delete_response>> erase(delete_request request, clock::time_point deadline);
    boost::asio::awaitable<result<txn_response>> txn(txn_request request, clock::time_point deadline);
    boost::asio::awaitable<result<lease_grant_response>> lease_grant(std::chrono::seconds ttl,
                                                                     clock::time_point deadline);
    /// One renewal; errc::lease_not_found once the lease has expired.
    boost::asio::awaitable<result<lease_keep_alive_response>> lease_keep_alive(std::int64_t id,
                                                                               clock::time_point deadline);
    boost::asio::awaitable<result<empty>> lease_revoke(std::int64_t id, clock::time_point deadline);
    /// Compacts the history up to `revision` (tests and operators; tunneld itself never compacts).
    boost::asio::awaitable<result<empty>> compact(std::int64_t revision, clock::time_point deadline);

    /// Opens one watch stream (connecting by `deadline`) and calls `on_message` for each message
    /// until the stream ends, no message comes for `stall_timeout`, or `handle.stop()`. Always
    /// ends with an error: errc::timeout for a stall, errc::watch_canceled or errc::compacted when
    /// etcd cancels, std::errc::operation_canceled after stop.
    boost::asio::awaitable<error> watch(watch_create request, std::function<void(const watch_message&)> on_message,
                                        clock::time_point deadline, std::chrono::milliseconds stall_timeout,
                                        watch_handle& handle);

private:
    struct impl;
    template <class T>
    boost::asio::awaitable<result<T>> call(std::string_view path, std::string body, bool idempotent,
                                           clock::time_point deadline, result<T> (*decode)(std::string_view));

    std::shared_ptr<impl> impl_;
};

} // namespace tunneld::fleet::etcd
