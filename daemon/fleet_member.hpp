#pragma once
// This host as a member of its fleet (`[fleet]`, docs/fleet.md): a record per service (side,
// epoch, state, held clients) kept in etcd under this member's lease, and the live view of every
// member. It runs on the control loop next to the controller; traffic never waits for it, and
// etcd being away only shows in status, health and metrics.

#include "config/config.hpp"
#include "control/status_json.hpp"
#include "cutover/snapshot.hpp"
#include "fleet/membership.hpp"

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <functional>
#include <mutex>
#include <nlohmann/json.hpp>

namespace tunneld::daemon {

/// The member record a service's snapshot stands for, running `epoch`. Pure.
fleet::member_record member_record_of(const cutover::service_snapshot& s, std::int64_t epoch);

class fleet_member {
public:
    using services_source = std::function<std::vector<cutover::service_snapshot>()>;

    /// `services` is called on `loop` for the records. Throws std::runtime_error when a TLS file
    /// of `settings` cannot be loaded.
    fleet_member(boost::asio::io_context& loop, const config::fleet_config& settings, services_source services);
    ~fleet_member();
    fleet_member(const fleet_member&) = delete;
    fleet_member& operator=(const fleet_member&) = delete;

    /// Joins the fleet: grants the lease, writes the records, watches the fleet's keys. On the loop.
    void start();
    /// Leaves: stops watching and revokes the lease (the records vanish at once). On the loop.
    void stop();
    /// Every etcd call has ended after stop(): the loop may stop.
    bool finished() const;

    /// Whether etcd answers and the epoch each service runs here. Thread-safe.
    control::fleet_status status() const;
    /// The `fleet` command's result (every service, or the one named). On the loop.
    nlohmann::json listing(const std::string& service) const;

private:
    std::map<std::string, fleet::member_record> records();
    void on_view(const fleet::fleet_view& view);
    void watch_services();

    config::fleet_config settings_;
    services_source services_;
    fleet::etcd::client client_;
    fleet::membership membership_;
    boost::asio::steady_timer poll_;
    bool stopped_ = false;
    std::map<std::string, fleet::member_record> offered_; ///< the records last offered; on the loop
    std::map<std::string, fleet::side> sides_;            ///< each service's side as last seen; on the loop

    mutable std::mutex mutex_;
    control::fleet_status status_; ///< guarded by mutex_; epochs are this member's, also read on the loop
};

} // namespace tunneld::daemon
