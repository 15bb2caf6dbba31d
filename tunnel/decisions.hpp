#pragma once
// Pure decisions of tunnel/: no sockets, clocks or randomness inside; callers pass them in.

#include "tunnel/tunnel.hpp"

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

namespace tunneld::tunnel {

/// First reconnect delay before doubling; the cap comes from the config (reconnect_max).
inline constexpr std::chrono::milliseconds backoff_base{500};

/// Delay before reconnect attempt `attempt` (0 = first retry): min(cap, base * 2^attempt),
/// scaled into [50%, 100%] by `unit` in [0, 1) so that sessions do not reconnect in lockstep.
std::chrono::milliseconds backoff_delay(unsigned attempt, std::chrono::milliseconds base,
                                        std::chrono::milliseconds cap, double unit) noexcept;

/// What the pool knows of one session when it picks where a new channel goes.
struct session_load {
    bool healthy = false;
    unsigned channels = 0;     ///< open channels plus opens in flight
    bool gateway_down = false; ///< another session of its gateway failed and none has come back since
    unsigned opening = 0;      ///< opens in flight (libssh2 runs one open at a time per session)
    bool local = false;        ///< runs on the caller's event loop: no thread hop to open and pump
};

/// Index of the healthy session with the fewest channels, taken from sessions whose gateway is
/// not down if there is any such session, else from all healthy ones (one gateway behaves as if
/// there were no gateways at all). Among those, a session with no open in flight goes first:
/// a session opens one channel at a time, so an open queued behind another waits a round trip
/// that an idle session would not. Ties go to a `local` session, then to the first one at or
/// after `start` (rotating `start` spreads ties); nullopt when none is healthy.
std::optional<std::size_t> least_loaded(std::span<const session_load> sessions,
                                        std::size_t start = 0) noexcept;

/// The receive window a channel starts with: libssh2's default (2 MiB), or less if configured.
std::uint32_t initial_channel_window(std::uint64_t channel_window) noexcept;

/// A channel's receive window after its client took a read: `target` is the window it keeps
/// granted, `adjust` the bytes to grant now (0: none).
struct window_step {
    std::uint32_t target = 0;
    std::uint32_t adjust = 0;
};

/// Grows a channel's window only while its client drains: once the client has taken a whole
/// target's worth since the target last changed (`drained`) and keeps little queued (`queued` <
/// target / 4 at that read), the target doubles up to `max`: a bulk stream reaches `max` after
/// it moved about 2 x `max`, whatever the path. A client slower than the path never empties the
/// queue, so its window stays where it is and it holds at most that much. `window` is what the
/// gateway may still send; the grant tops `window + queued` back up to the target once a quarter
/// of it is used. Pure.
window_step next_window(std::uint32_t target, std::uint32_t max, std::uint64_t window, std::uint64_t queued,
                        std::uint64_t drained) noexcept;

/// How long a channel open waits on one gateway before it is also tried on another: a quarter
/// keepalive within [100 ms, 1 s], and never more than half of connect_timeout. A gateway that
/// answers does so in a round trip; one that is silent would otherwise hold the client until
/// keepalive x keepalive_max_missed or connect_timeout.
std::chrono::milliseconds race_delay(std::chrono::milliseconds connect_timeout,
                                     std::chrono::milliseconds keepalive) noexcept;

/// The index in channel_open_latency::counts of an open that took `took`: the first bound it
/// does not exceed, or the last index when it exceeds them all.
std::size_t channel_open_bucket(std::chrono::nanoseconds took) noexcept;

/// What `tunnelctl tunnels` shows for one gateway.
enum class gateway_state {
    connecting, ///< no session has come up yet and none has failed
    up,         ///< at least one session up, none failed since
    down,       ///< a session failed (or every attempt did) and none has been established since
};

/// The state of a gateway: `failed` = one of its sessions failed (or could not connect) and none
/// has been established since.
gateway_state gateway_state_of(unsigned sessions_up, bool failed) noexcept;

std::string_view to_string(gateway_state) noexcept;

/// True when nothing has been received for `max_missed` keepalive intervals.
bool keepalive_expired(std::chrono::steady_clock::time_point last_receive,
                       std::chrono::steady_clock::time_point now, std::chrono::milliseconds interval,
                       unsigned max_missed) noexcept;

/// How often the keepalive timer ticks: a quarter interval (at least 100 ms), so that a dead
/// session is noticed well within interval x max_missed.
std::chrono::milliseconds keepalive_tick(std::chrono::milliseconds interval) noexcept;

/// libssh2 sends keepalives at whole seconds, and treats 1 as 2.
unsigned keepalive_seconds(std::chrono::milliseconds interval) noexcept;

enum class host_key_verdict { trusted, unknown, mismatch, check_failed };

/// Maps libssh2_knownhost_checkp's result (LIBSSH2_KNOWNHOST_CHECK_*) to a verdict.
host_key_verdict verdict_from_check(int libssh2_check_result) noexcept;

/// The error a session fails with for a verdict; nullopt for trusted.
std::optional<tunnel_errc> refusal_for(host_key_verdict) noexcept;

/// LIBSSH2_HOSTKEY_TYPE_* -> LIBSSH2_KNOWNHOST_KEY_* bits; 0 when unknown (check then fails).
int knownhost_key_bits(int libssh2_hostkey_type) noexcept;

/// LIBSSH2_HOSTKEY_TYPE_* -> the OpenSSH name ("ssh-ed25519", ...).
std::string_view host_key_type_name(int libssh2_hostkey_type) noexcept;

/// "SHA256:<base64 without padding>", as ssh-keygen -l prints it.
std::string sha256_fingerprint(std::span<const unsigned char, 32> digest);

/// The names of comma-separated `wanted` that appear in `supported`, in `wanted`'s order.
/// (libssh2 1.10's method_pref drops unknown names with an overlapping memcpy: never pass any.)
std::string filter_methods(std::string_view wanted, std::span<const std::string_view> supported);

/// True when a private key file's mode lets group or others read, write or execute it.
bool key_mode_too_open(std::uint32_t mode) noexcept;

/// "0640"-style rendering of the permission bits.
std::string mode_string(std::uint32_t mode);

} // namespace tunneld::tunnel
