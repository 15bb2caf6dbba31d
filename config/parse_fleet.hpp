#pragma once
// Internal to tunneld_config: the `[fleet]` table, read apart from parse.cpp's other tables.

#include "config/parse_detail.hpp"

#include <toml++/toml.h>

namespace tunneld::config::detail {

/// Reads the `[fleet]` node found in the file `file` into `out.fleet`, appending every problem to
/// `errors` and every file it names (ca_file, cert_file, key_file, credentials_file) to `files`.
/// A member not written takes the host name.
void read_fleet(const toml::node& node, const std::filesystem::path& file, config& out,
                std::vector<config_error>& errors, std::vector<named_file>& files);

/// Parses "http://host:port" or "https://host:port" (one trailing '/' allowed); nullopt otherwise.
std::optional<etcd_endpoint> parse_etcd_endpoint(std::string_view text);

} // namespace tunneld::config::detail
