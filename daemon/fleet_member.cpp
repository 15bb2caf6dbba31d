#include "daemon/fleet_member.hpp"

#include "control/fleet_json.hpp"

#include <spdlog/spdlog.h>

namespace tunneld::daemon {

namespace {

/// How often the services are looked at for a changed record (a switch, held clients): cheap,
/// and a change reaches etcd this soon instead of at the next heartbeat.
constexpr auto poll_interval = std::chrono::milliseconds(250);

fleet::side fleet_side(proxy::side s)
{
    return s == proxy::side::new_side ? fleet::side::new_side : fleet::side::old_side;
}

} // namespace

fleet::member_record member_record_of(const cutover::service_snapshot& s, std::int64_t epoch)
{
    // A split service is reported by its route's active side; the state says it is split only
    // through `status` (fleets switch redis and postgres, which never split).
    return {fleet_side(s.route.active), epoch, std::string(cutover::to_string(s.state)), s.held, 0};
}

fleet_member::fleet_member(boost::asio::io_context& loop, const config::fleet_config& settings,
                           services_source services)
    : settings_(settings), services_(std::move(services)),
      client_(loop.get_executor(), fleet::etcd::options_for(settings)),
      membership_(client_, fleet::key_layout(settings.name), settings.member, [this] { return records(); }),
      poll_(loop)
{
}

fleet_member::~fleet_member() = default;

void fleet_member::start()
{
    membership_.on_view_change([this](const fleet::fleet_view& view) { on_view(view); });
    membership_.start();
    spdlog::info("fleet {}: member {} joining through {}", settings_.name, settings_.member,
                 settings_.etcd.front().to_string());
    watch_services();
}

void fleet_member::stop()
{
    stopped_ = true;
    poll_.cancel();
    membership_.stop();
}

bool fleet_member::finished() const { return membership_.finished(); }

std::map<std::string, fleet::member_record> fleet_member::records()
{
    std::map<std::string, fleet::member_record> out;
    const auto snapshots = services_(); // the controller's own lock: never taken inside ours
    std::lock_guard lock(mutex_);
    for (const auto& s : snapshots) {
        sides_[s.name] = fleet_side(s.route.active);
        const auto epoch = status_.epochs.find(s.name);
        out[s.name] = member_record_of(s, epoch == status_.epochs.end() ? 0 : epoch->second);
    }
    return out;
}

void fleet_member::watch_services()
{
    if (stopped_) return;
    // Published only when something changed: membership writes changed records at once.
    auto now = records();
    if (now != offered_) {
        offered_ = std::move(now);
        membership_.publish_now();
    }
    poll_.expires_after(poll_interval);
    poll_.async_wait([this](boost::system::error_code ec) {
        if (!ec) watch_services();
    });
}

void fleet_member::on_view(const fleet::fleet_view& view)
{
    bool epochs_changed = false;
    {
        std::lock_guard lock(mutex_);
        if (status_.reachable != view.reachable) {
            if (view.reachable)
                spdlog::info("fleet {}: etcd reachable", settings_.name);
            else
                spdlog::warn("fleet {}: etcd unreachable: {}", settings_.name, view.last_error);
        }
        status_.reachable = view.reachable;
        for (const auto& [name, active] : sides_) {
            const auto entry = view.services.find(name);
            if (entry == view.services.end()) continue;
            auto& epoch = status_.epochs[name];
            const auto next = fleet::epoch_run(entry->second.epoch, active, epoch);
            epochs_changed |= next != epoch;
            epoch = next;
        }
    }
    if (epochs_changed) membership_.publish_now();
}

control::fleet_status fleet_member::status() const
{
    std::lock_guard lock(mutex_);
    return status_;
}

nlohmann::json fleet_member::listing(const std::string& service) const
{
    return control::fleet_json(membership_.view(), settings_.name, settings_.member, service);
}

} // namespace tunneld::daemon
