#pragma once
// The pumps of a kind = "redis" client: the bytes flow as in pump_both, followed by the client's
// redis_session, and a switch can move the client. Given a move order, the client is held at its
// next request boundary with no reply outstanding (the bytes of its next request stay here,
// unsent); told to move, the pumps end with close_reason::moved and the caller connects the
// client to the other side, where the pumps replay the session state, checking each reply,
// before they forward the held request. Once held, the pumps open that connection and replay
// the session ahead (proxy/redis_prepare.hpp), so the move finds it ready. Told to go on
// (move_order::none), they close it and go on where they are. Nothing here knows which side is
// which.

#include "config/config.hpp"
#include "proxy/client_outcome.hpp"
#include "proxy/pump.hpp"
#include "proxy/redis_prepare.hpp"
#include "proxy/redis_session.hpp"
#include "proxy/registry.hpp"
#include "proxy/service.hpp"

#include <algorithm>
#include <array>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <chrono>
#include <memory>
#include <optional>
#include <span>
#include <spdlog/spdlog.h>
#include <string>

namespace tunneld::proxy {

/// What follows a redis client from one backend to the next: its session, and the client bytes
/// read but not yet forwarded (the request held at a move), and its next backend connection
/// while a held client waits for its move. Lives as long as the client.
struct redis_carry {
    redis_carry(std::size_t buffer_size, tunnel_lookup tunnel_pools)
        : buffer(std::make_unique_for_overwrite<char[]>(buffer_size)), size(buffer_size),
          tunnels(std::move(tunnel_pools))
    {
    }
    redis_carry(const redis_carry&) = delete;
    redis_carry& operator=(const redis_carry&) = delete;
    /// An AUTH or HELLO passed through the buffer: wipe what was used, and only that, so an
    /// idle client's untouched pages stay untouched.
    ~redis_carry() { wipe_bytes(buffer.get(), used); }

    std::string_view pending() const { return {buffer.get() + begin, end - begin}; }

    redis_session session;
    const std::unique_ptr<char[]> buffer; ///< client -> backend; not zero-filled
    const std::size_t size;
    std::size_t used = 0;  ///< high-water mark of buffer use
    std::size_t begin = 0; ///< pending bytes: [begin, end) of buffer
    std::size_t end = 0;
    bool replay_due = false; ///< moved: replay the session state before anything else
    /// Held for a move: the backend connection on the other side, opened and replayed ahead
    /// (touched on the pumps' thread until done; then the move's path takes it).
    std::shared_ptr<prepared_backend> prepared;
    bool replayed_ahead = false; ///< replay_due, and the backend is `prepared`'s: nothing to replay
    const tunnel_lookup tunnels; ///< for opening the prepared backend through a tunnel
    std::chrono::steady_clock::time_point held_since{};
    bool not_resp_logged = false;
};

/// The backend a move connects `carry`'s client to on side `to`, if one was opened and replayed
/// during its hold (through a tunnel: a channel; directly: a socket); the carry then skips the
/// replay. Whatever else was prepared is closed. nullptr: connect and replay as usual.
inline std::shared_ptr<prepared_backend> take_prepared(redis_carry* carry, side to, bool via_tunnel)
{
    if (!carry || !carry->prepared) return nullptr;
    auto prepared = std::move(carry->prepared);
    if (!prepared->ready() || prepared->to != to || (via_tunnel ? !prepared->channel : !prepared->socket))
        return nullptr; // its destructor closes it
    carry->replayed_ahead = true;
    return prepared;
}

/// Asked of the backend ahead of a client's first requests on a connection, so a switch can
/// unblock the client (CLIENT UNBLOCK id TIMEOUT) before its server turns replica.
inline constexpr std::string_view client_id_request = "*2\r\n$6\r\nCLIENT\r\n$2\r\nID\r\n";

/// Sends `commands` on `backend` and checks each reply within `timeout`, reading into `buffer`.
/// nullopt when the backend accepted all of it; otherwise why not, one line without any secret
/// (the server's error is about the command, never its arguments).
template <class Backend>
asio::awaitable<std::optional<std::string>> replay_session(Backend& backend, const replay& commands,
                                                           std::span<char> buffer, config::duration timeout)
{
    using asio::as_tuple;
    using asio::use_awaitable;
    if (commands.empty()) co_return std::nullopt;
    asio::steady_timer deadline(co_await asio::this_coro::executor);
    deadline.expires_after(timeout);
    bool timed_out = false;
    deadline.async_wait([&](boost::system::error_code ec) {
        if (ec) return;
        timed_out = true;
        close_all(backend);
    });
    struct cancel_guard {
        asio::steady_timer& timer;
        ~cancel_guard() { timer.cancel(); }
    } guard{deadline};

    auto [write_ec, written] =
        co_await asio::async_write(backend, asio::buffer(commands.bytes()), as_tuple(use_awaitable));
    if (write_ec) co_return timed_out ? "no answer to the replay in time" : "replay: " + write_ec.message();
    reply_framer replies;
    std::string_view rest;
    for (const replay_step& step : commands.steps()) {
        for (;;) {
            if (rest.empty()) {
                auto [read_ec, n] = co_await backend.async_read_some(asio::buffer(buffer), as_tuple(use_awaitable));
                if (timed_out) co_return "no answer to the replay in time";
                if (read_ec) co_return "replay: " + read_ec.message();
                rest = std::string_view(buffer.data(), n);
            }
            const framer_step fed = replies.feed(rest);
            rest.remove_prefix(fed.consumed);
            if (replies.error() != resp_error::none)
                co_return std::string("replay: the backend's answer is not RESP: ") +
                    std::string(to_string(replies.error()));
            if (fed.frame_ended && !replies.last().is_push()) break;
        }
        const reply_view reply = replies.last();
        if (!replay_accepted(step, reply))
            co_return std::string(to_string(step.command)) + " refused: " +
                (reply.head.empty() ? std::string("unexpected answer") : std::string(reply.head));
    }
    if (!rest.empty()) co_return "replay: the backend answered more than was asked";
    co_return std::nullopt;
}

/// pump_both for a redis client (see the file comment). Fills the outcome's bytes and reason:
/// close_reason::moved when the client is to be connected to `handle.move_target()`.
template <class Backend>
asio::awaitable<void> pump_redis(asio::ip::tcp::socket& client, Backend& backend, client_handle& handle,
                                 const config::service_config& settings, service_counters& counters,
                                 client_outcome& outcome, redis_carry& carry)
{
    using asio::as_tuple;
    using asio::use_awaitable;
    const auto executor = co_await asio::this_coro::executor;
    redis_session& session = carry.session;
    asio::steady_timer wake(executor, asio::steady_timer::time_point::max());
    bool moving = false;         // told to move and at a boundary: both pumps end
    bool holding = false;        // the up pump stopped before the request in carry.pending()
    bool reading_client = false; // the up pump waits for client bytes (none pending)
    bool down_writing = false;
    bool down_done = false;
    std::optional<std::chrono::steady_clock::time_point> quiet_since; // first reported held
    // The backend's CLIENT ID: asked (pipelined before the client's requests) the first time
    // nothing is outstanding on this connection, so the next reply is its answer; the down pump
    // takes that reply out of the stream. Why not only before a blocking command: a client
    // that sends BRPOP while earlier replies are still outstanding (a pipeline spread over
    // several writes) never has such a moment then, and could not be unblocked at a switch.
    // Refused with NOAUTH (asked before the client's AUTH): asked again, a few times; refused
    // otherwise (an ACL without CLIENT ID): not again.
    enum class id_query : std::uint8_t { unknown, asked, known, given_up };
    id_query backend_id = id_query::unknown;
    int id_refusals = 0;
    constexpr int id_refusals_allowed = 3;
    reply_framer id_reply;
    handle.set_backend_id(-1);
    handle.on_cut([&] {
        close_all(client);
        close_all(backend);
        wake.cancel();
    });
    if (handle.was_cut()) close_all(client);

    // Not zero-filled: the pages of an idle client's buffer are never touched, so never resident.
    const auto down_storage = std::make_unique_for_overwrite<char[]>(settings.buffer_size);
    const std::span<char> down_buffer(down_storage.get(), settings.buffer_size);

    if (carry.replay_due) {
        const replay commands = session.make_replay();
        std::optional<std::string> refused;
        if (!carry.replayed_ahead)
            refused = co_await replay_session(backend, commands, down_buffer, settings.connect_timeout);
        else
            counters.moves_ready_ahead.fetch_add(1, std::memory_order_relaxed);
        carry.replay_due = false;
        counters.moves_in_flight.fetch_sub(1, std::memory_order_relaxed);
        if (refused) {
            handle.on_cut(nullptr);
            outcome.reason = handle.was_cut() ? handle.cut_reason() : close_reason::replay_refused;
            outcome.detail = std::move(*refused);
            counters.clients_move_failed.fetch_add(1, std::memory_order_relaxed);
            co_return;
        }
        counters.clients_moved.fetch_add(1, std::memory_order_relaxed);
        const auto held = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() -
                                                                                carry.held_since);
        spdlog::info("client={} service={} moved to={} held_ms={} replayed={} ahead={}", handle.id(),
                     settings.name, to_string(handle.current_side()), held.count(), commands.steps().size(),
                     carry.replayed_ahead ? "yes" : "no");
        carry.replayed_ahead = false;
    }

    auto log_not_resp_once = [&] {
        // Why not pinned(): this runs on every read, and the two errors are what it would check first.
        if (carry.not_resp_logged ||
            (session.client_error() == resp_error::none && session.backend_error() == resp_error::none))
            return;
        carry.not_resp_logged = true;
        const bool from_client = session.client_error() != resp_error::none;
        spdlog::info("client={} service={} not_movable=not_resp from={} error={}", handle.id(), settings.name,
                     from_client ? "client" : "backend",
                     to_string(from_client ? session.client_error() : session.backend_error()));
    };

    // Held for a move: open the other side's connection and replay the session there now, while
    // that side is still a replica, so the move itself only forwards the held request.
    auto prepare = [&](auto& again) {
        auto p = std::make_shared<prepared_backend>();
        p->to = handle.move_target();
        p->on_done = again;
        carry.prepared = p;
        const config::backend& target = p->to == side::old_side ? settings.old_backend : settings.new_backend;
        asio::co_spawn(executor,
                       prepare_backend(std::move(p), session.make_replay(), target, settings.connect_timeout,
                                       carry.tunnels),
                       asio::detached);
    };
    // Runs on this thread: after a new order, after each reply is written to the client, and
    // while the up pump holds.
    std::function<void()> evaluate;
    evaluate = [&] {
        const move_order order = handle.current_order();
        if (order == move_order::none) {
            abandon(carry.prepared);
            handle.report(false, session.pinned());
            if (holding) {
                holding = false;
                wake.cancel();
            }
            return;
        }
        const bool quiet = (holding || (reading_client && carry.pending().empty())) && !down_writing &&
                           session.movable();
        handle.report(quiet, session.pinned());
        if (quiet && !quiet_since) quiet_since = std::chrono::steady_clock::now();
        if (quiet && order == move_order::hold && !carry.prepared) prepare(evaluate);
        // A preparation in flight is waited for (it is bounded by connect_timeout): it calls
        // evaluate when it ends, ready or not.
        const bool preparing = carry.prepared && !carry.prepared->done;
        if (quiet && order == move_order::move && !moving && !preparing) {
            moving = true;
            close_all(backend);
            if (reading_client) {
                boost::system::error_code ignored;
                client.cancel(ignored);
            }
            wake.cancel();
        }
    };
    handle.on_order(evaluate);
    if (handle.current_order() != move_order::none) evaluate();

    prepare_for_write_at_once(client);
    prepare_for_write_at_once(backend);
    [[maybe_unused]] const auto client_resets = tunnel::watch_resets(client);
    [[maybe_unused]] const auto backend_resets = tunnel::watch_resets(backend);
    const std::span<char> up_buffer(carry.buffer.get(), carry.size);
    auto up = [&]() -> asio::awaitable<pump_end> {
        for (;;) {
            if (carry.pending().empty()) {
                if (moving) co_return pump_end::eof;
                carry.begin = carry.end = 0;
                reading_client = true;
                auto [read_ec, n] = co_await client.async_read_some(tunnel::drained(asio::buffer(up_buffer)), as_tuple(use_awaitable));
                reading_client = false;
                carry.end = n;
                carry.used = std::max(carry.used, n);
                if (read_ec && n == 0) {
                    if (moving) co_return pump_end::eof;
                    if (read_ec == asio::error::eof) {
                        close_write(backend);
                        co_return pump_end::eof;
                    }
                    co_return pump_end::read_error;
                }
            }
            // Forward whole requests up to the hold point, if there is a move order.
            const std::string_view pending = carry.pending();
            std::size_t forward = 0;
            // Cheapest test first: a pipelining client rarely has nothing outstanding.
            // Whatever the batch opens (a transaction, a subscription) comes after the answer.
            const bool ask_id =
                backend_id == id_query::unknown && session.outstanding() == 0 && session.movable();
            while (!moving && forward < pending.size()) {
                if (handle.current_order() != move_order::none && session.can_hold()) {
                    holding = true;
                    break;
                }
                forward += session.on_client_bytes(pending.substr(forward)).consumed;
            }
            log_not_resp_once();
            if (forward > 0) {
                write_progress sent;
                if (ask_id) {
                    backend_id = id_query::asked;
                    const std::array<asio::const_buffer, 2> request{asio::buffer(client_id_request),
                                                                    asio::buffer(pending.data(), forward)};
                    auto [ec, all_written] = co_await asio::async_write(backend, request, as_tuple(use_awaitable));
                    sent.ec = ec;
                    sent.written = all_written > client_id_request.size() ? all_written - client_id_request.size() : 0;
                } else {
                    // One buffer: send(), not the sendmsg() a buffer sequence costs on every request.
                    const std::string_view request = pending.substr(0, forward);
                    sent = write_at_once(backend, request);
                    if (sent.unfinished(forward)) co_await write_rest(backend, request, sent);
                }
                outcome.bytes_up += sent.written;
                counters.bytes_up.fetch_add(sent.written, std::memory_order_relaxed);
                carry.begin += forward;
                // A move closes the old backend: a write cut short by it is no client error.
                if (sent.ec) co_return moving ? pump_end::eof : pump_end::write_error;
            }
            while (holding && !moving && !down_done && !handle.was_cut()) {
                evaluate();
                if (!holding || moving) break;
                wake.expires_at(asio::steady_timer::time_point::max());
                co_await wake.async_wait(as_tuple(use_awaitable));
            }
            if (moving) co_return pump_end::eof;
            if (handle.was_cut()) co_return pump_end::read_error;
            if (holding && down_done) co_return pump_end::eof; // the backend left while the client was held
        }
    };
    auto down = [&]() -> asio::awaitable<pump_end> {
        for (;;) {
            auto [read_ec, n] = co_await backend.async_read_some(tunnel::drained(asio::buffer(down_buffer)), as_tuple(use_awaitable));
            if (moving) co_return pump_end::eof;
            if (read_ec == asio::error::eof) {
                close_write(client);
                co_return pump_end::eof;
            }
            if (read_ec) co_return pump_end::read_error;
            std::string_view reply(down_buffer.data(), n);
            if (backend_id == id_query::asked) {
                // The first bytes answer tunneld's CLIENT ID: not the client's.
                const framer_step step = id_reply.feed(reply);
                if (id_reply.error() != resp_error::none) {
                    backend_id = id_query::given_up; // the session sees the same garbage and says so
                } else {
                    reply.remove_prefix(step.consumed);
                    if (step.frame_ended) {
                        const reply_view answer = id_reply.last();
                        if (answer.type == resp_type::integer)
                            backend_id = id_query::known;
                        else if (answer.head.starts_with("NOAUTH") && ++id_refusals < id_refusals_allowed)
                            backend_id = id_query::unknown; // asked again once the client authenticated
                        else
                            backend_id = id_query::given_up;
                        if (backend_id == id_query::known) handle.set_backend_id(answer.length);
                        spdlog::debug("client={} service={} backend_client_id={}", handle.id(), settings.name,
                                      backend_id == id_query::known ? std::to_string(answer.length) : "refused");
                    }
                }
                if (reply.empty()) continue;
            }
            session.observe_backend(reply);
            log_not_resp_once();
            down_writing = true;
            auto sent = write_at_once(client, reply);
            if (sent.unfinished(reply.size())) co_await write_rest(client, reply, sent);
            down_writing = false;
            outcome.bytes_down += sent.written;
            counters.bytes_down.fetch_add(sent.written, std::memory_order_relaxed);
            if (sent.ec) co_return pump_end::write_error;
            if (handle.current_order() != move_order::none) evaluate();
        }
    };

    int first = 0; // 1: up ended first, 2: down ended first
    auto run_up = [&]() -> asio::awaitable<pump_end> {
        const pump_end end = co_await up();
        if (first == 0) first = 1;
        if (end != pump_end::eof) {
            close_all(client);
            close_all(backend);
        }
        co_return end;
    };
    auto run_down = [&]() -> asio::awaitable<pump_end> {
        const pump_end end = co_await down();
        if (first == 0) first = 2;
        down_done = true;
        wake.cancel();
        if (end != pump_end::eof && !moving) {
            close_all(client);
            close_all(backend);
        }
        co_return end;
    };

    // As in pump_both: the down pump is a coroutine of its own on this thread, awaited here.
    asio::steady_timer down_finished(executor, asio::steady_timer::time_point::max());
    std::optional<pump_end> down_end;
    asio::co_spawn(executor, run_down(), [&](std::exception_ptr, pump_end end) {
        down_end = end;
        down_finished.cancel();
    });
    const pump_end up_end = co_await run_up();
    if (moving) close_all(backend); // a down pump mid-write still ends
    if (!down_end) co_await down_finished.async_wait(as_tuple(use_awaitable));

    handle.on_cut(nullptr); // the sockets die with this frame; a late cut must not touch them
    handle.on_order(nullptr);
    handle.report(false, session.pinned());
    if (carry.prepared) carry.prepared->on_done = nullptr; // evaluate dies with this frame
    if (!moving || handle.was_cut()) abandon(carry.prepared);
    if (moving && !handle.was_cut()) {
        outcome.reason = close_reason::moved;
        carry.replay_due = true;
        carry.held_since = quiet_since.value_or(std::chrono::steady_clock::now());
        co_return;
    }
    outcome.reason = handle.was_cut() ? handle.cut_reason()
                                      : reason_from(up_end, down_end.value_or(pump_end::eof), first == 1);
}

} // namespace tunneld::proxy
