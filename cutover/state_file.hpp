#pragma once
// The persisted choice of each service: which side is active, its split, whether the old primary
// is fenced. Written atomically before a switch reports done; read at start.

#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <variant>

namespace tunneld::cutover {

/// A switch in progress, written before each step that changes a server (see DESIGN.md, journal).
/// Text as stored; the controller gives it types.
struct journal_record {
    std::string id;   ///< the switch's id, e.g. "redis-1764500000123"
    std::string from; ///< "old" | "new": the side clients were on when it started
    std::string to;   ///< "old" | "new"
    std::string mode; ///< "pause"
    std::string step; ///< the step about to be taken: pause_writes, fence, promote, follow, roll_back
    std::optional<std::int64_t> pause_expires_unix_ms; ///< when the write pause set on `from` lifts by itself
    std::optional<int> hook_pgid;                      ///< process group of a hook running for this step

    friend bool operator==(const journal_record&, const journal_record&) = default;
};

/// One service's persisted state.
struct service_record {
    std::string active = "old"; ///< "old" | "new"
    unsigned split_percent = 0; ///< 0 = no split
    bool split = false;         ///< true: split_percent applies, `active` is ignored
    bool sticky = false;
    bool fenced = false;
    /// New refuses writes because this host rolled back (kept by the probe while on old);
    /// written only when true, so files without it read as before.
    bool new_fenced = false;
    /// redis: min-replicas-to-write each side ("old", "new") had before this host's fence set it,
    /// given back when the fence lifts (a rollback), also after a restart or a reload.
    std::map<std::string, unsigned> min_replicas_before_fence;
    std::string updated; ///< RFC 3339 UTC time of the last change
    /// An unfinished switch: read at start to finish or undo it. Its presence makes the file
    /// version 2, which a tunneld older than the journal refuses to start with (rather than route
    /// by `active` while a switch is half done); without one the file stays version 1.
    std::optional<journal_record> journal;

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
