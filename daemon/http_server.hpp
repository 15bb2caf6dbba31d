#pragma once
// The health and metrics endpoint on `[daemon] health_listen`: GET / (the status page), /healthz,
// /readyz, /metrics and /status over HTTP/1.1 (Boost.Beast), one coroutine per connection on one
// io_context.
// A slow or idle client cannot hold the endpoint: every request has a read deadline and the
// number of open connections is capped.

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/http/message.hpp>
#include <boost/beast/http/string_body.hpp>
#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace tunneld::daemon {

namespace asio = boost::asio;

/// Where the endpoint gets its answers. Each is called on the io_context thread the server runs
/// on, once per request; an empty function answers 503 (status, metrics) or counts as ready.
struct http_sources {
    std::function<nlohmann::json()> status{};                      ///< same JSON as `tunnelctl status --json`
    std::function<std::string()> metrics{};                        ///< Prometheus text
    std::function<std::vector<std::string>()> not_ready_reasons{}; ///< empty = ready
};

struct http_limits {
    /// Connections open at once; a connection accepted beyond it is closed at once.
    std::size_t max_connections = 512;
    /// Time allowed to receive one whole request, including the wait for it on a kept-alive
    /// connection: an idle client is cut after this long.
    std::chrono::milliseconds read_timeout = std::chrono::seconds(5);
    /// Time allowed to send one response.
    std::chrono::milliseconds write_timeout = std::chrono::seconds(5);
    /// Largest request header block accepted; requests with a body larger than 1 KiB are refused.
    std::uint32_t max_header_bytes = 8 * 1024;
};

using http_request = boost::beast::http::request<boost::beast::http::string_body>;
using http_response = boost::beast::http::response<boost::beast::http::string_body>;

/// The answer to one request (pure apart from calling `sources`): the page at /, 200/503 for the
/// four other paths, 404 for any other path, 405 for any method but GET. Keep-alive follows the request.
http_response handle_http_request(const http_request& request, const http_sources& sources);

class http_server {
public:
    /// Opens, binds and listens on `endpoint` (port 0 picks a free port); throws
    /// boost::system::system_error when that fails. Nothing is accepted before start().
    http_server(asio::io_context& io, const asio::ip::tcp::endpoint& endpoint, http_sources sources,
                http_limits limits = {});
    /// Stops (see stop()); coroutines still in flight keep the shared state alive until the
    /// io_context runs them to their end. Destroy the server before its io_context.
    ~http_server();

    http_server(const http_server&) = delete;
    http_server& operator=(const http_server&) = delete;

    /// Starts accepting. Call once.
    void start();
    /// Closes the listener and every open connection. Safe from any thread, and more than once.
    void stop();
    /// The bound address (with the real port when constructed with port 0).
    asio::ip::tcp::endpoint local_endpoint() const;
    /// Connections open now (read on the io_context thread; for tests and metrics).
    std::size_t open_connections() const;

    struct state;

private:
    std::shared_ptr<state> state_;
    asio::ip::tcp::endpoint local_endpoint_;
};

} // namespace tunneld::daemon
