#include "control/status_json.hpp"

namespace tunneld::control {

namespace {

using nlohmann::json;
using proxy::side;

json backend_json(const config::backend& b)
{
    return {{"address", b.address.to_string()}, {"via", b.via ? json(*b.via) : json(nullptr)}};
}

json lag_json(const std::optional<cutover::lag_reading>& reading)
{
    json lag = {{"bytes", nullptr}, {"seconds", nullptr}, {"link", "unknown"}};
    if (reading) {
        if (reading->bytes) lag["bytes"] = *reading->bytes;
        if (reading->seconds) lag["seconds"] = *reading->seconds;
        lag["link"] = cutover::to_string(reading->link);
        lag["detail"] = reading->detail;
        lag["replica"] = reading->replica ? json(proxy::to_string(*reading->replica)) : json(nullptr);
    }
    return lag;
}

/// `[[unix_ms, bytes|null], ...]`: compact, for the status page's lag graph.
json lag_history_json(const std::vector<cutover::lag_sample>& samples)
{
    json out = json::array();
    for (const auto& sample : samples)
        out.push_back(json::array({sample.unix_ms, sample.bytes ? json(*sample.bytes) : json(nullptr)}));
    return out;
}

json progress_json(const std::optional<cutover::switch_progress>& p)
{
    if (!p) return nullptr;
    json steps = json::array();
    for (const auto& line : p->steps)
        steps.push_back({{"text", line}});
    const auto elapsed =
        std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - p->started);
    return {{"action", p->action},
            {"from", proxy::to_string(p->from)},
            {"to", proxy::to_string(p->to)},
            {"mode", config::to_string(p->mode)},
            {"started_unix_ms", p->started_unix_ms},
            {"elapsed_ms", elapsed.count()},
            {"steps", std::move(steps)}};
}

/// On new: whether old follows new with its link up (a rollback loses nothing); null elsewhere.
json rollback_ready(const cutover::service_snapshot& s)
{
    if (s.kind == config::service_kind::tcp || s.route.split_percent || s.route.active != side::new_side)
        return nullptr;
    return s.lag && s.lag->replica == side::old_side && s.lag->link == cutover::link_state::up;
}

template <class T> json optional_json(const std::optional<T>& value)
{
    return value ? json(*value) : json(nullptr);
}

} // namespace

json to_json(const cutover::service_snapshot& s)
{
    const auto& r = s.route;
    const std::string active = r.split_percent ? "split" : std::string(proxy::to_string(r.active));
    const auto index = [](side which) { return static_cast<std::size_t>(which); };
    return {
        {"name", s.name},
        {"kind", config::to_string(s.kind)},
        {"listen", s.listen.to_string()},
        {"active", active},
        {"split_percent", r.split_percent.value_or(0)},
        {"sticky", r.sticky},
        {"state", cutover::to_string(s.state)},
        {"mode", config::to_string(s.mode)},
        {"connections",
         {{"old", s.connections[index(side::old_side)]}, {"new", s.connections[index(side::new_side)]}}},
        {"held", s.held},
        {"clients_total", s.clients_total},
        {"bytes_up", s.bytes_up},
        {"bytes_down", s.bytes_down},
        {"connect_errors",
         {{"old", s.connect_errors[index(side::old_side)]}, {"new", s.connect_errors[index(side::new_side)]}}},
        {"refused_max_clients", s.refused_max_clients},
        {"clients_moved", s.clients_moved},
        {"clients_move_failed", s.clients_move_failed},
        {"old", backend_json(s.old_backend)},
        {"new", backend_json(s.new_backend)},
        {"lag", lag_json(s.lag)},
        {"fenced", s.fenced},
        {"fence_reasserted", s.fence_reasserted},
        {"rollback_ready", rollback_ready(s)},
        {"problem", s.problem.empty() ? json(nullptr) : json(s.problem)},
        {"switches", s.switches},
        {"last_switch", s.last_switch ? json{{"result", s.last_switch->result},
                                             {"at", s.last_switch->at},
                                             {"message", s.last_switch->message},
                                             {"cut", s.last_switch->cut},
                                             {"moved", optional_json(s.last_switch->moved)},
                                             {"adopted", s.last_switch->adopted}}
                                      : json(nullptr)},
        {"lag_history", lag_history_json(s.lag_history)},
        {"switch", progress_json(s.progress)},
    };
}

json to_json(const cutover::history_entry& e)
{
    return {{"time", e.time},
            {"service", e.service},
            {"action", cutover::to_string(e.action)},
            {"from", e.from},
            {"to", e.to},
            {"mode", e.mode},
            {"forced", e.forced},
            {"uid", optional_json(e.uid)},
            {"user", e.user},
            {"held_ms", optional_json(e.held_ms)},
            {"cut", optional_json(e.cut)},
            {"moved", optional_json(e.moved)},
            {"adopted", e.adopted},
            {"result", cutover::to_string(e.result)},
            {"reason", e.reason}};
}

json to_json(const std::vector<cutover::history_entry>& entries)
{
    json out = json::array();
    for (const auto& e : entries)
        out.push_back(to_json(e));
    return out;
}

json check_json(const std::string& service, proxy::side from, proxy::side to, config::switch_mode mode,
                const cutover::dry_run_report& report)
{
    json checks = json::array();
    for (const auto& c : report.checks)
        checks.push_back({{"name", c.name}, {"verdict", cutover::to_string(c.verdict)}, {"detail", c.detail}});
    return {{"service", service},
            {"from", proxy::to_string(from)},
            {"to", proxy::to_string(to)},
            {"mode", config::to_string(mode)},
            {"would_proceed", report.would_proceed},
            {"estimated_hold_ms", report.estimated_hold ? json(report.estimated_hold->count()) : json(nullptr)},
            {"checks", std::move(checks)},
            {"plan", report.plan}};
}

json to_json(const tunnel::tunnel_status& t)
{
    json gateways = json::array();
    for (const auto& g : t.gateways)
        gateways.push_back({{"address", g.address},
                            {"state", g.state},
                            {"sessions", g.sessions},
                            {"sessions_up", g.sessions_up},
                            {"channels", g.channels},
                            {"failures", g.failures},
                            {"last_error", g.last_error}});
    json by_session = json::array();
    for (const auto& s : t.by_session)
        by_session.push_back({{"gateway", s.gateway}, {"up", s.up}, {"channels", s.channels}, {"loop", s.loop}});
    return {
        {"name", t.name},
        {"address", t.address},
        {"sessions", t.sessions},
        {"sessions_up", t.sessions_up},
        {"channels", t.channels},
        {"bytes_up", t.bytes_up},
        {"bytes_down", t.bytes_down},
        {"reconnects", t.reconnects},
        {"channel_open_failures", t.channel_open_failures},
        {"last_error", t.last_error},
        {"since_last_receive_ms", t.since_last_receive ? json(t.since_last_receive->count()) : json(nullptr)},
        {"gateways", gateways},
        {"by_session", by_session},
    };
}

json to_json(const std::vector<tunnel::tunnel_status>& tunnels)
{
    json out = json::array();
    for (const auto& t : tunnels)
        out.push_back(to_json(t));
    return out;
}

json to_json(const status_snapshot& s)
{
    json services = json::array();
    for (const auto& service : s.services) {
        auto object = to_json(service);
        object["epoch"] = nullptr;
        object["fleet"] = nullptr;
        if (s.fleet) {
            const auto epoch = s.fleet->epochs.find(service.name);
            object["epoch"] = epoch == s.fleet->epochs.end() ? 0 : epoch->second; // 0: none committed yet
            object["fleet"] = s.fleet->reachable ? "ok" : "unreachable";
        }
        services.push_back(std::move(object));
    }
    return {{"services", services}, {"tunnels", to_json(s.tunnels)}, {"history", to_json(s.history)}};
}

} // namespace tunneld::control
