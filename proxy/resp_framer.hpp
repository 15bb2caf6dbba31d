#pragma once
// RESP framing (RESP2 and RESP3) in both directions: where each request and each reply ends, and
// the command name and first few arguments of each request. Fed bytes in pieces of any size, cut
// anywhere. Each framer is a fixed-size object: it never allocates and never keeps a frame's
// payload, only its boundaries. Pure: no sockets, clock or threads.
//
// Requests follow what Redis accepts: an array of bulk strings (`*N` then N `$len` payloads), or
// an inline command (a line of blank-separated words ending with LF). Replies may be any RESP2 or
// RESP3 type, nested; a push (`>`) ends a frame but is not a reply; an attribute (`|`) precedes a
// reply and ends no frame of its own.

#include <array>
#include <cstddef>
#include <cstdint>
#include <string_view>

namespace tunneld::proxy {

/// Why bytes are not RESP. A client with such bytes is never moved, and this is the reason given.
enum class resp_error : std::uint8_t {
    none,
    bad_type,           ///< a reply (or nested element) starts with a byte that is no RESP type
    expected_bulk,      ///< an element of a request array is not a bulk string
    bad_length,         ///< a length or count is not a decimal integer, or is negative
    length_too_large,   ///< a bulk length or aggregate count above the framer's limits
    too_deep,           ///< aggregates nested deeper than the limit
    line_too_long,      ///< a simple line or an inline command longer than the limit
    missing_crlf,       ///< a line or a bulk payload not ended by CR LF
    bad_integer,        ///< an integer or big number reply that is not a decimal integer
    bad_simple_value,   ///< a boolean other than t/f, a null with text, an empty double
    streamed_aggregate, ///< RESP3 streamed strings or aggregates (`$?`, `*?`): Redis never sends them
};

std::string_view to_string(resp_error) noexcept;

/// The RESP types; `null` covers RESP2's `$-1` and `*-1` as well as RESP3's `_`.
enum class resp_type : std::uint8_t {
    simple_string,
    simple_error,
    integer,
    bulk_string,
    array,
    null,
    boolean,
    double_number,
    big_number,
    bulk_error,
    verbatim_string,
    map,
    set,
    attribute,
    push,
};

/// What one feed call did: `consumed` bytes were taken (always all of the input, unless a frame
/// ended inside it: then up to and including that frame's last byte, or unless the framer failed).
struct framer_step {
    std::size_t consumed = 0;
    bool frame_ended = false;
};

/// Limits that make bad or hostile bytes a protocol error rather than unbounded work.
struct resp_limits {
    std::int64_t max_bulk_length = 512ll * 1024 * 1024; ///< Redis's default proto-max-bulk-len
    std::int64_t max_count = 0x7fffffff;                ///< elements of one aggregate (Redis: INT_MAX)
    std::size_t max_line = 64 * 1024;                   ///< simple lines and inline commands
};

namespace detail {

/// Where one argument of a request is kept.
struct kept_argument {
    std::uint32_t offset; ///< in the framer's keep buffer
    std::uint32_t kept;   ///< bytes kept; equal to `length` when the argument is kept whole
    std::int64_t length;  ///< bytes in the argument
};

/// The byte-level machine both framers share. Not for direct use.
class resp_scanner {
public:
    static constexpr std::size_t max_depth = 32;

    enum class direction : std::uint8_t { request, reply };

    resp_scanner(direction d, const resp_limits& limits) noexcept : direction_(d), limits_(limits) {}

    framer_step feed(std::string_view bytes) noexcept;
    resp_error error() const noexcept { return error_; }
    /// True while some bytes of an unfinished frame (or of a reply's leading attribute) were taken.
    bool mid_frame() const noexcept { return state_ != state::frame_start || attribute_seen_; }

protected:
    enum class state : std::uint8_t {
        frame_start,  ///< the first byte of a frame
        element_type, ///< the type byte of a nested element
        number,       ///< digits of a length, count or integer
        number_lf,    ///< after the CR that ends the digits
        line,         ///< a simple line (+ - , ( # _)
        line_lf,
        payload, ///< the bytes of a bulk string
        payload_cr,
        payload_lf,
        inline_line, ///< an inline request, up to LF
        failed,
    };

    struct level {
        std::int64_t remaining; ///< elements still to come at this depth; > 0 while on the stack
        std::int64_t seen;      ///< elements completed at this depth (not counting attributes)
        bool attribute;
    };

    /// A whole frame of the usual shapes at `p` (a request array of bulk strings; a bulk string,
    /// simple string, error or integer reply), framed in one pass exactly as the byte machine
    /// would frame it; 0 when the frame is not all in [p, end) or has another shape (the byte
    /// machine then takes it from its first byte).
    std::size_t whole_frame(const char* p, const char* end) noexcept;
    std::size_t whole_request(const char* p, const char* end) noexcept;
    std::size_t whole_reply(const char* p, const char* end) noexcept;
    std::size_t step_number(const char* p, const char* end) noexcept;
    std::size_t step_line(const char* p, const char* end) noexcept;
    std::size_t step_payload(const char* p, const char* end) noexcept;
    std::size_t step_inline(const char* p, const char* end) noexcept;
    void start_element(char type) noexcept;
    void end_number() noexcept;
    void end_line() noexcept;
    void element_done(bool is_error) noexcept;
    void attribute_done() noexcept;
    void fail(resp_error e) noexcept;
    void begin_frame() noexcept;

    // Request argument keeping (request direction only).
    void keep_argument_start(std::size_t index, std::int64_t length) noexcept;
    void keep_bytes(const char* p, std::size_t n) noexcept;
    void inline_byte(char c) noexcept;
    bool names_long_arguments() const noexcept;

    const direction direction_;
    const resp_limits limits_;
    state state_ = state::frame_start;
    resp_error error_ = resp_error::none;
    bool frame_ended_ = false;

    // The element being read.
    char type_ = 0;
    bool negative_ = false;
    std::uint8_t digits_ = 0;
    std::int64_t value_ = 0;     ///< the number being read
    std::int64_t remaining_ = 0; ///< payload bytes still to come
    std::size_t line_length_ = 0;
    char line_first_ = 0; ///< first byte of the current line (booleans, nulls)
    bool line_valid_ = true;

    std::size_t depth_ = 0;

    // The top-level frame (replies).
    bool attribute_seen_ = false; ///< a top-level attribute was read; its reply comes next
    resp_type top_type_ = resp_type::null;
    bool top_after_attribute_ = false;
    bool top_null_ = false;
    std::int64_t top_length_ = 0;
    std::uint64_t error_elements_ = 0; ///< bit i: element i of the top-level aggregate is an error
    bool error_beyond_ = false;        ///< an error at index >= 64
    static constexpr std::size_t head_size = 64;
    std::size_t head_length_ = 0;
    bool capture_head_ = false;

    // The request's arguments (requests).
    static constexpr std::size_t max_arguments = 12;
    static constexpr std::size_t name_keep = 32;
    static constexpr std::size_t short_keep = 64;
    static constexpr std::size_t long_keep = 512;
    static constexpr std::size_t keep_buffer_size = 2048;
    std::size_t keep_used_ = 0;
    std::size_t argument_count_ = 0;      ///< all arguments of the request, kept or not
    std::size_t keep_limit_ = 0;          ///< bytes of the current argument still to keep
    std::size_t keeping_ = max_arguments; ///< index of the argument being kept, or max_arguments
    bool long_arguments_ = false;         ///< AUTH, HELLO and CLIENT keep long arguments (passwords, names)
    bool inline_ = false;
    bool inline_quoted_ = false;
    bool in_token_ = false;

    // The arrays last, the arguments' bounds first: the few fields every frame touches then
    // share two cache lines, not six (a pump follows many clients; their framers are cold).
    std::array<kept_argument, max_arguments> arguments_{};
    std::array<char, head_size> head_{};
    std::array<char, keep_buffer_size> keep_buffer_{};
    std::array<level, max_depth> stack_{};
};

} // namespace detail

/// One request, as kept by the framer; valid until the framer is fed again.
class request_view {
public:
    /// All arguments, the name included; 0 for an empty request (`*0`, a blank line), which Redis
    /// does not answer.
    std::size_t argument_count() const noexcept { return count_; }
    /// The kept bytes of argument `i` (a prefix when the argument is longer than kept), or "".
    std::string_view argument(std::size_t i) const noexcept;
    /// True when argument `i` is kept whole.
    bool kept_whole(std::size_t i) const noexcept;
    /// Case-insensitive: is argument `i` kept whole and equal to `upper` (given in upper case)?
    bool argument_is(std::size_t i, std::string_view upper) const noexcept;
    /// An inline command (not an array of bulk strings).
    bool is_inline() const noexcept { return inline_; }
    /// An inline command with quotes: Redis unquotes its words, this framer does not.
    bool quoted() const noexcept { return quoted_; }

private:
    friend class request_framer;
    const char* buffer_ = nullptr;
    const detail::kept_argument* arguments_ = nullptr;
    std::size_t kept_count_ = 0;
    std::size_t count_ = 0;
    bool inline_ = false;
    bool quoted_ = false;
};

/// Frames client -> backend bytes into requests.
class request_framer : private detail::resp_scanner {
public:
    explicit request_framer(const resp_limits& limits = {}) noexcept
        : resp_scanner(direction::request, limits)
    {
    }
    ~request_framer();
    request_framer(const request_framer&) = delete;
    request_framer& operator=(const request_framer&) = delete;

    /// Takes bytes up to the end of the next request (frame_ended) or all of them. After an
    /// error takes nothing more.
    framer_step feed(std::string_view bytes) noexcept { return resp_scanner::feed(bytes); }
    /// The request that ended last; valid until the next feed.
    request_view last() const noexcept;
    resp_error error() const noexcept { return resp_scanner::error(); }
    /// True while part of a request has been taken.
    bool mid_request() const noexcept { return mid_frame(); }
    /// Zeroes the kept arguments (they may hold a password). The session calls it after AUTH and
    /// HELLO; the destructor calls it too.
    void wipe() noexcept;

    static constexpr std::size_t max_arguments = resp_scanner::max_arguments;
    static constexpr std::size_t long_keep = resp_scanner::long_keep;
};

/// One reply (or push), as seen by the framer; valid until the framer is fed again.
struct reply_view {
    resp_type type = resp_type::null;
    /// Elements of an aggregate (pairs for maps and attributes), bytes of a string; -1 for null;
    /// the value of an integer (of 18 digits at most; a longer one's is wrong).
    std::int64_t length = 0;
    /// The first up to 64 bytes of a simple string, simple error, or other simple line.
    std::string_view head;
    /// An attribute came before this reply.
    bool after_attribute = false;
    /// For a top-level aggregate: bit i says element i is an error (only the first 64).
    std::uint64_t error_elements = 0;
    /// An element at index 64 or beyond is an error.
    bool error_beyond = false;

    /// A push is not a reply to any request.
    bool is_push() const noexcept { return type == resp_type::push; }
    bool is_error() const noexcept
    {
        return type == resp_type::simple_error || type == resp_type::bulk_error;
    }
    /// A simple string equal to `text` ("OK", "QUEUED", "RESET").
    bool is_simple(std::string_view text) const noexcept
    {
        return type == resp_type::simple_string && head == text;
    }
    bool is_aggregate() const noexcept
    {
        return type == resp_type::array || type == resp_type::map || type == resp_type::set ||
               type == resp_type::push;
    }
};

/// Frames backend -> client bytes into replies and pushes.
class reply_framer : private detail::resp_scanner {
public:
    explicit reply_framer(const resp_limits& limits = reply_limits()) noexcept
        : resp_scanner(direction::reply, limits)
    {
    }

    /// Takes bytes up to the end of the next reply or push (frame_ended) or all of them.
    framer_step feed(std::string_view bytes) noexcept { return resp_scanner::feed(bytes); }
    /// The reply or push that ended last; valid until the next feed.
    reply_view last() const noexcept;
    resp_error error() const noexcept { return resp_scanner::error(); }
    /// True while part of a reply (or a leading attribute) has been taken.
    bool mid_reply() const noexcept { return mid_frame(); }

    /// Replies may be larger than requests (a value built by APPEND) and lines longer (a
    /// script's error); the bounds only keep garbage from running forever.
    static constexpr resp_limits reply_limits() noexcept
    {
        return {
            .max_bulk_length = 4ll * 1024 * 1024 * 1024, .max_count = 0x7fffffff, .max_line = 1024 * 1024};
    }
};

} // namespace tunneld::proxy
