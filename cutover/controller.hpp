#pragma once
// Carries out switches: drives each service's switch_machine, applies its route to the proxy,
// runs the replication steps off the loop, persists the state file, and reports progress.
// Every method runs on the control loop (one io_context); status() may be called from any thread.

#include "config/config.hpp"
#include "cutover/dry_run.hpp"
#include "cutover/lag.hpp"
#include "cutover/replication.hpp"
#include "cutover/state_file.hpp"
#include "cutover/switch_machine.hpp"
#include "proxy/service.hpp"

#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/thread_pool.hpp>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>

namespace tunneld::cutover {

namespace asio = boost::asio;

/// The answer to one control command.
struct command_result {
    verdict result = verdict::done;
    std::string error;                      ///< on failure: the reason, one line
    std::optional<service_snapshot> service; ///< done: the service after the command
    std::optional<std::chrono::milliseconds> held; ///< how long the command held new clients
    std::uint64_t cut = 0;                         ///< clients the command cut
    std::optional<std::uint64_t> moved;            ///< clients the command moved (set when it moved any side)
    bool adopted = false; ///< a switch found the servers already switched and only flipped this host

    bool ok() const { return result == verdict::done; }
    static command_result success(service_snapshot s)
    {
        command_result r;
        r.service = std::move(s);
        return r;
    }
    static command_result failure(verdict v, std::string error)
    {
        command_result r;
        r.result = v;
        r.error = std::move(error);
        return r;
    }
};

using progress_fn = std::function<void(const std::string&)>;

/// One member's part in a fleet switch (docs/fleet.md): the controller holds the service's new
/// clients and quiesces its old-side ones, calls on_held (the member acknowledges), then waits
/// for decide(): run the servers' steps here, adopt the fleet's switch, or abort. Loop only.
class fleet_gate {
public:
    fleet_gate(asio::any_io_executor executor, std::int64_t epoch) : epoch_(epoch), signal_(executor) {}
    /// The first decision counts; later ones are ignored.
    void decide(fleet_go go, std::string reason);
    bool decided() const { return decision_.has_value(); }
    std::int64_t epoch() const { return epoch_; }
    /// Called once the clients are held and quiesced.
    std::function<void()> on_held;
    /// run_here: called once the servers are switched and the route is on disk (fleet_switched),
    /// before this host's own clients are released: the fleet may commit meanwhile.
    std::function<void()> on_switched;
    /// on_held, then the decision; abort when none came by `until`.
    asio::awaitable<fleet_decision> wait(std::chrono::steady_clock::time_point until);

private:
    std::int64_t epoch_;
    asio::steady_timer signal_;
    std::optional<fleet_decision> decision_;
};

/// Where a service's probes reach its backends (a loopback forward for a tunnelled backend).
struct probe_endpoints {
    config::endpoint old_endpoint;
    config::endpoint new_endpoint;
};

/// Makes a service's replication (the servers' side of the effects); tests pass fakes.
using replication_factory = std::function<std::unique_ptr<replication>(
    const config::service_config&, const config::endpoint& old_endpoint, const config::endpoint& new_endpoint)>;

/// How long a quiesce or a move waits before its look number `looks` (0, 1, ...) at its
/// clients: 250 us, then doubling to at most 2 ms. A held client waits about this long after it
/// got there before the switch goes on. Pure.
std::chrono::microseconds client_poll_after(unsigned looks) noexcept;

class controller {
public:
    controller(asio::io_context& loop, std::filesystem::path state_file, state initial,
               replication_factory make = make_replication);
    ~controller();

    /// The route a service starts with: its persisted record, else its config's split, else old.
    route initial_route(const config::service_config& settings) const;

    /// Takes charge of `svc`; starts lag probes for redis/postgres kinds.
    void add_service(std::shared_ptr<proxy::service> svc, std::optional<probe_endpoints> probes);
    /// Forgets the service (its listener is stopped by the caller).
    void remove_service(const std::string& name);
    /// Applies reloaded settings to a running service (probes are recreated).
    void update_service(const std::string& name, std::shared_ptr<const config::service_config> settings,
                        std::optional<probe_endpoints> probes);

    /// With `gate`: this member's part in a fleet switch (mode pause, no lag gate here: the
    /// coordinator checks it with gate_refusal before it claims the epoch); journalled as
    /// NAME-epoch-N.
    asio::awaitable<command_result> switch_side(std::string name, side to,
                                                std::optional<config::switch_mode> mode, bool force,
                                                progress_fn progress, std::shared_ptr<fleet_gate> gate = nullptr);
    /// Why the lag gate would refuse `switch_side(name, to, mode, force)` now (nullopt: it
    /// passes, or no gate applies). Asks no server.
    std::optional<std::string> gate_refusal(const std::string& name, side to, std::optional<config::switch_mode> mode,
                                            bool force) const;
    asio::awaitable<command_result> rollback(std::string name, progress_fn progress);
    asio::awaitable<command_result> split(std::string name, unsigned percent, bool sticky);
    asio::awaitable<command_result> pause(std::string name, std::optional<config::duration> timeout);
    /// `tunnelctl resolve`: routes an unresolved service to `to` once the servers show `to` a
    /// primary; fences the other side first if it is a primary too.
    asio::awaitable<command_result> resolve(std::string name, side to);
    asio::awaitable<command_result> resume(std::string name);
    /// Every guardrail of `switch_side(name, to, mode, force)`, changing nothing on any server or
    /// in the state file: the lag gate, the servers' preflight checks (on connections of its own,
    /// so a switch under way is not disturbed), the state file's directory, the hold estimate.
    /// nullopt and `error` set when the service does not exist.
    asio::awaitable<std::optional<dry_run_report>> check(std::string name, side to,
                                                          std::optional<config::switch_mode> mode, bool force,
                                                          std::string& error);

    /// Every service as it is now, by name; `name` empty: all services. Thread-safe.
    std::vector<service_snapshot> snapshot(const std::string& name = {}) const;
    /// Reasons the daemon is not ready (empty: ready). Thread-safe.
    std::vector<std::string> not_ready_reasons() const;
    bool has_service(const std::string& name) const;
    /// The service's settings as running (nullptr: no such service). Thread-safe.
    std::shared_ptr<const config::service_config> settings(const std::string& name) const;

    /// Stops timers and probes.
    void stop();

private:
    struct entry;

    std::shared_ptr<entry> find(const std::string& name) const;
    /// Arms the entry's timer for the machine's deadline (none: cancels it).
    void arm_deadline(const std::shared_ptr<entry>& e);
    void on_deadline(const std::shared_ptr<entry>& e);
    /// Finishes or undoes the switch in `e`'s journal: waits for (or kills) the hook of the step
    /// the daemon died in, asks the servers, feeds the machine `recovered`.
    asio::awaitable<void> recover(std::shared_ptr<entry> e, int hook_pgid);
    /// Feeds `ev` to the entry's machine and carries out what it returns, then every step its
    /// answers lead to; returns the outcome if one of those steps ended the command.
    asio::awaitable<std::optional<command_outcome>> execute(std::shared_ptr<entry> e, event ev,
                                                            progress_fn progress);
    /// execute() for a command: its outcome, or the one the deadline path gave it meanwhile.
    asio::awaitable<command_result> command(std::shared_ptr<entry> e, event ev, progress_fn progress);
    /// Carries out the effects of one step in order; returns the answer of the last, if it asks one.
    asio::awaitable<std::optional<event>> perform(std::shared_ptr<entry> e, std::vector<effect> effects,
                                                  progress_fn progress);
    asio::awaitable<std::optional<event>> perform_one(const std::shared_ptr<entry>& e, const effect& what,
                                                      const progress_fn& progress);
    asio::awaitable<event> drain_clients_step(std::shared_ptr<entry> e, drain_clients what, progress_fn progress);
    asio::awaitable<void> quiesce_step(std::shared_ptr<entry> e, quiesce_clients what, progress_fn progress);
    asio::awaitable<void> move_step(std::shared_ptr<entry> e, move_clients what, progress_fn progress);
    asio::awaitable<event> watch_drain_step(std::shared_ptr<entry> e, watch_drain what, progress_fn progress);
    asio::awaitable<std::optional<std::string>> persist();
    /// Writes every service's route, fence state and journal now. Blocking; any thread.
    std::optional<std::string> save_now();
    asio::awaitable<void> probe_loop(std::shared_ptr<entry> e, std::uint64_t generation);
    /// While clients go to new (redis, old fenced by a switch): asks both servers on the probe's
    /// connections and tells the machine when old answers as a writable primary again.
    asio::awaitable<void> keep_fence(std::shared_ptr<entry> e, std::shared_ptr<replication> probe);
    template <class F> asio::awaitable<std::invoke_result_t<F>> off_loop(const F& f);
    service_snapshot describe(const entry& e) const;
    void record_result(entry& e, const command_outcome& outcome);

    asio::io_context& loop_;
    asio::thread_pool blocking_{2}; ///< probes, replication steps, hooks and state file writes
    std::filesystem::path state_file_;
    replication_factory make_replication_;
    state persisted_; ///< last state read or written
    std::mutex save_mutex_;
    std::uint64_t save_sequence_ = 0;  ///< bumped for each snapshot; guarded by save_mutex_
    std::uint64_t saved_sequence_ = 0; ///< newest snapshot on disk; guarded by save_mutex_

    mutable std::mutex mutex_; ///< guards entries_ and every entry's fields read by status()
    std::map<std::string, std::shared_ptr<entry>> entries_;
    bool stopped_ = false;
};

} // namespace tunneld::cutover
