#include "cutover/history.hpp"

#include "cutover/state_file.hpp"

#include <array>
#include <fmt/format.h>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <utility>

namespace tunneld::cutover {

namespace {

constexpr int history_version = 1;

constexpr std::array<std::pair<history_action, std::string_view>, 5> action_names{{
    {history_action::switch_side, "switch"},
    {history_action::rollback, "rollback"},
    {history_action::split, "split"},
    {history_action::pause, "pause"},
    {history_action::resume, "resume"},
}};
constexpr std::array<std::pair<history_result, std::string_view>, 4> result_names{{
    {history_result::done, "done"},
    {history_result::refused, "refused"},
    {history_result::failed, "failed"},
    {history_result::busy, "busy"},
}};

template <class Enum, std::size_t N>
std::string_view name_of(const std::array<std::pair<Enum, std::string_view>, N>& names, Enum value) noexcept
{
    for (const auto& [e, name] : names)
        if (e == value) return name;
    return "unknown";
}

template <class Enum, std::size_t N>
std::optional<Enum> parse_name(const std::array<std::pair<Enum, std::string_view>, N>& names,
                               std::string_view text) noexcept
{
    for (const auto& [e, name] : names)
        if (name == text) return e;
    return std::nullopt;
}

template <class T> void put_optional(nlohmann::json& out, const char* key, const std::optional<T>& value)
{
    out[key] = value ? nlohmann::json(*value) : nlohmann::json(nullptr);
}

/// Reads an optional number at `key`: absent or null is nullopt; anything else but a number of
/// type T is an error.
template <class T> bool get_optional(const nlohmann::json& in, const char* key, std::optional<T>& out)
{
    const auto it = in.find(key);
    if (it == in.end() || it->is_null()) return true;
    if constexpr (std::is_unsigned_v<T>) {
        if (!it->is_number_unsigned()) return false;
    } else {
        if (!it->is_number_integer()) return false;
    }
    out = it->get<T>();
    return true;
}

} // namespace

std::string_view to_string(history_action a) noexcept { return name_of(action_names, a); }
std::string_view to_string(history_result r) noexcept { return name_of(result_names, r); }
std::optional<history_action> parse_history_action(std::string_view text) noexcept
{
    return parse_name(action_names, text);
}
std::optional<history_result> parse_history_result(std::string_view text) noexcept
{
    return parse_name(result_names, text);
}

void switch_history::append(history_entry entry)
{
    entries_.push_back(std::move(entry));
    while (entries_.size() > capacity_)
        entries_.pop_front();
}

std::vector<history_entry> switch_history::entries(std::string_view service, std::size_t limit) const
{
    std::vector<history_entry> out;
    for (const auto& e : entries_)
        if (service.empty() || e.service == service) out.push_back(e);
    if (out.size() > limit) out.erase(out.begin(), out.end() - static_cast<std::ptrdiff_t>(limit));
    return out;
}

std::string switch_history::encode() const
{
    nlohmann::json list = nlohmann::json::array();
    for (const auto& e : entries_) {
        nlohmann::json item = {
            {"time", e.time},     {"service", e.service},  {"action", to_string(e.action)},
            {"from", e.from},     {"to", e.to},            {"mode", e.mode},
            {"forced", e.forced}, {"user", e.user},        {"result", to_string(e.result)},
            {"reason", e.reason},
        };
        put_optional(item, "uid", e.uid);
        put_optional(item, "held_ms", e.held_ms);
        put_optional(item, "cut", e.cut);
        put_optional(item, "moved", e.moved);
        if (e.adopted) item["adopted"] = true;
        list.push_back(std::move(item));
    }
    return nlohmann::json{{"version", history_version}, {"entries", list}}.dump(1) + "\n";
}

std::variant<switch_history, std::string> switch_history::decode(std::string_view text, std::size_t capacity)
{
    const auto doc = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
    if (doc.is_discarded()) return std::string("not valid JSON");
    if (!doc.is_object()) return std::string("not a JSON object");
    const auto version = doc.find("version");
    if (version == doc.end() || !version->is_number_integer() || version->get<int>() != history_version)
        return fmt::format("missing or unsupported \"version\" (expected {})", history_version);
    const auto list = doc.find("entries");
    if (list == doc.end() || !list->is_array()) return std::string("missing \"entries\" array");

    switch_history history(capacity);
    std::size_t index = 0;
    for (const auto& item : *list) {
        const auto bad = [&](std::string_view what) { return fmt::format("entry {}: {}", index, what); };
        if (!item.is_object()) return bad("not an object");
        history_entry e;
        const auto text_field = [&](const char* key, std::string& out) {
            const auto it = item.find(key);
            if (it == item.end()) return true;
            if (!it->is_string()) return false;
            out = it->get<std::string>();
            return true;
        };
        for (auto [key, out] : {std::pair{"time", &e.time}, std::pair{"service", &e.service},
                                std::pair{"from", &e.from}, std::pair{"to", &e.to}, std::pair{"mode", &e.mode},
                                std::pair{"user", &e.user}, std::pair{"reason", &e.reason}})
            if (!text_field(key, *out)) return bad(fmt::format("\"{}\" must be a string", key));
        if (e.service.empty()) return bad("missing \"service\"");
        const auto action = parse_history_action(item.value("action", std::string()));
        if (!action) return bad("unknown \"action\"");
        e.action = *action;
        const auto result = parse_history_result(item.value("result", std::string()));
        if (!result) return bad("unknown \"result\"");
        e.result = *result;
        for (auto [key, out] : {std::pair{"forced", &e.forced}, std::pair{"adopted", &e.adopted}}) {
            const auto it = item.find(key);
            if (it == item.end()) continue;
            if (!it->is_boolean()) return bad(fmt::format("\"{}\" must be a boolean", key));
            *out = it->get<bool>();
        }
        if (!get_optional(item, "uid", e.uid)) return bad("\"uid\" must be a non-negative integer");
        if (!get_optional(item, "held_ms", e.held_ms)) return bad("\"held_ms\" must be an integer");
        if (!get_optional(item, "cut", e.cut)) return bad("\"cut\" must be a non-negative integer");
        if (!get_optional(item, "moved", e.moved)) return bad("\"moved\" must be a non-negative integer");
        history.append(std::move(e));
        ++index;
    }
    return history;
}

std::filesystem::path history_path_for(const std::filesystem::path& state_file)
{
    return state_file.parent_path() / "history.json";
}

std::variant<switch_history, std::string> load_history(const std::filesystem::path& path, std::size_t capacity)
{
    std::error_code ec;
    if (!std::filesystem::exists(path, ec)) return switch_history(capacity);
    std::ifstream in(path, std::ios::binary);
    if (!in) return fmt::format("history file {}: cannot be read", path.string());
    std::ostringstream text;
    text << in.rdbuf();
    auto decoded = switch_history::decode(text.str(), capacity);
    if (auto* message = std::get_if<std::string>(&decoded))
        return fmt::format("history file {} is corrupt: {}", path.string(), *message);
    return decoded;
}

std::optional<std::string> save_history(const std::filesystem::path& path, const switch_history& history)
{
    return write_file_atomically(path, history.encode());
}

} // namespace tunneld::cutover
