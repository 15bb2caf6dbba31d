#pragma once
// The control protocol (docs/control-protocol.md) as pure functions: framing, request parsing
// and validation, reply building and reply parsing. No sockets, no clock; the daemon's control
// server and tunnelctl both use it, so the two ends cannot disagree about a message.

#include "config/config.hpp"

#include <cstddef>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <variant>

namespace tunneld::control {

/// The longest request or reply line accepted, not counting its "\n" (or "\r\n").
inline constexpr std::size_t max_line_length = 64 * 1024;

/// Splits a byte stream into lines. Bytes may arrive in any chunks; the lines that come out do
/// not depend on where the stream was cut. A trailing "\r" is removed; lines that are empty or
/// only blanks (space, tab) are skipped.
class line_reader {
public:
    /// `max_line` bounds one line's length without its terminator.
    explicit line_reader(std::size_t max_line = max_line_length) : max_line_(max_line) {}

    /// Appends `bytes` to the stream; ignored once the reader has overflowed.
    void feed(std::string_view bytes);

    /// The next complete line without its terminator, or nullopt when no complete line is
    /// buffered or the reader has overflowed. Lines before an oversized one are still returned.
    std::optional<std::string> next_line();

    /// True once a line longer than the limit was seen; from then on no line comes out and the
    /// caller should answer an error and close.
    bool overflowed() const noexcept { return overflowed_; }

    /// Bytes buffered and not yet returned as lines (for tests and memory accounting).
    std::size_t buffered() const noexcept { return buffer_.size() - head_; }

private:
    std::size_t max_line_;
    std::string buffer_;
    std::size_t head_ = 0;    ///< start of the first unreturned line in buffer_
    std::size_t scanned_ = 0; ///< buffer_[head_, scanned_) holds no '\n'
    bool overflowed_ = false;
};

/// check: the guardrails of a switch, changing nothing (`tunnelctl check`, `switch --dry-run`);
/// history: the switches recorded on this host; fleet: the members of this host's fleet.
enum class command { status, tunnels, switch_side, rollback, split, pause, resume, reload, check, history, fleet };
enum class side_choice { old_side, new_side };
/// Why a request failed, as the wire names it; an error_condition-style enum hooked into
/// std::error_code (`ec == control::error_code::busy`). Zero is no error, so the codes start at 1.
enum class error_code { bad_request = 1, unknown_service, refused, failed, busy, forbidden };

/// The wire name: "status", "tunnels", "switch", "rollback", "split", "pause", "resume", "reload",
/// "check", "history", "fleet".
std::string_view to_string(command) noexcept;
/// "old" or "new".
std::string_view to_string(side_choice) noexcept;
/// "bad_request", "unknown_service", "refused", "failed", "busy" or "forbidden".
std::string_view to_string(error_code) noexcept;

/// The category of error_code: its name is "tunneld.control", its messages the wire names.
const std::error_category& control_category() noexcept;
std::error_code make_error_code(error_code code) noexcept;

/// The command named `name` on the wire; nullopt for anything else.
std::optional<command> parse_command(std::string_view name) noexcept;
/// The error code named `name` on the wire; nullopt for anything else.
std::optional<error_code> parse_error_code(std::string_view name) noexcept;

/// True for commands whose `service` field is required (all but status, tunnels, reload, history,
/// fleet).
bool needs_service(command) noexcept;

/// One validated request. Fields a command does not take keep their defaults.
struct request {
    command cmd = command::status;
    std::optional<std::string> service =
        std::nullopt;                       ///< required by needs_service(cmd); optional for status
    side_choice to = side_choice::new_side; ///< switch, check
    std::optional<config::switch_mode> mode = std::nullopt; ///< switch, check; unset: the service's mode
    bool force = false;                                     ///< switch, check
    unsigned percent = 0;                                   ///< split; 0..100
    bool sticky = false;                                    ///< split
    std::optional<config::duration> timeout = std::nullopt; ///< pause; unset: the service's pause_timeout

    friend bool operator==(const request&, const request&) = default;
};

/// An error as it travels on the wire: a code for scripts and a message for people.
struct protocol_error {
    error_code code = error_code::failed;
    std::string message;

    friend bool operator==(const protocol_error&, const protocol_error&) = default;
};

/// The error to answer before closing a connection whose line_reader overflowed:
/// bad_request, "request longer than 65536 bytes".
protocol_error line_too_long_error();

/// Parses and validates one request line (without its terminator). Every problem comes back as
/// a bad_request error with a message naming the field; never throws.
std::variant<request, protocol_error> parse_request(std::string_view line);

/// The request as one JSON line ending in "\n"; only the fields `r.cmd` takes are written, so
/// parse_request(encode(r)) == r for any request parse_request can return.
std::string encode(const request& r);

/// `{"progress": message}` + "\n".
std::string progress_line(std::string_view message);
/// `{"ok": true, "result": result}` + "\n".
std::string ok_line(const nlohmann::json& result);
/// `{"ok": false, "error": message, "code": code}` + "\n".
std::string error_line(const protocol_error& error);

/// A progress line: the daemon is still working on the request.
struct progress {
    std::string message;

    friend bool operator==(const progress&, const progress&) = default;
};

/// A final successful reply.
struct ok_result {
    nlohmann::json result;

    friend bool operator==(const ok_result&, const ok_result&) = default;
};

/// One reply line as the client sees it. A line that is not a well-formed reply comes back as a
/// protocol_error with code failed and a message starting "malformed reply"; an unknown error
/// code is read as failed, keeping the daemon's message.
using reply = std::variant<progress, ok_result, protocol_error>;

/// Parses one reply line (without its terminator); never throws.
reply parse_reply(std::string_view line);

/// A duration as the protocol writes it: "250ms", "5s", "2m", "1h" (the largest exact unit).
std::string format_duration(config::duration d);

} // namespace tunneld::control

template <> struct std::is_error_code_enum<tunneld::control::error_code> : std::true_type {};
