#pragma once
// This host as a member of its fleet (`[fleet]`, docs/fleet.md): a record per service (side,
// epoch, state, held clients) kept in etcd under this member's lease, and the view of its
// services (epoch and pause live, the member records as of the last read: fleet::fleet_view).
// It runs on the control loop next to the controller; traffic never waits for it, and etcd
// being away only shows in status, health and metrics.

#include "config/config.hpp"
#include "control/status_json.hpp"
#include "cutover/controller.hpp"
#include "cutover/snapshot.hpp"
#include "fleet/coordinator.hpp"
#include "fleet/membership.hpp"

#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <functional>
#include <mutex>
#include <set>
#include <nlohmann/json.hpp>

namespace tunneld::daemon {

/// The member record a service's snapshot stands for, running `epoch`. Pure.
fleet::member_record member_record_of(const cutover::service_snapshot& s, std::int64_t epoch);

/// Why `tunnelctl switch/rollback/pause/resume SERVICE` is refused on a member that cannot reach
/// etcd (`last_error`: the view's; empty before etcd was ever reached), serving on `active`. Pure.
std::string unreachable_refusal(const std::string& service, std::string_view command, proxy::side active,
                                const std::string& last_error);

/// Why a fleet switch of `service` towards `to` is refused before anything is claimed, from the
/// service's settings: a postgres rollback (old cannot take back new's writes: not supported
/// fleet-wide), or a postgres switch without fence_command (a member whose hold ran out would
/// serve an old primary that still takes writes). nullopt: it may go on. Pure.
std::optional<std::string> fleet_switch_refusal(const config::service_config& service, proxy::side to);

/// Why `command` (switch, rollback) of `service` is refused while the fleet-wide pause `pause` (as
/// the view has it) holds it at `now_ms` (wall clock, Unix ms). nullopt: not paused. Pure.
std::optional<std::string> paused_refusal(const std::string& service, std::string_view command,
                                          const std::optional<fleet::pause_record>& pause, std::int64_t now_ms);

/// The fleet's part of `tunnelctl check SERVICE` (and `switch --dry-run`) on a member, towards
/// `to`, from `view` (`settings`: the service's; `now_ms`: wall clock): whether etcd answers,
/// whether a switch holds the service, the postgres rules, a fleet-wide pause, and one check per
/// member (side, epoch, state, held clients, last heartbeat): a member that cannot hold for the
/// switch (not serving, a record that does not decode) fails it. Pure.
std::vector<cutover::preflight_check> fleet_readiness(const fleet::fleet_view& view,
                                                      const config::service_config& settings, proxy::side to,
                                                      std::int64_t now_ms);

class fleet_member {
public:
    using services_source = std::function<std::vector<cutover::service_snapshot>()>;
    /// Moves this host's `service` onto `to`, the side the fleet committed while this member was
    /// away (`why`: for the history and the log). On the loop.
    using flip_fn = std::function<boost::asio::awaitable<cutover::command_result>(std::string service,
                                                                                  proxy::side to, std::string why)>;

    /// This member's part in a fleet switch of `service` towards `to` (`gate`: the controller's
    /// hold, its acknowledgement and the fleet's decision); `coordinating`: the switch was typed
    /// here (the control socket records it). Ends when the member is released. On the loop.
    using hold_fn = std::function<boost::asio::awaitable<cutover::command_result>(
        std::string service, proxy::side to, std::shared_ptr<cutover::fleet_gate> gate, bool coordinating,
        cutover::progress_fn progress)>;

    /// Pauses this host's `service` for `timeout` (new clients held), or resumes it (nullopt),
    /// as the fleet's pause says. On the loop.
    using pause_fn = std::function<boost::asio::awaitable<cutover::command_result>(
        std::string service, std::optional<config::duration> timeout)>;

    /// The longest step of a switch of `service` as now configured: its pause_timeout, the budget
    /// that is the deadline of catch-up, fence and promotion (fleet::takeover_wait). On the loop.
    using budget_fn = std::function<config::duration(const std::string& service)>;

    /// `services` is called on `loop` for the records; `flip` carries out a flip to the
    /// committed side (at start, or when etcd is reached again); `hold` a member's part in a
    /// fleet switch; `pause` the fleet's pause and resume here; `budget` a service's longest
    /// step. Throws std::runtime_error when a TLS file of `settings` cannot be loaded.
    fleet_member(boost::asio::io_context& loop, const config::fleet_config& settings, services_source services,
                 flip_fn flip, hold_fn hold, pause_fn pause, budget_fn budget);
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
    /// The `fleet` command's result (every service, or the one named), the member records read
    /// from etcd first (as of the last read when it does not answer). On the loop.
    boost::asio::awaitable<nlohmann::json> listing(std::string service);
    /// Why `command` (switch, rollback, pause, resume) on `service` must be refused now: etcd does
    /// not answer, so the fleet cannot act as one. nullopt: it may go ahead. On the loop.
    std::optional<std::string> refusal(const std::string& service, std::string_view command) const;
    /// fleet_readiness for `settings`' service, the member records read from etcd first. On the loop.
    boost::asio::awaitable<std::vector<cutover::preflight_check>> readiness(config::service_config settings,
                                                                            proxy::side to);

    /// `tunnelctl pause SERVICE [--timeout T]` on a member: every member holds new clients of
    /// `service` until T (wall clock) or `resume_fleet`. Answers once etcd has the pause. On the loop.
    boost::asio::awaitable<cutover::command_result> pause_fleet(std::string service, config::duration timeout);
    boost::asio::awaitable<cutover::command_result> resume_fleet(std::string service);

    /// `tunnelctl switch SERVICE` (or rollback: `to` old) on a member: the whole fleet, with this
    /// member as coordinator (docs/fleet.md, "The fleet switch"). Progress lines name each
    /// member's acknowledgement. The lag gate was checked by the caller. On the loop.
    boost::asio::awaitable<cutover::command_result> switch_fleet(std::string service, proxy::side to,
                                                                 cutover::progress_fn progress);

private:
    std::map<std::string, fleet::member_record> records();
    void on_view(const fleet::fleet_view& view);
    void watch_services();
    /// Flips each service that is behind the fleet's committed side (fleet::react's `flip`) onto
    /// it, one flip per service at a time; a failed flip is tried again after a pause.
    void follow_committed();
    /// Pauses or resumes each service as its fleet-wide pause record says.
    void follow_pause();
    /// The answer to a fleet-wide pause or resume (`what`) once etcd has it, or why not.
    cutover::command_result recorded(const std::string& service, std::string_view what,
                                     const std::optional<std::string>& etcd_error);
    boost::asio::awaitable<void> flip(std::string service, fleet::member_action action);
    /// This member's part in the fleet switch `epoch` towards `to`: held until the epoch record
    /// is committed (or the coordinator here decides), then released.
    struct hold_task;
    boost::asio::awaitable<void> hold(std::string service, std::shared_ptr<hold_task> task);
    /// Takes over `service`'s switch whose coordinator is gone (takeover_watch), resolves it.
    boost::asio::awaitable<void> take_over(std::string service, fleet::epoch_state found);
    /// The coordinator's servers' part: this member's own hold runs the server steps; without a
    /// hold of `epoch` (a takeover), an ordinary switch of this host does (it adopts servers
    /// that are already switched).
    boost::asio::awaitable<fleet::servers_switched> switch_servers_here(std::string service, std::int64_t epoch,
                                                                        fleet::side to);

    /// A fleet switch this member holds its clients for.
    struct hold_task {
        hold_task(boost::asio::io_context& loop, std::int64_t epoch, fleet::side to)
            : to(to), gate(std::make_shared<cutover::fleet_gate>(loop.get_executor(), epoch)),
              done(loop, std::chrono::steady_clock::time_point::max())
        {
        }
        fleet::side to;
        std::shared_ptr<cutover::fleet_gate> gate;
        bool acknowledged = false;
        bool switched = false;                         ///< run here: the servers are switched (on_switched)
        std::optional<cutover::command_result> result; ///< set when released
        boost::asio::steady_timer done; ///< never expires; cancelled when switched and when released
    };

    config::fleet_config settings_;
    services_source services_;
    flip_fn flip_;
    hold_fn hold_;
    pause_fn pause_;
    budget_fn budget_;
    boost::asio::io_context& loop_;
    fleet::etcd::client client_;
    fleet::membership membership_;
    boost::asio::steady_timer poll_;
    bool stopped_ = false;
    std::map<std::string, fleet::member_record> offered_; ///< the records last offered; on the loop
    std::map<std::string, fleet::side> sides_;            ///< each service's side as last seen; on the loop
    std::set<std::string> flipping_;                      ///< services with a flip under way; on the loop
    std::map<std::string, std::shared_ptr<hold_task>> holds_; ///< fleet switches held for; on the loop
    std::map<std::string, std::int64_t> last_hold_;        ///< the epoch last held for, per service; on the loop
    /// Services whose fleet switch runs here, with the operator's progress; on the loop.
    std::map<std::string, cutover::progress_fn> coordinating_;
    std::map<std::string, fleet::takeover_watch> takeovers_; ///< per service; on the loop
    /// Services paused here because the fleet is paused (the pause's until_ms), and those with a
    /// pause or resume under way; on the loop.
    std::map<std::string, std::int64_t> paused_by_fleet_;
    std::set<std::string> pausing_;
    std::map<std::string, std::chrono::steady_clock::time_point> retry_flip_at_; ///< after a failed flip; on the loop

    mutable std::mutex mutex_;
    control::fleet_status status_; ///< guarded by mutex_; epochs are this member's, also read on the loop
};

} // namespace tunneld::daemon
