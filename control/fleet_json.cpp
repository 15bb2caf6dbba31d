#include "control/fleet_json.hpp"

namespace tunneld::control {

namespace {

using nlohmann::json;

json member_json(const fleet::member_entry& m, const std::optional<fleet::epoch_state>& epoch)
{
    if (!m.record)
        return {{"name", m.member}, {"malformed", true}, {"side", nullptr}, {"epoch", nullptr}, {"state", nullptr},
                {"held", nullptr},  {"last_seen", nullptr}, {"behind", nullptr}};
    const auto& r = *m.record;
    return {{"name", m.member},
            {"malformed", false},
            {"side", fleet::to_string(r.active)},
            {"epoch", r.epoch},
            {"state", r.state},
            {"held", r.held},
            {"last_seen", r.last_seen_ms},
            {"behind", fleet::lags_behind(epoch, r)}};
}

/// When the members were read: `{"live", "revision", "at"}` (at: Unix ms), null before any read.
json members_read_json(const fleet::fleet_view& view, const std::string& name)
{
    const auto read = view.members_as_of.find(name);
    if (read == view.members_as_of.end()) return nullptr;
    return {{"live", read->second.live}, {"revision", read->second.revision}, {"at", read->second.read_ms}};
}

json service_json(const std::string& name, const fleet::fleet_view::service_entry& s, json members_read)
{
    json members = json::array();
    for (const auto& m : s.members)
        members.push_back(member_json(m, s.epoch));
    // A missing epoch key is epoch 0 on old, committed (docs/fleet.md); a malformed one is shown as such.
    const fleet::epoch_record none{};
    const auto& e = s.epoch ? s.epoch->record : none;
    const bool known = s.epoch || !s.epoch_malformed;
    return {{"name", name},
            {"epoch", known ? json(e.epoch) : json(nullptr)},
            {"side", known ? json(fleet::to_string(e.committed)) : json(nullptr)},
            {"phase", known ? json(e.phase) : json(nullptr)},
            {"coordinator", e.held() ? json(e.coordinator) : json(nullptr)},
            {"target", e.target && e.held() ? json(fleet::to_string(*e.target)) : json(nullptr)},
            {"epoch_malformed", s.epoch_malformed},
            {"members", std::move(members)},
            {"members_read", std::move(members_read)}};
}

} // namespace

json fleet_json(const fleet::fleet_view& view, std::string_view fleet_name, std::string_view member,
                const std::string& service)
{
    json services = json::array();
    if (!service.empty()) {
        const auto it = view.services.find(service);
        services.push_back(service_json(
            service, it == view.services.end() ? fleet::fleet_view::service_entry{} : it->second,
            members_read_json(view, service)));
    } else {
        for (const auto& [name, entry] : view.services)
            services.push_back(service_json(name, entry, members_read_json(view, name)));
    }
    return {{"fleet", fleet_name},
            {"member", member},
            {"etcd", view.reachable ? "ok" : "unreachable"},
            {"error", view.reachable || view.last_error.empty() ? json(nullptr) : json(view.last_error)},
            {"revision", view.revision},
            {"services", std::move(services)}};
}

} // namespace tunneld::control
