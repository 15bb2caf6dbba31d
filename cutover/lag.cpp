#include "cutover/lag.hpp"

#include <charconv>
#include <cmath>
#include <cstdio>

namespace tunneld::cutover {
namespace {

std::optional<std::uint32_t> parse_hex32(std::string_view text) noexcept
{
    if (text.empty() || text.size() > 8) return std::nullopt;
    std::uint32_t value = 0;
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value, 16);
    if (ec != std::errc() || end != text.data() + text.size()) return std::nullopt;
    return value;
}

std::optional<double> parse_decimal(std::string_view text) noexcept
{
    if (text.empty()) return std::nullopt;
    double value = 0;
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
    if (ec != std::errc() || end != text.data() + text.size() || !std::isfinite(value)) return std::nullopt;
    return value;
}

std::string one_decimal(double value, std::string_view unit)
{
    char text[64];
    const double rounded = std::round(value * 10) / 10;
    if (rounded == std::floor(rounded))
        std::snprintf(text, sizeof text, "%.0f", rounded);
    else
        std::snprintf(text, sizeof text, "%.1f", rounded);
    return std::string(text) + std::string(unit);
}

} // namespace

std::string_view to_string(link_state link) noexcept
{
    switch (link) {
    case link_state::up:
        return "up";
    case link_state::down:
        return "down";
    case link_state::unknown:
        break;
    }
    return "unknown";
}

lag_reading unknown_lag(std::string detail, std::chrono::steady_clock::time_point at)
{
    return lag_reading{.bytes = std::nullopt,
                       .seconds = std::nullopt,
                       .link = link_state::unknown,
                       .replica_position = std::nullopt,
                       .detail = std::move(detail),
                       .at = at,
                       .replica = std::nullopt};
}

lag_reading redis_lag(const replication_info& old_info, const replication_info& new_info,
                      std::chrono::steady_clock::time_point at)
{
    lag_reading reading = unknown_lag({}, at);
    if (new_info.role != redis_role::slave) {
        reading.detail =
            new_info.role ? "new is not a replica (role:master)" : "new: role missing or malformed";
        // A new side that already is a primary has no link to old: down, not unknown.
        if (new_info.role == redis_role::master) reading.link = link_state::down;
        return reading;
    }
    if (!new_info.master_link_up || !new_info.master_sync_in_progress) {
        reading.detail = "new: master_link_status or master_sync_in_progress missing or malformed";
        return reading;
    }
    const bool up = *new_info.master_link_up && !*new_info.master_sync_in_progress;
    reading.link = up ? link_state::up : link_state::down;
    if (!up) {
        reading.detail =
            *new_info.master_link_up ? "new: initial sync in progress" : "new: master_link_status:down";
        if (new_info.master_last_io_seconds_ago && *new_info.master_last_io_seconds_ago >= 0)
            reading.detail += ", last io " + std::to_string(*new_info.master_last_io_seconds_ago) + "s ago";
        return reading;
    }
    if (old_info.role != redis_role::master) {
        reading.detail =
            old_info.role ? "old is not a primary (role:slave)" : "old: role missing or malformed";
        return reading;
    }
    if (!old_info.master_repl_offset) {
        reading.detail = "old: master_repl_offset missing or malformed";
        return reading;
    }
    if (!new_info.slave_repl_offset) {
        reading.detail = "new: slave_repl_offset missing or malformed";
        return reading;
    }
    const auto primary = *old_info.master_repl_offset;
    const auto replica = *new_info.slave_repl_offset;
    if (replica > primary) {
        reading.detail = "new offset " + std::to_string(replica) + " is ahead of old offset " +
                         std::to_string(primary) + " (new follows another primary?)";
        return reading;
    }
    reading.bytes = primary - replica;
    reading.replica_position = replica;
    reading.detail = "old offset " + std::to_string(primary) + ", new offset " + std::to_string(replica);
    return reading;
}

lag_reading redis_lag(std::string_view old_info, std::string_view new_info,
                      std::chrono::steady_clock::time_point at)
{
    return redis_lag(parse_replication(old_info), parse_replication(new_info), at);
}

std::optional<std::uint64_t> parse_lsn(std::string_view text) noexcept
{
    const auto slash = text.find('/');
    if (slash == std::string_view::npos) return std::nullopt;
    auto high = parse_hex32(text.substr(0, slash));
    auto low = parse_hex32(text.substr(slash + 1));
    if (!high || !low) return std::nullopt;
    return (std::uint64_t{*high} << 32) | *low;
}

std::string format_lsn(std::uint64_t lsn)
{
    char text[32];
    std::snprintf(text, sizeof text, "%X/%X", static_cast<unsigned>(lsn >> 32),
                  static_cast<unsigned>(lsn & 0xffffffffu));
    return text;
}

lag_reading postgres_lag(const std::optional<std::string>& old_current_lsn,
                         const postgres_standby_text& standby, std::chrono::steady_clock::time_point at)
{
    lag_reading reading = unknown_lag({}, at);
    if (!standby.in_recovery || (*standby.in_recovery != "t" && *standby.in_recovery != "f")) {
        reading.detail = "new: pg_is_in_recovery() missing or malformed";
        return reading;
    }
    if (*standby.in_recovery == "f") {
        reading.link = link_state::down;
        reading.detail = "new is not in recovery (already a primary)";
        return reading;
    }
    if (!standby.receiver_status) {
        reading.link = link_state::down;
        reading.detail = "new: no WAL receiver";
        return reading;
    }
    if (*standby.receiver_status != "streaming") {
        reading.link = link_state::down;
        reading.detail = "new: WAL receiver " + *standby.receiver_status;
        return reading;
    }
    reading.link = link_state::up;
    if (standby.replay_delay) reading.seconds = parse_decimal(*standby.replay_delay);
    if (reading.seconds && *reading.seconds < 0) reading.seconds = 0.0; // clock skew between the hosts
    const auto primary = old_current_lsn ? parse_lsn(*old_current_lsn) : std::nullopt;
    const auto replica = standby.replay_lsn ? parse_lsn(*standby.replay_lsn) : std::nullopt;
    if (!primary) {
        reading.detail = "old: pg_current_wal_lsn() missing or malformed";
        return reading;
    }
    if (!replica) {
        reading.detail = "new: pg_last_wal_replay_lsn() missing or malformed";
        return reading;
    }
    if (*replica > *primary) {
        reading.detail =
            "new replay lsn " + format_lsn(*replica) + " is ahead of old lsn " + format_lsn(*primary);
        return reading;
    }
    reading.bytes = *primary - *replica;
    reading.replica_position = *replica;
    reading.detail = "old lsn " + format_lsn(*primary) + ", new replay lsn " + format_lsn(*replica);
    return reading;
}

std::string format_bytes(std::uint64_t bytes)
{
    constexpr std::string_view units[] = {"KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
    if (bytes < 1024) return std::to_string(bytes) + "B";
    double value = static_cast<double>(bytes) / 1024;
    std::size_t unit = 0;
    while (value >= 1024 && unit + 1 < std::size(units)) {
        value /= 1024;
        ++unit;
    }
    return one_decimal(value, units[unit]);
}

std::string format_seconds(double seconds)
{
    if (seconds < 1) return std::to_string(static_cast<long long>(std::llround(seconds * 1000))) + "ms";
    if (seconds >= 120 && std::fmod(seconds, 60) == 0)
        return std::to_string(static_cast<long long>(seconds / 60)) + "m";
    return one_decimal(seconds, "s");
}

std::string format_duration(std::chrono::milliseconds d)
{
    if (d.count() % 1000 == 0) return std::to_string(d.count() / 1000) + "s";
    return std::to_string(d.count()) + "ms";
}

gate_verdict check_gate(const lag_reading& reading, std::optional<std::uint64_t> max_lag,
                        std::optional<std::chrono::milliseconds> max_lag_seconds, bool force,
                        std::chrono::steady_clock::time_point now, std::chrono::milliseconds max_age)
{
    using seconds_d = std::chrono::duration<double>;
    const auto with_detail = [&](std::string reason) {
        if (!reading.detail.empty()) reason += " (" + reading.detail + ")";
        return reason;
    };
    std::string refusal;
    const auto age = now - reading.at;
    if (age > max_age)
        refusal = "lag reading is " + format_seconds(std::chrono::duration_cast<seconds_d>(age).count()) +
                  " old (max " + format_seconds(std::chrono::duration_cast<seconds_d>(max_age).count()) + ")";
    else if (reading.link == link_state::down)
        refusal = with_detail("replication link is down");
    else if (reading.link == link_state::unknown)
        refusal = with_detail("replication link state is unknown");
    else if (!reading.bytes)
        refusal = with_detail("lag is unknown");
    else if (max_lag && *reading.bytes > *max_lag) {
        auto lag = format_bytes(*reading.bytes);
        // Rounding must not print "lag 1MiB exceeds max_lag 1MiB".
        if (lag == format_bytes(*max_lag)) lag = std::to_string(*reading.bytes) + "B";
        refusal = "lag " + lag + " exceeds max_lag " + format_bytes(*max_lag);
    } else if (max_lag_seconds && !reading.seconds)
        refusal = with_detail("replay delay is unknown");
    else if (max_lag_seconds &&
             *reading.seconds > std::chrono::duration_cast<seconds_d>(*max_lag_seconds).count())
        refusal = "replay delay " + format_seconds(*reading.seconds) + " exceeds max_lag_seconds " +
                  format_seconds(std::chrono::duration_cast<seconds_d>(*max_lag_seconds).count());

    if (refusal.empty()) {
        std::string reason = "lag " + format_bytes(*reading.bytes);
        if (max_lag) reason += " within max_lag " + format_bytes(*max_lag);
        if (reading.seconds) reason += ", replay delay " + format_seconds(*reading.seconds);
        reason += ", link up";
        return {.allowed = true, .forced = false, .reason = std::move(reason)};
    }
    if (force) return {.allowed = true, .forced = true, .reason = "forced: " + refusal};
    return {.allowed = false, .forced = false, .reason = std::move(refusal)};
}

} // namespace tunneld::cutover
