#include "tunnel/decisions.hpp"

#include <algorithm>
#include <cstdio>
#include <libssh2.h>

namespace tunneld::tunnel {

std::chrono::milliseconds backoff_delay(unsigned attempt, std::chrono::milliseconds base,
                                        std::chrono::milliseconds cap, double unit) noexcept
{
    if (cap.count() <= 0) return std::chrono::milliseconds{0};
    // Doubling stops at the cap, so the shift never overflows.
    auto full = std::min(base, cap);
    for (unsigned i = 0; i < attempt && full < cap; ++i)
        full = std::min(full * 2, cap);
    unit = std::clamp(unit, 0.0, 1.0);
    const auto half = full.count() / 2;
    return std::chrono::milliseconds{
        half + static_cast<std::int64_t>(unit * static_cast<double>(full.count() - half))};
}

std::optional<std::size_t> least_loaded(std::span<const session_load> sessions, std::size_t start) noexcept
{
    std::optional<std::size_t> best;
    const auto n = sessions.size();
    // First pass: gateways not down; second: any healthy session (a suspect gateway beats none).
    for (const bool allow_down : {false, true}) {
        for (std::size_t k = 0; k < n; ++k) {
            const auto i = (start + k) % n;
            if (!sessions[i].healthy || (sessions[i].gateway_down && !allow_down)) continue;
            // `channels` counts opens in flight: an idle session takes the next open before one
            // whose open is under way, and clients still spread evenly over the gateways.
            // Among equally loaded sessions, one on the caller's loop opens and pumps without
            // waking another thread (a wake-up costs more than the whole open on a busy host).
            if (!best || sessions[i].channels < sessions[*best].channels ||
                (sessions[i].channels == sessions[*best].channels && sessions[i].local && !sessions[*best].local))
                best = i;
        }
        if (best) return best;
    }
    return best;
}

std::uint32_t initial_channel_window(std::uint64_t channel_window) noexcept
{
    return static_cast<std::uint32_t>(std::min<std::uint64_t>(channel_window, LIBSSH2_CHANNEL_WINDOW_DEFAULT));
}

window_step next_window(std::uint32_t target, std::uint32_t max, std::uint64_t window, std::uint64_t queued,
                        std::uint64_t drained) noexcept
{
    // No shrinking on a full queue: a window arrives in one burst on a long path, so a full
    // queue does not tell a slow client from a fast one.
    if (queued < target / 4 && drained >= target)
        target = static_cast<std::uint32_t>(std::min<std::uint64_t>(std::uint64_t{target} * 2, max));
    const auto held = window + queued;
    if (held >= target / 4 * 3) return {target, 0};
    return {target, static_cast<std::uint32_t>(target - held)};
}

std::chrono::milliseconds race_delay(std::chrono::milliseconds connect_timeout,
                                     std::chrono::milliseconds keepalive) noexcept
{
    using std::chrono::milliseconds;
    auto delay = std::clamp(keepalive / 4, milliseconds{100}, milliseconds{1000});
    if (connect_timeout.count() > 0) delay = std::min(delay, connect_timeout / 2);
    return delay;
}

std::size_t channel_open_bucket(std::chrono::nanoseconds took) noexcept
{
    const double seconds = std::chrono::duration<double>(took).count();
    // lower_bound: an open that took exactly a bound belongs to that bound's bucket (le="bound").
    return static_cast<std::size_t>(
        std::lower_bound(channel_open_bounds.begin(), channel_open_bounds.end(), seconds) -
        channel_open_bounds.begin());
}

gateway_state gateway_state_of(unsigned sessions_up, bool failed) noexcept
{
    if (failed) return gateway_state::down;
    return sessions_up > 0 ? gateway_state::up : gateway_state::connecting;
}

std::string_view to_string(gateway_state state) noexcept
{
    switch (state) {
    case gateway_state::connecting:
        return "connecting";
    case gateway_state::up:
        return "up";
    case gateway_state::down:
        return "down";
    }
    return "down";
}

bool keepalive_expired(std::chrono::steady_clock::time_point last_receive,
                       std::chrono::steady_clock::time_point now, std::chrono::milliseconds interval,
                       unsigned max_missed) noexcept
{
    if (interval.count() <= 0 || max_missed == 0) return false; // keepalive disabled
    return now - last_receive >= interval * max_missed;
}

std::chrono::milliseconds keepalive_tick(std::chrono::milliseconds interval) noexcept
{
    return std::max(std::chrono::milliseconds{100}, interval / 4);
}

unsigned keepalive_seconds(std::chrono::milliseconds interval) noexcept
{
    const auto secs = std::chrono::duration_cast<std::chrono::seconds>(interval).count();
    return static_cast<unsigned>(std::max<std::int64_t>(1, secs));
}

host_key_verdict verdict_from_check(int result) noexcept
{
    switch (result) {
    case LIBSSH2_KNOWNHOST_CHECK_MATCH:
        return host_key_verdict::trusted;
    case LIBSSH2_KNOWNHOST_CHECK_MISMATCH:
        return host_key_verdict::mismatch;
    case LIBSSH2_KNOWNHOST_CHECK_NOTFOUND:
        return host_key_verdict::unknown;
    default:
        return host_key_verdict::check_failed;
    }
}

std::optional<tunnel_errc> refusal_for(host_key_verdict verdict) noexcept
{
    switch (verdict) {
    case host_key_verdict::trusted:
        return std::nullopt;
    case host_key_verdict::mismatch:
        return tunnel_errc::host_key_mismatch;
    case host_key_verdict::unknown:
    case host_key_verdict::check_failed:
        return tunnel_errc::host_key_unknown;
    }
    return tunnel_errc::host_key_unknown;
}

int knownhost_key_bits(int type) noexcept
{
    switch (type) {
    case LIBSSH2_HOSTKEY_TYPE_RSA:
        return LIBSSH2_KNOWNHOST_KEY_SSHRSA;
    case LIBSSH2_HOSTKEY_TYPE_DSS:
        return LIBSSH2_KNOWNHOST_KEY_SSHDSS;
    case LIBSSH2_HOSTKEY_TYPE_ECDSA_256:
        return LIBSSH2_KNOWNHOST_KEY_ECDSA_256;
    case LIBSSH2_HOSTKEY_TYPE_ECDSA_384:
        return LIBSSH2_KNOWNHOST_KEY_ECDSA_384;
    case LIBSSH2_HOSTKEY_TYPE_ECDSA_521:
        return LIBSSH2_KNOWNHOST_KEY_ECDSA_521;
    case LIBSSH2_HOSTKEY_TYPE_ED25519:
        return LIBSSH2_KNOWNHOST_KEY_ED25519;
    default:
        return 0;
    }
}

std::string_view host_key_type_name(int type) noexcept
{
    switch (type) {
    case LIBSSH2_HOSTKEY_TYPE_RSA:
        return "ssh-rsa";
    case LIBSSH2_HOSTKEY_TYPE_DSS:
        return "ssh-dss";
    case LIBSSH2_HOSTKEY_TYPE_ECDSA_256:
        return "ecdsa-sha2-nistp256";
    case LIBSSH2_HOSTKEY_TYPE_ECDSA_384:
        return "ecdsa-sha2-nistp384";
    case LIBSSH2_HOSTKEY_TYPE_ECDSA_521:
        return "ecdsa-sha2-nistp521";
    case LIBSSH2_HOSTKEY_TYPE_ED25519:
        return "ssh-ed25519";
    default:
        return "unknown";
    }
}

std::string sha256_fingerprint(std::span<const unsigned char, 32> digest)
{
    static constexpr char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    std::string out = "SHA256:";
    std::uint32_t acc = 0;
    int bits = 0;
    for (unsigned char byte : digest) {
        acc = (acc << 8) | byte;
        bits += 8;
        while (bits >= 6) {
            bits -= 6;
            out += alphabet[(acc >> bits) & 0x3f];
        }
    }
    if (bits > 0) out += alphabet[(acc << (6 - bits)) & 0x3f];
    return out;
}

std::string filter_methods(std::string_view wanted, std::span<const std::string_view> supported)
{
    std::string out;
    while (!wanted.empty()) {
        const auto comma = wanted.find(',');
        const auto name = wanted.substr(0, comma);
        wanted = comma == std::string_view::npos ? std::string_view{} : wanted.substr(comma + 1);
        if (name.empty() || std::find(supported.begin(), supported.end(), name) == supported.end()) continue;
        if (!out.empty()) out += ',';
        out += name;
    }
    return out;
}

bool key_mode_too_open(std::uint32_t mode) noexcept
{
    return (mode & 077) != 0;
}

std::string mode_string(std::uint32_t mode)
{
    char text[8];
    std::snprintf(text, sizeof text, "%04o", static_cast<unsigned>(mode & 07777));
    return text;
}

} // namespace tunneld::tunnel
