#pragma once
// The parsed, validated, immutable tunneld configuration. Nothing here touches the network.

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace tunneld::config {

using duration = std::chrono::milliseconds;

/// "host:port" as written; `host` is an IP literal or a name, resolved by whoever connects.
struct endpoint {
    std::string host;
    std::uint16_t port = 0;

    std::string to_string() const;
    friend bool operator==(const endpoint&, const endpoint&) = default;
};

/// A backend is reached directly, or through the tunnel named by `via`.
struct backend {
    endpoint address;
    std::optional<std::string> via;

    friend bool operator==(const backend&, const backend&) = default;
};

enum class service_kind { tcp, redis, postgres };
enum class switch_mode { kill, drain, pause };
/// How a redis switch stops the old primary from acknowledging writes.
enum class redis_fence { replicaof, min_replicas, none };

std::string_view to_string(service_kind) noexcept;
std::string_view to_string(switch_mode) noexcept;
std::string_view to_string(redis_fence) noexcept;

struct daemon_config {
    std::filesystem::path control_socket = "/run/tunneld/control.sock";
    std::filesystem::path state_file = "/var/lib/tunneld/state.json";
    std::optional<endpoint> health_listen;    ///< unset: no HTTP endpoint
    std::string log_level = "info";           ///< trace|debug|info|warn|error
    std::optional<std::string> control_group; ///< members may operate the control socket
    duration shutdown_timeout = std::chrono::seconds(30);
    unsigned threads = 0; ///< 0: one event loop per core

    friend bool operator==(const daemon_config&, const daemon_config&) = default;
};

struct tunnel_config {
    std::string name;
    endpoint address;                       ///< the first (or only) gateway
    std::vector<endpoint> more_gateways;    ///< `address = [...]`: every gateway after the first
    std::string user;
    std::filesystem::path identity; ///< private key file, or the literal "agent" for ssh-agent
    std::filesystem::path known_hosts;
    unsigned sessions = 2; ///< per healthy gateway
    duration keepalive = std::chrono::seconds(5);
    unsigned keepalive_max_missed = 3;
    duration connect_timeout = std::chrono::seconds(10); ///< TCP connect + handshake + auth
    duration reconnect_max = std::chrono::seconds(30);   ///< cap of the jittered backoff
    /// Largest receive window a channel grows to (gateway -> client); a channel starts at
    /// min(this, 2 MiB) and grows only while its client drains what arrives. 12 MiB: 1 Gbit/s at
    /// 100 ms, and below OpenSSH's 16 MiB per-channel input cap (CHAN_INPUT_MAX), at which the
    /// gateway's sshd spends a whole core and the 40 ms path collapses (docs/benchmarks.md).
    std::uint64_t channel_window = 12 * 1024 * 1024;

    bool uses_agent() const { return identity == "agent"; }
    /// Every gateway, `address` first.
    std::vector<endpoint> gateways() const;
    friend bool operator==(const tunnel_config&, const tunnel_config&) = default;
};

struct service_config {
    std::string name;
    service_kind kind = service_kind::tcp;
    endpoint listen;
    backend old_backend;
    backend new_backend;
    switch_mode mode = switch_mode::drain; ///< default mode of `switch`; pause for redis/postgres
    duration connect_timeout = std::chrono::seconds(5);
    duration drain_timeout = std::chrono::seconds(30);
    duration pause_timeout = std::chrono::seconds(5);
    unsigned max_clients = 1024;
    std::size_t buffer_size = 64 * 1024; ///< per direction, per client
    /// kind = "tcp" only: the split (0..100 % of new clients to new) used when the state file
    /// has no entry for this service yet; unset means all clients go to old.
    std::optional<unsigned> split_percent;
    bool split_sticky = false;

    // Lag gate and probes (redis, postgres).
    std::optional<std::uint64_t> max_lag;    ///< bytes; unset: only link/unknown gate
    std::optional<duration> max_lag_seconds; ///< replay delay (postgres)
    duration probe_interval = std::chrono::seconds(1);
    duration probe_timeout = std::chrono::seconds(2);
    /// redis: a file holding the AUTH password ("user password" or "password");
    /// postgres: a file of libpq conninfo keywords (user=, password=, dbname=).
    std::optional<std::filesystem::path> credentials_file;

    // Promotion and fencing.
    redis_fence fence = redis_fence::replicaof;
    /// Address of the new primary as the old primary can reach it (for fence = "replicaof").
    std::optional<endpoint> fence_replicaof;
    /// Address of the old primary as the new one can reach it: on rollback new becomes its replica
    /// (a warm copy for the next switch). Unset: new is fenced with min-replicas-to-write instead.
    std::optional<endpoint> rollback_replicaof;
    std::optional<std::string> promote_command; ///< run with /bin/sh -c instead of the built-in promotion
    /// Run with /bin/sh -c on old before the promotion (after redis's own fence): what it does is
    /// up to the operator (postgres has no built-in fence).
    std::optional<std::string> fence_command;
    /// Run with /bin/sh -c when a switch is undone after fence_command ran (a failed promotion, a
    /// budget spent, a crash recovered backwards): lifts what fence_command did.
    std::optional<std::string> unfence_command;

    friend bool operator==(const service_config&, const service_config&) = default;
};

/// One etcd client URL of `[fleet] etcd`: "http://host:port" or "https://host:port".
struct etcd_endpoint {
    bool tls = false;
    endpoint address;

    std::string to_string() const; ///< the URL again
    friend bool operator==(const etcd_endpoint&, const etcd_endpoint&) = default;
};

/// `[fleet]`: the member coordinates its services' switches with the other members through etcd.
struct fleet_config {
    std::vector<etcd_endpoint> etcd; ///< tried in turn; never empty
    std::string name;                ///< the fleet's key prefix: /tunneld/<name>/
    std::string member;              ///< this member's name; the host name when not written
    std::optional<std::filesystem::path> ca_file;   ///< verifies https:// endpoints (else the system's CAs)
    std::optional<std::filesystem::path> cert_file; ///< client certificate; set with key_file
    std::optional<std::filesystem::path> key_file;
    /// "user password" on its first line; read at each authentication, never kept in the config.
    std::optional<std::filesystem::path> credentials_file;
    duration ack_timeout = std::chrono::seconds(2);

    friend bool operator==(const fleet_config&, const fleet_config&) = default;
};

struct config {
    std::filesystem::path source; ///< the file it was read from
    daemon_config daemon;
    std::vector<tunnel_config> tunnels;   ///< sorted by name
    std::vector<service_config> services; ///< sorted by name
    std::optional<fleet_config> fleet;    ///< unset: a single host, no etcd

    const tunnel_config* find_tunnel(std::string_view name) const;
    const service_config* find_service(std::string_view name) const;
};

/// One problem in a config file, printed as `PATH:LINE:COL: message`.
struct config_error {
    std::filesystem::path file;
    std::uint32_t line = 0;   ///< 1-based; 0 when the file could not be read at all
    std::uint32_t column = 0; ///< 1-based
    std::string message;

    std::string to_string() const;
};

/// Either a frozen config or every error found (never both, never neither).
struct load_result {
    std::shared_ptr<const config> value;
    std::vector<config_error> errors;

    explicit operator bool() const { return value != nullptr; }
};

/// Whether `load` looks at the files a config names (identity keys, known_hosts).
enum class file_checks { on, off };

/// Reads `path`, then `parse`s it; with file_checks::on also requires every `identity` key file
/// (unless "agent") to be a regular file not readable or writable by group or others, and every
/// `known_hosts` file to be readable. Errors point at the key's value in the file.
load_result load(const std::filesystem::path& path, file_checks checks = file_checks::on);

/// Parses and validates `text` as if read from `path`; never touches the filesystem. Relative
/// paths in the text (state_file, control_socket, identity, known_hosts, credentials_file) are
/// made relative to the directory of `path`.
load_result parse(std::string_view text, const std::filesystem::path& path);

/// Parses "250ms", "5s", "2m", "1h"; nullopt on anything else.
std::optional<duration> parse_duration(std::string_view text);
/// Parses "0B", "512B", "64KiB", "1MiB", "2GiB" (also KB/MB/GB as powers of 1000); nullopt otherwise.
std::optional<std::uint64_t> parse_size(std::string_view text);
/// Parses "host:port" or "[v6]:port"; nullopt on a missing or out-of-range port.
std::optional<endpoint> parse_endpoint(std::string_view text);

} // namespace tunneld::config
