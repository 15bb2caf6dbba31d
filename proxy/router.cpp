#include "proxy/router.hpp"

namespace tunneld::proxy {

std::string_view to_string(side s) noexcept
{
    return s == side::old_side ? "old" : "new";
}

std::optional<side> parse_side(std::string_view text) noexcept
{
    if (text == "old") return side::old_side;
    if (text == "new") return side::new_side;
    return std::nullopt;
}

side choose_side(const route& r, std::uint32_t roll) noexcept
{
    if (!r.split_percent) return r.active;
    return roll < *r.split_percent ? side::new_side : side::old_side;
}

std::uint32_t sticky_roll(std::span<const unsigned char> address_bytes) noexcept
{
    // FNV-1a: stable across runs and hosts, so a restart keeps every client host on its side.
    std::uint64_t hash = 14695981039346656037ull;
    for (unsigned char byte : address_bytes) {
        hash ^= byte;
        hash *= 1099511628211ull;
    }
    return static_cast<std::uint32_t>(hash % 100);
}

} // namespace tunneld::proxy
