#pragma once
// Parsing of the text a Redis server returns for `INFO` (the bulk string hiredis hands back).
// Pure: no sockets, no clock. A missing or malformed field is absent, never zero.

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>

namespace tunneld::cutover {

/// `key -> value` of every well-formed `key:value` line; keys are unique.
using info_map = std::map<std::string, std::string, std::less<>>;

/// Incremental INFO parser: feed the text in pieces of any size, then `finish()`.
/// Lines end with LF (an optional CR before it is dropped); `# Section` and blank lines are
/// skipped. A line is dropped when it has no ':', an empty key, a key byte outside
/// [A-Za-z0-9_-], a value byte outside printable ASCII, or is longer than `max_line`. A key seen
/// twice with different values is dropped for good (ambiguous). The last line counts only if it
/// ends with LF: a truncated answer must not yield a truncated number.
class info_parser {
public:
    static constexpr std::size_t max_line = 64 * 1024;

    /// Consumes `chunk`; never fails.
    void feed(std::string_view chunk);
    /// Ends the input and returns the fields; an unterminated last line is discarded.
    info_map finish();

private:
    void end_line();

    info_map fields_;
    info_map ambiguous_; ///< keys seen with conflicting values; never re-enter fields_
    std::string line_;   ///< bytes of the current, unterminated line
    bool line_too_long_ = false;
};

/// Parses a whole INFO answer at once.
info_map parse_info(std::string_view text);

/// Parses a decimal unsigned integer with no sign, blank, suffix or leading zero; nullopt otherwise.
std::optional<std::uint64_t> parse_uint(std::string_view text) noexcept;
/// Parses a decimal signed integer (optional '-', no leading zero); nullopt otherwise.
std::optional<std::int64_t> parse_int(std::string_view text) noexcept;

enum class redis_role { master, slave };

/// The replication fields of `INFO replication`, typed. Every field is absent unless present
/// and well-formed in the answer.
struct replication_info {
    std::optional<redis_role> role;
    std::optional<std::uint64_t> master_repl_offset;
    std::optional<std::uint64_t> slave_repl_offset;         ///< role:slave only
    std::optional<bool> master_link_up;                     ///< master_link_status: up|down
    std::optional<bool> master_sync_in_progress;            ///< 0|1
    std::optional<std::int64_t> master_last_io_seconds_ago; ///< -1 while not connected
    std::optional<std::uint64_t> connected_slaves;
    std::optional<std::string> master_host;
    std::optional<std::uint16_t> master_port;
};

/// Types the replication fields of `fields`.
replication_info parse_replication(const info_map& fields);
/// Same, from the raw INFO text.
replication_info parse_replication(std::string_view text);

std::string_view to_string(redis_role) noexcept;

} // namespace tunneld::cutover
