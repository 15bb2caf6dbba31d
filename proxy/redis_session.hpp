#pragma once
// What tunneld knows of one Redis client as its bytes flow: how many requests wait for a reply,
// whether it is at a request boundary, the session state a move must replay, and whether it is
// pinned (cannot be moved right now) and why. Pure: the pumps feed it bytes, it decides nothing
// about sockets, and it never allocates.
//
// Requests and replies are matched in order (Redis answers each request once, in order, except
// where noted below). State is recorded only once the server has acknowledged it: +OK, or HELLO's
// map. SELECT and CLIENT SETNAME inside MULTI count at EXEC, and only if EXEC ran them without
// error. Commands that change nothing tunneld follows cost one length check each.

#include "proxy/redis_state.hpp"
#include "proxy/resp_framer.hpp"

#include <array>
#include <cstdint>
#include <string_view>

namespace tunneld::proxy {

/// Why a client cannot be moved right now (`none`: it can, once at a request boundary).
enum class pin_reason : std::uint8_t {
    none,
    // For the rest of the client's life:
    not_resp,      ///< its bytes (or its backend's) do not parse as RESP; see protocol_error()
    state_unknown, ///< a state change tunneld could not follow; see unknown_cause()
    quitting,      ///< it sent QUIT
    // Until the server answers RESET (reply counting no longer holds meanwhile):
    monitor,    ///< it sent MONITOR
    subscribed, ///< it sent SUBSCRIBE, PSUBSCRIBE or SSUBSCRIBE
    reply_off,  ///< it sent CLIENT REPLY OFF or SKIP
    // Until the server answers:
    transaction,      ///< MULTI sent; EXEC or DISCARD not yet answered
    watch,            ///< WATCH sent; EXEC, DISCARD, UNWATCH or RESET not yet answered
    blocking_command, ///< BLPOP, BRPOP, BLMOVE, BRPOPLPUSH, BZPOPMIN, BZPOPMAX, BLMPOP, BZMPOP,
                      ///< XREAD/XREADGROUP with BLOCK, WAIT or WAITAOF not yet answered
    tracking,         ///< CLIENT TRACKING ON sent and not turned off
};

std::string_view to_string(pin_reason) noexcept;

/// A pin that only the client (RESET, UNSUBSCRIBE...) or nothing lifts: a switch does not wait
/// for it. Transactions, WATCH and blocking commands end by themselves and are waited for.
constexpr bool pin_lasts(pin_reason r) noexcept
{
    return r != pin_reason::none && r != pin_reason::transaction && r != pin_reason::watch &&
           r != pin_reason::blocking_command;
}

/// Why the session state is unknown (pin_reason::state_unknown).
enum class unknown_state_cause : std::uint8_t {
    none,
    value_too_long,         ///< a name, user or password longer than session_state::max_value
    quoted_inline,          ///< an inline command with quotes (Redis unquotes, the framer does not)
    too_many_in_flight,     ///< more state commands awaiting their answer than tunneld keeps
    state_command_in_multi, ///< AUTH, HELLO, CLIENT SETINFO/NO-EVICT/NO-TOUCH/TRACKING inside MULTI
    unparsed_select,        ///< the server accepted a SELECT whose index tunneld could not read
    exec_answer_unclear,    ///< EXEC's answer does not say whether a queued SELECT or SETNAME ran
    more_replies_than_requests,
};

std::string_view to_string(unknown_state_cause) noexcept;

class redis_session {
public:
    redis_session() = default;
    redis_session(const redis_session&) = delete;
    redis_session& operator=(const redis_session&) = delete;

    /// Client -> backend bytes, up to and including the end of the next request (frame_ended) or
    /// all of them. Feed them before they are forwarded, so a reply never comes before its request.
    /// Once the client's bytes are not RESP, takes all bytes and ends no request.
    framer_step on_client_bytes(std::string_view bytes) noexcept;
    /// Backend -> client bytes, up to and including the end of the next reply or push.
    framer_step on_backend_bytes(std::string_view bytes) noexcept;
    /// Feeds all of `bytes` (pumps that do not hold the client).
    void observe_client(std::string_view bytes) noexcept;
    void observe_backend(std::string_view bytes) noexcept;

    /// Requests sent whose reply has not come back.
    std::uint64_t outstanding() const noexcept { return sent_ - answered_; }
    /// No partial request, no partial reply, no reply outstanding: the backend could be changed here.
    bool at_request_boundary() const noexcept;
    /// Why the client cannot be moved now; the most lasting reason first.
    pin_reason pinned() const noexcept;
    /// At a request boundary and not pinned.
    bool movable() const noexcept { return at_request_boundary() && pinned() == pin_reason::none; }
    /// Between two requests on the client's side, and whatever pins the client now lifts once
    /// the replies outstanding come back (a blocking command, a sent EXEC or DISCARD): holding
    /// its next request here makes it movable. False inside an open MULTI, where holding would
    /// keep the EXEC that unpins it from ever being sent.
    bool can_hold() const noexcept;

    /// Why the client's bytes are not RESP (none if they are).
    resp_error client_error() const noexcept { return requests_.error(); }
    /// Why the backend's bytes are not RESP (none if they are).
    resp_error backend_error() const noexcept { return replies_.error(); }
    unknown_state_cause unknown_cause() const noexcept { return unknown_; }

    /// The acknowledged state a move must replay.
    const session_state& state() const noexcept { return state_; }
    /// The commands that recreate state() on a new backend connection.
    replay make_replay() const { return proxy::make_replay(state_); }

private:
    /// State commands awaiting their answer.
    enum class tracked : std::uint8_t {
        auth,
        hello,
        select,
        client_setname,
        lib_name,
        lib_ver,
        no_evict,
        no_touch,
        tracking_on,
        tracking_off,
        multi,
        exec,
        discard,
        unwatch,
    };
    struct pending {
        std::uint64_t sequence = 0;
        tracked kind = tracked::select;
        std::int64_t number = 0;    ///< SELECT's index; HELLO's protocol (0: none); ON (1) / OFF (0)
        bool unparsed = false;      ///< SELECT's index did not parse
        bool hello_auth = false;    ///< HELLO with AUTH
        bool hello_setname = false; ///< HELLO with SETNAME
    };
    /// SELECT or CLIENT SETNAME queued inside MULTI: applied at EXEC if its element is no error.
    struct queued {
        std::int64_t position;
        pending request;
    };

    void on_request(const request_view& r) noexcept;
    void on_reply(const reply_view& r) noexcept;
    void on_client_command(const request_view& r, std::uint64_t sequence) noexcept;
    void on_auth(const request_view& r, std::uint64_t sequence) noexcept;
    void on_hello(const request_view& r, std::uint64_t sequence) noexcept;
    void track(const pending& p) noexcept;
    /// Claims a slot for a value awaiting its answer; false (state unknown) if another holds it.
    bool claim(std::uint64_t& owner, std::uint64_t sequence) noexcept;
    void release(std::uint64_t sequence) noexcept;
    void apply(const pending& p, const reply_view& r, bool queued_reply) noexcept;
    void apply_now(const pending& p) noexcept;
    void apply_exec(const reply_view& r) noexcept;
    void after_reset() noexcept;
    void lose_track(unknown_state_cause cause) noexcept;
    bool counting_suspended() const noexcept;

    unknown_state_cause unknown_ = unknown_state_cause::none;

    std::uint64_t sent_ = 0;     ///< requests sent that Redis answers; each one's sequence number
    std::uint64_t answered_ = 0; ///< replies received (pushes and attributes are none)

    // Pins: the sequence of the request that set them; 0 when never.
    std::uint64_t quit_sequence_ = 0;
    std::uint64_t monitor_sequence_ = 0;
    std::uint64_t subscribe_sequence_ = 0;
    std::uint64_t reply_off_sequence_ = 0;
    std::uint64_t blocking_sequence_ = 0;
    std::uint64_t watch_sequence_ = 0;
    std::uint64_t multi_sequence_ = 0;
    std::uint64_t transaction_end_sequence_ = 0; ///< the EXEC or DISCARD that ends the transaction
    std::uint64_t tracking_on_sequence_ = 0;
    std::uint64_t reset_sequence_ = 0;          ///< the last RESET sent
    std::uint64_t reset_answered_sequence_ = 0; ///< the last RESET answered
    std::uint32_t resets_pending_ = 0;
    bool multi_open_ = false;       ///< MULTI sent, no EXEC, DISCARD or RESET sent since
    bool watch_active_ = false;     ///< invariant: watch_sequence_ > 0 when true
    bool tracking_on_ = false;      ///< the server acknowledged CLIENT TRACKING ON
    bool in_transaction_ = false;   ///< the server acknowledged MULTI; EXEC or DISCARD not yet answered
    std::int64_t queued_count_ = 0; ///< +QUEUED answers since MULTI was acknowledged

    static constexpr std::size_t max_pending = 16;
    std::array<pending, max_pending> pending_{}; ///< a ring, in sequence order
    std::size_t pending_head_ = 0;
    std::size_t pending_count_ = 0;
    static constexpr std::size_t max_queued = 8;
    std::array<queued, max_queued> queued_{};
    std::size_t queued_count_entries_ = 0;

    // Values awaiting their answer, each owned by one request's sequence (0: free).
    session_state::value pending_name_;
    std::uint64_t name_owner_ = 0;
    session_state::value pending_user_;
    secret_text<session_state::max_value> pending_password_;
    bool pending_auth_with_user_ = false;
    std::uint64_t auth_owner_ = 0;
    session_state::value pending_lib_name_;
    std::uint64_t lib_name_owner_ = 0;
    session_state::value pending_lib_ver_;
    std::uint64_t lib_ver_owner_ = 0;

    // Large members last, so the counters and pins every request and reply touches sit together.
    request_framer requests_;
    reply_framer replies_;
    session_state state_;
};

} // namespace tunneld::proxy
