#include "daemon/http_server.hpp"

#include "daemon/metrics.hpp"
#include "daemon/status_page.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/write.hpp>
#include <cstdint>
#include <exception>
#include <spdlog/spdlog.h>
#include <string_view>
#include <unordered_map>
#include <utility>

namespace tunneld::daemon {

namespace beast = boost::beast;
namespace http = beast::http;
using asio::awaitable;
using asio::ip::tcp;
constexpr auto use_tuple = asio::as_tuple(asio::use_awaitable);

namespace {

http_response text_response(const http_request& request, http::status code, std::string_view content_type,
                            std::string body)
{
    http_response response{code, request.version()};
    response.set(http::field::server, "tunneld");
    response.set(http::field::content_type, content_type);
    response.set(http::field::cache_control, "no-store");
    response.keep_alive(request.keep_alive());
    response.body() = std::move(body);
    response.prepare_payload();
    return response;
}

std::string_view path_of(std::string_view target)
{
    // Monitoring systems append query strings (?format=...); the path alone selects the answer.
    return target.substr(0, target.find('?'));
}

} // namespace

http_response handle_http_request(const http_request& request, const http_sources& sources)
{
    constexpr std::string_view plain = "text/plain; charset=utf-8";
    if (request.method() != http::verb::get) {
        auto response =
            text_response(request, http::status::method_not_allowed, plain, "method not allowed\n");
        response.set(http::field::allow, "GET");
        return response;
    }
    const std::string_view path = path_of(request.target());
    try {
        if (path == "/") {
            auto response = text_response(request, http::status::ok, "text/html; charset=utf-8",
                                          std::string(status_page_html()));
            // Read-only and self-contained: the page may only run its own inline script and
            // fetch /status from this origin; nothing is cached, nothing may frame it.
            response.set(http::field::cache_control, "no-store");
            response.set("Content-Security-Policy",
                         "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
                         "connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'");
            response.set("X-Content-Type-Options", "nosniff");
            response.set("Referrer-Policy", "no-referrer");
            return response;
        }
        if (path == "/healthz") return text_response(request, http::status::ok, plain, "ok\n");
        if (path == "/readyz") {
            const std::vector<std::string> reasons =
                sources.not_ready_reasons ? sources.not_ready_reasons() : std::vector<std::string>{};
            if (reasons.empty()) return text_response(request, http::status::ok, plain, "ready\n");
            std::string body;
            for (const std::string& reason : reasons) {
                body += reason;
                body += '\n';
            }
            return text_response(request, http::status::service_unavailable, plain, std::move(body));
        }
        if (path == "/metrics") {
            if (!sources.metrics)
                return text_response(request, http::status::service_unavailable, plain,
                                     "metrics not available\n");
            return text_response(request, http::status::ok, metrics_content_type, sources.metrics());
        }
        if (path == "/status") {
            if (!sources.status)
                return text_response(request, http::status::service_unavailable, plain,
                                     "status not available\n");
            return text_response(request, http::status::ok, "application/json",
                                 sources.status().dump() + "\n");
        }
    } catch (const std::exception& e) {
        // A source that throws is a bug elsewhere: answer, log once, keep serving.
        spdlog::warn("http: {} failed: {}", path, e.what());
        return text_response(request, http::status::internal_server_error, plain, "internal error\n");
    }
    return text_response(request, http::status::not_found, plain, "not found\n");
}

/// Shared by the server object and its coroutines, so either may go first.
struct http_server::state {
    state(asio::io_context& io, http_sources s, http_limits l)
        : acceptor(io), sources(std::move(s)), limits(l)
    {
    }

    tcp::acceptor acceptor;
    const http_sources sources;
    const http_limits limits;
    /// Every connection coroutine registers its stream here while it runs; only touched on the
    /// io_context thread. stop() closes them all.
    std::unordered_map<std::uint64_t, beast::tcp_stream*> connections;
    std::uint64_t next_id = 0;
    bool stopped = false;
};

namespace {

awaitable<void> serve_connection(std::shared_ptr<http_server::state> st, tcp::socket socket)
{
    beast::tcp_stream stream{std::move(socket)};
    const std::uint64_t id = st->next_id++;
    st->connections.emplace(id, &stream);
    struct unregister {
        http_server::state& st;
        std::uint64_t id;
        ~unregister() { st.connections.erase(id); }
    } guard{*st, id};

    beast::flat_buffer buffer;
    for (;;) {
        http::request_parser<http::string_body> parser;
        parser.header_limit(st->limits.max_header_bytes);
        parser.body_limit(1024);
        // The deadline covers the wait for the request too: an idle kept-alive client is cut.
        stream.expires_after(st->limits.read_timeout);
        auto [read_ec, read_n] = co_await http::async_read(stream, buffer, parser, use_tuple);
        if (read_ec) break; // eof, timeout, garbage or stop(): nothing to answer
        http_response response = handle_http_request(parser.get(), st->sources);
        const bool keep_alive = response.keep_alive();
        stream.expires_after(st->limits.write_timeout);
        auto [write_ec, write_n] = co_await http::async_write(stream, response, use_tuple);
        if (write_ec || !keep_alive || st->stopped) break;
    }
    beast::error_code ignored;
    stream.socket().shutdown(tcp::socket::shutdown_send, ignored);
    stream.socket().close(ignored);
}

awaitable<void> accept_loop(std::shared_ptr<http_server::state> st)
{
    for (;;) {
        auto [ec, socket] = co_await st->acceptor.async_accept(use_tuple);
        if (st->stopped) co_return;
        if (ec) {
            if (ec == asio::error::operation_aborted) co_return;
            // EMFILE and friends: keep the listener, but back off instead of spinning on an
            // error that only goes away once some descriptor is closed.
            spdlog::warn("http: accept failed: {}", ec.message());
            asio::steady_timer backoff(st->acceptor.get_executor(), std::chrono::milliseconds(100));
            co_await backoff.async_wait(use_tuple);
            continue;
        }
        if (st->connections.size() >= st->limits.max_connections) {
            // Over the cap: refuse at once rather than queue; idle connections leave by the read
            // deadline, so the cap frees itself within read_timeout.
            beast::error_code ignored;
            socket.close(ignored);
            continue;
        }
        asio::co_spawn(st->acceptor.get_executor(), serve_connection(st, std::move(socket)), asio::detached);
    }
}

void stop_on_loop(http_server::state& st)
{
    if (st.stopped) return;
    st.stopped = true;
    beast::error_code ignored;
    st.acceptor.close(ignored);
    for (auto& [id, stream] : st.connections)
        stream->socket().close(ignored);
}

} // namespace

http_server::http_server(asio::io_context& io, const tcp::endpoint& endpoint, http_sources sources,
                         http_limits limits)
    : state_(std::make_shared<state>(io, std::move(sources), limits))
{
    tcp::acceptor& acceptor = state_->acceptor;
    acceptor.open(endpoint.protocol());
    acceptor.set_option(tcp::acceptor::reuse_address(true));
    acceptor.bind(endpoint);
    acceptor.listen(asio::socket_base::max_listen_connections);
    local_endpoint_ = acceptor.local_endpoint();
}

http_server::~http_server()
{
    stop();
}

void http_server::start()
{
    asio::co_spawn(state_->acceptor.get_executor(), accept_loop(state_), asio::detached);
}

void http_server::stop()
{
    asio::dispatch(state_->acceptor.get_executor(), [st = state_] { stop_on_loop(*st); });
}

tcp::endpoint http_server::local_endpoint() const
{
    return local_endpoint_;
}

std::size_t http_server::open_connections() const
{
    return state_->connections.size();
}

} // namespace tunneld::daemon
