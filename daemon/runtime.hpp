#pragma once
// tunneld at run time: the event loops, tunnels, services, controller, control socket, HTTP
// endpoint and signals, wired together. main() builds one and runs it.

#include "config/config.hpp"
#include "control/status_json.hpp"
#include "cutover/controller.hpp"
#include "cutover/history.hpp"
#include "daemon/metrics.hpp"
#include "proxy/service.hpp"
#include "tunnel/tunnel.hpp"

#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/thread_pool.hpp>
#include <map>
#include <memory>
#include <thread>
#include <vector>

namespace tunneld::daemon {

namespace asio = boost::asio;

class control_server;
class fleet_member;
class http_server;

class runtime {
public:
    /// Reads the state file (a corrupt one throws std::runtime_error with the reason).
    explicit runtime(std::shared_ptr<const config::config> settings);
    ~runtime();

    /// Starts everything, notifies systemd, and blocks until SIGTERM/SIGINT has drained the
    /// clients. Returns the process exit code. Throws std::system_error when a listener cannot bind.
    int run();

    /// Re-reads the config file: new clients get the new settings, live clients keep theirs. On
    /// errors nothing changes and the errors are returned (each `PATH:LINE:COL: message`).
    std::vector<std::string> reload();

    /// What `status` reports (every service, or the one named), as values. Thread-safe.
    control::status_snapshot status(const std::string& service = {}) const;
    std::vector<tunnel::tunnel_status> tunnels_status() const;
    std::vector<std::string> not_ready_reasons() const;

    /// Appends `entry` to the switch history (and a switch or rollback that held clients to the
    /// hold histogram of /metrics) and writes the history file off the event loops, in order.
    /// Thread-safe.
    void record_history(cutover::history_entry entry);
    /// The newest `limit` history entries of `service` (all services when empty), oldest first.
    std::vector<cutover::history_entry> history(const std::string& service = {}, std::size_t limit = 1000) const;

    cutover::controller& controller() { return *controller_; }
    /// This host in its fleet; nullptr without [fleet] (a single host).
    fleet_member* fleet() { return fleet_.get(); }
    asio::io_context& control_loop() { return *loops_.front(); }

private:
    struct forwarder; // loopback listener that reaches a tunnelled backend for probes

    void start_tunnels(const config::config& settings);
    /// With [fleet]: joins the fleet (member records, the fleet's view). On the control loop.
    void start_fleet();
    /// Moves `service` onto `to`, the side its fleet committed while this member was away, and
    /// records it in the history (operator "fleet", `why`). On the control loop.
    asio::awaitable<cutover::command_result> follow_fleet(std::string service, proxy::side to, std::string why);
    /// This member's part in a fleet switch of `service` (held, then released as `gate` decides),
    /// recorded in the history as operator "fleet" unless the switch was typed here. On the loop.
    /// Pauses `service` here for `timeout` (nullopt: resumes it) because the fleet is paused (or
    /// resumed), recorded in the history as operator "fleet". On the control loop.
    asio::awaitable<cutover::command_result> pause_for_fleet(std::string service, std::optional<config::duration> timeout);
    asio::awaitable<cutover::command_result> hold_for_fleet(std::string service, proxy::side to,
                                                            std::shared_ptr<cutover::fleet_gate> gate,
                                                            bool coordinating, cutover::progress_fn progress);
    void start_service(std::shared_ptr<const config::service_config> settings);
    std::optional<cutover::probe_endpoints> probe_endpoints_for(const config::service_config& settings);
    void stop_service(const std::string& name);
    /// Every event loop, for the pools and services that spread their work over them.
    std::vector<asio::io_context*> loop_pointers() const;
    std::shared_ptr<tunnel::pool> find_tunnel(std::string_view name) const;
    void handle_signals();
    void begin_shutdown();
    asio::awaitable<void> drain_and_stop();
    void feed_watchdog();
    void retire_idle_tunnels();
    asio::awaitable<void> check_backends();

    std::shared_ptr<const config::config> settings_;
    std::vector<std::unique_ptr<asio::io_context>> loops_;
    std::vector<asio::executor_work_guard<asio::io_context::executor_type>> work_;
    std::vector<std::thread> threads_;

    mutable std::mutex tunnels_mutex_;
    std::map<std::string, std::shared_ptr<tunnel::pool>, std::less<>> tunnels_; // guarded by tunnels_mutex_
    std::vector<std::shared_ptr<tunnel::pool>> retiring_;                       // guarded by tunnels_mutex_

    std::unique_ptr<cutover::controller> controller_;
    std::unique_ptr<fleet_member> fleet_; ///< set before the control socket opens; then only read

    std::filesystem::path history_path_;
    mutable std::mutex history_mutex_;
    cutover::switch_history history_;        ///< guarded by history_mutex_
    asio::thread_pool history_writer_{1};    ///< one thread: history files are written in order
    metrics metrics_;
    std::map<std::string, std::shared_ptr<proxy::service>> services_; ///< touched on the control loop only
    std::map<std::string, std::vector<std::shared_ptr<proxy::service>>> forwarders_;

    mutable std::mutex reachability_mutex_;
    /// service -> why its active direct backend cannot be reached; guarded by reachability_mutex_
    std::map<std::string, std::string> unreachable_;

    std::unique_ptr<control_server> control_;
    std::unique_ptr<http_server> http_;
    asio::signal_set signals_;
    asio::steady_timer watchdog_timer_;
    asio::steady_timer shutdown_timer_;
    bool stopping_ = false;
    int exit_code_ = 0;
};

} // namespace tunneld::daemon
