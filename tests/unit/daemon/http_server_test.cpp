#include "daemon/http_server.hpp"
#include "daemon/metrics.hpp"

#include <atomic>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/post.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/write.hpp>
#include <chrono>
#include <future>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <memory>
#include <optional>
#include <sys/socket.h>
#include <thread>
#include <vector>

namespace tunneld::daemon {
namespace {

namespace beast = boost::beast;
namespace http = beast::http;
using asio::ip::tcp;
using namespace std::chrono_literals;

http_request get(std::string target)
{
    http_request request{http::verb::get, target, 11};
    request.set(http::field::host, "localhost");
    return request;
}

http_sources fixed_sources(std::vector<std::string> reasons = {})
{
    return {
        .status =
            [] {
                return nlohmann::json{{"services", nlohmann::json::array()}};
            },
        .metrics = [] { return std::string("tunneld_paused{service=\"redis\"} 0\n"); },
        .not_ready_reasons = [reasons] { return reasons; },
    };
}

// ---- the pure request handler ----

TEST(HandleHttpRequest, HealthzIsOk)
{
    const auto response = handle_http_request(get("/healthz"), fixed_sources());
    EXPECT_EQ(response.result(), http::status::ok);
    EXPECT_EQ(response.body(), "ok\n");
}

TEST(HandleHttpRequest, ReadyzListsEveryReasonOnItsOwnLine)
{
    EXPECT_EQ(handle_http_request(get("/readyz"), fixed_sources()).result(), http::status::ok);
    const auto response = handle_http_request(
        get("/readyz"), fixed_sources({"redis: new backend unreachable", "tunnel vpc: 0 of 2 sessions up"}));
    EXPECT_EQ(response.result(), http::status::service_unavailable);
    EXPECT_EQ(response.body(), "redis: new backend unreachable\ntunnel vpc: 0 of 2 sessions up\n");
}

TEST(HandleHttpRequest, MetricsUsePrometheusContentType)
{
    const auto response = handle_http_request(get("/metrics"), fixed_sources());
    EXPECT_EQ(response.result(), http::status::ok);
    EXPECT_EQ(response[http::field::content_type], metrics_content_type);
    EXPECT_THAT(std::string(response[http::field::content_type]),
                ::testing::StartsWith("text/plain; version=0.0.4"));
    EXPECT_EQ(response.body(), "tunneld_paused{service=\"redis\"} 0\n");
}

TEST(HandleHttpRequest, StatusIsTheStatusJson)
{
    const auto response = handle_http_request(get("/status"), fixed_sources());
    EXPECT_EQ(response.result(), http::status::ok);
    EXPECT_EQ(response[http::field::content_type], "application/json");
    EXPECT_EQ(nlohmann::json::parse(response.body()),
              (nlohmann::json{{"services", nlohmann::json::array()}}));
}

TEST(HandleHttpRequest, RootIsTheSelfContainedStatusPage)
{
    const auto response = handle_http_request(get("/"), fixed_sources());
    EXPECT_EQ(response.result(), http::status::ok);
    EXPECT_EQ(response[http::field::content_type], "text/html; charset=utf-8");
    EXPECT_EQ(response[http::field::cache_control], "no-store");
    // Everything embedded: the policy lets the page reach nothing but its own origin.
    EXPECT_THAT(std::string(response["Content-Security-Policy"]),
                ::testing::HasSubstr("default-src 'none'"));
    EXPECT_THAT(response.body(), ::testing::HasSubstr("fetch(\"/status\""));
    for (const char* external : {"<script src", "<link", "url(", "@import", "https://"})
        EXPECT_THAT(response.body(), ::testing::Not(::testing::HasSubstr(external))) << external;
}

TEST(HandleHttpRequest, QueryStringIsIgnored)
{
    EXPECT_EQ(handle_http_request(get("/metrics?x=1"), fixed_sources()).result(), http::status::ok);
}

TEST(HandleHttpRequest, UnknownPathIs404AndOtherMethodsAre405)
{
    EXPECT_EQ(handle_http_request(get("/index.html"), fixed_sources()).result(), http::status::not_found);
    EXPECT_EQ(handle_http_request(get("/healthz/x"), fixed_sources()).result(), http::status::not_found);
    auto post = get("/healthz");
    post.method(http::verb::post);
    const auto response = handle_http_request(post, fixed_sources());
    EXPECT_EQ(response.result(), http::status::method_not_allowed);
    EXPECT_EQ(response[http::field::allow], "GET");
}

TEST(HandleHttpRequest, MissingOrThrowingSourcesDoNotCrash)
{
    EXPECT_EQ(handle_http_request(get("/readyz"), {}).result(), http::status::ok);
    EXPECT_EQ(handle_http_request(get("/status"), {}).result(), http::status::service_unavailable);
    EXPECT_EQ(handle_http_request(get("/metrics"), {}).result(), http::status::service_unavailable);
    http_sources throwing{.status = []() -> nlohmann::json { throw std::runtime_error("boom"); }};
    EXPECT_EQ(handle_http_request(get("/status"), throwing).result(), http::status::internal_server_error);
}

TEST(HandleHttpRequest, KeepAliveFollowsTheRequest)
{
    auto request = get("/healthz");
    EXPECT_TRUE(handle_http_request(request, fixed_sources()).keep_alive());
    request.keep_alive(false);
    EXPECT_FALSE(handle_http_request(request, fixed_sources()).keep_alive());
}

// ---- the server on a real loopback socket ----

class HttpServer : public ::testing::Test {
protected:
    void start(http_limits limits = {}, http_sources sources = fixed_sources())
    {
        server_.emplace(io_, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0), std::move(sources),
                        limits);
        server_->start();
        thread_ = std::thread([this] { io_.run(); });
    }

    void TearDown() override
    {
        if (server_) server_->stop();
        work_.reset();
        if (thread_.joinable()) thread_.join();
    }

    /// A blocking client socket whose reads give up after 3 s, so a broken server fails the
    /// test instead of hanging it.
    tcp::socket connect()
    {
        tcp::socket socket(client_io_);
        socket.connect(server_->local_endpoint());
        timeval timeout{.tv_sec = 3, .tv_usec = 0};
        setsockopt(socket.native_handle(), SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
        return socket;
    }

    static http_response exchange(tcp::socket& socket, const http_request& request)
    {
        http::write(socket, request);
        beast::flat_buffer buffer;
        http_response response;
        http::read(socket, buffer, response);
        return response;
    }

    /// True when the server closed `socket` (EOF or reset) within the client's read timeout.
    static bool closed_by_server(tcp::socket& socket)
    {
        char byte;
        boost::system::error_code ec;
        socket.read_some(asio::buffer(&byte, 1), ec);
        return ec == asio::error::eof || ec == asio::error::connection_reset;
    }

    std::size_t open_connections()
    {
        std::promise<std::size_t> count;
        asio::post(io_, [&] { count.set_value(server_->open_connections()); });
        return count.get_future().get();
    }

    asio::io_context io_;
    asio::executor_work_guard<asio::io_context::executor_type> work_ = asio::make_work_guard(io_);
    asio::io_context client_io_;
    std::optional<http_server> server_;
    std::thread thread_;
};

TEST_F(HttpServer, AnswersEveryPathOverOneKeptAliveConnection)
{
    start();
    auto socket = connect();
    EXPECT_EQ(exchange(socket, get("/healthz")).body(), "ok\n");
    EXPECT_EQ(exchange(socket, get("/readyz")).result(), http::status::ok);
    EXPECT_EQ(exchange(socket, get("/metrics")).result(), http::status::ok);
    EXPECT_EQ(exchange(socket, get("/status")).result(), http::status::ok);
    EXPECT_EQ(exchange(socket, get("/nope")).result(), http::status::not_found);
}

TEST_F(HttpServer, ConnectionCloseIsHonoured)
{
    start();
    auto socket = connect();
    auto request = get("/healthz");
    request.keep_alive(false);
    EXPECT_EQ(exchange(socket, request).result(), http::status::ok);
    EXPECT_TRUE(closed_by_server(socket));
}

TEST_F(HttpServer, IdleConnectionIsCutAtTheReadDeadline)
{
    start({.read_timeout = 200ms});
    auto socket = connect();
    const auto begin = std::chrono::steady_clock::now();
    EXPECT_TRUE(closed_by_server(socket));
    EXPECT_LT(std::chrono::steady_clock::now() - begin, 2s);
}

TEST_F(HttpServer, SlowRequestIsCutAtTheReadDeadline)
{
    start({.read_timeout = 300ms});
    auto socket = connect();
    // Half a request, then silence: the deadline covers the whole request, not each byte.
    asio::write(socket, asio::buffer(std::string_view("GET /healthz HTTP/1.1\r\nHost: x\r\n")));
    EXPECT_TRUE(closed_by_server(socket));
}

TEST_F(HttpServer, ConnectionsBeyondTheCapAreClosedAtOnce)
{
    // The deadline is long beside "at once" so that a loaded machine cannot blur the two: the
    // first two must still be open for their requests, the third closed well before it.
    start({.max_connections = 2, .read_timeout = 3s});
    auto first = connect();
    auto second = connect();
    EXPECT_EQ(exchange(first, get("/healthz")).result(), http::status::ok);
    EXPECT_EQ(exchange(second, get("/healthz")).result(), http::status::ok);
    auto third = connect();
    const auto begin = std::chrono::steady_clock::now();
    EXPECT_TRUE(closed_by_server(third));
    EXPECT_LT(std::chrono::steady_clock::now() - begin, 1500ms);
    // Once the idle ones are cut by the deadline, the endpoint answers again.
    EXPECT_TRUE(closed_by_server(first));
    EXPECT_TRUE(closed_by_server(second));
    auto fourth = connect();
    EXPECT_EQ(exchange(fourth, get("/healthz")).result(), http::status::ok);
}

TEST_F(HttpServer, AnswersWhileFiveHundredIdleConnectionsAreOpen)
{
    start();
    std::vector<tcp::socket> idle;
    for (int i = 0; i < 500; ++i)
        idle.push_back(connect());
    auto fresh = connect();
    EXPECT_EQ(exchange(fresh, get("/healthz")).body(), "ok\n");
    EXPECT_EQ(exchange(fresh, get("/metrics")).result(), http::status::ok);
    EXPECT_EQ(open_connections(), 501u);
}

TEST_F(HttpServer, StopClosesListenerAndConnections)
{
    start();
    auto socket = connect();
    EXPECT_EQ(exchange(socket, get("/healthz")).result(), http::status::ok);
    server_->stop();
    EXPECT_TRUE(closed_by_server(socket));
    tcp::socket late(client_io_);
    boost::system::error_code ec;
    late.connect(server_->local_endpoint(), ec);
    EXPECT_TRUE(ec);
}

TEST_F(HttpServer, SourcesRunOnTheServerThread)
{
    std::atomic<std::thread::id> seen{};
    http_sources sources = fixed_sources();
    sources.not_ready_reasons = [&] {
        seen = std::this_thread::get_id();
        return std::vector<std::string>{"tunnel vpc: down"};
    };
    start({}, sources);
    auto socket = connect();
    const auto response = exchange(socket, get("/readyz"));
    EXPECT_EQ(response.result(), http::status::service_unavailable);
    EXPECT_EQ(response.body(), "tunnel vpc: down\n");
    EXPECT_EQ(seen.load(), thread_.get_id());
}

} // namespace
} // namespace tunneld::daemon
