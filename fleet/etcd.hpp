#pragma once
// etcd v3 as its JSON gateway speaks it: requests and replies as plain structs, their JSON
// encoding and decoding, and the errors. Pure: no socket, clock or thread (see etcd_client.hpp).
//
// The gateway's rules, applied everywhere here: keys and values are base64; int64 values are
// written as strings; a field at its default (0, false, empty) is absent. A reply that breaks
// them fails closed as errc::malformed_reply, never as a default.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <variant>
#include <vector>

namespace tunneld::fleet::etcd {

enum class errc {
    unreachable = 1, ///< no endpoint could be connected to before the deadline
    timeout,         ///< the request was sent (or a stream was open) and no answer came in time
    outcome_unknown, ///< a write was sent but its answer was lost: it may or may not have applied
    malformed_reply, ///< not the JSON etcd sends
    http_status,     ///< an HTTP status other than 200 without etcd's error body
    server_error,    ///< etcd answered with an error (detail holds its message)
    compacted,       ///< the revision asked for has been compacted away
    invalid_token,   ///< the auth token expired or is unknown: authenticate again
    auth_failed,     ///< wrong user or password, or no credentials where auth is enabled
    lease_not_found, ///< the lease expired or was revoked
    watch_canceled,  ///< etcd canceled a watch for a reason other than compaction
    tls,             ///< the TLS set-up or handshake failed
};

const std::error_category& category() noexcept;
inline std::error_code make_error_code(errc e) noexcept { return {static_cast<int>(e), category()}; }

/// A failure: the code to test and a one-line detail for logs (never a secret).
struct error {
    std::error_code code;
    std::string detail;

    std::string to_string() const;
};

/// A value or the error that prevented it.
template <class T>
class result {
public:
    /// No value and no answer yet (co_spawn's futures need one): reads as a canceled call.
    result() : error_{std::make_error_code(std::errc::operation_canceled), "no result"} {}
    result(T value) : value_(std::move(value)) {}
    result(error e) : error_(std::move(e)) {}

    explicit operator bool() const noexcept { return value_.has_value(); }
    T& operator*() { return *value_; }
    const T& operator*() const { return *value_; }
    T* operator->() { return &*value_; }
    const T* operator->() const { return &*value_; }
    /// Meaningful only when the result holds no value.
    const error& err() const noexcept { return error_; }

private:
    std::optional<T> value_;
    error error_;
};

struct empty {};

struct key_value {
    std::string key;
    std::string value;
    std::int64_t create_revision = 0;
    std::int64_t mod_revision = 0;
    std::int64_t version = 0;
    std::int64_t lease = 0;

    friend bool operator==(const key_value&, const key_value&) = default;
};

/// The smallest key after every key that starts with `prefix` (etcd's range_end for a prefix).
std::string prefix_end(std::string_view prefix);

struct range_request {
    std::string key;
    std::string range_end; ///< empty: `key` alone; prefix_end(key): every key under it
    std::int64_t revision = 0; ///< 0: the newest
    std::int64_t limit = 0;    ///< 0: no limit

    static range_request prefix(std::string_view p) { return {std::string(p), prefix_end(p)}; }
};
struct range_response {
    std::int64_t revision = 0; ///< the store's revision the read saw
    std::vector<key_value> kvs;
    std::int64_t count = 0;
    bool more = false;
};

struct put_request {
    std::string key;
    std::string value;
    std::int64_t lease = 0; ///< 0: no lease
};
struct put_response {
    std::int64_t revision = 0;
};

struct delete_request {
    std::string key;
    std::string range_end;
};
struct delete_response {
    std::int64_t revision = 0;
    std::int64_t deleted = 0;
};

/// One condition of a transaction. A key that does not exist has version, create and mod
/// revision 0, so `create_revision == 0` reads "absent".
struct compare {
    enum class target { version, create_revision, mod_revision, value, lease };
    enum class op { equal, greater, less, not_equal };

    std::string key;
    target what = target::mod_revision;
    op relation = op::equal;
    std::int64_t number = 0; ///< for every target but value
    std::string value;       ///< for target::value

    static compare absent(std::string key) { return {std::move(key), target::create_revision, op::equal, 0, {}}; }
    static compare mod_revision_is(std::string key, std::int64_t revision)
    {
        return {std::move(key), target::mod_revision, op::equal, revision, {}};
    }
    static compare value_is(std::string key, std::string value)
    {
        return {std::move(key), target::value, op::equal, 0, std::move(value)};
    }
};

using request_op = std::variant<range_request, put_request, delete_request>;
using response_op = std::variant<range_response, put_response, delete_response>;

struct txn_request {
    std::vector<compare> compares;
    std::vector<request_op> success; ///< run when every compare holds
    std::vector<request_op> failure; ///< run otherwise
};
struct txn_response {
    std::int64_t revision = 0;
    bool succeeded = false;
    std::vector<response_op> responses; ///< one per op of the branch that ran, in order
};

struct lease_grant_response {
    std::int64_t id = 0;
    std::int64_t ttl = 0; ///< seconds, as granted: etcd raises a TTL below its minimum
};
struct lease_keep_alive_response {
    std::int64_t id = 0;
    std::int64_t ttl = 0; ///< seconds left after the renewal
};

struct watch_create {
    std::string key;
    std::string range_end;
    std::int64_t start_revision = 0; ///< 0: from the next change
    bool progress_notify = true;
};

struct event {
    enum class type { put, del };
    type kind = type::put;
    key_value kv; ///< for del: the key and its mod_revision (the deletion's revision)

    friend bool operator==(const event&, const event&) = default;
};

/// One message of a watch stream.
struct watch_message {
    std::int64_t revision = 0; ///< header revision: every change up to it has been sent
    bool created = false;
    bool canceled = false;
    std::int64_t compact_revision = 0; ///< set when canceled because start_revision was compacted
    std::string cancel_reason;
    std::vector<event> events;

    /// A progress notification: nothing happened up to `revision`.
    bool progress() const { return !created && !canceled && events.empty(); }
};

// Request bodies (JSON text for POST /v3/...).
std::string encode(const range_request&);
std::string encode(const put_request&);
std::string encode(const delete_request&);
std::string encode(const txn_request&);
std::string encode_lease_grant(std::int64_t ttl_seconds);
std::string encode_lease_id(std::int64_t id); ///< keepalive and revoke
std::string encode(const watch_create&);
std::string encode_authenticate(std::string_view user, std::string_view password);

// Reply bodies of HTTP 200. Each fails closed with errc::malformed_reply.
result<range_response> decode_range(std::string_view body);
result<put_response> decode_put(std::string_view body);
result<delete_response> decode_delete(std::string_view body);
result<txn_response> decode_txn(std::string_view body);
result<lease_grant_response> decode_lease_grant(std::string_view body);
/// A reply without a TTL means the lease is gone: errc::lease_not_found.
result<lease_keep_alive_response> decode_lease_keep_alive(std::string_view body);
result<empty> decode_empty(std::string_view body); ///< revoke and other replies with only a header
result<std::string> decode_token(std::string_view body);
/// One line of a watch stream: `{"result": {...}}` or `{"error": {...}}`.
result<watch_message> decode_watch_message(std::string_view line);
/// The error an HTTP reply with `status` other than 200 stands for, from etcd's error body
/// (`{"error", "code", "message"}`) when there is one.
error decode_error(unsigned status, std::string_view body);

/// Cuts a watch stream's body (newline-separated JSON messages, split anywhere by the network)
/// into whole lines.
class line_buffer {
public:
    void append(std::string_view bytes) { pending_.append(bytes); }
    /// The next whole line without its "\n" (and "\r"), skipping blank ones; nullopt until one is complete.
    std::optional<std::string> next();
    std::size_t pending() const { return pending_.size(); } ///< bytes of an unfinished line

private:
    std::string pending_;
};

/// The first line of a credentials file: "user password" (a trailing "\r" allowed); nullopt for
/// anything else. The caller's error never quotes the line: it holds a password.
std::optional<std::pair<std::string, std::string>> parse_credentials(std::string_view text);

std::string base64_encode(std::string_view bytes);
std::optional<std::string> base64_decode(std::string_view text); ///< nullopt on any bad input

} // namespace tunneld::fleet::etcd

template <>
struct std::is_error_code_enum<tunneld::fleet::etcd::errc> : std::true_type {};
