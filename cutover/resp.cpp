#include "cutover/resp.hpp"

#include <charconv>
#include <limits>
#include <utility>

namespace tunneld::cutover {
namespace {

bool is_key_byte(char c) noexcept
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
}

bool is_value_byte(char c) noexcept
{
    return c >= 0x20 && c <= 0x7e;
}

std::optional<bool> parse_flag(std::string_view text) noexcept
{
    if (text == "0") return false;
    if (text == "1") return true;
    return std::nullopt;
}

const std::string* find(const info_map& fields, std::string_view key)
{
    auto it = fields.find(key);
    return it == fields.end() ? nullptr : &it->second;
}

} // namespace

void info_parser::feed(std::string_view chunk)
{
    for (char c : chunk) {
        if (c == '\n') {
            end_line();
            continue;
        }
        if (line_too_long_) continue;
        if (line_.size() >= max_line) {
            // Why: an endless line is garbage; drop it rather than grow without bound.
            line_too_long_ = true;
            line_.clear();
            continue;
        }
        line_.push_back(c);
    }
}

void info_parser::end_line()
{
    std::string_view line = line_;
    const bool dropped = line_too_long_;
    line_too_long_ = false;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (dropped || line.empty() || line.front() == '#') {
        line_.clear();
        return;
    }
    const auto colon = line.find(':');
    if (colon == std::string_view::npos || colon == 0) {
        line_.clear();
        return;
    }
    const auto key = line.substr(0, colon);
    const auto value = line.substr(colon + 1);
    bool ok = true;
    for (char c : key)
        ok = ok && is_key_byte(c);
    for (char c : value)
        ok = ok && is_value_byte(c);
    if (ok && !ambiguous_.contains(key)) {
        auto [it, inserted] = fields_.try_emplace(std::string(key), value);
        if (!inserted && it->second != value) {
            ambiguous_.emplace(std::string(key), std::string());
            fields_.erase(it);
        }
    }
    line_.clear();
}

info_map info_parser::finish()
{
    line_.clear();
    line_too_long_ = false;
    ambiguous_.clear();
    return std::exchange(fields_, {});
}

info_map parse_info(std::string_view text)
{
    info_parser parser;
    parser.feed(text);
    return parser.finish();
}

std::optional<std::uint64_t> parse_uint(std::string_view text) noexcept
{
    if (text.empty() || text.front() < '0' || text.front() > '9') return std::nullopt;
    if (text.size() > 1 && text.front() == '0') return std::nullopt; // redis never pads: malformed
    std::uint64_t value = 0;
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
    if (ec != std::errc() || end != text.data() + text.size()) return std::nullopt;
    return value;
}

std::optional<std::int64_t> parse_int(std::string_view text) noexcept
{
    const auto digits = text.substr(!text.empty() && text.front() == '-' ? 1 : 0);
    if (digits.empty() || (digits.size() > 1 && digits.front() == '0')) return std::nullopt;
    std::int64_t value = 0;
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
    if (ec != std::errc() || end != text.data() + text.size()) return std::nullopt;
    return value;
}

replication_info parse_replication(const info_map& fields)
{
    replication_info info;
    if (auto* role = find(fields, "role")) {
        if (*role == "master")
            info.role = redis_role::master;
        else if (*role == "slave")
            info.role = redis_role::slave;
    }
    if (auto* v = find(fields, "master_repl_offset")) info.master_repl_offset = parse_uint(*v);
    if (auto* v = find(fields, "slave_repl_offset")) info.slave_repl_offset = parse_uint(*v);
    if (auto* v = find(fields, "master_link_status")) {
        if (*v == "up")
            info.master_link_up = true;
        else if (*v == "down")
            info.master_link_up = false;
    }
    if (auto* v = find(fields, "master_sync_in_progress")) info.master_sync_in_progress = parse_flag(*v);
    if (auto* v = find(fields, "master_last_io_seconds_ago")) info.master_last_io_seconds_ago = parse_int(*v);
    if (auto* v = find(fields, "connected_slaves")) info.connected_slaves = parse_uint(*v);
    if (auto* v = find(fields, "master_host"); v && !v->empty()) info.master_host = *v;
    if (auto* v = find(fields, "master_port")) {
        auto port = parse_uint(*v);
        if (port && *port > 0 && *port <= std::numeric_limits<std::uint16_t>::max())
            info.master_port = static_cast<std::uint16_t>(*port);
    }
    return info;
}

replication_info parse_replication(std::string_view text)
{
    return parse_replication(parse_info(text));
}

std::string_view to_string(redis_role role) noexcept
{
    return role == redis_role::master ? "master" : "slave";
}

} // namespace tunneld::cutover
