// tunnelctl: operate a running tunneld over its control socket (docs/control-protocol.md).
// Exit codes: 0 done, 1 refused or failed, 2 usage error, 3 tunneld unreachable or silent;
// `health` follows the monitoring-plugin convention (0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN).

#include "config/config.hpp"
#include "control/protocol.hpp"
#include "tools/tunnelctl_client.hpp"
#include "tools/tunnelctl_format.hpp"

#include <CLI/CLI.hpp>
#include <boost/asio/error.hpp>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <optional>
#include <string>

namespace {

using namespace std::chrono_literals;
using tunneld::control::command;
using tunneld::control::request;
namespace proto = tunneld::control;
namespace tools = tunneld::tools;

constexpr int exit_ok = 0;
constexpr int exit_failed = 1;
constexpr int exit_usage = 2;
constexpr int exit_unreachable = 3;

constexpr auto connect_timeout = 5s;
constexpr auto write_timeout = 5s;
// Reads wait this long between two lines. A switch sends progress as it goes; its longest
// silent stretch is one bounded pause or drain step, well under two minutes.
constexpr auto read_idle_timeout = 30s;
constexpr auto change_idle_timeout = 120s;

struct options {
    std::string socket = "/run/tunneld/control.sock";
    std::string service;
    bool json = false;
    std::string to = "new";
    std::string mode;
    bool force = false;
    bool dry_run = false;
    unsigned percent = 0;
    bool sticky = false;
    std::string timeout;
    std::string lag_warning = "1MiB";
    std::string lag_critical = "4MiB";
    unsigned sessions_down_warning = 1;
    unsigned sessions_down_critical = 0;
};

// How a conversation with the daemon ended.
struct outcome {
    std::optional<nlohmann::json> result; ///< set on success
    int exit_code = exit_ok;
    std::string message; ///< what went wrong, without the "tunnelctl: " prefix
};

std::string seconds_text(std::chrono::seconds s)
{
    return std::to_string(s.count()) + "s";
}

// Sends `r` and reads replies until the final line, printing progress lines to stderr.
outcome call(const std::string& socket, const request& r, bool show_progress)
{
    tools::control_client client;
    if (const auto ec = client.connect(socket, connect_timeout)) {
        if (ec == boost::asio::error::timed_out)
            return {std::nullopt, exit_unreachable,
                    "cannot connect to " + socket + ": no answer within " + seconds_text(connect_timeout)};
        return {std::nullopt, exit_unreachable,
                "cannot connect to " + socket + ": " + ec.message() + " (is tunneld running?)"};
    }
    if (const auto ec = client.write(proto::encode(r), write_timeout))
        return {std::nullopt, exit_unreachable, "cannot send the request to " + socket + ": " + ec.message()};

    const bool changes = r.cmd == command::switch_side || r.cmd == command::rollback ||
                         r.cmd == command::pause || r.cmd == command::split || r.cmd == command::resume;
    const auto idle = changes ? change_idle_timeout : read_idle_timeout;
    const std::string unknown_outcome =
        changes ? "; the outcome is unknown, check `tunnelctl status " + r.service.value_or("") + "`" : "";
    for (;;) {
        auto line = client.read_line(idle);
        if (const auto* ec = std::get_if<boost::system::error_code>(&line)) {
            if (*ec == boost::asio::error::timed_out)
                return {std::nullopt, exit_unreachable,
                        "no reply from tunneld within " +
                            seconds_text(std::chrono::duration_cast<std::chrono::seconds>(idle)) +
                            unknown_outcome};
            if (*ec == boost::asio::error::eof)
                return {std::nullopt, exit_unreachable,
                        "tunneld closed the connection before replying" + unknown_outcome};
            return {std::nullopt, exit_unreachable, "reading the reply: " + ec->message() + unknown_outcome};
        }
        const auto reply = proto::parse_reply(std::get<std::string>(line));
        if (const auto* progress = std::get_if<proto::progress>(&reply)) {
            if (show_progress) std::cerr << "tunnelctl: " << progress->message << std::endl;
            continue;
        }
        if (const auto* ok = std::get_if<proto::ok_result>(&reply)) return {ok->result, exit_ok, {}};
        return {std::nullopt, exit_failed, std::get<proto::protocol_error>(reply).message};
    }
}

void print_json(const nlohmann::json& result)
{
    std::cout << result.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
}

const nlohmann::json& field(const nlohmann::json& result, const char* key)
{
    static const nlohmann::json empty = nlohmann::json::array();
    if (!result.is_object()) return empty;
    const auto it = result.find(key);
    return it == result.end() ? empty : *it;
}

int run(const options& opts, const request& r)
{
    auto done = call(opts.socket, r, true);
    if (!done.result) {
        std::cerr << "tunnelctl: " << done.message << "\n";
        return done.exit_code;
    }
    const auto& result = *done.result;
    // A check answers with its report either way; the exit code says whether it would proceed.
    const auto proceeds = [&] {
        const auto* v = result.is_object() && result.contains("would_proceed") ? &result["would_proceed"] : nullptr;
        return v && v->is_boolean() && v->get<bool>();
    };
    if (opts.json) {
        print_json(result);
        return r.cmd == command::check && !proceeds() ? exit_failed : exit_ok;
    }
    switch (r.cmd) {
    case command::check:
        std::cout << tools::format_check(result);
        return proceeds() ? exit_ok : exit_failed;
    case command::history:
        std::cout << tools::format_history(field(result, "history"));
        break;
    case command::status:
        std::cout << tools::format_services(field(result, "services")) << "\n"
                  << tools::format_tunnels(field(result, "tunnels"));
        break;
    case command::tunnels:
        std::cout << tools::format_tunnels(field(result, "tunnels"));
        break;
    case command::fleet:
        std::cout << tools::format_fleet(result, std::chrono::duration_cast<std::chrono::milliseconds>(
                                                     std::chrono::system_clock::now().time_since_epoch())
                                                     .count());
        break;
    case command::reload:
        std::cout << "tunneld reloaded its config\n";
        break;
    default:
        std::cout << tools::format_services(nlohmann::json::array({result}));
        break;
    }
    return exit_ok;
}

int health(const options& opts)
{
    tools::health_thresholds limits;
    // Validated by CLI11 already.
    limits.lag_warning = tunneld::config::parse_size(opts.lag_warning).value_or(limits.lag_warning);
    limits.lag_critical = tunneld::config::parse_size(opts.lag_critical).value_or(limits.lag_critical);
    limits.sessions_down_warning = opts.sessions_down_warning;
    limits.sessions_down_critical = opts.sessions_down_critical;

    const auto done = call(opts.socket, request{.cmd = command::status}, false);
    const auto report =
        done.result ? tools::evaluate_health(*done.result, limits) : tools::unknown_health(done.message);
    std::cout << report.line << "\n";
    return static_cast<int>(report.state);
}

CLI::Validator size_validator()
{
    return CLI::Validator(
        [](std::string& text) {
            return tunneld::config::parse_size(text) ? std::string()
                                                     : "not a size like 64KiB or 1MiB: " + text;
        },
        "SIZE");
}

CLI::Validator duration_validator()
{
    return CLI::Validator(
        [](std::string& text) {
            const auto d = tunneld::config::parse_duration(text);
            return d && d->count() > 0 ? std::string()
                                       : "not a positive duration like 250ms, 5s or 2m: " + text;
        },
        "DUR");
}

} // namespace

int main(int argc, char** argv)
{
    options opts;
    if (const char* env = std::getenv("TUNNELD_SOCKET"); env && *env) opts.socket = env;

    CLI::App app{"tunnelctl: operate a running tunneld over its control socket.\n"
                 "Exit codes: 0 done, 1 refused or failed, 2 usage error, 3 tunneld unreachable."};
    app.add_option("--socket", opts.socket, "control socket (env TUNNELD_SOCKET)")->capture_default_str();
    app.require_subcommand(1);

    request r;
    const auto add_service = [&](CLI::App* sub, bool required) {
        auto* option = sub->add_option("SERVICE", opts.service, "service name from the config");
        if (required) option->required();
    };
    const auto add_json = [&](CLI::App* sub) {
        sub->add_flag("--json", opts.json, "print the result JSON as is");
    };

    auto* status =
        app.add_subcommand("status", "show services and tunnels (OLD/NEW: client connections per side)");
    add_service(status, false);
    add_json(status);
    status->callback([&] { r.cmd = command::status; });

    auto* switch_cmd =
        app.add_subcommand("switch", "switch a service to the new (or old) side; prints progress");
    add_service(switch_cmd, true);
    switch_cmd->add_option("--to", opts.to, "side to switch to")
        ->check(CLI::IsMember({"new", "old"}))
        ->capture_default_str();
    switch_cmd->add_option("--mode", opts.mode, "kill, drain or pause (default: the service's mode)")
        ->check(CLI::IsMember({"kill", "drain", "pause"}));
    switch_cmd->add_flag("--force", opts.force, "switch even when the lag gate refuses");
    switch_cmd->add_flag("--dry-run", opts.dry_run,
                         "run every guardrail and print the plan; change nothing (same as `check`)");
    add_json(switch_cmd);
    switch_cmd->callback([&] { r.cmd = opts.dry_run ? command::check : command::switch_side; });

    auto* check = app.add_subcommand(
        "check", "run every guardrail of a switch and print its plan, changing nothing;\n"
                 "exit 0 only if the switch would proceed");
    add_service(check, true);
    check->add_option("--to", opts.to, "side the switch would go to")
        ->check(CLI::IsMember({"new", "old"}))
        ->capture_default_str();
    check->add_option("--mode", opts.mode, "kill, drain or pause (default: the service's mode)")
        ->check(CLI::IsMember({"kill", "drain", "pause"}));
    check->add_flag("--force", opts.force, "as the switch would be forced");
    add_json(check);
    check->callback([&] { r.cmd = command::check; });

    auto* history = app.add_subcommand("history", "switches, rollbacks, splits, pauses and resumes on this host");
    add_service(history, false);
    add_json(history);
    history->callback([&] { r.cmd = command::history; });

    auto* rollback =
        app.add_subcommand("rollback", "back to old, undoing promotion and fence where configured");
    add_service(rollback, true);
    add_json(rollback);
    rollback->callback([&] { r.cmd = command::rollback; });

    auto* split = app.add_subcommand("split", "send PERCENT % of new clients to new (kind = \"tcp\" only)");
    add_service(split, true);
    split->add_option("PERCENT", opts.percent, "0..100")->required()->check(CLI::Range(0u, 100u));
    split->add_flag("--sticky", opts.sticky, "keep each client address on one side");
    add_json(split);
    split->callback([&] { r.cmd = command::split; });

    auto* pause = app.add_subcommand("pause", "hold new clients of a service");
    add_service(pause, true);
    pause
        ->add_option("--timeout", opts.timeout,
                     "give up and resume after DUR (default: the service's pause_timeout)")
        ->check(duration_validator());
    add_json(pause);
    pause->callback([&] { r.cmd = command::pause; });

    auto* resume = app.add_subcommand("resume", "release the held clients of a service");
    add_service(resume, true);
    add_json(resume);
    resume->callback([&] { r.cmd = command::resume; });

    auto* fleet = app.add_subcommand(
        "fleet", "show the members of this host's fleet ([fleet]): side, epoch, state, held clients,\n"
                 "last heartbeat, and who is behind the fleet's committed epoch");
    add_service(fleet, false);
    add_json(fleet);
    fleet->callback([&] { r.cmd = command::fleet; });

    auto* tunnels = app.add_subcommand("tunnels", "show tunnels and their sessions");
    add_json(tunnels);
    tunnels->callback([&] { r.cmd = command::tunnels; });

    auto* reload = app.add_subcommand("reload", "make tunneld re-read its config (like SIGHUP)");
    add_json(reload);
    reload->callback([&] { r.cmd = command::reload; });

    auto* health_cmd = app.add_subcommand(
        "health", "one monitoring-plugin line with perfdata; exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.\n"
                  "CRITICAL: a tunnel carrying a service's active side has no session up; lag (services\n"
                  "  not on new) >= --lag-critical; a tunnel has >= --sessions-down-critical sessions down.\n"
                  "WARNING: lag >= --lag-warning; a redis/postgres service not on new reports its replica\n"
                  "  link down or its lag unknown; a tunnel has >= --sessions-down-warning sessions down;\n"
                  "  the fleet's etcd does not answer.\n"
                  "UNKNOWN: tunneld cannot be reached or gives no status.");
    health_cmd->add_option("--lag-warning", opts.lag_warning, "lag warning level")
        ->check(size_validator())
        ->capture_default_str();
    health_cmd->add_option("--lag-critical", opts.lag_critical, "lag critical level")
        ->check(size_validator())
        ->capture_default_str();
    health_cmd->add_option("--sessions-down-warning", opts.sessions_down_warning, "per tunnel; 0 disables")
        ->capture_default_str();
    health_cmd->add_option("--sessions-down-critical", opts.sessions_down_critical, "per tunnel; 0 disables")
        ->capture_default_str();

    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        return app.exit(e) == 0 ? exit_ok : exit_usage;
    }

    if (health_cmd->parsed()) return health(opts);

    if (!opts.service.empty()) r.service = opts.service;
    r.to = opts.to == "old" ? proto::side_choice::old_side : proto::side_choice::new_side;
    if (opts.mode == "kill") r.mode = tunneld::config::switch_mode::kill;
    if (opts.mode == "drain") r.mode = tunneld::config::switch_mode::drain;
    if (opts.mode == "pause") r.mode = tunneld::config::switch_mode::pause;
    r.force = opts.force;
    r.percent = opts.percent;
    r.sticky = opts.sticky;
    if (!opts.timeout.empty()) r.timeout = tunneld::config::parse_duration(opts.timeout);
    return run(opts, r);
}
