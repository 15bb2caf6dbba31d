#include "control/protocol.hpp"

#include <algorithm>
#include <array>
#include <span>
#include <utility>

namespace tunneld::control {

namespace {

using json = nlohmann::json;

// Request objects are flat; anything deeper than this is junk and is refused before parsing.
constexpr std::size_t max_depth = 32;
// Values echoed back in error messages are cut to this many bytes.
constexpr std::size_t max_echo = 64;

bool is_blank(std::string_view line)
{
    return std::all_of(line.begin(), line.end(), [](char c) { return c == ' ' || c == '\t'; });
}

// Dumps never throw: invalid UTF-8 (only possible in messages we were handed) is replaced.
std::string dump_line(const json& value)
{
    auto text = value.dump(-1, ' ', false, json::error_handler_t::replace);
    text.push_back('\n');
    return text;
}

// A user-supplied value quoted for an error message, cut at a UTF-8 boundary.
std::string quote(std::string_view text)
{
    if (text.size() > max_echo) {
        auto end = max_echo;
        while (end > 0 && (static_cast<unsigned char>(text[end]) & 0xC0) == 0x80)
            --end;
        return json(std::string(text.substr(0, end)) + "...")
            .dump(-1, ' ', false, json::error_handler_t::replace);
    }
    return json(std::string(text)).dump(-1, ' ', false, json::error_handler_t::replace);
}

// The deepest array/object nesting of `text`, counting only brackets outside strings.
std::size_t nesting_depth(std::string_view text)
{
    std::size_t depth = 0, deepest = 0;
    bool in_string = false, escaped = false;
    for (const char c : text) {
        if (in_string) {
            if (escaped)
                escaped = false;
            else if (c == '\\')
                escaped = true;
            else if (c == '"')
                in_string = false;
            continue;
        }
        if (c == '"') {
            in_string = true;
        } else if (c == '[' || c == '{') {
            deepest = std::max(deepest, ++depth);
        } else if ((c == ']' || c == '}') && depth > 0) {
            --depth;
        }
    }
    return deepest;
}

std::string_view type_name(const json& value)
{
    switch (value.type()) {
    case json::value_t::null:
        return "null";
    case json::value_t::boolean:
        return "a boolean";
    case json::value_t::number_integer:
    case json::value_t::number_unsigned:
    case json::value_t::number_float:
        return "a number";
    case json::value_t::string:
        return "a string";
    case json::value_t::array:
        return "an array";
    case json::value_t::object:
        return "an object";
    default:
        return "not a JSON value";
    }
}

constexpr std::array command_names{
    std::pair{command::status, std::string_view{"status"}},
    std::pair{command::tunnels, std::string_view{"tunnels"}},
    std::pair{command::switch_side, std::string_view{"switch"}},
    std::pair{command::rollback, std::string_view{"rollback"}},
    std::pair{command::split, std::string_view{"split"}},
    std::pair{command::pause, std::string_view{"pause"}},
    std::pair{command::resume, std::string_view{"resume"}},
    std::pair{command::reload, std::string_view{"reload"}},
    std::pair{command::check, std::string_view{"check"}},
    std::pair{command::history, std::string_view{"history"}},
    std::pair{command::fleet, std::string_view{"fleet"}},
};

constexpr std::array error_code_names{
    std::pair{error_code::bad_request, std::string_view{"bad_request"}},
    std::pair{error_code::unknown_service, std::string_view{"unknown_service"}},
    std::pair{error_code::refused, std::string_view{"refused"}},
    std::pair{error_code::failed, std::string_view{"failed"}},
    std::pair{error_code::busy, std::string_view{"busy"}},
    std::pair{error_code::forbidden, std::string_view{"forbidden"}},
};

// The fields each command takes besides "cmd".
std::span<const std::string_view> fields_of(command cmd)
{
    static constexpr std::array<std::string_view, 1> service{"service"};
    static constexpr std::array<std::string_view, 4> switch_fields{"service", "to", "mode", "force"};
    static constexpr std::array<std::string_view, 3> split_fields{"service", "percent", "sticky"};
    static constexpr std::array<std::string_view, 2> pause_fields{"service", "timeout"};
    switch (cmd) {
    case command::status:
    case command::rollback:
    case command::resume:
    case command::history:
    case command::fleet:
        return service;
    case command::switch_side:
    case command::check:
        return switch_fields;
    case command::split:
        return split_fields;
    case command::pause:
        return pause_fields;
    case command::tunnels:
    case command::reload:
        return {};
    }
    return {};
}

protocol_error bad_request(std::string message)
{
    return protocol_error{error_code::bad_request, std::move(message)};
}

// Reads the fields of a request object into a request; the first problem wins.
class request_reader {
public:
    request_reader(const json& object, command cmd) : object_(object) { request_.cmd = cmd; }

    std::variant<request, protocol_error> read()
    {
        const auto cmd = request_.cmd;
        const auto name = std::string(to_string(cmd));
        const auto allowed = fields_of(cmd);
        for (const auto& [key, value] : object_.items()) {
            if (key == "cmd") continue;
            if (std::find(allowed.begin(), allowed.end(), key) == allowed.end()) {
                if (allowed.empty())
                    return bad_request("unknown field " + quote(key) + " for cmd \"" + name +
                                       "\", which takes no fields");
                std::string list;
                for (const auto field : allowed)
                    list += (list.empty() ? "" : ", ") + std::string(field);
                return bad_request("unknown field " + quote(key) + " for cmd \"" + name + "\" (expected " +
                                   list + ")");
            }
        }

        if (const auto* value = find("service")) {
            if (!value->is_string()) return wrong_type("service", "a string", *value);
            const auto& service = value->get_ref<const std::string&>();
            if (service.empty()) return bad_request("\"service\" must not be empty");
            request_.service = service;
        } else if (needs_service(cmd)) {
            return bad_request("cmd \"" + name + "\" needs \"service\"");
        }

        if (const auto* value = find("to")) {
            if (!value->is_string()) return wrong_type("to", "\"new\" or \"old\"", *value);
            const auto& to = value->get_ref<const std::string&>();
            if (to == "new")
                request_.to = side_choice::new_side;
            else if (to == "old")
                request_.to = side_choice::old_side;
            else
                return bad_request("\"to\" must be \"new\" or \"old\", not " + quote(to));
        }

        if (const auto* value = find("mode")) {
            if (!value->is_string()) return wrong_type("mode", "\"kill\", \"drain\" or \"pause\"", *value);
            const auto& mode = value->get_ref<const std::string&>();
            if (mode == "kill")
                request_.mode = config::switch_mode::kill;
            else if (mode == "drain")
                request_.mode = config::switch_mode::drain;
            else if (mode == "pause")
                request_.mode = config::switch_mode::pause;
            else
                return bad_request("\"mode\" must be \"kill\", \"drain\" or \"pause\", not " + quote(mode));
        }

        if (const auto* value = find("force")) {
            if (!value->is_boolean()) return wrong_type("force", "true or false", *value);
            request_.force = value->get<bool>();
        }

        if (const auto* value = find("percent")) {
            if (value->is_number_unsigned()) {
                const auto percent = value->get<std::uint64_t>();
                if (percent > 100)
                    return bad_request("\"percent\" must be 0..100, not " + std::to_string(percent));
                request_.percent = static_cast<unsigned>(percent);
            } else if (value->is_number_integer()) {
                return bad_request("\"percent\" must be 0..100, not " +
                                   std::to_string(value->get<std::int64_t>()));
            } else {
                return wrong_type("percent", "an integer 0..100", *value);
            }
        } else if (cmd == command::split) {
            return bad_request("cmd \"split\" needs \"percent\" (0..100)");
        }

        if (const auto* value = find("sticky")) {
            if (!value->is_boolean()) return wrong_type("sticky", "true or false", *value);
            request_.sticky = value->get<bool>();
        }

        if (const auto* value = find("timeout")) {
            if (!value->is_string()) return wrong_type("timeout", "a duration string like \"5s\"", *value);
            const auto& text = value->get_ref<const std::string&>();
            const auto timeout = config::parse_duration(text);
            if (!timeout)
                return bad_request("\"timeout\" must be a duration like \"250ms\", \"5s\" or \"2m\", not " +
                                   quote(text));
            if (timeout->count() <= 0) return bad_request("\"timeout\" must be positive, not " + quote(text));
            request_.timeout = *timeout;
        }

        return std::move(request_);
    }

private:
    // The field's value, or nullptr when absent or null (null means "not given").
    const json* find(std::string_view key) const
    {
        const auto it = object_.find(key);
        if (it == object_.end() || it->is_null()) return nullptr;
        return &*it;
    }

    static protocol_error wrong_type(std::string_view field, std::string_view expected, const json& value)
    {
        return bad_request("\"" + std::string(field) + "\" must be " + std::string(expected) + ", not " +
                           std::string(type_name(value)));
    }

    const json& object_;
    request request_;
};

protocol_error malformed_reply(std::string_view why)
{
    return protocol_error{error_code::failed, "malformed reply from tunneld: " + std::string(why)};
}

} // namespace

void line_reader::feed(std::string_view bytes)
{
    if (overflowed_) return;
    // Drop returned lines before growing, so the buffer holds at most one partial line plus
    // the bytes of one feed.
    if (head_ > 0 && head_ >= buffer_.size() / 2) {
        buffer_.erase(0, head_);
        scanned_ -= head_;
        head_ = 0;
    }
    buffer_.append(bytes);
}

std::optional<std::string> line_reader::next_line()
{
    while (!overflowed_) {
        const auto newline = buffer_.find('\n', scanned_);
        if (newline == std::string::npos) {
            scanned_ = buffer_.size();
            // An unterminated line may still lose one '\r' before its '\n'.
            const auto pending = buffer_.size() - head_;
            if (pending > max_line_ + 1 || (pending == max_line_ + 1 && buffer_.back() != '\r'))
                overflowed_ = true;
            if (overflowed_) break;
            return std::nullopt;
        }
        auto line = std::string_view(buffer_).substr(head_, newline - head_);
        if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
        if (line.size() > max_line_) {
            overflowed_ = true;
            break;
        }
        std::string result(line);
        head_ = scanned_ = newline + 1;
        if (head_ == buffer_.size()) {
            buffer_.clear();
            head_ = scanned_ = 0;
        }
        if (!is_blank(result)) return result;
    }
    // Nothing more will come out: free the memory now.
    buffer_.clear();
    buffer_.shrink_to_fit();
    head_ = scanned_ = 0;
    return std::nullopt;
}

std::string_view to_string(command cmd) noexcept
{
    for (const auto& [value, name] : command_names)
        if (value == cmd) return name;
    return "status";
}

std::string_view to_string(side_choice side) noexcept
{
    return side == side_choice::old_side ? "old" : "new";
}

std::string_view to_string(error_code code) noexcept
{
    for (const auto& [value, name] : error_code_names)
        if (value == code) return name;
    return "failed";
}

std::optional<command> parse_command(std::string_view name) noexcept
{
    for (const auto& [value, text] : command_names)
        if (text == name) return value;
    return std::nullopt;
}

const std::error_category& control_category() noexcept
{
    struct category final : std::error_category {
        const char* name() const noexcept override { return "tunneld.control"; }
        std::string message(int value) const override
        {
            const auto text = to_string(static_cast<error_code>(value));
            return text.empty() ? "unknown control error" : std::string(text);
        }
    };
    static const category instance;
    return instance;
}

std::error_code make_error_code(error_code code) noexcept
{
    return {static_cast<int>(code), control_category()};
}

std::optional<error_code> parse_error_code(std::string_view name) noexcept
{
    for (const auto& [value, text] : error_code_names)
        if (text == name) return value;
    return std::nullopt;
}

bool needs_service(command cmd) noexcept
{
    return cmd != command::status && cmd != command::tunnels && cmd != command::reload &&
           cmd != command::history && cmd != command::fleet;
}

protocol_error line_too_long_error()
{
    return bad_request("request longer than " + std::to_string(max_line_length) + " bytes");
}

std::variant<request, protocol_error> parse_request(std::string_view line)
{
    if (line.size() > max_line_length) return line_too_long_error();
    if (nesting_depth(line) > max_depth) return bad_request("request nested too deeply");
    json object;
    try {
        object = json::parse(line);
    } catch (const json::parse_error& e) {
        // e.what() quotes the offending bytes, which may not be UTF-8: report the offset only.
        return bad_request("request is not valid JSON (error at byte " + std::to_string(e.byte) + ")");
    } catch (const json::out_of_range&) {
        return bad_request("request has a number out of range");
    } catch (const json::exception&) {
        return bad_request("request is not valid JSON");
    }
    if (!object.is_object())
        return bad_request("request must be a JSON object, not " + std::string(type_name(object)));

    const auto it = object.find("cmd");
    if (it == object.end()) return bad_request("request has no \"cmd\"");
    if (!it->is_string()) return bad_request("\"cmd\" must be a string, not " + std::string(type_name(*it)));
    const auto& name = it->get_ref<const std::string&>();
    const auto cmd = parse_command(name);
    if (!cmd) {
        std::string list;
        for (const auto& [value, text] : command_names)
            list += (list.empty() ? "" : ", ") + std::string(text);
        return bad_request("unknown cmd " + quote(name) + " (expected one of " + list + ")");
    }
    return request_reader(object, *cmd).read();
}

std::string encode(const request& r)
{
    json object;
    object["cmd"] = to_string(r.cmd);
    if (r.service) object["service"] = *r.service;
    switch (r.cmd) {
    case command::switch_side:
    case command::check:
        object["to"] = to_string(r.to);
        if (r.mode) object["mode"] = config::to_string(*r.mode);
        object["force"] = r.force;
        break;
    case command::split:
        object["percent"] = r.percent;
        object["sticky"] = r.sticky;
        break;
    case command::pause:
        if (r.timeout) object["timeout"] = format_duration(*r.timeout);
        break;
    default:
        break;
    }
    return dump_line(object);
}

std::string progress_line(std::string_view message)
{
    return dump_line(json{{"progress", message}});
}

std::string ok_line(const nlohmann::json& result)
{
    return dump_line(json{{"ok", true}, {"result", result}});
}

std::string error_line(const protocol_error& error)
{
    return dump_line(json{{"ok", false}, {"error", error.message}, {"code", to_string(error.code)}});
}

reply parse_reply(std::string_view line)
{
    if (nesting_depth(line) > 256) return malformed_reply("nested too deeply");
    json object;
    try {
        object = json::parse(line);
    } catch (const json::exception&) {
        return malformed_reply("not JSON");
    }
    if (!object.is_object()) return malformed_reply("not a JSON object");
    if (const auto it = object.find("progress"); it != object.end()) {
        if (!it->is_string()) return malformed_reply("\"progress\" is not a string");
        return progress{it->get<std::string>()};
    }
    const auto ok = object.find("ok");
    if (ok == object.end() || !ok->is_boolean()) return malformed_reply("no \"ok\" or \"progress\"");
    if (ok->get<bool>()) {
        const auto result = object.find("result");
        return ok_result{result == object.end() ? json(nullptr) : *result};
    }
    protocol_error error;
    if (const auto it = object.find("error"); it != object.end() && it->is_string())
        error.message = it->get<std::string>();
    else
        error.message = "tunneld gave no reason";
    if (const auto it = object.find("code"); it != object.end() && it->is_string())
        error.code = parse_error_code(it->get_ref<const std::string&>()).value_or(error_code::failed);
    return error;
}

std::string format_duration(config::duration d)
{
    const auto ms = d.count();
    if (ms != 0 && ms % 3'600'000 == 0) return std::to_string(ms / 3'600'000) + "h";
    if (ms != 0 && ms % 60'000 == 0) return std::to_string(ms / 60'000) + "m";
    if (ms != 0 && ms % 1000 == 0) return std::to_string(ms / 1000) + "s";
    return std::to_string(ms) + "ms";
}

} // namespace tunneld::control
