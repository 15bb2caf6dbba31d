// Lookups, error formatting, and `load`: reading the file and checking the files it names.
#include "config/parse_detail.hpp"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fmt/format.h>
#include <fstream>
#include <sstream>
#include <sys/stat.h>
#include <unistd.h>

namespace tunneld::config {

namespace {

/// Errors about the files `parse` found named in the config; empty when all are usable.
std::vector<config_error> check_files(const std::filesystem::path& source,
                                      const std::vector<detail::named_file>& files)
{
    std::vector<config_error> errors;
    for (const detail::named_file& file : files) {

        auto fail = [&](std::string message) {
            errors.push_back({source, file.line, file.column, std::move(message)});
        };
        struct stat st {};
        if (::stat(file.path.c_str(), &st) != 0) {
            fail(fmt::format("{} {} cannot be read: {}", file.key, file.path.string(), std::strerror(errno)));
            continue;
        }
        if (!S_ISREG(st.st_mode)) {
            fail(fmt::format("{} {} is not a regular file", file.key, file.path.string()));
            continue;
        }
        if (::access(file.path.c_str(), R_OK) != 0) {
            fail(fmt::format("{} {} cannot be read: {}", file.key, file.path.string(), std::strerror(errno)));
            continue;
        }
        if (file.key != "identity" && !file.secret) continue;
        // ssh refuses such keys too: a private key others can read or replace is not private.
        const unsigned mode = st.st_mode & 07777;
        if (mode & (S_IRGRP | S_IROTH))
            fail(fmt::format("{} {} is readable by group or others (mode {:04o}); chmod 600 it", file.key,
                             file.path.string(), mode));
        else if (mode & (S_IWGRP | S_IWOTH))
            fail(fmt::format("{} {} is writable by group or others (mode {:04o}); chmod 600 it", file.key,
                             file.path.string(), mode));
    }
    return errors;
}

} // namespace

const tunnel_config* config::find_tunnel(std::string_view name) const
{
    const auto it =
        std::find_if(tunnels.begin(), tunnels.end(), [&](const tunnel_config& t) { return t.name == name; });
    return it == tunnels.end() ? nullptr : &*it;
}

std::vector<endpoint> tunnel_config::gateways() const
{
    std::vector<endpoint> out{address};
    out.insert(out.end(), more_gateways.begin(), more_gateways.end());
    return out;
}

const service_config* config::find_service(std::string_view name) const
{
    const auto it = std::find_if(services.begin(), services.end(),
                                 [&](const service_config& s) { return s.name == name; });
    return it == services.end() ? nullptr : &*it;
}

std::string config_error::to_string() const
{
    return fmt::format("{}:{}:{}: {}", file.string(), line, column, message);
}

load_result load(const std::filesystem::path& path, file_checks checks)
{
    std::ifstream in(path, std::ios::binary);
    std::ostringstream text;
    if (in) text << in.rdbuf();
    if (!in || in.bad()) {
        const int saved = errno;
        load_result failed;
        failed.errors.push_back(
            {path, 0, 0, fmt::format("cannot read config file: {}", std::strerror(saved))});
        return failed;
    }
    detail::parse_output parsed = detail::parse_with_files(text.str(), path);
    if (checks == file_checks::off) return std::move(parsed.result);

    std::vector<config_error> file_errors = check_files(path, parsed.files);
    if (file_errors.empty()) return std::move(parsed.result);
    load_result failed;
    failed.errors = std::move(parsed.result.errors);
    failed.errors.insert(failed.errors.end(), file_errors.begin(), file_errors.end());
    std::stable_sort(failed.errors.begin(), failed.errors.end(),
                     [](const config_error& a, const config_error& b) {
                         return std::tie(a.line, a.column) < std::tie(b.line, b.column);
                     });
    return failed;
}

} // namespace tunneld::config
