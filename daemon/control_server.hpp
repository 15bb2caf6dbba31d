#pragma once
// The control socket: JSON lines over a Unix stream socket (docs/control-protocol.md), each peer
// checked with SO_PEERCRED before anything it sends is read.

#include "control/protocol.hpp"
#include "cutover/controller.hpp"

#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <filesystem>
#include <functional>
#include <optional>
#include <sys/types.h>

namespace tunneld::daemon {

namespace asio = boost::asio;
class runtime;

/// Whether a peer may operate: root, the daemon's own uid, or a member of `group`. Pure.
bool peer_allowed(uid_t peer_uid, gid_t peer_gid, uid_t daemon_uid, std::optional<gid_t> group,
                  const std::vector<gid_t>& peer_groups);

class control_server {
public:
    /// Binds `path` (a stale socket file is replaced), mode 0660, group `group_name` if set.
    /// Throws std::system_error naming the path when it cannot.
    control_server(asio::io_context& loop, runtime& daemon, const std::filesystem::path& path,
                   const std::optional<std::string>& group_name);
    ~control_server();

    void start();
    void stop();

private:
    asio::awaitable<void> accept_loop();
    asio::awaitable<void> serve(asio::local::stream_protocol::socket peer);
    /// The reply to `r` from the operator `uid`, preceded by whatever progress the socket could
    /// not take at once.
    asio::awaitable<std::string> execute(const control::request& r, asio::local::stream_protocol::socket& peer,
                                         uid_t uid);
    /// Carries out `r` for `uid`; its reply line. A change of route (switch, rollback, split,
    /// pause, resume) goes into the switch history with who asked and what came of it.
    asio::awaitable<std::string> answer(const control::request& r, std::function<void(const std::string&)> progress,
                                        uid_t uid);

    /// `switch` (or `rollback`: `to` old) on this host alone, or with [fleet] on the whole fleet
    /// with this member as coordinator.
    asio::awaitable<cutover::command_result> switch_here_or_fleet(std::string service, proxy::side to,
                                                                  std::optional<config::switch_mode> mode, bool force,
                                                                  cutover::progress_fn progress);

    asio::io_context& loop_;
    runtime& daemon_;
    std::filesystem::path path_;
    std::optional<gid_t> group_;
    asio::local::stream_protocol::acceptor acceptor_;
};

} // namespace tunneld::daemon
