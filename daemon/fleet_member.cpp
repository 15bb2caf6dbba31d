#include "daemon/fleet_member.hpp"

#include "control/fleet_json.hpp"

#include <algorithm>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <fmt/format.h>
#include <spdlog/spdlog.h>

namespace tunneld::daemon {

namespace {

/// How often the services are looked at for a changed record (a switch, held clients): cheap,
/// and a change reaches etcd this soon instead of at the next heartbeat.
constexpr auto poll_interval = std::chrono::milliseconds(250);
/// After a flip that failed (the service was busy with a switch of its own, a server step
/// failed), the next attempt waits this long.
constexpr auto flip_retry = std::chrono::seconds(5);

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

std::string unreachable_refusal(const std::string& service, std::string_view command, proxy::side active,
                                const std::string& last_error)
{
    return fmt::format("{} refused: the fleet is unreachable (etcd: {}). With [fleet] a {} acts on every member "
                       "together, so it waits for etcd; this member keeps serving {} on {}. Bring etcd back (or "
                       "fix [fleet] etcd), check with `tunnelctl fleet`, then run it again",
                       command, last_error.empty() ? "not reached yet" : last_error, command, service,
                       proxy::to_string(active));
}

fleet_member::fleet_member(boost::asio::io_context& loop, const config::fleet_config& settings,
                           services_source services, flip_fn flip)
    : settings_(settings), services_(std::move(services)), flip_(std::move(flip)), loop_(loop),
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
    follow_committed();
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
            const auto& members = entry->second.members;
            status_.members[name] = members.size();
            status_.behind[name] = static_cast<std::size_t>(
                std::count_if(members.begin(), members.end(), [&](const fleet::member_entry& m) {
                    return m.record && fleet::lags_behind(entry->second.epoch, *m.record);
                }));
        }
    }
    if (epochs_changed) membership_.publish_now();
    follow_committed();
}

void fleet_member::follow_committed()
{
    const auto& view = membership_.view();
    // Only what etcd says now: a member that cannot reach it stays where its state file put it.
    if (stopped_ || !view.reachable) return;
    const auto now = std::chrono::steady_clock::now();
    for (const auto& [name, active] : sides_) {
        const auto entry = view.services.find(name);
        if (entry == view.services.end() || flipping_.contains(name)) continue;
        if (const auto retry = retry_flip_at_.find(name); retry != retry_flip_at_.end() && now < retry->second)
            continue;
        fleet::member_local local;
        local.active = active;
        {
            std::lock_guard lock(mutex_);
            const auto epoch = status_.epochs.find(name);
            local.epoch = epoch == status_.epochs.end() ? 0 : epoch->second;
        }
        const auto action = fleet::react(entry->second.epoch, local);
        if (action.what != fleet::member_action::kind::flip) continue;
        flipping_.insert(name);
        boost::asio::co_spawn(loop_, flip(name, action), boost::asio::detached);
    }
}

boost::asio::awaitable<void> fleet_member::flip(std::string service, fleet::member_action action)
{
    const auto to = action.to == fleet::side::new_side ? proxy::side::new_side : proxy::side::old_side;
    const auto why = fmt::format("fleet {} committed epoch {} on {} while this member was away", settings_.name,
                                 action.epoch, proxy::to_string(to));
    spdlog::warn("service={} {}: following it", service, why);
    cutover::command_result result;
    try {
        result = co_await flip_(service, to, why);
    } catch (const std::exception& e) {
        result = cutover::command_result::failure(cutover::verdict::failed, e.what());
    }
    flipping_.erase(service);
    if (stopped_) co_return;
    if (!result.ok()) {
        spdlog::warn("service={} could not follow the fleet to {} yet ({}); trying again in {}s", service,
                     proxy::to_string(to), result.error, flip_retry.count());
        retry_flip_at_[service] = std::chrono::steady_clock::now() + flip_retry;
        co_return;
    }
    retry_flip_at_.erase(service);
    sides_[service] = action.to;
    {
        std::lock_guard lock(mutex_);
        auto& epoch = status_.epochs[service];
        epoch = std::max(epoch, action.epoch);
        ++status_.follows[service];
    }
    membership_.publish_now();
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

std::optional<std::string> fleet_member::refusal(const std::string& service, std::string_view command) const
{
    const auto& view = membership_.view();
    if (view.reachable) return std::nullopt;
    const auto side = sides_.find(service);
    const auto active = side != sides_.end() && side->second == fleet::side::new_side ? proxy::side::new_side
                                                                                       : proxy::side::old_side;
    return unreachable_refusal(service, command, active, view.last_error);
}

} // namespace tunneld::daemon
