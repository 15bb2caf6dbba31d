// tunneld: routes each service's clients to its old or new backend; see DESIGN.md for the contract.

#include "config/config.hpp"
#include "daemon/runtime.hpp"

#include <CLI/CLI.hpp>
#include <csignal>
#include <iostream>
#include <libssh2.h>
#include <spdlog/spdlog.h>

int main(int argc, char** argv)
{
    CLI::App app{"tunneld: moves services from an old network to a new one, one switch at a time"};
    std::string config_path = "/etc/tunneld/tunneld.toml";
    bool check_only = false;
    app.add_option("--config,-c", config_path, "configuration file")->capture_default_str();
    app.add_flag("--check-config", check_only, "validate the configuration and exit (0 valid, 1 invalid)");
    app.set_version_flag("--version", "tunneld " TUNNELD_VERSION);
    CLI11_PARSE(app, argc, argv);

    const auto loaded = tunneld::config::load(config_path);
    if (!loaded) {
        for (const auto& error : loaded.errors)
            std::cerr << error.to_string() << '\n';
        return 1;
    }
    if (check_only) {
        std::cout << config_path << ": ok (" << loaded.value->services.size() << " services, "
                  << loaded.value->tunnels.size() << " tunnels)\n";
        return 0;
    }

    spdlog::set_pattern("%Y-%m-%dT%H:%M:%S.%e %^%l%$ %v");
    spdlog::set_level(spdlog::level::from_str(loaded.value->daemon.log_level));
    // A client that goes away mid-write must give EPIPE, not kill the daemon.
    std::signal(SIGPIPE, SIG_IGN);
    // libssh2 is initialised once, before any thread exists.
    if (libssh2_init(0) != 0) {
        spdlog::critical("libssh2_init failed");
        return 1;
    }
    int code = 1;
    try {
        tunneld::daemon::runtime daemon(loaded.value);
        code = daemon.run();
    } catch (const std::exception& e) {
        spdlog::critical("cannot start: {}", e.what());
        std::cerr << "tunneld: " << e.what() << '\n';
        code = 1;
    }
    libssh2_exit();
    return code;
}
