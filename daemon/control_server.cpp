#include "daemon/control_server.hpp"

#include "control/status_json.hpp"
#include "daemon/fleet_member.hpp"
#include "daemon/runtime.hpp"

#include <algorithm>
#include <array>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <chrono>
#include <fmt/chrono.h>
#include <fmt/format.h>
#include <grp.h>
#include <pwd.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

namespace tunneld::daemon {

using asio::as_tuple;
using asio::use_awaitable;
using local = asio::local::stream_protocol;
using namespace control;
using cutover::progress_fn;

bool peer_allowed(uid_t peer_uid, gid_t peer_gid, uid_t daemon_uid, std::optional<gid_t> group,
                  const std::vector<gid_t>& peer_groups)
{
    if (peer_uid == 0 || peer_uid == daemon_uid) return true;
    if (!group) return false;
    return peer_gid == *group ||
           std::find(peer_groups.begin(), peer_groups.end(), *group) != peer_groups.end();
}

namespace {

std::vector<gid_t> groups_of(uid_t uid, gid_t primary)
{
    const passwd* user = ::getpwuid(uid);
    if (!user) return {};
    int count = 64;
    std::vector<gid_t> groups(static_cast<std::size_t>(count));
    if (::getgrouplist(user->pw_name, primary, groups.data(), &count) < 0) {
        groups.resize(static_cast<std::size_t>(count));
        if (::getgrouplist(user->pw_name, primary, groups.data(), &count) < 0) return {};
    }
    groups.resize(static_cast<std::size_t>(count));
    return groups;
}

std::optional<gid_t> lookup_group(const std::optional<std::string>& name)
{
    if (!name) return std::nullopt;
    const group* g = ::getgrnam(name->c_str());
    if (!g) throw std::runtime_error(fmt::format("control_group \"{}\" does not exist", *name));
    return g->gr_gid;
}

/// The protocol's error code for a command's verdict.
error_code wire_code(cutover::verdict v)
{
    switch (v) {
    case cutover::verdict::refused:
        return error_code::refused;
    case cutover::verdict::busy:
        return error_code::busy;
    case cutover::verdict::unknown_service:
        return error_code::unknown_service;
    case cutover::verdict::done:
    case cutover::verdict::failed:
        break;
    }
    return error_code::failed;
}

} // namespace

control_server::control_server(asio::io_context& loop, runtime& daemon, const std::filesystem::path& path,
                               const std::optional<std::string>& group_name)
    : loop_(loop), daemon_(daemon), path_(path), group_(lookup_group(group_name)), acceptor_(loop)
{
    std::error_code ignored;
    // A socket file left by a previous run would make bind fail; only a socket is removed.
    if (std::filesystem::is_socket(path_, ignored)) std::filesystem::remove(path_, ignored);
    acceptor_.open(local());
    // Created 0660 from the start: no window in which others could connect.
    const mode_t old_mask = ::umask(0117);
    boost::system::error_code ec;
    acceptor_.bind(local::endpoint(path_.string()), ec);
    ::umask(old_mask);
    if (ec) throw std::system_error(ec, fmt::format("control socket {}", path_.string()));
    if (group_ && ::chown(path_.c_str(), static_cast<uid_t>(-1), *group_) != 0)
        throw std::system_error(errno, std::generic_category(),
                                fmt::format("control socket {}: chown to group", path_.string()));
    ::chmod(path_.c_str(), 0660);
    acceptor_.listen();
}

control_server::~control_server()
{
    stop();
}

void control_server::start()
{
    asio::co_spawn(loop_, accept_loop(), asio::detached);
}

void control_server::stop()
{
    if (!acceptor_.is_open()) return;
    boost::system::error_code ignored;
    acceptor_.close(ignored);
    std::error_code fs_ignored;
    std::filesystem::remove(path_, fs_ignored);
}

asio::awaitable<void> control_server::accept_loop()
{
    for (;;) {
        auto [ec, peer] = co_await acceptor_.async_accept(as_tuple(use_awaitable));
        if (ec == asio::error::operation_aborted || !acceptor_.is_open()) co_return;
        if (ec) {
            spdlog::warn("control socket accept failed: {}", ec.message());
            asio::steady_timer pause(loop_, std::chrono::milliseconds(100));
            co_await pause.async_wait(as_tuple(use_awaitable));
            continue;
        }
        asio::co_spawn(loop_, serve(std::move(peer)), asio::detached);
    }
}

asio::awaitable<void> control_server::serve(local::socket peer)
{
    ucred credentials{};
    socklen_t length = sizeof credentials;
    if (::getsockopt(peer.native_handle(), SOL_SOCKET, SO_PEERCRED, &credentials, &length) != 0 ||
        !peer_allowed(credentials.uid, credentials.gid, ::geteuid(), group_,
                      groups_of(credentials.uid, credentials.gid))) {
        spdlog::warn("control socket: refused peer uid={} gid={} pid={}", credentials.uid, credentials.gid,
                     credentials.pid);
        const auto line = error_line(
            {error_code::forbidden, fmt::format("uid {} may not operate tunneld (root, the daemon's user and "
                                                "members of control_group may)",
                                                credentials.uid)});
        co_await asio::async_write(peer, asio::buffer(line), as_tuple(use_awaitable));
        // Closing with the peer's request unread would reset the connection and lose the answer:
        // send FIN, then read and discard what it sent until it closes, for at most 2s.
        boost::system::error_code ignored;
        peer.shutdown(local::socket::shutdown_send, ignored);
        asio::steady_timer deadline(loop_, std::chrono::seconds(2));
        deadline.async_wait([&peer](boost::system::error_code ec) {
            boost::system::error_code ignored_close;
            if (!ec) peer.close(ignored_close);
        });
        std::array<char, 1024> discard;
        for (std::size_t total = 0; total < max_line_length;) {
            auto [ec, n] = co_await peer.async_read_some(asio::buffer(discard), as_tuple(use_awaitable));
            if (ec) break;
            total += n;
        }
        deadline.cancel();
        co_return;
    }

    line_reader reader;
    std::array<char, 4096> buffer;
    for (;;) {
        while (auto line = reader.next_line()) {
            auto parsed = parse_request(*line);
            std::string reply;
            if (auto* error = std::get_if<protocol_error>(&parsed))
                reply = error_line(*error);
            else
                reply = co_await execute(std::get<request>(parsed), peer, credentials.uid);
            auto [write_ec, written] =
                co_await asio::async_write(peer, asio::buffer(reply), as_tuple(use_awaitable));
            if (write_ec) co_return;
        }
        if (reader.overflowed()) {
            const auto line = error_line(line_too_long_error());
            co_await asio::async_write(peer, asio::buffer(line), as_tuple(use_awaitable));
            co_return;
        }
        auto [ec, n] = co_await peer.async_read_some(asio::buffer(buffer), as_tuple(use_awaitable));
        if (ec) co_return;
        reader.feed(std::string_view(buffer.data(), n));
    }
}

asio::awaitable<std::string> control_server::execute(const request& r, local::socket& peer, uid_t uid)
{
    // Progress is advisory and written without blocking the loop, but never as part of a line:
    // what a full socket buffer leaves unsent waits here and goes out, whole, before any later
    // line. A peer that does not read loses whole lines once this holds more than one line's worth.
    std::string unsent;
    const progress_fn progress = [&peer, &unsent](const std::string& message) {
        if (unsent.size() > max_line_length) return;
        unsent += progress_line(message);
        boost::system::error_code ec;
        peer.non_blocking(true, ec);
        while (!unsent.empty() && !ec)
            unsent.erase(0, peer.write_some(asio::buffer(unsent), ec));
        peer.non_blocking(false, ec);
    };
    auto reply = co_await answer(r, progress, uid);
    co_return unsent + reply;
}

namespace {

/// The active side as status shows it: "old", "new" or "split".
std::string active_text(const proxy::route& r)
{
    return r.split_percent ? "split" : std::string(proxy::to_string(r.active));
}

cutover::history_result history_result_of(cutover::verdict v)
{
    switch (v) {
    case cutover::verdict::done:
        return cutover::history_result::done;
    case cutover::verdict::refused:
        return cutover::history_result::refused;
    case cutover::verdict::busy:
        return cutover::history_result::busy;
    default:
        return cutover::history_result::failed;
    }
}

/// The name of `uid`, or empty when it has none.
std::string user_name(uid_t uid)
{
    passwd entry{};
    passwd* found = nullptr;
    std::array<char, 4096> buffer{};
    if (::getpwuid_r(uid, &entry, buffer.data(), buffer.size(), &found) != 0 || !found) return {};
    return found->pw_name;
}

} // namespace

asio::awaitable<cutover::command_result> control_server::switch_here_or_fleet(std::string service, proxy::side to,
                                                                            std::optional<config::switch_mode> mode,
                                                                            bool force, progress_fn progress)
{
    auto& controller = daemon_.controller();
    if (!daemon_.fleet()) co_return co_await controller.switch_side(service, to, mode, force, std::move(progress));
    if (const auto settings = controller.settings(service))
        if (auto refused = fleet_switch_refusal(*settings, to))
            co_return cutover::command_result::failure(cutover::verdict::refused, std::move(*refused));
    // The whole fleet: the lag gate here first (nothing is claimed when it refuses), then this
    // member coordinates. Every member holds in mode pause.
    if (auto refused = controller.gate_refusal(service, to, mode, force))
        co_return cutover::command_result::failure(cutover::verdict::refused, std::move(*refused));
    spdlog::info("control: {} {} to {} runs on the whole fleet", to == proxy::side::old_side ? "rollback" : "switch",
                 service, proxy::to_string(to));
    co_return co_await daemon_.fleet()->switch_fleet(std::move(service), to, std::move(progress));
}

asio::awaitable<std::string> control_server::answer(const request& r, progress_fn progress, uid_t uid)
{
    auto finish = [](const cutover::command_result& result) {
        if (result.ok()) return ok_line(result.service ? to_json(*result.service) : nlohmann::json::object());
        return error_line({wire_code(result.result), result.error});
    };
    auto& controller = daemon_.controller();
    const std::string service = r.service.value_or("");
    const auto to_side = r.to == side_choice::new_side ? proxy::side::new_side : proxy::side::old_side;

    if (r.service && !controller.has_service(service))
        co_return error_line({error_code::unknown_service, fmt::format("no service named \"{}\"", service)});

    // With [fleet] these act on every member together: not while etcd does not answer.
    const auto fleet_wide = r.cmd == command::switch_side || r.cmd == command::rollback ||
                            r.cmd == command::pause || r.cmd == command::resume;
    std::optional<std::string> fleet_refusal;
    if (fleet_wide && daemon_.fleet()) fleet_refusal = daemon_.fleet()->refusal(service, to_string(r.cmd));

    // A change of route is recorded with its operator and outcome (tunnelctl history).
    const auto changes = r.cmd == command::switch_side || r.cmd == command::rollback || r.cmd == command::split ||
                         r.cmd == command::pause || r.cmd == command::resume;
    std::optional<cutover::service_snapshot> before;
    if (changes || r.cmd == command::check) {
        auto snapshots = controller.snapshot(service);
        if (!snapshots.empty()) before = std::move(snapshots.front());
    }
    const auto record = [&](cutover::history_action action, std::string to, std::string mode,
                            const cutover::command_result& result, std::string done_reason) {
        cutover::history_entry e;
        e.time = cutover::utc_now();
        e.service = service;
        e.action = action;
        e.from = before ? active_text(before->route) : "";
        e.to = std::move(to);
        e.mode = std::move(mode);
        e.forced = r.force;
        e.uid = static_cast<std::uint32_t>(uid);
        e.user = user_name(uid);
        if (result.held) e.held_ms = result.held->count();
        e.cut = result.cut;
        e.moved = result.moved;
        e.adopted = result.adopted;
        e.result = history_result_of(result.result);
        e.reason = result.ok() ? std::move(done_reason) : result.error;
        daemon_.record_history(std::move(e));
    };
    const auto switch_message = [](const cutover::command_result& result) {
        return result.service && result.service->last_switch ? result.service->last_switch->message : std::string();
    };
    const auto mode_text = [&](const std::optional<config::switch_mode>& m) {
        if (m) return std::string(config::to_string(*m));
        return before ? std::string(config::to_string(before->mode)) : std::string();
    };
    if (fleet_refusal) {
        spdlog::warn("control: {} {} refused: the fleet's etcd does not answer", to_string(r.cmd), service);
        const auto refused = cutover::command_result::failure(cutover::verdict::refused, *fleet_refusal);
        const auto here = before ? active_text(before->route) : "";
        switch (r.cmd) {
        case command::switch_side:
            record(cutover::history_action::switch_side, std::string(to_string(r.to)), mode_text(r.mode), refused, "");
            break;
        case command::rollback:
            record(cutover::history_action::rollback, "old", mode_text(std::nullopt), refused, "");
            break;
        case command::pause:
            record(cutover::history_action::pause, here, "", refused, "");
            break;
        default:
            record(cutover::history_action::resume, here, "", refused, "");
            break;
        }
        co_return finish(refused);
    }

    switch (r.cmd) {
    case command::status:
        co_return ok_line(to_json(daemon_.status(service)));
    case command::history:
        co_return ok_line({{"history", to_json(daemon_.history(service))}});
    case command::fleet:
        if (!daemon_.fleet())
            co_return error_line({error_code::refused, "no [fleet] in the config: this host is not a member of a fleet"});
    {
        auto listed = co_await daemon_.fleet()->listing(service);
        co_return ok_line(std::move(listed));
    }
    case command::check: {
        std::string error;
        const auto report = co_await controller.check(service, to_side, r.mode, r.force, error);
        if (!report || !before) co_return error_line({error_code::unknown_service, error});
        auto checked = *report;
        // With [fleet] the switch acts on every member: each one's readiness, as etcd shows it.
        if (const auto settings = controller.settings(service); settings && daemon_.fleet()) {
            auto fleet_checks = co_await daemon_.fleet()->readiness(*settings, to_side);
            for (auto& c : fleet_checks) {
                if (c.verdict == cutover::check_verdict::fail) checked.would_proceed = false;
                checked.checks.push_back(std::move(c));
            }
        }
        co_return ok_line(check_json(service, before->route.active, to_side, r.mode.value_or(before->mode), checked));
    }
    case command::tunnels:
        co_return ok_line({{"tunnels", to_json(daemon_.tunnels_status())}});
    case command::switch_side:
        spdlog::info("control: switch {} to {} requested (uid-checked peer){}", service, to_string(r.to),
                     r.force ? " with --force" : "");
    {
        auto result = co_await switch_here_or_fleet(service, to_side, r.mode, r.force, progress);
        record(cutover::history_action::switch_side, std::string(to_string(r.to)), mode_text(r.mode), result,
               switch_message(result));
        co_return finish(result);
    }
    case command::resolve: {
        spdlog::warn("control: resolve {} to {} requested", service, to_string(r.to));
        auto result = co_await controller.resolve(service, to_side);
        if (result.ok() && daemon_.fleet()) {
            // The others were released onto the side this member's switch left (its servers'
            // outcome unknown): the operator's answer goes to every member as a fleet switch to
            // `to`, whose servers' part here finds this host there already.
            progress(fmt::format("{} resolved to {} here; taking the fleet there", service, proxy::to_string(to_side)));
            auto fleet_result = co_await daemon_.fleet()->switch_fleet(service, to_side, progress);
            if (!fleet_result.ok())
                result = cutover::command_result::failure(
                    fleet_result.result, fmt::format("{} resolved to {} on this member, but the fleet did not "
                                                     "follow: {}; run `tunnelctl {} {}` here to try again",
                                                     service, proxy::to_string(to_side), fleet_result.error,
                                                     to_side == proxy::side::old_side ? "rollback" : "switch", service));
        }
        co_return finish(result);
    }
    case command::rollback: {
        spdlog::info("control: rollback {} requested", service);
        // With [fleet] the whole fleet goes back (no co_await inside ?: : g++ 12 miscompiles it).
        cutover::command_result result;
        if (daemon_.fleet())
            result = co_await switch_here_or_fleet(service, proxy::side::old_side, std::nullopt, false, progress);
        else
            result = co_await controller.rollback(service, progress);
        record(cutover::history_action::rollback, "old", mode_text(std::nullopt), result, switch_message(result));
        co_return finish(result);
    }
    case command::split: {
        auto result = co_await controller.split(service, r.percent, r.sticky);
        record(cutover::history_action::split, "split", "", result,
               fmt::format("{}% of new clients to new{}", r.percent, r.sticky ? " (sticky)" : ""));
        co_return finish(result);
    }
    case command::pause: {
        // With [fleet] every member pauses (each as the pause record in etcd says).
        cutover::command_result result;
        if (daemon_.fleet())
            result = co_await daemon_.fleet()->pause_fleet(service,
                                                           r.timeout.value_or(controller.settings(service)->pause_timeout));
        else
            result = co_await controller.pause(service, r.timeout);
        record(cutover::history_action::pause, before ? active_text(before->route) : "", "", result,
               "new clients held");
        co_return finish(result);
    }
    case command::resume: {
        cutover::command_result result;
        if (daemon_.fleet())
            result = co_await daemon_.fleet()->resume_fleet(service);
        else
            result = co_await controller.resume(service);
        record(cutover::history_action::resume, before ? active_text(before->route) : "", "", result,
               "held clients released");
        co_return finish(result);
    }
    case command::reload: {
        const auto errors = daemon_.reload();
        if (errors.empty()) co_return ok_line({{"reloaded", true}});
        std::string message = "reload refused, the running config is kept:";
        for (const auto& e : errors)
            message += "\n" + e;
        co_return error_line({error_code::refused, message});
    }
    }
    co_return error_line(
        {error_code::bad_request, "unknown command"}); // parse_request admits only known ones
}

} // namespace tunneld::daemon
