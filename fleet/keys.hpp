#pragma once
// The fleet's keys in etcd and the JSON records under them (see docs/fleet.md):
//
//   /tunneld/<fleet>/services/<service>/epoch              epoch_record, no lease
//   /tunneld/<fleet>/services/<service>/members/<member>   member_record, bound to the member's lease
//
// Pure: text in, structs out; a record that does not decode is reported, never defaulted.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace tunneld::fleet {

enum class side { old_side, new_side };
std::string_view to_string(side) noexcept;
std::optional<side> parse_side(std::string_view text) noexcept;

class key_layout {
public:
    /// `fleet` is the `[fleet] name` (validated by config: no '/').
    explicit key_layout(std::string fleet);

    const std::string& root() const { return root_; } ///< "/tunneld/<fleet>/": one watch sees it all
    std::string service_prefix(std::string_view service) const;
    std::string epoch_key(std::string_view service) const;
    std::string members_prefix(std::string_view service) const;
    std::string member_key(std::string_view service, std::string_view member) const;
    std::string pause_key(std::string_view service) const;

    /// What a key under root() names; nullopt for any other key (ignored, never an error: a
    /// later version may add keys).
    struct named {
        enum class kind { epoch, member, pause };
        kind what = kind::epoch;
        std::string service;
        std::string member; ///< for kind::member
        friend bool operator==(const named&, const named&) = default;
    };
    std::optional<named> parse(std::string_view key) const;

private:
    std::string root_;
};

/// One member's state for one service, written by that member under its lease.
struct member_record {
    side active = side::old_side;
    std::int64_t epoch = 0;      ///< the epoch the member runs (0: none committed yet)
    std::string state;           ///< the member's switch state, e.g. "serving", "holding"
    std::uint64_t held = 0;      ///< clients held right now
    std::int64_t last_seen_ms = 0; ///< wall clock (Unix ms) when the member wrote this record

    friend bool operator==(const member_record&, const member_record&) = default;
};

std::string encode(const member_record&);
std::optional<member_record> decode_member_record(std::string_view json);

/// A service's fleet-wide epoch. `phase` "committed": nobody holds the service and `side` is
/// where every member belongs. Any other phase: `coordinator` holds the switch numbered `epoch`
/// towards `target`, and `side` is still the last committed side.
struct epoch_record {
    std::int64_t epoch = 0;
    side committed = side::old_side;
    std::string phase = "committed";
    std::string coordinator;    ///< empty when committed
    std::optional<side> target; ///< set while held

    bool held() const { return phase != "committed"; }
    friend bool operator==(const epoch_record&, const epoch_record&) = default;
};

/// The epoch key as last read or written, with the revision the next compare must name.
struct epoch_state {
    epoch_record record;
    std::int64_t mod_revision = 0; ///< 0: the key does not exist yet (epoch 0, side old)
    friend bool operator==(const epoch_state&, const epoch_state&) = default;
};

std::string encode(const epoch_record&);
std::optional<epoch_record> decode_epoch_record(std::string_view json);

/// A fleet-wide pause of a service (`tunnelctl pause` on a member): every member holds new
/// clients until `until_ms` (wall clock, Unix ms) or until the key is deleted (`resume`).
struct pause_record {
    std::int64_t until_ms = 0;
    std::string by; ///< the member it was typed on
    friend bool operator==(const pause_record&, const pause_record&) = default;
};
std::string encode(const pause_record&);
std::optional<pause_record> decode_pause_record(std::string_view json);

} // namespace tunneld::fleet
