#include "fleet/keys.hpp"

#include <nlohmann/json.hpp>

namespace tunneld::fleet {

using json = nlohmann::json;

std::string_view to_string(side s) noexcept { return s == side::new_side ? "new" : "old"; }

std::optional<side> parse_side(std::string_view text) noexcept
{
    if (text == "old") return side::old_side;
    if (text == "new") return side::new_side;
    return std::nullopt;
}

key_layout::key_layout(std::string fleet) : root_("/tunneld/" + std::move(fleet) + "/") {}

std::string key_layout::service_prefix(std::string_view service) const
{
    return root_ + "services/" + std::string(service) + "/";
}

std::string key_layout::epoch_key(std::string_view service) const { return service_prefix(service) + "epoch"; }

std::string key_layout::members_prefix(std::string_view service) const
{
    return service_prefix(service) + "members/";
}

std::string key_layout::member_key(std::string_view service, std::string_view member) const
{
    return members_prefix(service) + std::string(member);
}

std::string key_layout::pause_key(std::string_view service) const { return service_prefix(service) + "pause"; }

std::optional<key_layout::named> key_layout::parse(std::string_view key) const
{
    constexpr std::string_view services = "services/";
    if (!key.starts_with(root_)) return std::nullopt;
    key.remove_prefix(root_.size());
    if (!key.starts_with(services)) return std::nullopt;
    key.remove_prefix(services.size());
    const auto slash = key.find('/');
    if (slash == 0 || slash == std::string_view::npos) return std::nullopt;
    named out;
    out.service = std::string(key.substr(0, slash));
    const std::string_view rest = key.substr(slash + 1);
    if (rest == "epoch") return out;
    if (rest == "pause") {
        out.what = named::kind::pause;
        return out;
    }
    constexpr std::string_view members = "members/";
    if (!rest.starts_with(members)) return std::nullopt;
    const std::string_view member = rest.substr(members.size());
    if (member.empty() || member.find('/') != std::string_view::npos) return std::nullopt;
    out.what = named::kind::member;
    out.member = std::string(member);
    return out;
}

namespace {

json parse_object(std::string_view text)
{
    json doc = json::parse(text, nullptr, false);
    return doc.is_object() ? doc : json();
}

template <class T>
std::optional<T> field(const json& doc, const char* name)
{
    const auto it = doc.find(name);
    if (it == doc.end()) return std::nullopt;
    if constexpr (std::is_same_v<T, std::string>) {
        if (!it->is_string()) return std::nullopt;
    } else if constexpr (std::is_unsigned_v<T>) {
        if (!it->is_number_unsigned()) return std::nullopt;
    } else {
        if (!it->is_number_integer()) return std::nullopt;
    }
    return it->get<T>();
}

} // namespace

std::string encode(const member_record& r)
{
    return json{{"side", to_string(r.active)},
                {"epoch", r.epoch},
                {"state", r.state},
                {"held", r.held},
                {"last_seen_ms", r.last_seen_ms}}
        .dump();
}

std::optional<member_record> decode_member_record(std::string_view text)
{
    const json doc = parse_object(text);
    if (!doc.is_object()) return std::nullopt;
    const auto active = field<std::string>(doc, "side");
    const auto epoch = field<std::int64_t>(doc, "epoch");
    const auto state = field<std::string>(doc, "state");
    const auto held = field<std::uint64_t>(doc, "held");
    const auto last_seen = field<std::int64_t>(doc, "last_seen_ms");
    if (!active || !parse_side(*active) || !epoch || *epoch < 0 || !state || state->empty() || !held ||
        !last_seen)
        return std::nullopt;
    return member_record{*parse_side(*active), *epoch, *state, *held, *last_seen};
}

std::string encode(const epoch_record& r)
{
    json doc{{"epoch", r.epoch}, {"side", to_string(r.committed)}, {"phase", r.phase}};
    if (r.held()) {
        doc["coordinator"] = r.coordinator;
        if (r.target) doc["target"] = to_string(*r.target);
    }
    return doc.dump();
}

std::optional<epoch_record> decode_epoch_record(std::string_view text)
{
    const json doc = parse_object(text);
    if (!doc.is_object()) return std::nullopt;
    const auto epoch = field<std::int64_t>(doc, "epoch");
    const auto committed = field<std::string>(doc, "side");
    const auto phase = field<std::string>(doc, "phase");
    if (!epoch || *epoch < 0 || !committed || !parse_side(*committed) || !phase || phase->empty())
        return std::nullopt;
    epoch_record out{*epoch, *parse_side(*committed), *phase, {}, std::nullopt};
    if (out.held()) {
        // A held epoch names who holds it and where to; without them nobody could be told.
        const auto coordinator = field<std::string>(doc, "coordinator");
        const auto target = field<std::string>(doc, "target");
        if (!coordinator || coordinator->empty() || !target || !parse_side(*target)) return std::nullopt;
        out.coordinator = *coordinator;
        out.target = parse_side(*target);
    }
    return out;
}

std::string encode(const pause_record& r) { return json{{"until_ms", r.until_ms}, {"by", r.by}}.dump(); }

std::optional<pause_record> decode_pause_record(std::string_view text)
{
    const json doc = parse_object(text);
    if (!doc.is_object()) return std::nullopt;
    const auto until = field<std::int64_t>(doc, "until_ms");
    const auto by = field<std::string>(doc, "by");
    if (!until || *until < 0 || !by) return std::nullopt;
    return pause_record{*until, *by};
}

} // namespace tunneld::fleet
