#include "proxy/resp_framer.hpp"

#include <algorithm>
#include <cstring>
#include <string.h> // explicit_bzero

namespace tunneld::proxy {

std::string_view to_string(resp_error e) noexcept
{
    switch (e) {
    case resp_error::none:
        return "none";
    case resp_error::bad_type:
        return "bad_type";
    case resp_error::expected_bulk:
        return "expected_bulk";
    case resp_error::bad_length:
        return "bad_length";
    case resp_error::length_too_large:
        return "length_too_large";
    case resp_error::too_deep:
        return "too_deep";
    case resp_error::line_too_long:
        return "line_too_long";
    case resp_error::missing_crlf:
        return "missing_crlf";
    case resp_error::bad_integer:
        return "bad_integer";
    case resp_error::bad_simple_value:
        return "bad_simple_value";
    case resp_error::streamed_aggregate:
        return "streamed_aggregate";
    }
    return "unknown";
}

namespace {

bool is_digit(char c) noexcept
{
    return c >= '0' && c <= '9';
}

/// Redis splits inline commands on isspace() in the C locale.
bool is_blank(char c) noexcept
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f';
}

char upper(char c) noexcept
{
    return c >= 'a' && c <= 'z' ? static_cast<char>(c - 'a' + 'A') : c;
}

bool equals_upper(std::string_view text, std::string_view upper_text) noexcept
{
    if (text.size() != upper_text.size()) return false;
    for (std::size_t i = 0; i < text.size(); ++i)
        if (upper(text[i]) != upper_text[i]) return false;
    return true;
}

resp_type type_of(char c) noexcept
{
    switch (c) {
    case '+':
        return resp_type::simple_string;
    case '-':
        return resp_type::simple_error;
    case ':':
        return resp_type::integer;
    case '$':
        return resp_type::bulk_string;
    case '*':
        return resp_type::array;
    case '#':
        return resp_type::boolean;
    case ',':
        return resp_type::double_number;
    case '(':
        return resp_type::big_number;
    case '!':
        return resp_type::bulk_error;
    case '=':
        return resp_type::verbatim_string;
    case '%':
        return resp_type::map;
    case '~':
        return resp_type::set;
    case '|':
        return resp_type::attribute;
    case '>':
        return resp_type::push;
    default:
        return resp_type::null;
    }
}

bool is_line_type(char c) noexcept
{
    return c == '+' || c == '-' || c == ',' || c == '(' || c == '#' || c == '_';
}

bool is_length_type(char c) noexcept
{
    return c == ':' || c == '$' || c == '*' || c == '%' || c == '~' || c == '|' || c == '>' || c == '!' ||
           c == '=';
}

} // namespace

namespace detail {

void resp_scanner::fail(resp_error e) noexcept
{
    if (state_ == state::failed) return;
    error_ = e;
    state_ = state::failed;
}

void resp_scanner::begin_frame() noexcept
{
    if (attribute_seen_) {
        top_after_attribute_ = true;
        return;
    }
    top_after_attribute_ = false;
    argument_count_ = 0;
    keep_used_ = 0;
    keeping_ = max_arguments;
    keep_limit_ = 0;
    long_arguments_ = false;
    inline_ = false;
    inline_quoted_ = false;
    in_token_ = false;
    line_length_ = 0;
}

namespace {

/// Plain decimal digits (at most 18, as the byte machine takes) ended by CR LF at `p`: the
/// position after the LF, with `value`; nullptr for anything else, or when not all there.
const char* plain_number(const char* p, const char* end, std::int64_t& value) noexcept
{
    const char* const start = p;
    std::int64_t v = 0;
    while (p < end && is_digit(*p)) {
        if (p - start == 18) return nullptr;
        v = v * 10 + (*p++ - '0');
    }
    if (p == start || end - p < 2 || p[0] != '\r' || p[1] != '\n') return nullptr;
    value = v;
    return p + 2;
}

} // namespace

std::size_t resp_scanner::whole_frame(const char* p, const char* end) noexcept
{
    // Why: pipelined clients send many small frames per read; the byte machine pays a state
    // dispatch per element and a call per byte run, this pays one pass over the frame.
    return direction_ == direction::request ? whole_request(p, end) : whole_reply(p, end);
}

std::size_t resp_scanner::whole_request(const char* p, const char* end) noexcept
{
    if (*p != '*') return 0;
    std::int64_t count = 0;
    const char* q = plain_number(p + 1, end, count);
    if (!q || count == 0 || count > limits_.max_count) return 0;
    // Everything must be there before anything is kept: a frame taken in pieces is the byte
    // machine's, from its first byte.
    const char* element = q;
    for (std::int64_t i = 0; i < count; ++i) {
        std::int64_t length = 0;
        if (element == end || *element != '$') return 0;
        element = plain_number(element + 1, end, length);
        if (!element || length > limits_.max_bulk_length || end - element < length + 2) return 0;
        if (element[length] != '\r' || element[length + 1] != '\n') return 0;
        element += length + 2;
    }
    begin_frame();
    argument_count_ = static_cast<std::size_t>(count);
    for (std::size_t i = 0; q < element; ++i) {
        std::int64_t length = 0;
        q = plain_number(q + 1, end, length);
        keep_argument_start(i, length);
        keep_bytes(q, static_cast<std::size_t>(length));
        q += length + 2;
    }
    depth_ = 0;
    frame_ended_ = true;
    return static_cast<std::size_t>(element - p);
}

std::size_t resp_scanner::whole_reply(const char* p, const char* end) noexcept
{
    const char type = *p;
    const char* q = p + 1;
    std::int64_t length = 0;
    switch (type) {
    case '$': {
        if (q < end && *q == '-') {
            // RESP2's null bulk string.
            if (end - q < 4 || q[1] != '1' || q[2] != '\r' || q[3] != '\n') return 0;
            q += 4;
            length = -1;
            break;
        }
        q = plain_number(q, end, length);
        if (!q || length > limits_.max_bulk_length || end - q < length + 2) return 0;
        if (q[length] != '\r' || q[length + 1] != '\n') return 0;
        q += length + 2;
        break;
    }
    case ':': {
        const bool negative = q < end && *q == '-';
        q = plain_number(q + (negative ? 1 : 0), end, length);
        if (!q) return 0;
        if (negative) length = -length;
        break;
    }
    case '-':
    case '+': {
        const std::size_t look = std::min(static_cast<std::size_t>(end - q), limits_.max_line + 1);
        const auto* cr = static_cast<const char*>(std::memchr(q, '\r', look));
        if (!cr || end - cr < 2 || cr[1] != '\n' || std::memchr(q, '\n', static_cast<std::size_t>(cr - q)))
            return 0;
        length = cr - q;
        if (static_cast<std::size_t>(length) > limits_.max_line) return 0;
        head_length_ = std::min(static_cast<std::size_t>(length), head_size);
        std::memcpy(head_.data(), q, head_length_);
        q = cr + 2;
        break;
    }
    default:
        return 0;
    }
    begin_frame();
    if (type != '+' && type != '-') head_length_ = 0;
    top_type_ = type == '$' && length < 0 ? resp_type::null : type_of(type);
    top_length_ = length;
    error_elements_ = 0;
    error_beyond_ = false;
    attribute_seen_ = false;
    frame_ended_ = true;
    return static_cast<std::size_t>(q - p);
}

framer_step resp_scanner::feed(std::string_view bytes) noexcept
{
    const char* const begin = bytes.data();
    const char* const end = begin + bytes.size();
    const char* p = begin;
    frame_ended_ = false;
    while (p < end && state_ != state::failed) {
        switch (state_) {
        case state::frame_start:
            if (const std::size_t taken = whole_frame(p, end)) {
                p += taken;
                break;
            }
            begin_frame();
            if (direction_ == direction::request && *p != '*') {
                // Redis reads anything that does not start with '*' as an inline command.
                inline_ = true;
                state_ = state::inline_line;
                break;
            }
            start_element(*p++);
            break;
        case state::element_type:
            start_element(*p++);
            break;
        case state::number:
            p += step_number(p, end);
            break;
        case state::number_lf:
            if (*p++ != '\n') {
                fail(resp_error::missing_crlf);
                break;
            }
            end_number();
            break;
        case state::line:
            p += step_line(p, end);
            break;
        case state::line_lf:
            if (*p++ != '\n') {
                fail(resp_error::missing_crlf);
                break;
            }
            end_line();
            break;
        case state::payload:
            p += step_payload(p, end);
            break;
        case state::payload_cr:
            if (*p++ != '\r')
                fail(resp_error::missing_crlf);
            else
                state_ = state::payload_lf;
            break;
        case state::payload_lf:
            if (*p++ != '\n') {
                fail(resp_error::missing_crlf);
                break;
            }
            element_done(type_ == '!');
            break;
        case state::inline_line:
            p += step_inline(p, end);
            break;
        case state::failed:
            break;
        }
        if (frame_ended_) return {static_cast<std::size_t>(p - begin), true};
    }
    return {static_cast<std::size_t>(p - begin), false};
}

void resp_scanner::start_element(char type) noexcept
{
    type_ = type;
    negative_ = false;
    digits_ = 0;
    value_ = 0;
    line_length_ = 0;
    line_first_ = 0;
    line_valid_ = true;
    capture_head_ = false;
    if (direction_ == direction::request) {
        // At depth 0 only '*' reaches here (feed sends anything else to the inline path).
        if (depth_ > 0 && type != '$') return fail(resp_error::expected_bulk);
        state_ = state::number;
        return;
    }
    if (depth_ == 0) {
        top_type_ = type_of(type);
        top_length_ = 0;
        head_length_ = 0;
        error_elements_ = 0;
        error_beyond_ = false;
        capture_head_ = true;
    }
    if (is_line_type(type)) {
        state_ = state::line;
    } else if (is_length_type(type)) {
        state_ = state::number;
    } else {
        fail(resp_error::bad_type);
    }
}

std::size_t resp_scanner::step_number(const char* p, const char* end) noexcept
{
    const char* const start = p;
    // An integer reply may use all of int64; lengths and counts stay far below 10^18.
    const std::uint8_t max_digits = type_ == ':' ? 19 : 18;
    const resp_error bad = type_ == ':' ? resp_error::bad_integer : resp_error::bad_length;
    while (p < end) {
        const char c = *p++;
        if (c == '\r') {
            if (digits_ == 0) {
                fail(bad);
            } else if (p == end) {
                state_ = state::number_lf;
            } else if (*p++ != '\n') {
                fail(resp_error::missing_crlf);
            } else {
                // Why here and not through number_lf: one trip round feed's loop less per line.
                end_number();
            }
            return static_cast<std::size_t>(p - start);
        }
        if (digits_ == 0 && !negative_) {
            if (c == '-') {
                negative_ = true;
                continue;
            }
            if (c == '?' && type_ != ':') {
                fail(resp_error::streamed_aggregate);
                return static_cast<std::size_t>(p - start);
            }
        }
        if (!is_digit(c) || digits_ == max_digits) {
            fail(bad);
            return static_cast<std::size_t>(p - start);
        }
        ++digits_;
        // An integer's 19th digit could overflow: its value is kept up to 18 digits only.
        if (type_ != ':' || digits_ <= 18) value_ = value_ * 10 + (c - '0');
    }
    return static_cast<std::size_t>(p - start);
}

void resp_scanner::end_number() noexcept
{
    if (type_ == ':') {
        if (depth_ == 0) top_length_ = negative_ ? -value_ : value_;
        return element_done(false);
    }
    if (type_ == '$' || type_ == '!' || type_ == '=') {
        if (negative_) {
            // RESP2's null bulk string; requests never carry one.
            if (direction_ == direction::reply && type_ == '$' && value_ == 1) {
                if (depth_ == 0) {
                    top_type_ = resp_type::null;
                    top_length_ = -1;
                }
                return element_done(false);
            }
            return fail(resp_error::bad_length);
        }
        if (value_ > limits_.max_bulk_length) return fail(resp_error::length_too_large);
        if (depth_ == 0) top_length_ = value_;
        remaining_ = value_;
        if (direction_ == direction::request)
            keep_argument_start(static_cast<std::size_t>(stack_[0].seen), value_);
        state_ = state::payload;
        return;
    }
    // An aggregate.
    if (direction_ == direction::request) {
        // Redis ignores `*0` and `*-N`: an empty request, never answered.
        if (negative_ || value_ == 0) {
            argument_count_ = 0;
            frame_ended_ = true;
            state_ = state::frame_start;
            return;
        }
        if (value_ > limits_.max_count) return fail(resp_error::length_too_large);
        argument_count_ = static_cast<std::size_t>(value_);
        stack_[0] = level{value_, 0, false};
        depth_ = 1;
        state_ = state::element_type;
        return;
    }
    if (negative_) {
        // RESP2's null array.
        if (type_ == '*' && value_ == 1) {
            if (depth_ == 0) {
                top_type_ = resp_type::null;
                top_length_ = -1;
            }
            return element_done(false);
        }
        return fail(resp_error::bad_length);
    }
    if (value_ > limits_.max_count) return fail(resp_error::length_too_large);
    const bool pairs = type_ == '%' || type_ == '|';
    const std::int64_t elements = pairs ? 2 * value_ : value_;
    if (depth_ == 0 && type_ != '|') top_length_ = value_;
    if (elements == 0) {
        if (type_ == '|') return attribute_done();
        return element_done(false);
    }
    if (depth_ == max_depth) return fail(resp_error::too_deep);
    stack_[depth_++] = level{elements, 0, type_ == '|'};
    state_ = state::element_type;
}

void resp_scanner::attribute_done() noexcept
{
    // An attribute is no element of its parent, and at the top no reply: what follows is.
    if (depth_ == 0) {
        attribute_seen_ = true;
        state_ = state::frame_start;
    } else {
        state_ = state::element_type;
    }
}

std::size_t resp_scanner::step_line(const char* p, const char* end) noexcept
{
    const char* const start = p;
    while (p < end) {
        const char c = *p++;
        if (c == '\r') {
            state_ = state::line_lf;
            break;
        }
        if (c == '\n') {
            fail(resp_error::missing_crlf);
            break;
        }
        if (line_length_ == 0) line_first_ = c;
        if (type_ == '(' && !is_digit(c) && !(c == '-' && line_length_ == 0)) line_valid_ = false;
        if (capture_head_ && head_length_ < head_size) head_[head_length_++] = c;
        if (++line_length_ > limits_.max_line) {
            fail(resp_error::line_too_long);
            break;
        }
    }
    return static_cast<std::size_t>(p - start);
}

void resp_scanner::end_line() noexcept
{
    switch (type_) {
    case '#':
        if (line_length_ != 1 || (line_first_ != 't' && line_first_ != 'f'))
            return fail(resp_error::bad_simple_value);
        break;
    case '_':
        if (line_length_ != 0) return fail(resp_error::bad_simple_value);
        if (depth_ == 0) top_length_ = -1;
        break;
    case ',':
        if (line_length_ == 0) return fail(resp_error::bad_simple_value);
        break;
    case '(':
        if (!line_valid_ || line_length_ == 0 || (line_length_ == 1 && line_first_ == '-'))
            return fail(resp_error::bad_integer);
        break;
    default:
        if (depth_ == 0) top_length_ = static_cast<std::int64_t>(line_length_);
        break;
    }
    element_done(type_ == '-');
}

std::size_t resp_scanner::step_payload(const char* p, const char* end) noexcept
{
    const auto available = static_cast<std::int64_t>(end - p);
    const std::int64_t n = std::min(remaining_, available);
    if (direction_ == direction::request && keep_limit_ > 0) keep_bytes(p, static_cast<std::size_t>(n));
    remaining_ -= n;
    if (remaining_ > 0) return static_cast<std::size_t>(n);
    if (available - n < 2) {
        state_ = state::payload_cr;
        return static_cast<std::size_t>(n);
    }
    // The CR LF is here too: check it at once rather than through payload_cr and payload_lf.
    if (p[n] != '\r' || p[n + 1] != '\n') {
        fail(resp_error::missing_crlf);
        return static_cast<std::size_t>(n);
    }
    element_done(type_ == '!');
    return static_cast<std::size_t>(n + 2);
}

void resp_scanner::element_done(bool is_error) noexcept
{
    for (;;) {
        if (depth_ == 0) {
            frame_ended_ = true;
            attribute_seen_ = false;
            state_ = state::frame_start;
            return;
        }
        level& top = stack_[depth_ - 1];
        if (depth_ == 1 && !top.attribute && is_error) {
            if (top.seen < 64)
                error_elements_ |= std::uint64_t{1} << top.seen;
            else
                error_beyond_ = true;
        }
        ++top.seen;
        if (--top.remaining > 0) {
            state_ = state::element_type;
            return;
        }
        const bool was_attribute = top.attribute;
        --depth_;
        if (was_attribute) return attribute_done();
        is_error = false; // a completed aggregate is one element of its parent
    }
}

void resp_scanner::keep_argument_start(std::size_t index, std::int64_t length) noexcept
{
    keep_limit_ = 0;
    keeping_ = max_arguments;
    if (index >= max_arguments) return;
    if (index == 1) long_arguments_ = names_long_arguments();
    std::size_t limit = index == 0 ? name_keep : long_arguments_ ? long_keep : short_keep;
    limit = std::min({limit, keep_buffer_size - keep_used_, static_cast<std::size_t>(length)});
    arguments_[index] = kept_argument{static_cast<std::uint32_t>(keep_used_), 0, length};
    keeping_ = index;
    keep_limit_ = limit;
}

bool resp_scanner::names_long_arguments() const noexcept
{
    const auto& name = arguments_[0];
    if (name.kept != name.length) return false;
    const std::string_view text(keep_buffer_.data() + name.offset, name.kept);
    return equals_upper(text, "AUTH") || equals_upper(text, "HELLO") || equals_upper(text, "CLIENT");
}

void resp_scanner::keep_bytes(const char* p, std::size_t n) noexcept
{
    const std::size_t k = std::min(n, keep_limit_);
    if (k == 0 || keeping_ >= max_arguments) return;
    std::memcpy(keep_buffer_.data() + keep_used_, p, k);
    keep_used_ += k;
    keep_limit_ -= k;
    arguments_[keeping_].kept += static_cast<std::uint32_t>(k);
}

std::size_t resp_scanner::step_inline(const char* p, const char* end) noexcept
{
    const char* const start = p;
    while (p < end) {
        const char c = *p++;
        if (c == '\n') {
            in_token_ = false;
            frame_ended_ = true;
            state_ = state::frame_start;
            break;
        }
        if (++line_length_ > limits_.max_line) {
            fail(resp_error::line_too_long);
            break;
        }
        inline_byte(c);
    }
    return static_cast<std::size_t>(p - start);
}

void resp_scanner::inline_byte(char c) noexcept
{
    if (is_blank(c)) {
        in_token_ = false;
        return;
    }
    if (!in_token_) {
        in_token_ = true;
        const std::size_t index = argument_count_++;
        keep_limit_ = 0;
        keeping_ = max_arguments;
        if (index < max_arguments) {
            if (index == 1) long_arguments_ = names_long_arguments();
            const std::size_t limit = index == 0 ? name_keep : long_arguments_ ? long_keep : short_keep;
            arguments_[index] = kept_argument{static_cast<std::uint32_t>(keep_used_), 0, 0};
            keeping_ = index;
            keep_limit_ = std::min(limit, keep_buffer_size - keep_used_);
        }
    }
    if (c == '"' || c == '\'') inline_quoted_ = true;
    if (keeping_ < max_arguments) {
        ++arguments_[keeping_].length;
        keep_bytes(&c, 1);
    }
}

} // namespace detail

std::string_view request_view::argument(std::size_t i) const noexcept
{
    if (i >= kept_count_) return {};
    return {buffer_ + arguments_[i].offset, arguments_[i].kept};
}

bool request_view::kept_whole(std::size_t i) const noexcept
{
    return i < kept_count_ && arguments_[i].kept == arguments_[i].length;
}

bool request_view::argument_is(std::size_t i, std::string_view upper_text) const noexcept
{
    return kept_whole(i) && equals_upper(argument(i), upper_text);
}

request_framer::~request_framer()
{
    wipe();
}

request_view request_framer::last() const noexcept
{
    request_view view;
    view.buffer_ = keep_buffer_.data();
    view.arguments_ = arguments_.data();
    view.count_ = argument_count_;
    view.kept_count_ = std::min(argument_count_, max_arguments);
    view.inline_ = inline_;
    view.quoted_ = inline_quoted_;
    return view;
}

void request_framer::wipe() noexcept
{
    // Why explicit_bzero: a plain memset before destruction is a dead store the compiler may drop.
    explicit_bzero(keep_buffer_.data(), keep_buffer_.size());
}

reply_view reply_framer::last() const noexcept
{
    reply_view view;
    view.type = top_type_;
    view.length = top_length_;
    view.head = std::string_view(head_.data(), head_length_);
    view.after_attribute = top_after_attribute_;
    view.error_elements = error_elements_;
    view.error_beyond = error_beyond_;
    return view;
}

} // namespace tunneld::proxy
