#include "cutover/replication.hpp"

#include "cutover/replication_detail.hpp"

#include <fstream>
#include <sstream>

namespace tunneld::cutover {
namespace detail {

std::string endpoint_text(const config::endpoint& endpoint)
{
    const bool v6 = endpoint.host.find(':') != std::string::npos;
    return (v6 ? "[" + endpoint.host + "]" : endpoint.host) + ":" + std::to_string(endpoint.port);
}

milliseconds time_left(clock::time_point deadline, milliseconds cap)
{
    const auto left = std::chrono::duration_cast<milliseconds>(deadline - clock::now());
    return std::clamp(left, milliseconds(1), std::max(cap, milliseconds(1)));
}

std::string scrub(std::string text, const std::string& secret)
{
    if (secret.empty()) return text;
    for (auto at = text.find(secret); at != std::string::npos; at = text.find(secret, at + 3))
        text.replace(at, secret.size(), "***");
    return text;
}

std::string since(clock::time_point start)
{
    return std::to_string(std::chrono::duration_cast<milliseconds>(clock::now() - start).count()) + "ms";
}

hook_result run_service_hook(const std::string& command, std::string_view step,
                             const config::service_config& service, const config::endpoint& old_endpoint,
                             const config::endpoint& new_endpoint, clock::time_point deadline,
                             const std::function<void(int)>& observer)
{
    const auto left = std::chrono::duration_cast<milliseconds>(deadline - clock::now());
    auto result = run_hook(command, std::max(left, milliseconds(1)),
                           {{"TUNNELD_SERVICE", service.name},
                            {"TUNNELD_KIND", service.kind == config::service_kind::redis ? "redis" : "postgres"},
                            {"TUNNELD_STEP", std::string(step)},
                            {"TUNNELD_OLD", endpoint_text(old_endpoint)},
                            {"TUNNELD_NEW", endpoint_text(new_endpoint)}},
                           observer);
    if (observer) observer(0);
    return result;
}

step_result lift_fence_command(const config::service_config& service, const config::endpoint& old_endpoint,
                               const config::endpoint& new_endpoint, std::string lifted)
{
    const auto joined = [&](std::string what) { return lifted.empty() ? what : lifted + "; " + what; };
    if (!service.fence_command) return step_result::success(std::move(lifted));
    if (!service.unfence_command)
        return step_result::failure(
            joined("old was fenced by fence_command and no unfence_command is set: lift it by hand"));
    // No hook observer: the journal this unfence undoes may already be gone; a crash during the
    // hook leaves it running to its end in its own process group.
    const auto hook = run_service_hook(*service.unfence_command, "unfence", service, old_endpoint, new_endpoint,
                                       clock::now() + unfence_command_limit);
    if (!hook.ok) return step_result::failure(joined("unfence_command " + describe(hook)));
    return step_result::success(joined("old unfenced: unfence_command " + describe(hook)));
}

void add_fence_hook_checks(const config::service_config& service, std::vector<preflight_check>& checks)
{
    if (!service.fence_command) return;
    checks.push_back({"fence_command", check_verdict::unchecked, "a dry run does not run hooks", {}});
    checks.push_back({"unfence_command", check_verdict::unchecked,
                      service.unfence_command ? "a dry run does not run hooks"
                                              : "not set: a switch undone after fence_command ran leaves old "
                                                "fenced until it is lifted by hand",
                      {}});
}

} // namespace detail

std::optional<config::endpoint> followed_primary(const config::service_config& service, proxy::side fenced)
{
    if (fenced == proxy::side::new_side) return service.rollback_replicaof;
    if (service.fence != config::redis_fence::replicaof) return std::nullopt;
    return service.fence_replicaof;
}

std::string_view to_string(check_verdict v) noexcept
{
    switch (v) {
    case check_verdict::pass:
        return "pass";
    case check_verdict::fail:
        return "fail";
    case check_verdict::unchecked:
        return "unchecked";
    }
    return "fail";
}

std::optional<redis_credentials> read_redis_credentials(const std::filesystem::path& file, std::string& error)
{
    std::ifstream in(file);
    std::string line;
    if (!in || !std::getline(in, line)) {
        error = "cannot read credentials file " + file.string();
        return std::nullopt;
    }
    if (!line.empty() && line.back() == '\r') line.pop_back();
    std::istringstream words(line);
    std::vector<std::string> parts;
    for (std::string word; words >> word;)
        parts.push_back(word);
    if (parts.size() == 1) return redis_credentials{.user = std::nullopt, .password = parts[0]};
    if (parts.size() == 2) return redis_credentials{.user = parts[0], .password = parts[1]};
    // Why no detail: the line holds a password.
    error = "credentials file " + file.string() + ": first line must be \"password\" or \"user password\"";
    return std::nullopt;
}

std::optional<std::vector<std::pair<std::string, std::string>>>
read_postgres_credentials(const std::filesystem::path& file, std::string& error)
{
    std::ifstream in(file);
    if (!in) {
        error = "cannot read credentials file " + file.string();
        return std::nullopt;
    }
    std::vector<std::pair<std::string, std::string>> keywords;
    for (std::string line; std::getline(in, line);) {
        if (!line.empty() && line.front() == '#') continue;
        std::istringstream words(line);
        for (std::string word; words >> word;) {
            const auto equals = word.find('=');
            if (equals == std::string::npos || equals == 0) {
                error = "credentials file " + file.string() + ": expected keyword=value pairs";
                return std::nullopt;
            }
            auto key = word.substr(0, equals);
            if (key == "host" || key == "hostaddr" || key == "port") {
                error = "credentials file " + file.string() + ": " + key +
                        " comes from the config, not from here";
                return std::nullopt;
            }
            keywords.emplace_back(std::move(key), word.substr(equals + 1));
        }
    }
    return keywords;
}

std::unique_ptr<replication> make_replication(const config::service_config& service,
                                              const config::endpoint& old_endpoint,
                                              const config::endpoint& new_endpoint)
{
    switch (service.kind) {
    case config::service_kind::redis:
        return make_redis_replication(service, old_endpoint, new_endpoint);
    case config::service_kind::postgres:
        return make_postgres_replication(service, old_endpoint, new_endpoint);
    case config::service_kind::tcp:
        break;
    }
    return nullptr;
}

} // namespace tunneld::cutover
