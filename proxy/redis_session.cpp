#include "proxy/redis_session.hpp"

#include <charconv>

namespace tunneld::proxy {

std::string_view to_string(pin_reason reason) noexcept
{
    switch (reason) {
    case pin_reason::none:
        return "none";
    case pin_reason::not_resp:
        return "not_resp";
    case pin_reason::state_unknown:
        return "state_unknown";
    case pin_reason::quitting:
        return "quitting";
    case pin_reason::monitor:
        return "monitor";
    case pin_reason::subscribed:
        return "subscribed";
    case pin_reason::reply_off:
        return "reply_off";
    case pin_reason::transaction:
        return "transaction";
    case pin_reason::watch:
        return "watch";
    case pin_reason::blocking_command:
        return "blocking_command";
    case pin_reason::tracking:
        return "tracking";
    }
    return "unknown";
}

std::string_view to_string(unknown_state_cause cause) noexcept
{
    switch (cause) {
    case unknown_state_cause::none:
        return "none";
    case unknown_state_cause::value_too_long:
        return "value_too_long";
    case unknown_state_cause::quoted_inline:
        return "quoted_inline";
    case unknown_state_cause::too_many_in_flight:
        return "too_many_in_flight";
    case unknown_state_cause::state_command_in_multi:
        return "state_command_in_multi";
    case unknown_state_cause::unparsed_select:
        return "unparsed_select";
    case unknown_state_cause::exec_answer_unclear:
        return "exec_answer_unclear";
    case unknown_state_cause::more_replies_than_requests:
        return "more_replies_than_requests";
    }
    return "unknown";
}

namespace {

/// The commands the session follows; everything else is `other`.
enum class command : std::uint8_t {
    other,
    auth,
    hello,
    select,
    client,
    multi,
    exec,
    discard,
    watch,
    unwatch,
    subscribe,
    monitor,
    reset,
    quit,
    blocking,
    xread,
    secret_bearing, ///< MIGRATE, CONFIG, ACL: may carry a password, so the kept arguments are wiped
};

struct command_name {
    std::string_view name;
    command kind;
};

/// Sorted by length: classify looks only at the names as long as the request's.
constexpr std::array<command_name, 30> command_names{{
    {"ACL", command::secret_bearing},
    {"AUTH", command::auth},
    {"EXEC", command::exec},
    {"QUIT", command::quit},
    {"WAIT", command::blocking},
    {"HELLO", command::hello},
    {"MULTI", command::multi},
    {"WATCH", command::watch},
    {"RESET", command::reset},
    {"BLPOP", command::blocking},
    {"BRPOP", command::blocking},
    {"XREAD", command::xread},
    {"SELECT", command::select},
    {"CLIENT", command::client},
    {"CONFIG", command::secret_bearing},
    {"BLMOVE", command::blocking},
    {"BLMPOP", command::blocking},
    {"BZMPOP", command::blocking},
    {"DISCARD", command::discard},
    {"UNWATCH", command::unwatch},
    {"MONITOR", command::monitor},
    {"MIGRATE", command::secret_bearing},
    {"WAITAOF", command::blocking},
    {"BZPOPMIN", command::blocking},
    {"BZPOPMAX", command::blocking},
    {"SUBSCRIBE", command::subscribe},
    {"PSUBSCRIBE", command::subscribe},
    {"SSUBSCRIBE", command::subscribe},
    {"BRPOPLPUSH", command::blocking},
    {"XREADGROUP", command::xread},
}};

constexpr std::size_t longest_name = 10;

/// first_of_length[n]: index of the first name of length n or more in command_names.
constexpr auto first_of_length = [] {
    std::array<std::size_t, longest_name + 2> first{};
    for (std::size_t n = 0; n < first.size(); ++n) {
        first[n] = command_names.size();
        for (std::size_t i = command_names.size(); i-- > 0;)
            if (command_names[i].name.size() >= n) first[n] = i;
    }
    return first;
}();

static_assert([] {
    for (std::size_t i = 1; i < command_names.size(); ++i)
        if (command_names[i - 1].name.size() > command_names[i].name.size()) return false;
    return true;
}());

command classify(const request_view& r) noexcept
{
    const std::size_t size = r.argument(0).size();
    // Why by length: the common GET and SET cost a compare or two, not thirty.
    if (size > longest_name || !r.kept_whole(0)) return command::other;
    for (std::size_t i = first_of_length[size]; i < first_of_length[size + 1]; ++i)
        if (r.argument_is(0, command_names[i].name)) return command_names[i].kind;
    return command::other;
}

/// XREAD and XREADGROUP block only with BLOCK among their options (before STREAMS). When the
/// options are not all kept, assume they block: a pin while the reply is outstanding is safe.
bool xread_blocks(const request_view& r) noexcept
{
    const std::size_t kept = std::min(r.argument_count(), request_framer::max_arguments);
    for (std::size_t i = 1; i < kept; ++i) {
        if (r.argument_is(i, "STREAMS")) return false;
        if (r.argument_is(i, "BLOCK")) return true;
    }
    return true;
}

/// Redis's string2ll for a SELECT index: optional '-', digits, no leading zero or blank.
bool parse_index(std::string_view text, std::int64_t& value) noexcept
{
    const std::string_view digits = !text.empty() && text.front() == '-' ? text.substr(1) : text;
    if (digits.empty() || (digits.size() > 1 && digits.front() == '0')) return false;
    const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
    return ec == std::errc() && end == text.data() + text.size();
}

} // namespace

framer_step redis_session::on_client_bytes(std::string_view bytes) noexcept
{
    if (requests_.error() != resp_error::none) return {bytes.size(), false};
    const framer_step step = requests_.feed(bytes);
    if (step.frame_ended) on_request(requests_.last());
    if (requests_.error() != resp_error::none) return {bytes.size(), false};
    return step;
}

framer_step redis_session::on_backend_bytes(std::string_view bytes) noexcept
{
    if (replies_.error() != resp_error::none) return {bytes.size(), false};
    const framer_step step = replies_.feed(bytes);
    if (step.frame_ended) on_reply(replies_.last());
    if (replies_.error() != resp_error::none) return {bytes.size(), false};
    return step;
}

void redis_session::observe_client(std::string_view bytes) noexcept
{
    while (!bytes.empty())
        bytes.remove_prefix(on_client_bytes(bytes).consumed);
}

void redis_session::observe_backend(std::string_view bytes) noexcept
{
    while (!bytes.empty())
        bytes.remove_prefix(on_backend_bytes(bytes).consumed);
}

bool redis_session::at_request_boundary() const noexcept
{
    return !requests_.mid_request() && !replies_.mid_reply() && outstanding() == 0;
}

bool redis_session::counting_suspended() const noexcept
{
    const std::uint64_t reset = reset_answered_sequence_;
    return monitor_sequence_ > reset || subscribe_sequence_ > reset || reply_off_sequence_ > reset;
}

pin_reason redis_session::pinned() const noexcept
{
    if (requests_.error() != resp_error::none || replies_.error() != resp_error::none)
        return pin_reason::not_resp;
    if (unknown_ != unknown_state_cause::none) return pin_reason::state_unknown;
    if (quit_sequence_ > 0) return pin_reason::quitting;
    const std::uint64_t reset = reset_answered_sequence_;
    if (monitor_sequence_ > reset) return pin_reason::monitor;
    if (subscribe_sequence_ > reset) return pin_reason::subscribed;
    if (reply_off_sequence_ > reset) return pin_reason::reply_off;
    if (multi_open_ || in_transaction_ || answered_ < transaction_end_sequence_)
        return pin_reason::transaction;
    if (watch_active_) return pin_reason::watch;
    if (answered_ < blocking_sequence_) return pin_reason::blocking_command;
    if (tracking_on_ || answered_ < tracking_on_sequence_) return pin_reason::tracking;
    return pin_reason::none;
}

bool redis_session::can_hold() const noexcept
{
    if (requests_.mid_request()) return false;
    switch (pinned()) {
    case pin_reason::none:
    case pin_reason::blocking_command:
        return true;
    case pin_reason::transaction:
    case pin_reason::watch:
        // Lifts by replies once EXEC or DISCARD is sent (after the WATCH), not before.
        return !multi_open_ && (!watch_active_ || transaction_end_sequence_ > watch_sequence_);
    default:
        return false;
    }
}

void redis_session::lose_track(unknown_state_cause cause) noexcept
{
    if (unknown_ == unknown_state_cause::none) unknown_ = cause;
}

void redis_session::on_request(const request_view& r) noexcept
{
    if (r.argument_count() == 0) return; // an empty request: Redis answers nothing
    const std::uint64_t sequence = ++sent_;
    if (r.quoted()) {
        // The words tunneld sees are not the ones Redis runs: it cannot say what changed.
        lose_track(unknown_state_cause::quoted_inline);
        return;
    }
    const command c = classify(r);
    switch (c) {
    case command::other:
        return;
    case command::auth:
        on_auth(r, sequence);
        requests_.wipe();
        return;
    case command::hello:
        on_hello(r, sequence);
        requests_.wipe();
        return;
    case command::secret_bearing:
        requests_.wipe();
        return;
    case command::select: {
        if (r.argument_count() != 2) return; // refused by the server: changes nothing
        pending p{.sequence = sequence, .kind = tracked::select};
        p.unparsed = !r.kept_whole(1) || !parse_index(r.argument(1), p.number);
        track(p);
        return;
    }
    case command::client:
        on_client_command(r, sequence);
        return;
    case command::multi:
        multi_open_ = true;
        multi_sequence_ = sequence;
        track({.sequence = sequence, .kind = tracked::multi});
        return;
    case command::exec:
    case command::discard:
        multi_open_ = false;
        transaction_end_sequence_ = sequence;
        track({.sequence = sequence, .kind = c == command::exec ? tracked::exec : tracked::discard});
        return;
    case command::watch:
        watch_active_ = true;
        watch_sequence_ = sequence;
        return;
    case command::unwatch:
        track({.sequence = sequence, .kind = tracked::unwatch});
        return;
    case command::subscribe:
        subscribe_sequence_ = sequence;
        return;
    case command::monitor:
        monitor_sequence_ = sequence;
        return;
    case command::reset:
        // RESET runs at once, inside MULTI too, and ends the transaction.
        multi_open_ = false;
        reset_sequence_ = sequence;
        ++resets_pending_;
        return;
    case command::quit:
        quit_sequence_ = sequence;
        return;
    case command::xread:
        if (!xread_blocks(r)) return;
        [[fallthrough]];
    case command::blocking:
        // Inside MULTI a blocking command does not block: EXEC runs it with no timeout.
        if (!multi_open_) blocking_sequence_ = sequence;
        return;
    }
}

void redis_session::on_auth(const request_view& r, std::uint64_t sequence) noexcept
{
    const std::size_t n = r.argument_count();
    if (n != 2 && n != 3) return; // refused by the server
    if (multi_open_) return lose_track(unknown_state_cause::state_command_in_multi);
    for (std::size_t i = 1; i < n; ++i)
        if (!r.kept_whole(i)) return lose_track(unknown_state_cause::value_too_long);
    if (!claim(auth_owner_, sequence)) return;
    pending_auth_with_user_ = n == 3;
    pending_user_.assign(n == 3 ? r.argument(1) : std::string_view());
    pending_password_.assign(r.argument(n - 1));
    track({.sequence = sequence, .kind = tracked::auth});
}

void redis_session::on_hello(const request_view& r, std::uint64_t sequence) noexcept
{
    const std::size_t n = r.argument_count();
    pending p{.sequence = sequence, .kind = tracked::hello};
    if (n >= 2) {
        if (r.argument_is(1, "2"))
            p.number = 2;
        else if (r.argument_is(1, "3"))
            p.number = 3;
        else
            return; // refused by the server (NOPROTO or a syntax error)
    }
    std::size_t auth_at = 0;
    std::size_t setname_at = 0;
    for (std::size_t i = 2; i < n;) {
        if (r.argument_is(i, "AUTH") && i + 2 < n) {
            auth_at = i;
            i += 3;
        } else if (r.argument_is(i, "SETNAME") && i + 1 < n) {
            setname_at = i;
            i += 2;
        } else {
            return; // refused by the server: a syntax error
        }
    }
    if (multi_open_) return lose_track(unknown_state_cause::state_command_in_multi);
    for (std::size_t i = 1; i < n; ++i)
        if (!r.kept_whole(i)) return lose_track(unknown_state_cause::value_too_long);
    if (auth_at) {
        if (!claim(auth_owner_, sequence)) return;
        pending_auth_with_user_ = true;
        pending_user_.assign(r.argument(auth_at + 1));
        pending_password_.assign(r.argument(auth_at + 2));
        p.hello_auth = true;
    }
    if (setname_at) {
        if (!claim(name_owner_, sequence)) return;
        pending_name_.assign(r.argument(setname_at + 1));
        p.hello_setname = true;
    }
    track(p);
}

void redis_session::on_client_command(const request_view& r, std::uint64_t sequence) noexcept
{
    const std::size_t n = r.argument_count();
    if (n < 2) return;
    if (r.argument_is(1, "REPLY")) {
        if (n == 3 && (r.argument_is(2, "OFF") || r.argument_is(2, "SKIP"))) reply_off_sequence_ = sequence;
        return;
    }
    if (r.argument_is(1, "SETNAME")) {
        if (n != 3) return;
        if (!r.kept_whole(2)) return lose_track(unknown_state_cause::value_too_long);
        if (!claim(name_owner_, sequence)) return;
        pending_name_.assign(r.argument(2));
        track({.sequence = sequence, .kind = tracked::client_setname});
        return;
    }
    const bool setinfo = r.argument_is(1, "SETINFO");
    const bool no_evict = r.argument_is(1, "NO-EVICT");
    const bool no_touch = r.argument_is(1, "NO-TOUCH");
    const bool tracking = r.argument_is(1, "TRACKING");
    if (!setinfo && !no_evict && !no_touch && !tracking) return;
    if (multi_open_) return lose_track(unknown_state_cause::state_command_in_multi);
    if (setinfo) {
        if (n != 4) return;
        const bool name = r.argument_is(2, "LIB-NAME");
        if (!name && !r.argument_is(2, "LIB-VER")) return;
        if (!r.kept_whole(3)) return lose_track(unknown_state_cause::value_too_long);
        if (!claim(name ? lib_name_owner_ : lib_ver_owner_, sequence)) return;
        (name ? pending_lib_name_ : pending_lib_ver_).assign(r.argument(3));
        track({.sequence = sequence, .kind = name ? tracked::lib_name : tracked::lib_ver});
        return;
    }
    if (n < 3) return;
    const bool on = r.argument_is(2, "ON");
    if (!on && !r.argument_is(2, "OFF")) return;
    if (tracking) {
        if (on) tracking_on_sequence_ = sequence;
        track({.sequence = sequence, .kind = on ? tracked::tracking_on : tracked::tracking_off});
        return;
    }
    if (n != 3) return;
    track({.sequence = sequence,
           .kind = no_evict ? tracked::no_evict : tracked::no_touch,
           .number = on ? 1 : 0});
}

bool redis_session::claim(std::uint64_t& owner, std::uint64_t sequence) noexcept
{
    if (owner != 0) {
        lose_track(unknown_state_cause::too_many_in_flight);
        return false;
    }
    owner = sequence;
    return true;
}

void redis_session::release(std::uint64_t sequence) noexcept
{
    if (name_owner_ == sequence) {
        name_owner_ = 0;
        pending_name_.clear();
    }
    if (auth_owner_ == sequence) {
        auth_owner_ = 0;
        pending_user_.clear();
        pending_password_.clear();
    }
    if (lib_name_owner_ == sequence) lib_name_owner_ = 0;
    if (lib_ver_owner_ == sequence) lib_ver_owner_ = 0;
}

void redis_session::track(const pending& p) noexcept
{
    if (pending_count_ == max_pending) {
        release(p.sequence);
        return lose_track(unknown_state_cause::too_many_in_flight);
    }
    pending_[(pending_head_ + pending_count_) % max_pending] = p;
    ++pending_count_;
}

void redis_session::on_reply(const reply_view& r) noexcept
{
    if (r.is_push()) return; // out of band: answers no request
    if (resets_pending_ > 0 && r.is_simple("RESET")) {
        // RESET's answer puts counting back on its feet even after MONITOR or SUBSCRIBE, whose
        // replies do not match requests one to one: what was sent after the last RESET is
        // still outstanding.
        if (--resets_pending_ == 0) after_reset();
        return;
    }
    if (answered_ == sent_) {
        if (!counting_suspended()) lose_track(unknown_state_cause::more_replies_than_requests);
        return;
    }
    const std::uint64_t sequence = ++answered_;
    if (counting_suspended()) return; // replies no longer match requests until RESET
    const bool queued_reply = in_transaction_ && r.is_simple("QUEUED");
    while (pending_count_ > 0) {
        const pending p = pending_[pending_head_];
        if (p.sequence > sequence) break;
        pending_head_ = (pending_head_ + 1) % max_pending;
        --pending_count_;
        if (p.sequence == sequence) apply(p, r, queued_reply);
        // A value moved into the queue of a transaction keeps its slot until EXEC's answer.
        bool still_queued = false;
        for (std::size_t i = 0; i < queued_count_entries_; ++i)
            still_queued = still_queued || queued_[i].request.sequence == p.sequence;
        if (!still_queued) release(p.sequence);
    }
    if (queued_reply) ++queued_count_;
}

void redis_session::apply(const pending& p, const reply_view& r, bool queued_reply) noexcept
{
    const bool ok = r.is_simple("OK");
    switch (p.kind) {
    case tracked::select:
    case tracked::client_setname:
        if (queued_reply) {
            if (queued_count_entries_ == max_queued)
                return lose_track(unknown_state_cause::too_many_in_flight);
            queued_[queued_count_entries_++] = queued{queued_count_, p};
            return;
        }
        if (ok) apply_now(p);
        return;
    case tracked::hello:
        // HELLO answers a map in RESP3, a flat array in RESP2.
        if (r.type == resp_type::map || r.type == resp_type::array) apply_now(p);
        return;
    case tracked::multi:
        if (ok) {
            in_transaction_ = true;
            queued_count_ = 0;
            queued_count_entries_ = 0;
        } else if (p.sequence == multi_sequence_) {
            multi_open_ = false; // refused (nested, NOAUTH): what follows runs at once
        }
        return;
    case tracked::exec:
    case tracked::discard:
        if (p.kind == tracked::exec && in_transaction_) apply_exec(r);
        for (std::size_t i = 0; i < queued_count_entries_; ++i)
            release(queued_[i].request.sequence);
        queued_count_entries_ = 0;
        in_transaction_ = false;
        [[fallthrough]];
    case tracked::unwatch:
        // EXEC, DISCARD and UNWATCH end every WATCH sent before them, whatever their answer.
        if (p.sequence > watch_sequence_) watch_active_ = false;
        return;
    case tracked::tracking_on:
        if (ok) tracking_on_ = true;
        return;
    case tracked::tracking_off:
        if (ok) tracking_on_ = false;
        return;
    default:
        if (ok) apply_now(p);
        return;
    }
}

void redis_session::apply_now(const pending& p) noexcept
{
    switch (p.kind) {
    case tracked::auth:
        state_.authenticated = true;
        state_.auth_with_user = pending_auth_with_user_;
        state_.user.assign(pending_user_.view());
        state_.password.take(pending_password_);
        return;
    case tracked::hello:
        if (p.number != 0) state_.protocol = static_cast<std::uint8_t>(p.number);
        if (p.hello_auth) {
            state_.authenticated = true;
            state_.auth_with_user = true;
            state_.user.assign(pending_user_.view());
            state_.password.take(pending_password_);
        }
        if (p.hello_setname) state_.name.assign(pending_name_.view());
        return;
    case tracked::select:
        if (p.unparsed) return lose_track(unknown_state_cause::unparsed_select);
        state_.db = p.number;
        return;
    case tracked::client_setname:
        state_.name.assign(pending_name_.view());
        return;
    case tracked::lib_name:
        state_.lib_name.assign(pending_lib_name_.view());
        return;
    case tracked::lib_ver:
        state_.lib_ver.assign(pending_lib_ver_.view());
        return;
    case tracked::no_evict:
        state_.no_evict = p.number != 0;
        return;
    case tracked::no_touch:
        state_.no_touch = p.number != 0;
        return;
    default:
        return;
    }
}

void redis_session::apply_exec(const reply_view& r) noexcept
{
    // A null (a WATCHed key changed) or an error (EXECABORT) ran nothing.
    if (r.type != resp_type::array && r.type != resp_type::set) return;
    for (std::size_t i = 0; i < queued_count_entries_; ++i) {
        const queued& q = queued_[i];
        if (q.position >= r.length) return lose_track(unknown_state_cause::exec_answer_unclear);
        if (q.position >= 64) {
            if (r.error_beyond) return lose_track(unknown_state_cause::exec_answer_unclear);
        } else if (r.error_elements & (std::uint64_t{1} << q.position)) {
            continue;
        }
        apply_now(q.request);
    }
}

void redis_session::after_reset() noexcept
{
    reset_answered_sequence_ = reset_sequence_;
    answered_ = reset_sequence_;
    // Everything sent before RESET is answered; its pending state dies with it.
    while (pending_count_ > 0 && pending_[pending_head_].sequence <= reset_sequence_) {
        release(pending_[pending_head_].sequence);
        pending_head_ = (pending_head_ + 1) % max_pending;
        --pending_count_;
    }
    for (std::size_t i = 0; i < queued_count_entries_; ++i)
        release(queued_[i].request.sequence);
    queued_count_entries_ = 0;
    in_transaction_ = false;
    if (watch_sequence_ < reset_sequence_) watch_active_ = false;
    tracking_on_ = false;
    state_.reset();
}

} // namespace tunneld::proxy
