// Calls to etcd's JSON gateway over HTTP/1.1 keep-alive connections: a call takes an idle
// connection to the endpoint (or opens one) and gives it back only after a whole reply with
// nothing left over, so a half-read reply never reaches the next call. A fleet switch makes many
// calls in a row; a new TCP (and TLS) connection for each cost more than the call.
#include "fleet/etcd_client.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/ssl/host_name_verification.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/buffer_body.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>
#include <boost/beast/ssl/ssl_stream.hpp>
#include <cerrno>
#include <fstream>
#include <sys/socket.h>
#include <sstream>

namespace tunneld::fleet::etcd {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace ssl = asio::ssl;
using asio::awaitable;
using asio::ip::tcp;
constexpr auto use_tuple = asio::as_tuple(asio::use_awaitable);

namespace {

constexpr std::size_t max_reply = 64 * 1024 * 1024; ///< a range of a fleet's keys is far smaller
constexpr std::size_t max_watch_line = 16 * 1024 * 1024;

/// One connection to one endpoint, plain or TLS; the same calls either way.
class connection {
public:
    connection(const asio::any_io_executor& executor, ssl::context* tls)
    {
        if (tls)
            tls_.emplace(executor, *tls);
        else
            plain_.emplace(executor);
    }

    beast::tcp_stream& lowest() { return tls_ ? beast::get_lowest_layer(*tls_) : *plain_; }

    /// Connects (and for TLS, handshakes, checking the certificate names `host`) by `deadline`.
    awaitable<error> open(const config::etcd_endpoint& endpoint, clock::time_point deadline)
    {
        tcp::resolver resolver(lowest().get_executor());
        // Named outside co_await: g++ 12 destroys a co_await expression's temporaries twice (PR 100611).
        const std::string port = std::to_string(endpoint.address.port);
        const auto [rec, addresses] = co_await resolver.async_resolve(endpoint.address.host, port, use_tuple);
        if (rec) co_return error{errc::unreachable, endpoint.to_string() + ": " + rec.message()};
        lowest().expires_at(deadline);
        const auto [cec, _] = co_await lowest().async_connect(addresses, use_tuple);
        if (cec) co_return error{errc::unreachable, endpoint.to_string() + ": " + cec.message()};
        lowest().socket().set_option(tcp::no_delay(true));
        if (!tls_) co_return error{};
        if (!SSL_set_tlsext_host_name(tls_->native_handle(), endpoint.address.host.c_str()))
            co_return error{errc::tls, endpoint.to_string() + ": cannot set SNI"};
        tls_->set_verify_callback(ssl::host_name_verification(endpoint.address.host));
        const auto [hec] = co_await tls_->async_handshake(ssl::stream_base::client, use_tuple);
        if (hec) co_return error{errc::tls, endpoint.to_string() + ": handshake: " + hec.message()};
        co_return error{};
    }

    awaitable<std::tuple<boost::system::error_code, std::size_t>>
    write(const http::request<http::string_body>& request)
    {
        if (tls_) co_return co_await http::async_write(*tls_, request, use_tuple);
        co_return co_await http::async_write(*plain_, request, use_tuple);
    }

    template <class Parser>
    awaitable<std::tuple<boost::system::error_code, std::size_t>> read(beast::flat_buffer& buffer, Parser& parser)
    {
        if (tls_) co_return co_await http::async_read(*tls_, buffer, parser, use_tuple);
        co_return co_await http::async_read(*plain_, buffer, parser, use_tuple);
    }

    /// Whatever part of the message has arrived (a streamed body is never "done" until it ends).
    template <class Parser>
    awaitable<std::tuple<boost::system::error_code, std::size_t>> read_some(beast::flat_buffer& buffer, Parser& parser)
    {
        if (tls_) co_return co_await http::async_read_some(*tls_, buffer, parser, use_tuple);
        co_return co_await http::async_read_some(*plain_, buffer, parser, use_tuple);
    }

    template <class Parser>
    awaitable<std::tuple<boost::system::error_code, std::size_t>> read_header(beast::flat_buffer& buffer,
                                                                               Parser& parser)
    {
        if (tls_) co_return co_await http::async_read_header(*tls_, buffer, parser, use_tuple);
        co_return co_await http::async_read_header(*plain_, buffer, parser, use_tuple);
    }

private:
    std::optional<beast::tcp_stream> plain_;
    std::optional<beast::ssl_stream<beast::tcp_stream>> tls_;
};

struct http_reply {
    unsigned status = 0;
    std::string body;
};

bool expired(const boost::system::error_code& ec) { return ec == beast::error::timeout; }

} // namespace

client_options options_for(const config::fleet_config& fleet)
{
    client_options options;
    options.endpoints = fleet.etcd;
    options.ca_file = fleet.ca_file;
    options.cert_file = fleet.cert_file;
    options.key_file = fleet.key_file;
    options.credentials_file = fleet.credentials_file;
    return options;
}

struct client::impl {
    asio::any_io_executor executor;
    client_options options;
    std::optional<ssl::context> tls;
    std::string token;         ///< empty until authenticated (or without credentials)
    std::size_t preferred = 0; ///< the endpoint that answered last: tried first
    /// Connections that carried a whole reply, by endpoint index, newest last.
    std::vector<std::pair<std::size_t, std::unique_ptr<connection>>> idle;
    static constexpr std::size_t max_idle = 4;

    impl(asio::any_io_executor e, client_options o) : executor(std::move(e)), options(std::move(o))
    {
        if (options.endpoints.empty()) throw std::invalid_argument("etcd client needs at least one endpoint");
        const bool any_tls =
            std::any_of(options.endpoints.begin(), options.endpoints.end(), [](auto& e) { return e.tls; });
        if (!any_tls) return;
        tls.emplace(ssl::context::tls_client);
        tls->set_verify_mode(ssl::verify_peer);
        boost::system::error_code ec;
        const auto check = [&](const char* what, const std::filesystem::path& file) {
            if (ec) throw std::runtime_error(std::string("etcd ") + what + " " + file.string() + ": " + ec.message());
        };
        if (options.ca_file) {
            tls->load_verify_file(options.ca_file->string(), ec);
            check("ca_file", *options.ca_file);
        } else {
            tls->set_default_verify_paths(ec);
            check("default CA paths", "");
        }
        if (options.cert_file && options.key_file) {
            tls->use_certificate_chain_file(options.cert_file->string(), ec);
            check("cert_file", *options.cert_file);
            tls->use_private_key_file(options.key_file->string(), ssl::context::pem, ec);
            check("key_file", *options.key_file);
        }
    }

    http::request<http::string_body> make_request(const config::etcd_endpoint& endpoint, std::string_view path,
                                                  const std::string& body, const std::string& with_token) const
    {
        http::request<http::string_body> request{http::verb::post, path, 11};
        request.set(http::field::host, endpoint.address.to_string());
        request.set(http::field::content_type, "application/json");
        request.set(http::field::user_agent, "tunneld");
        if (!with_token.empty()) request.set(http::field::authorization, with_token);
        request.keep_alive(true);
        request.body() = body;
        request.prepare_payload();
        return request;
    }

    /// Sends `body` to `path` on one endpoint after another until one answers with any HTTP
    /// reply or `deadline` passes. A request that was sent is sent again elsewhere only when
    /// `idempotent`: a write whose answer was lost may have applied.
    awaitable<result<http_reply>> send(std::string_view path, const std::string& body, bool idempotent,
                                       clock::time_point deadline, const std::string& with_token)
    {
        error last{errc::unreachable, "no endpoint tried"};
        bool sent_once = false;
        const std::size_t n = options.endpoints.size();
        for (std::size_t round = 0;; ++round) {
            for (std::size_t k = 0; k < n; ++k) {
                if (clock::now() >= deadline) {
                    if (sent_once) last.code = errc::timeout;
                    co_return last;
                }
                const std::size_t index = (preferred + k) % n;
                const config::etcd_endpoint& endpoint = options.endpoints[index];
                std::unique_ptr<connection> conn = take_idle(index);
                if (conn) {
                    conn->lowest().expires_at(deadline);
                } else {
                    conn = std::make_unique<connection>(executor, tls ? &*tls : nullptr);
                    if (error e = co_await conn->open(endpoint, deadline); e.code) {
                        last = std::move(e);
                        continue;
                    }
                }
                sent_once = true;
                http_reply reply;
                bool reusable = false;
                const error e = co_await exchange(*conn, endpoint, path, body, with_token, reply, reusable);
                if (!e.code) {
                    preferred = index;
                    if (reusable) give_back(index, std::move(conn));
                    co_return reply;
                }
                // The endpoint may have restarted: its other idle connections are as dead.
                std::erase_if(idle, [index](const auto& c) { return c.first == index; });
                if (!idempotent)
                    co_return error{errc::outcome_unknown, endpoint.to_string() + ": " + e.detail};
                last = e;
            }
            // Every endpoint refused: etcd may be restarting. Pause briefly rather than spin.
            asio::steady_timer pause(executor);
            pause.expires_at(std::min(deadline, clock::now() + options.retry_pause));
            co_await pause.async_wait(use_tuple);
        }
    }

    /// The newest idle connection to endpoint `index` that etcd has not closed (a restarted etcd
    /// closed them all: each would fail a write as outcome_unknown); nullptr: none.
    std::unique_ptr<connection> take_idle(std::size_t index)
    {
        for (auto it = idle.rbegin(); it != idle.rend();) {
            if (it->first != index) {
                ++it;
                continue;
            }
            auto conn = std::move(it->second);
            it = decltype(it)(idle.erase(std::next(it).base()));
            // An idle connection has nothing to read: readable means closed (EOF, reset, close_notify).
            char byte = 0;
            const auto n = ::recv(conn->lowest().socket().native_handle(), &byte, 1, MSG_PEEK | MSG_DONTWAIT);
            if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return conn;
        }
        return nullptr;
    }

    void give_back(std::size_t index, std::unique_ptr<connection> conn)
    {
        conn->lowest().expires_never();
        idle.emplace_back(index, std::move(conn));
        if (idle.size() > max_idle) idle.erase(idle.begin());
    }

    awaitable<error> exchange(connection& conn, const config::etcd_endpoint& endpoint, std::string_view path,
                              const std::string& body, const std::string& with_token, http_reply& reply,
                              bool& reusable)
    {
        const auto request = make_request(endpoint, path, body, with_token);
        if (const auto [wec, _] = co_await conn.write(request); wec)
            co_return error{expired(wec) ? errc::timeout : errc::unreachable, "write: " + wec.message()};
        beast::flat_buffer buffer;
        http::response_parser<http::string_body> parser;
        parser.body_limit(max_reply);
        if (const auto [rec, _] = co_await conn.read(buffer, parser); rec)
            co_return error{expired(rec) ? errc::timeout : errc::unreachable, "read: " + rec.message()};
        reply.status = parser.get().result_int();
        reusable = parser.keep_alive() && buffer.size() == 0;
        reply.body = std::move(parser.get().body());
        co_return error{};
    }

    awaitable<error> authenticate(clock::time_point deadline)
    {
        std::ifstream in(*options.credentials_file);
        std::ostringstream text;
        text << in.rdbuf();
        if (!in) co_return error{errc::auth_failed, "cannot read credentials_file " + options.credentials_file->string()};
        const auto credentials = parse_credentials(text.str());
        if (!credentials)
            co_return error{errc::auth_failed, "credentials_file " + options.credentials_file->string() +
                                                   ": first line must be \"user password\""};
        const std::string body = encode_authenticate(credentials->first, credentials->second);
        const std::string no_token;
        auto reply = co_await send("/v3/auth/authenticate", body, true, deadline, no_token);
        if (!reply) co_return reply.err();
        if (reply->status != 200) {
            error e = decode_error(reply->status, reply->body);
            if (e.code != errc::auth_failed) e.detail = "authenticate: " + e.detail;
            co_return e;
        }
        auto decoded = decode_token(reply->body);
        if (!decoded) co_return decoded.err();
        token = std::move(*decoded);
        co_return error{};
    }

    /// One call: authenticates first when needed, and once more if the token has expired.
    awaitable<result<std::string>> call(std::string_view path, std::string body, bool idempotent,
                                        clock::time_point deadline)
    {
        for (bool fresh_token = false;;) {
            if (options.credentials_file && token.empty()) {
                if (error e = co_await authenticate(deadline); e.code) co_return e;
                fresh_token = true;
            }
            auto reply = co_await send(path, body, idempotent, deadline, token);
            if (!reply) co_return reply.err();
            if (reply->status == 200) co_return std::move(reply->body);
            error e = decode_error(reply->status, reply->body);
            // etcd checks the token before applying anything: a refused write can be sent again.
            if (e.code == errc::invalid_token && options.credentials_file && !fresh_token) {
                token.clear();
                continue;
            }
            co_return e;
        }
    }

    awaitable<error> watch(const watch_create& request, const std::function<void(const watch_message&)>& on_message,
                           clock::time_point deadline, std::chrono::milliseconds stall_timeout, watch_handle& handle)
    {
        for (bool fresh_token = false;;) {
            if (options.credentials_file && token.empty()) {
                if (error e = co_await authenticate(deadline); e.code) co_return e;
                fresh_token = true;
            }
            error e = co_await watch_once(request, on_message, deadline, stall_timeout, handle);
            if (e.code == errc::invalid_token && options.credentials_file && !fresh_token) {
                token.clear();
                continue;
            }
            co_return e;
        }
    }

    awaitable<error> watch_once(const watch_create& request,
                                const std::function<void(const watch_message&)>& on_message,
                                clock::time_point deadline, std::chrono::milliseconds stall_timeout,
                                watch_handle& handle)
    {
        const std::size_t n = options.endpoints.size();
        error last{errc::unreachable, "no endpoint tried"};
        for (std::size_t k = 0; k < n && !handle.stopped; ++k) {
            const std::size_t index = (preferred + k) % n;
            const config::etcd_endpoint& endpoint = options.endpoints[index];
            connection conn(executor, tls ? &*tls : nullptr);
            handle.abort = [&conn] { conn.lowest().cancel(); };
            struct clear_abort {
                watch_handle& h;
                ~clear_abort() { h.abort = nullptr; }
            } guard{handle};
            if (error e = co_await conn.open(endpoint, deadline); e.code) {
                last = std::move(e);
                continue;
            }
            preferred = index;
            co_return co_await stream(conn, endpoint, request, on_message, deadline, stall_timeout, handle);
        }
        if (handle.stopped) co_return error{std::make_error_code(std::errc::operation_canceled), "watch stopped"};
        co_return last;
    }

    awaitable<error> stream(connection& conn, const config::etcd_endpoint& endpoint, const watch_create& request,
                            const std::function<void(const watch_message&)>& on_message, clock::time_point deadline,
                            std::chrono::milliseconds stall_timeout, watch_handle& handle)
    {
        auto failed = [&](const boost::system::error_code& ec, std::string_view what) {
            if (handle.stopped) return error{std::make_error_code(std::errc::operation_canceled), "watch stopped"};
            if (expired(ec))
                return error{errc::timeout, endpoint.to_string() + ": watch stream stalled (no message in " +
                                                std::to_string(stall_timeout.count()) + "ms)"};
            return error{errc::unreachable, endpoint.to_string() + ": watch " + std::string(what) + ": " + ec.message()};
        };
        const auto watch_request = make_request(endpoint, "/v3/watch", encode(request), token);
        if (const auto [wec, _] = co_await conn.write(watch_request); wec)
            co_return failed(wec, "write");
        beast::flat_buffer buffer;
        http::response_parser<http::buffer_body> parser;
        parser.body_limit(boost::none);
        if (const auto [hec, _] = co_await conn.read_header(buffer, parser); hec) co_return failed(hec, "read");
        const unsigned status = parser.get().result_int();
        line_buffer lines;
        std::string failure_body;
        std::array<char, 16 * 1024> chunk;
        for (;;) {
            parser.get().body().data = chunk.data();
            parser.get().body().size = chunk.size();
            conn.lowest().expires_after(status == 200 ? stall_timeout : deadline - clock::now());
            auto [ec, _] = co_await conn.read_some(buffer, parser);
            if (ec == http::error::need_buffer) ec = {};
            const std::string_view got(chunk.data(), chunk.size() - parser.get().body().size);
            if (status != 200) {
                failure_body.append(got);
                if (ec || parser.is_done() || failure_body.size() > 65536) co_return decode_error(status, failure_body);
                continue;
            }
            lines.append(got);
            while (auto line = lines.next()) {
                auto message = decode_watch_message(*line);
                if (!message) co_return message.err();
                on_message(*message);
                if (handle.stopped) co_return error{std::make_error_code(std::errc::operation_canceled), "watch stopped"};
                if (message->canceled) {
                    if (message->compact_revision > 0)
                        co_return error{errc::compacted,
                                        "watch start compacted; oldest revision " +
                                            std::to_string(message->compact_revision)};
                    co_return error{errc::watch_canceled, message->cancel_reason};
                }
            }
            if (lines.pending() > max_watch_line) co_return error{errc::malformed_reply, "watch line too long"};
            if (ec) co_return failed(ec, "read");
            if (parser.is_done()) co_return error{errc::unreachable, endpoint.to_string() + ": watch stream ended"};
        }
    }
};

client::client(asio::any_io_executor executor, client_options options)
    : impl_(std::make_shared<impl>(std::move(executor), std::move(options)))
{
}

client::~client() = default;

asio::any_io_executor client::get_executor() const { return impl_->executor; }
const client_options& client::options() const { return impl_->options; }

template <class T>
awaitable<result<T>> client::call(std::string_view path, std::string body, bool idempotent,
                                  clock::time_point deadline, result<T> (*decode)(std::string_view))
{
    auto reply = co_await impl_->call(path, std::move(body), idempotent, deadline);
    if (!reply) co_return reply.err();
    co_return decode(*reply);
}

awaitable<result<range_response>> client::range(range_request request, clock::time_point deadline)
{
    return call<range_response>("/v3/kv/range", encode(request), true, deadline, decode_range);
}

awaitable<result<put_response>> client::put(put_request request, clock::time_point deadline)
{
    return call<put_response>("/v3/kv/put", encode(request), false, deadline, decode_put);
}

awaitable<result<delete_response>> client::erase(delete_request request, clock::time_point deadline)
{
    return call<delete_response>("/v3/kv/deleterange", encode(request), false, deadline,
                                            decode_delete);
}

awaitable<result<txn_response>> client::txn(txn_request request, clock::time_point deadline)
{
    return call<txn_response>("/v3/kv/txn", encode(request), false, deadline, decode_txn);
}

awaitable<result<lease_grant_response>> client::lease_grant(std::chrono::seconds ttl, clock::time_point deadline)
{
    // A grant whose answer is lost leaves a lease that expires by itself: safe to send again.
    return call<lease_grant_response>("/v3/lease/grant", encode_lease_grant(ttl.count()), true,
                                                 deadline, decode_lease_grant);
}

awaitable<result<lease_keep_alive_response>> client::lease_keep_alive(std::int64_t id, clock::time_point deadline)
{
    return call<lease_keep_alive_response>("/v3/lease/keepalive", encode_lease_id(id), true,
                                                      deadline, decode_lease_keep_alive);
}

awaitable<result<empty>> client::lease_revoke(std::int64_t id, clock::time_point deadline)
{
    return call<empty>("/v3/lease/revoke", encode_lease_id(id), true, deadline, decode_empty);
}

awaitable<result<empty>> client::compact(std::int64_t revision, clock::time_point deadline)
{
    return call<empty>("/v3/kv/compaction",
                                  R"({"revision":")" + std::to_string(revision) + R"(","physical":true})", true,
                                  deadline, decode_empty);
}

awaitable<error> client::watch(watch_create request, std::function<void(const watch_message&)> on_message,
                               clock::time_point deadline, std::chrono::milliseconds stall_timeout,
                               watch_handle& handle)
{
    auto self = impl_;
    co_return co_await self->watch(request, on_message, deadline, stall_timeout, handle);
}

} // namespace tunneld::fleet::etcd
