#pragma once
// Routing decisions: which side a new client goes to. Pure: no sockets, clock or randomness.

#include <cstdint>
#include <optional>
#include <span>
#include <string_view>

namespace tunneld::proxy {

enum class side : std::uint8_t { old_side, new_side };

/// "old" / "new", the words of the contract.
std::string_view to_string(side) noexcept;
std::optional<side> parse_side(std::string_view) noexcept;
constexpr side other(side s) noexcept
{
    return s == side::old_side ? side::new_side : side::old_side;
}

/// Where new clients of a service go right now.
struct route {
    side active = side::old_side;
    /// When set, this percentage (0..100) of new clients goes to new, the rest to old; `active` is ignored.
    std::optional<std::uint8_t> split_percent;
    bool sticky = false; ///< split by client address instead of by a random roll
    bool hold = false;   ///< new clients are accepted and held, nothing is connected
    bool refuse = false; ///< new (and held) clients are closed at once: no side may be used (unresolved switch)

    friend bool operator==(const route&, const route&) = default;
};

/// All new clients to `s`, no split, nothing held.
constexpr route route_to(side s) noexcept
{
    route r;
    r.active = s;
    return r;
}

/// Chooses the side for one client; the caller passes `roll` in [0, 100).
side choose_side(const route& r, std::uint32_t roll) noexcept;

/// A roll in [0, 100) that depends only on the client's address bytes (not its port), so that a
/// sticky split sends every connection from one host to the same side.
std::uint32_t sticky_roll(std::span<const unsigned char> address_bytes) noexcept;

} // namespace tunneld::proxy
