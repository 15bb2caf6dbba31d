#pragma once
// The persisted choice of each service: which side is active, its split, whether the old primary
// is fenced. Written atomically before a switch reports done; read at start.

#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <variant>

namespace tunneld::cutover {

/// One service's persisted state.
struct service_record {
    std::string active = "old"; ///< "old" | "new"
    unsigned split_percent = 0; ///< 0 = no split
    bool split = false;         ///< true: split_percent applies, `active` is ignored
    bool sticky = false;
    bool fenced = false;
    std::string updated; ///< RFC 3339 UTC time of the last change

    friend bool operator==(const service_record&, const service_record&) = default;
};

struct state {
    std::map<std::string, service_record> services;

    friend bool operator==(const state&, const state&) = default;
};

/// A state file that exists but cannot be used; never silently treated as "all old".
struct state_error {
    std::string message; ///< names the file and what is wrong with it
};

/// Now, as RFC 3339 UTC to the second: the state's `updated`, a switch's `at`, the history's `time`.
std::string utc_now();

/// Serialises to the JSON document stored on disk. Pure.
std::string encode(const state& s);
/// Parses the JSON document; an error message says what is wrong (not the path). Pure.
std::variant<state, std::string> decode(std::string_view text);

/// Reads `path`: a missing file is an empty state (first start); anything unreadable or
/// malformed is an error.
std::variant<state, state_error> load_state(const std::filesystem::path& path);

/// Writes `s` to `path` atomically: temp file in the same directory, fsync, rename, fsync the
/// directory. Blocking: call it off the event loop. Returns an error message on failure.
std::optional<std::string> save_state(const std::filesystem::path& path, const state& s);

/// Replaces `path` with `text` atomically and durably (temp file in the same directory, fsync,
/// rename, fsync the directory): a crash leaves the old file or the new one, never a mix.
/// Blocking. Returns an error message on failure.
std::optional<std::string> write_file_atomically(const std::filesystem::path& path, std::string_view text);

} // namespace tunneld::cutover
