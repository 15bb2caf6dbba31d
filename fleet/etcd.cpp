// JSON encoding and decoding for etcd's gateway. Decoders check every field they read and
// refuse what etcd would not send, so a proxy's error page or a truncated body never reads as
// "no keys" or "not succeeded".
#include "fleet/etcd.hpp"

#include <array>
#include <charconv>
#include <nlohmann/json.hpp>

namespace tunneld::fleet::etcd {

using json = nlohmann::json;

namespace {

class category_impl : public std::error_category {
public:
    const char* name() const noexcept override { return "etcd"; }
    std::string message(int value) const override
    {
        switch (static_cast<errc>(value)) {
        case errc::unreachable:
            return "no etcd endpoint reachable";
        case errc::timeout:
            return "etcd did not answer in time";
        case errc::outcome_unknown:
            return "etcd write sent but its outcome is unknown";
        case errc::malformed_reply:
            return "malformed reply from etcd";
        case errc::http_status:
            return "unexpected HTTP status from etcd";
        case errc::server_error:
            return "etcd error";
        case errc::compacted:
            return "revision compacted";
        case errc::invalid_token:
            return "etcd auth token invalid or expired";
        case errc::auth_failed:
            return "etcd authentication failed";
        case errc::lease_not_found:
            return "etcd lease not found";
        case errc::watch_canceled:
            return "etcd watch canceled";
        case errc::tls:
            return "TLS failure talking to etcd";
        }
        return "unknown etcd error";
    }
};

/// Thrown inside decoders only; turned into errc::malformed_reply at their boundary.
struct malformed : std::runtime_error {
    using std::runtime_error::runtime_error;
};

error malformed_error(std::string_view what) { return {errc::malformed_reply, std::string(what)}; }

json parse_object(std::string_view body)
{
    json doc = json::parse(body, nullptr, false);
    if (doc.is_discarded()) throw malformed("not JSON");
    if (!doc.is_object()) throw malformed("not a JSON object");
    return doc;
}

const json* member(const json& object, const char* name)
{
    const auto it = object.find(name);
    return it == object.end() || it->is_null() ? nullptr : &*it;
}

const json& object_at(const json& object, const char* name)
{
    static const json empty_object = json::object();
    const json* value = member(object, name);
    if (!value) return empty_object;
    if (!value->is_object()) throw malformed(std::string(name) + " is not an object");
    return *value;
}

/// int64 as etcd writes it (a decimal string), or as a JSON integer; absent is 0.
std::int64_t int64_at(const json& object, const char* name)
{
    const json* value = member(object, name);
    if (!value) return 0;
    if (value->is_number_integer()) return value->get<std::int64_t>();
    if (!value->is_string()) throw malformed(std::string(name) + " is not an integer");
    const std::string& text = value->get_ref<const std::string&>();
    std::int64_t number = 0;
    const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), number);
    if (ec != std::errc() || end != text.data() + text.size() || text.empty())
        throw malformed(std::string(name) + " is not an integer");
    return number;
}

bool bool_at(const json& object, const char* name)
{
    const json* value = member(object, name);
    if (!value) return false;
    if (!value->is_boolean()) throw malformed(std::string(name) + " is not a boolean");
    return value->get<bool>();
}

std::string string_at(const json& object, const char* name)
{
    const json* value = member(object, name);
    if (!value) return {};
    if (!value->is_string()) throw malformed(std::string(name) + " is not a string");
    return value->get<std::string>();
}

std::string bytes_at(const json& object, const char* name)
{
    auto decoded = base64_decode(string_at(object, name));
    if (!decoded) throw malformed(std::string(name) + " is not base64");
    return std::move(*decoded);
}

const json& array_at(const json& object, const char* name)
{
    static const json empty_array = json::array();
    const json* value = member(object, name);
    if (!value) return empty_array;
    if (!value->is_array()) throw malformed(std::string(name) + " is not an array");
    return *value;
}

/// Every reply carries a header with the revision; a body without one is not etcd's.
std::int64_t header_revision(const json& reply)
{
    if (!member(reply, "header")) throw malformed("no header");
    return int64_at(object_at(reply, "header"), "revision");
}

key_value decode_kv(const json& object)
{
    if (!object.is_object()) throw malformed("kv is not an object");
    key_value kv;
    kv.key = bytes_at(object, "key");
    if (kv.key.empty()) throw malformed("kv without a key");
    kv.value = bytes_at(object, "value");
    kv.create_revision = int64_at(object, "create_revision");
    kv.mod_revision = int64_at(object, "mod_revision");
    kv.version = int64_at(object, "version");
    kv.lease = int64_at(object, "lease");
    return kv;
}

range_response range_from(const json& reply, bool needs_header)
{
    range_response out;
    // A range inside a txn carries a header too, but only the outer one is the txn's.
    out.revision = needs_header ? header_revision(reply) : int64_at(object_at(reply, "header"), "revision");
    for (const json& kv : array_at(reply, "kvs"))
        out.kvs.push_back(decode_kv(kv));
    out.count = int64_at(reply, "count");
    out.more = bool_at(reply, "more");
    return out;
}

template <class T>
struct as_result {
    using type = result<T>;
};
template <class T>
struct as_result<result<T>> {
    using type = result<T>;
};

/// Runs a decoder, turning whatever it throws into errc::malformed_reply.
template <class F>
auto guarded(F&& decode) -> typename as_result<decltype(decode())>::type
{
    try {
        return decode();
    } catch (const malformed& e) {
        return malformed_error(e.what());
    } catch (const json::exception& e) {
        return malformed_error(e.what());
    }
}

std::string dump(const json& doc) { return doc.dump(); }

json range_json(const range_request& r)
{
    json doc{{"key", base64_encode(r.key)}};
    if (!r.range_end.empty()) doc["range_end"] = base64_encode(r.range_end);
    if (r.revision) doc["revision"] = std::to_string(r.revision);
    if (r.limit) doc["limit"] = std::to_string(r.limit);
    return doc;
}

json put_json(const put_request& r)
{
    json doc{{"key", base64_encode(r.key)}, {"value", base64_encode(r.value)}};
    if (r.lease) doc["lease"] = std::to_string(r.lease);
    return doc;
}

json delete_json(const delete_request& r)
{
    json doc{{"key", base64_encode(r.key)}};
    if (!r.range_end.empty()) doc["range_end"] = base64_encode(r.range_end);
    return doc;
}

json op_json(const request_op& op)
{
    if (const auto* r = std::get_if<range_request>(&op)) return {{"request_range", range_json(*r)}};
    if (const auto* p = std::get_if<put_request>(&op)) return {{"request_put", put_json(*p)}};
    return {{"request_delete_range", delete_json(std::get<delete_request>(op))}};
}

json compare_json(const compare& c)
{
    static constexpr std::array<const char*, 5> targets{"VERSION", "CREATE", "MOD", "VALUE", "LEASE"};
    static constexpr std::array<const char*, 5> fields{"version", "create_revision", "mod_revision", "value",
                                                       "lease"};
    static constexpr std::array<const char*, 4> relations{"EQUAL", "GREATER", "LESS", "NOT_EQUAL"};
    const auto t = static_cast<std::size_t>(c.what);
    json doc{{"key", base64_encode(c.key)},
             {"target", targets[t]},
             {"result", relations[static_cast<std::size_t>(c.relation)]}};
    // Written even at 0: an absent union member would compare against nothing.
    doc[fields[t]] = c.what == compare::target::value ? json(base64_encode(c.value)) : json(std::to_string(c.number));
    return doc;
}

error error_from_message(int code, std::string message)
{
    // The gateway keeps gRPC's codes; the message tells the cases apart within one code.
    if (message.find("compacted") != std::string::npos) return {errc::compacted, std::move(message)};
    if (message.find("invalid auth token") != std::string::npos) return {errc::invalid_token, std::move(message)};
    if (message.find("authentication failed") != std::string::npos ||
        message.find("user name is empty") != std::string::npos || code == 16)
        return {errc::auth_failed, std::move(message)};
    if (message.find("lease not found") != std::string::npos) return {errc::lease_not_found, std::move(message)};
    return {errc::server_error, std::move(message)};
}

} // namespace

const std::error_category& category() noexcept
{
    static const category_impl instance;
    return instance;
}

std::string error::to_string() const
{
    if (detail.empty()) return code.message();
    return code.message() + ": " + detail;
}

std::string prefix_end(std::string_view prefix)
{
    std::string end(prefix);
    while (!end.empty()) {
        auto& last = reinterpret_cast<unsigned char&>(end.back());
        if (last < 0xff) {
            ++last;
            return end;
        }
        end.pop_back();
    }
    return std::string(1, '\0'); // every key: etcd's "\0" range end
}

std::string encode(const range_request& r) { return dump(range_json(r)); }
std::string encode(const put_request& r) { return dump(put_json(r)); }
std::string encode(const delete_request& r) { return dump(delete_json(r)); }

std::string encode(const txn_request& r)
{
    json compares = json::array(), success = json::array(), failure = json::array();
    for (const compare& c : r.compares)
        compares.push_back(compare_json(c));
    for (const request_op& op : r.success)
        success.push_back(op_json(op));
    for (const request_op& op : r.failure)
        failure.push_back(op_json(op));
    return dump({{"compare", compares}, {"success", success}, {"failure", failure}});
}

std::string encode_lease_grant(std::int64_t ttl_seconds) { return dump({{"TTL", std::to_string(ttl_seconds)}}); }
std::string encode_lease_id(std::int64_t id) { return dump({{"ID", std::to_string(id)}}); }

std::string encode(const watch_create& w)
{
    json create{{"key", base64_encode(w.key)}};
    if (!w.range_end.empty()) create["range_end"] = base64_encode(w.range_end);
    if (w.start_revision) create["start_revision"] = std::to_string(w.start_revision);
    if (w.progress_notify) create["progress_notify"] = true;
    return dump({{"create_request", create}});
}

std::string encode_authenticate(std::string_view user, std::string_view password)
{
    return dump({{"name", user}, {"password", password}});
}

result<range_response> decode_range(std::string_view body)
{
    return guarded([&] { return range_from(parse_object(body), true); });
}

result<put_response> decode_put(std::string_view body)
{
    return guarded([&] { return put_response{header_revision(parse_object(body))}; });
}

result<delete_response> decode_delete(std::string_view body)
{
    return guarded([&] {
        const json reply = parse_object(body);
        return delete_response{header_revision(reply), int64_at(reply, "deleted")};
    });
}

result<txn_response> decode_txn(std::string_view body)
{
    return guarded([&] {
        const json reply = parse_object(body);
        txn_response out;
        out.revision = header_revision(reply);
        out.succeeded = bool_at(reply, "succeeded");
        for (const json& op : array_at(reply, "responses")) {
            if (!op.is_object()) throw malformed("responses item is not an object");
            if (const json* r = member(op, "response_range")) {
                if (!r->is_object()) throw malformed("response_range is not an object");
                out.responses.emplace_back(range_from(*r, false));
            } else if (const json* p = member(op, "response_put")) {
                if (!p->is_object()) throw malformed("response_put is not an object");
                out.responses.emplace_back(put_response{int64_at(object_at(*p, "header"), "revision")});
            } else if (const json* d = member(op, "response_delete_range")) {
                if (!d->is_object()) throw malformed("response_delete_range is not an object");
                out.responses.emplace_back(
                    delete_response{int64_at(object_at(*d, "header"), "revision"), int64_at(*d, "deleted")});
            } else {
                throw malformed("responses item of unknown kind");
            }
        }
        return out;
    });
}

result<lease_grant_response> decode_lease_grant(std::string_view body)
{
    return guarded([&]() -> result<lease_grant_response> {
        const json reply = parse_object(body);
        header_revision(reply);
        if (std::string e = string_at(reply, "error"); !e.empty()) return error{errc::server_error, e};
        lease_grant_response out{int64_at(reply, "ID"), int64_at(reply, "TTL")};
        if (out.id == 0 || out.ttl <= 0) throw malformed("lease grant without ID or TTL");
        return out;
    });
}

result<lease_keep_alive_response> decode_lease_keep_alive(std::string_view body)
{
    return guarded([&]() -> result<lease_keep_alive_response> {
        const json doc = parse_object(body);
        // The keep-alive is a gRPC stream: the gateway wraps each message as {"result": ...}.
        if (const json* e = member(doc, "error")) {
            if (!e->is_object()) throw malformed("error is not an object");
            return error_from_message(static_cast<int>(int64_at(*e, "grpc_code")), string_at(*e, "message"));
        }
        const json& reply = member(doc, "result") ? object_at(doc, "result") : doc;
        header_revision(reply);
        lease_keep_alive_response out{int64_at(reply, "ID"), int64_at(reply, "TTL")};
        if (out.ttl <= 0) return error{errc::lease_not_found, "keep-alive answered with no TTL"};
        return out;
    });
}

result<empty> decode_empty(std::string_view body)
{
    return guarded([&] {
        header_revision(parse_object(body));
        return empty{};
    });
}

result<std::string> decode_token(std::string_view body)
{
    return guarded([&] {
        const json reply = parse_object(body);
        header_revision(reply);
        std::string token = string_at(reply, "token");
        if (token.empty()) throw malformed("authenticate reply without a token");
        return token;
    });
}

result<watch_message> decode_watch_message(std::string_view line)
{
    return guarded([&]() -> result<watch_message> {
        const json doc = parse_object(line);
        if (const json* e = member(doc, "error")) {
            if (!e->is_object()) throw malformed("error is not an object");
            return error_from_message(static_cast<int>(int64_at(*e, "grpc_code")), string_at(*e, "message"));
        }
        if (!member(doc, "result")) throw malformed("watch message without result");
        const json& reply = object_at(doc, "result");
        watch_message out;
        out.revision = header_revision(reply);
        out.created = bool_at(reply, "created");
        out.canceled = bool_at(reply, "canceled");
        out.compact_revision = int64_at(reply, "compact_revision");
        out.cancel_reason = string_at(reply, "cancel_reason");
        for (const json& e : array_at(reply, "events")) {
            if (!e.is_object()) throw malformed("event is not an object");
            event ev;
            const std::string type = string_at(e, "type");
            if (type == "DELETE")
                ev.kind = event::type::del;
            else if (type.empty() || type == "PUT")
                ev.kind = event::type::put;
            else
                throw malformed("event of unknown type " + type);
            if (!member(e, "kv")) throw malformed("event without kv");
            ev.kv = decode_kv(object_at(e, "kv"));
            out.events.push_back(std::move(ev));
        }
        return out;
    });
}

error decode_error(unsigned status, std::string_view body)
{
    const json doc = json::parse(body, nullptr, false);
    if (doc.is_object()) {
        const json* message = member(doc, "message");
        if (!message) message = member(doc, "error");
        if (message && message->is_string()) {
            const json* code = member(doc, "code");
            return error_from_message(code && code->is_number_integer() ? code->get<int>() : 0,
                                      message->get<std::string>());
        }
    }
    return {errc::http_status, "HTTP " + std::to_string(status)};
}

std::optional<std::string> line_buffer::next()
{
    for (auto end = pending_.find('\n'); end != std::string::npos; end = pending_.find('\n')) {
        std::string line = pending_.substr(0, end);
        pending_.erase(0, end + 1);
        if (!line.empty() && line.back() == '\r') line.pop_back();
        if (line.find_first_not_of(" \t") != std::string::npos) return line;
    }
    return std::nullopt;
}

std::optional<std::pair<std::string, std::string>> parse_credentials(std::string_view text)
{
    text = text.substr(0, text.find('\n'));
    if (text.ends_with('\r')) text.remove_suffix(1);
    const auto space = text.find(' ');
    if (space == std::string_view::npos || space == 0 || space + 1 == text.size()) return std::nullopt;
    const std::string_view user = text.substr(0, space), password = text.substr(space + 1);
    if (password.find_first_of(" \t") != std::string_view::npos || user.find('\t') != std::string_view::npos)
        return std::nullopt;
    return std::pair{std::string(user), std::string(password)};
}

std::string base64_encode(std::string_view bytes)
{
    static constexpr char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    std::string out;
    out.reserve((bytes.size() + 2) / 3 * 4);
    std::size_t i = 0;
    for (; i + 2 < bytes.size(); i += 3) {
        const std::uint32_t n = std::uint32_t(std::uint8_t(bytes[i])) << 16 |
                                std::uint32_t(std::uint8_t(bytes[i + 1])) << 8 | std::uint8_t(bytes[i + 2]);
        out += {alphabet[n >> 18], alphabet[(n >> 12) & 63], alphabet[(n >> 6) & 63], alphabet[n & 63]};
    }
    if (i + 1 == bytes.size()) {
        const std::uint32_t n = std::uint32_t(std::uint8_t(bytes[i])) << 16;
        out += {alphabet[n >> 18], alphabet[(n >> 12) & 63], '=', '='};
    } else if (i + 2 == bytes.size()) {
        const std::uint32_t n = std::uint32_t(std::uint8_t(bytes[i])) << 16 | std::uint32_t(std::uint8_t(bytes[i + 1])) << 8;
        out += {alphabet[n >> 18], alphabet[(n >> 12) & 63], alphabet[(n >> 6) & 63], '='};
    }
    return out;
}

std::optional<std::string> base64_decode(std::string_view text)
{
    if (text.size() % 4 != 0) return std::nullopt;
    auto value = [](char c) -> int {
        if (c >= 'A' && c <= 'Z') return c - 'A';
        if (c >= 'a' && c <= 'z') return c - 'a' + 26;
        if (c >= '0' && c <= '9') return c - '0' + 52;
        if (c == '+') return 62;
        if (c == '/') return 63;
        return -1;
    };
    std::string out;
    out.reserve(text.size() / 4 * 3);
    for (std::size_t i = 0; i < text.size(); i += 4) {
        const bool last = i + 4 == text.size();
        const int pad = last ? (text[i + 3] == '=') + (text[i + 2] == '=') : 0;
        if (pad == 1 && text[i + 2] == '=') return std::nullopt; // "x=y=" is not padding
        std::uint32_t n = 0;
        for (int k = 0; k < 4 - pad; ++k) {
            const int v = value(text[i + k]);
            if (v < 0) return std::nullopt;
            n |= std::uint32_t(v) << (18 - 6 * k);
        }
        out += char(n >> 16);
        if (pad < 2) out += char((n >> 8) & 0xff);
        if (pad < 1) out += char(n & 0xff);
    }
    return out;
}

} // namespace tunneld::fleet::etcd
