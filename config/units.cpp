// Durations, sizes and endpoints as written in the config file.
#include "config/config.hpp"

#include <charconv>
#include <limits>

namespace tunneld::config {

namespace {

struct unit {
    std::string_view suffix;
    std::uint64_t factor;
};

/// Splits "<digits><suffix>" and multiplies by the suffix's factor; nullopt on overflow or junk.
std::optional<std::uint64_t> parse_scaled(std::string_view text, std::initializer_list<unit> units,
                                          std::uint64_t max)
{
    std::size_t digits = 0;
    while (digits < text.size() && text[digits] >= '0' && text[digits] <= '9')
        ++digits;
    if (digits == 0) return std::nullopt;
    const std::string_view suffix = text.substr(digits);
    for (const unit& u : units) {
        if (suffix != u.suffix) continue;
        std::uint64_t number = 0;
        const auto [end, ec] = std::from_chars(text.data(), text.data() + digits, number);
        if (ec != std::errc{} || end != text.data() + digits) return std::nullopt;
        if (number > max / u.factor) return std::nullopt;
        return number * u.factor;
    }
    return std::nullopt;
}

} // namespace

std::optional<duration> parse_duration(std::string_view text)
{
    const auto ms = parse_scaled(text, {{"ms", 1}, {"s", 1000}, {"m", 60'000}, {"h", 3'600'000}},
                                 std::numeric_limits<duration::rep>::max());
    if (!ms) return std::nullopt;
    return duration(static_cast<duration::rep>(*ms));
}

std::optional<std::uint64_t> parse_size(std::string_view text)
{
    constexpr std::uint64_t ki = 1024;
    constexpr std::uint64_t k = 1000;
    return parse_scaled(text,
                        {{"B", 1},
                         {"KiB", ki},
                         {"MiB", ki * ki},
                         {"GiB", ki * ki * ki},
                         {"TiB", ki * ki * ki * ki},
                         {"KB", k},
                         {"MB", k * k},
                         {"GB", k * k * k},
                         {"TB", k * k * k * k}},
                        std::numeric_limits<std::uint64_t>::max());
}

std::optional<endpoint> parse_endpoint(std::string_view text)
{
    std::string_view host;
    std::string_view port;
    if (text.starts_with('[')) {
        const auto close = text.find(']');
        if (close == std::string_view::npos || close + 1 >= text.size() || text[close + 1] != ':')
            return std::nullopt;
        host = text.substr(1, close - 1);
        port = text.substr(close + 2);
        if (host.find(':') == std::string_view::npos) return std::nullopt;
    } else {
        const auto colon = text.rfind(':');
        if (colon == std::string_view::npos) return std::nullopt;
        host = text.substr(0, colon);
        port = text.substr(colon + 1);
        // An IPv6 literal must be bracketed, or "::1:80" would be ambiguous.
        if (host.find(':') != std::string_view::npos) return std::nullopt;
    }
    if (host.empty() || port.empty()) return std::nullopt;
    for (const char c : host)
        if (c == ' ' || c == '\t' || c == '[' || c == ']' || c == '/') return std::nullopt;
    for (const char c : port)
        if (c < '0' || c > '9') return std::nullopt;
    unsigned number = 0;
    const auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), number);
    if (ec != std::errc{} || end != port.data() + port.size() || number < 1 || number > 65535)
        return std::nullopt;
    return endpoint{std::string(host), static_cast<std::uint16_t>(number)};
}

std::string endpoint::to_string() const
{
    if (host.find(':') != std::string::npos) return "[" + host + "]:" + std::to_string(port);
    return host + ":" + std::to_string(port);
}

std::string etcd_endpoint::to_string() const
{
    return (tls ? "https://" : "http://") + address.to_string();
}

std::string_view to_string(service_kind kind) noexcept
{
    switch (kind) {
    case service_kind::tcp:
        return "tcp";
    case service_kind::redis:
        return "redis";
    case service_kind::postgres:
        return "postgres";
    }
    return "?";
}

std::string_view to_string(switch_mode mode) noexcept
{
    switch (mode) {
    case switch_mode::kill:
        return "kill";
    case switch_mode::drain:
        return "drain";
    case switch_mode::pause:
        return "pause";
    }
    return "?";
}

std::string_view to_string(redis_fence fence) noexcept
{
    switch (fence) {
    case redis_fence::replicaof:
        return "replicaof";
    case redis_fence::min_replicas:
        return "min-replicas";
    case redis_fence::none:
        return "none";
    }
    return "?";
}

} // namespace tunneld::config
