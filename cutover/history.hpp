#pragma once
// The switch history of one host: every switch, rollback, split, pause and resume an operator
// asked for, who asked, and what came of it. Bounded (oldest dropped first) and kept in a JSON file
// in the state directory beside the state file, written with the same atomic write. Pure apart from
// load_history / save_history; not thread-safe (its owner serialises access).

#include <cstdint>
#include <deque>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace tunneld::cutover {

enum class history_action { switch_side, rollback, split, pause, resume };
enum class history_result { done, refused, failed, busy };

std::string_view to_string(history_action) noexcept;
std::string_view to_string(history_result) noexcept;
std::optional<history_action> parse_history_action(std::string_view) noexcept;
std::optional<history_result> parse_history_result(std::string_view) noexcept;

/// One command and its outcome.
struct history_entry {
    std::string time; ///< RFC 3339 UTC, when the command finished
    std::string service;
    history_action action = history_action::switch_side;
    std::string from;                     ///< active side before: "old" | "new" | "split"
    std::string to;                       ///< active side asked for ("old" | "new" | "split")
    std::string mode;                     ///< "kill" | "drain" | "pause"; empty when it has none
    bool forced = false;                  ///< --force was given
    bool adopted = false;                 ///< the servers were already switched: only this host flipped
    std::optional<std::uint32_t> uid;     ///< the operator (SO_PEERCRED of the control peer)
    std::string user;                     ///< the uid's name; empty when it has none
    std::optional<std::int64_t> held_ms;  ///< how long new clients were held; nullopt: none were
    std::optional<std::uint64_t> cut;     ///< clients cut by the command; nullopt: not counted
    std::optional<std::uint64_t> moved;   ///< clients moved to the other side; nullopt: not counted
    history_result result = history_result::done;
    std::string reason; ///< the one-line outcome the operator was shown

    friend bool operator==(const history_entry&, const history_entry&) = default;
};

/// The newest `capacity` entries, oldest first.
class switch_history {
public:
    static constexpr std::size_t default_capacity = 1000;

    explicit switch_history(std::size_t capacity = default_capacity) : capacity_(capacity) {}

    /// Appends `entry`, dropping the oldest entries beyond the capacity.
    void append(history_entry entry);
    /// Entries of `service` (all when empty), oldest first, at most the newest `limit`.
    std::vector<history_entry> entries(std::string_view service = {},
                                       std::size_t limit = default_capacity) const;
    std::size_t size() const { return entries_.size(); }

    /// The JSON document stored on disk. Pure.
    std::string encode() const;
    /// Parses a stored document (keeping at most `capacity` newest entries); an error says what is
    /// wrong with it. Pure.
    static std::variant<switch_history, std::string> decode(std::string_view text,
                                                            std::size_t capacity = default_capacity);

private:
    std::size_t capacity_;
    std::deque<history_entry> entries_;
};

/// The history file beside `state_file` (state.json -> history.json in the same directory).
std::filesystem::path history_path_for(const std::filesystem::path& state_file);

/// Reads `path`: a missing file is an empty history; an unreadable or malformed one is an error
/// (history is a record, not a decision: the caller logs it and starts a new one).
std::variant<switch_history, std::string> load_history(const std::filesystem::path& path,
                                                       std::size_t capacity = switch_history::default_capacity);
/// Writes atomically (see save_state). Blocking: call it off the event loop.
std::optional<std::string> save_history(const std::filesystem::path& path, const switch_history& history);

} // namespace tunneld::cutover
