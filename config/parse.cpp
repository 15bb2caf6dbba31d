// TOML text -> validated config. Every problem becomes a config_error; none stops the parse.
#include "config/parse_detail.hpp"
#include "config/parse_fleet.hpp"

#include <algorithm>
#include <fmt/format.h>
#include <map>
#include <toml++/toml.h>

namespace tunneld::config {

namespace {

constexpr std::string_view top_level = "the top level";
constexpr std::string_view duration_example = R"(e.g. "250ms", "5s", "2m" or "1h")";
constexpr std::string_view size_example = R"(e.g. "0B", "64KiB", "1MiB" or "2GiB")";
constexpr std::string_view endpoint_example = R"(e.g. "127.0.0.1:6379" or "[::1]:6379")";
constexpr std::string_view gateway_list_example = R"(e.g. ["203.0.113.10:22", "203.0.113.11:22"])";

std::string_view type_name(toml::node_type type)
{
    switch (type) {
    case toml::node_type::table:
        return "a table";
    case toml::node_type::array:
        return "an array";
    case toml::node_type::string:
        return "a string";
    case toml::node_type::integer:
        return "an integer";
    case toml::node_type::floating_point:
        return "a float";
    case toml::node_type::boolean:
        return "a boolean";
    case toml::node_type::date:
        return "a date";
    case toml::node_type::time:
        return "a time";
    case toml::node_type::date_time:
        return "a date-time";
    case toml::node_type::none:
        break;
    }
    return "nothing";
}

std::size_t edit_distance(std::string_view a, std::string_view b)
{
    std::vector<std::size_t> row(b.size() + 1);
    for (std::size_t j = 0; j <= b.size(); ++j)
        row[j] = j;
    for (std::size_t i = 1; i <= a.size(); ++i) {
        std::size_t diagonal = row[0];
        row[0] = i;
        for (std::size_t j = 1; j <= b.size(); ++j) {
            const std::size_t above = row[j];
            row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] == b[j - 1] ? 0 : 1)});
            diagonal = above;
        }
    }
    return row[b.size()];
}

bool valid_name(std::string_view name)
{
    if (name.empty()) return false;
    return std::all_of(name.begin(), name.end(), [](char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
               c == '-';
    });
}

struct position {
    std::uint32_t line = 1;
    std::uint32_t column = 1;

    friend auto operator<=>(const position&, const position&) = default;
};

position position_of(const toml::source_region& region)
{
    // A node without a source region (such as an empty document's root) points at the file's start.
    if (region.begin.line == 0) return {};
    return {region.begin.line, region.begin.column};
}

class parser;

/// Reads the keys of one table, remembering which it knows so the rest are reported as unknown.
class table_reader {
public:
    table_reader(parser& owner, const toml::table& table, std::string where)
        : owner_(owner), table_(table), where_(std::move(where))
    {
    }

    /// The node under `key`, or null; marks `key` as known.
    const toml::node* find(std::string_view key)
    {
        known_.push_back(key);
        return table_.get(key);
    }

    /// Reports a missing `key` at the table; returns whether it is present.
    bool require(std::string_view key);

    std::optional<std::string> string(std::string_view key);
    std::optional<std::filesystem::path> path(std::string_view key);
    std::optional<bool> boolean(std::string_view key);
    std::optional<std::int64_t> integer(std::string_view key, std::int64_t min, std::int64_t max);
    std::optional<duration> duration_value(std::string_view key, bool positive);
    std::optional<std::uint64_t> size(std::string_view key, bool positive);
    std::optional<endpoint> endpoint_value(std::string_view key);
    /// A string that must be one of `choices`.
    std::optional<std::string> choice(std::string_view key, std::initializer_list<std::string_view> choices);

    /// Reports every key not asked for through `find`.
    void report_unknown_keys();

    const toml::table& table() const { return table_; }
    const std::string& where() const { return where_; }

private:
    /// The string under `key`, reporting a non-string; `what` describes the expected text.
    const toml::value<std::string>* string_node(std::string_view key, std::string_view what);

    parser& owner_;
    const toml::table& table_;
    std::string where_;
    std::vector<std::string_view> known_;
};

class parser {
public:
    explicit parser(std::filesystem::path file) : file_(std::move(file)) {}

    void error(const toml::source_region& region, std::string message)
    {
        const position at = position_of(region);
        errors_.push_back({file_, at.line, at.column, std::move(message)});
    }

    detail::parse_output run(std::string_view text)
    {
        detail::parse_output out;
        toml::table root;
        try {
            root = toml::parse(text, std::string_view(file_.native()));
        } catch (const toml::parse_error& e) {
            const position at = position_of(e.source());
            out.result.errors.push_back({file_, at.line, at.column, std::string(e.description())});
            return out;
        }

        auto result = std::make_shared<config>();
        result->source = file_;
        table_reader top(*this, root, std::string(top_level));
        if (const toml::node* node = top.find("daemon")) {
            if (const toml::table* table = as_table(*node, "daemon")) read_daemon(*table, result->daemon);
        }
        if (const toml::node* node = top.find("tunnels")) {
            if (const toml::table* table = as_table(*node, "tunnels"))
                read_tunnels(*table, *result, out.files);
        }
        if (const toml::node* node = top.find("services")) {
            if (const toml::table* table = as_table(*node, "services")) read_services(*table, *result);
        }
        if (const toml::node* node = top.find("fleet")) detail::read_fleet(*node, file_, *result, errors_, out.files);
        top.report_unknown_keys();
        check_listen_addresses();

        std::stable_sort(errors_.begin(), errors_.end(), [](const config_error& a, const config_error& b) {
            return std::tie(a.line, a.column) < std::tie(b.line, b.column);
        });
        if (errors_.empty())
            out.result.value = std::move(result);
        else
            out.result.errors = std::move(errors_);
        return out;
    }

    /// `path` made relative to the config file's directory when written relative.
    std::filesystem::path resolve(const std::filesystem::path& path) const
    {
        if (path.is_absolute()) return path;
        return file_.parent_path() / path;
    }

private:
    const toml::table* as_table(const toml::node& node, std::string_view what)
    {
        if (const toml::table* table = node.as_table()) return table;
        error(node.source(), fmt::format("{} must be a table, not {}", what, type_name(node.type())));
        return nullptr;
    }

    void read_daemon(const toml::table& table, daemon_config& out)
    {
        table_reader r(*this, table, "[daemon]");
        if (auto v = r.path("control_socket")) out.control_socket = resolve(*v);
        if (auto v = r.path("state_file")) out.state_file = resolve(*v);
        if (auto v = r.endpoint_value("health_listen")) {
            out.health_listen = *v;
            listens_.push_back({"[daemon] health_listen", *v, table.get("health_listen")});
        }
        if (auto v = r.choice("log_level", {"trace", "debug", "info", "warn", "error"})) out.log_level = *v;
        if (auto v = r.string("control_group")) out.control_group = *v;
        if (auto v = r.duration_value("shutdown_timeout", false)) out.shutdown_timeout = *v;
        if (auto v = r.integer("threads", 0, 1024)) out.threads = static_cast<unsigned>(*v);
        r.report_unknown_keys();
    }

    void read_tunnels(const toml::table& tunnels, config& out, std::vector<detail::named_file>& files)
    {
        for (auto&& [key, node] : tunnels) {
            const std::string name(key.str());
            if (!valid_name(name)) {
                error(key.source(),
                      fmt::format("tunnel name \"{}\" may contain only letters, digits, '-' and '_'", name));
                continue;
            }
            const toml::table* table = as_table(node, fmt::format("tunnels.{}", name));
            if (!table) continue;
            table_reader r(*this, *table, fmt::format("[tunnels.{}]", name));
            tunnel_config tunnel;
            tunnel.name = name;
            for (std::string_view required : {"address", "user", "identity", "known_hosts"})
                r.require(required);
            read_gateways(r, tunnel);
            if (auto v = r.string("user")) tunnel.user = *v;
            if (auto v = r.path("identity")) {
                tunnel.identity = *v == "agent" ? *v : resolve(*v);
                if (!tunnel.uses_agent()) {
                    const position at = position_of(table->get("identity")->source());
                    files.push_back({"identity", tunnel.identity, at.line, at.column});
                }
            }
            if (auto v = r.path("known_hosts")) {
                tunnel.known_hosts = resolve(*v);
                const position at = position_of(table->get("known_hosts")->source());
                files.push_back({"known_hosts", tunnel.known_hosts, at.line, at.column});
            }
            if (auto v = r.integer("sessions", 1, 64)) tunnel.sessions = static_cast<unsigned>(*v);
            if (auto v = r.duration_value("keepalive", true)) tunnel.keepalive = *v;
            if (auto v = r.integer("keepalive_max_missed", 1, 1000))
                tunnel.keepalive_max_missed = static_cast<unsigned>(*v);
            if (auto v = r.duration_value("connect_timeout", true)) tunnel.connect_timeout = *v;
            if (auto v = r.duration_value("reconnect_max", true)) tunnel.reconnect_max = *v;
            if (auto v = r.size("channel_window", true)) {
                // An SSH window is a 32-bit count; below 64 KiB a channel moves a packet at a time.
                constexpr std::uint64_t min_window = 64 * 1024, max_window = 1024 * 1024 * 1024;
                if (*v < min_window || *v > max_window)
                    error(table->get("channel_window")->source(),
                          fmt::format("channel_window must be between \"64KiB\" and \"1GiB\", not {} bytes", *v));
                else
                    tunnel.channel_window = *v;
            }
            r.report_unknown_keys();
            out.tunnels.push_back(std::move(tunnel));
        }
        // toml::table iterates in key order already; sorting states the contract, not the accident.
        std::sort(out.tunnels.begin(), out.tunnels.end(),
                  [](const tunnel_config& a, const tunnel_config& b) { return a.name < b.name; });
    }

    /// `address = "host:port"` or `address = ["host:port", ...]`: one gateway or several.
    void read_gateways(table_reader& r, tunnel_config& tunnel)
    {
        const toml::node* node = r.find("address");
        if (!node) return;
        const toml::array* list = node->as_array();
        if (!list && !node->as_string()) {
            error(node->source(), fmt::format("address must be a \"host:port\" string or a list of them, {}, "
                                              "not {}",
                                              gateway_list_example, type_name(node->type())));
            return;
        }
        if (!list) {
            if (auto v = r.endpoint_value("address")) tunnel.address = *v;
            return;
        }
        if (list->empty()) {
            error(node->source(), fmt::format("address = [] lists no gateway; expected \"host:port\" or a list "
                                              "of them, {}",
                                              gateway_list_example));
            return;
        }
        std::vector<endpoint> gateways;
        for (std::size_t i = 0; i < list->size(); ++i) {
            const toml::node& item = *list->get(i);
            const auto* text = item.as_string();
            if (!text) {
                error(item.source(), fmt::format("address[{}] must be a \"host:port\" string, not {}", i,
                                                 type_name(item.type())));
                continue;
            }
            const auto value = parse_endpoint(text->get());
            if (!value) {
                error(item.source(), fmt::format("address[{}]: invalid address \"{}\"; expected \"host:port\" "
                                                 "with a port in 1..65535, {}",
                                                 i, text->get(), endpoint_example));
                continue;
            }
            if (std::find(gateways.begin(), gateways.end(), *value) != gateways.end()) {
                error(item.source(), fmt::format("address[{}]: gateway {} is listed twice", i, text->get()));
                continue;
            }
            gateways.push_back(*value);
        }
        if (gateways.empty()) return;
        tunnel.address = gateways.front();
        tunnel.more_gateways.assign(gateways.begin() + 1, gateways.end());
    }

    void read_services(const toml::table& services, config& out)
    {
        for (auto&& [key, node] : services) {
            const std::string name(key.str());
            if (!valid_name(name)) {
                error(key.source(),
                      fmt::format("service name \"{}\" may contain only letters, digits, '-' and '_'", name));
                continue;
            }
            const toml::table* table = as_table(node, fmt::format("services.{}", name));
            if (!table) continue;
            read_service(name, *table, out);
        }
        std::sort(out.services.begin(), out.services.end(),
                  [](const service_config& a, const service_config& b) { return a.name < b.name; });
    }

    void read_service(const std::string& name, const toml::table& table, config& out)
    {
        table_reader r(*this, table, fmt::format("[services.{}]", name));
        service_config service;
        service.name = name;
        for (std::string_view required : {"listen", "old", "new"})
            r.require(required);
        if (auto v = r.choice("kind", {"tcp", "redis", "postgres"}))
            service.kind = *v == "redis"      ? service_kind::redis
                           : *v == "postgres" ? service_kind::postgres
                                              : service_kind::tcp;
        service.mode = service.kind == service_kind::tcp ? switch_mode::drain : switch_mode::pause;
        if (auto v = r.endpoint_value("listen")) {
            service.listen = *v;
            listens_.push_back({fmt::format("service \"{}\"", name), *v, table.get("listen")});
        }
        if (const toml::node* node = r.find("old"))
            service.old_backend = read_backend(name, "old", *node, out);
        if (const toml::node* node = r.find("new"))
            service.new_backend = read_backend(name, "new", *node, out);
        if (auto v = r.choice("mode", {"kill", "drain", "pause"}))
            service.mode = *v == "kill"    ? switch_mode::kill
                           : *v == "drain" ? switch_mode::drain
                                           : switch_mode::pause;
        if (auto v = r.duration_value("connect_timeout", true)) service.connect_timeout = *v;
        if (auto v = r.duration_value("drain_timeout", false)) service.drain_timeout = *v;
        if (auto v = r.duration_value("pause_timeout", false)) service.pause_timeout = *v;
        if (auto v = r.integer("max_clients", 1, 1'000'000)) service.max_clients = static_cast<unsigned>(*v);
        if (auto v = r.size("buffer_size", true)) service.buffer_size = static_cast<std::size_t>(*v);
        if (auto v = r.integer("split_percent", 0, 100)) {
            if (service.kind != service_kind::tcp)
                error(table.get("split_percent")->source(),
                      fmt::format(
                          "split_percent applies only to kind = \"tcp\" services; service \"{}\" is kind "
                          "= \"{}\"",
                          name, to_string(service.kind)));
            else
                service.split_percent = static_cast<unsigned>(*v);
        }
        if (auto v = r.boolean("split_sticky")) service.split_sticky = *v;
        if (auto v = r.size("max_lag", false)) service.max_lag = *v;
        if (auto v = r.duration_value("max_lag_seconds", false)) service.max_lag_seconds = *v;
        if (auto v = r.duration_value("probe_interval", true)) service.probe_interval = *v;
        if (auto v = r.duration_value("probe_timeout", true)) service.probe_timeout = *v;
        if (auto v = r.path("credentials_file")) service.credentials_file = resolve(*v);
        if (auto v = r.choice("fence", {"replicaof", "min-replicas", "none"}))
            service.fence = *v == "replicaof"      ? redis_fence::replicaof
                            : *v == "min-replicas" ? redis_fence::min_replicas
                                                   : redis_fence::none;
        if (auto v = r.endpoint_value("fence_replicaof")) service.fence_replicaof = *v;
        if (auto v = r.endpoint_value("rollback_replicaof")) service.rollback_replicaof = *v;
        if (auto v = r.string("promote_command")) service.promote_command = *v;
        if (auto v = r.string("fence_command")) service.fence_command = *v;
        if (auto v = r.string("unfence_command")) {
            if (!service.fence_command)
                error(table.get("unfence_command")->source(),
                      fmt::format("unfence_command lifts what fence_command did, and service \"{}\" has no "
                                  "fence_command; set both or neither",
                                  name));
            else
                service.unfence_command = *v;
        }
        r.report_unknown_keys();
        out.services.push_back(std::move(service));
    }

    backend read_backend(const std::string& service, std::string_view side, const toml::node& node,
                         const config& out)
    {
        backend result;
        if (const auto* text = node.as_string()) {
            if (auto v = parse_endpoint(text->get()))
                result.address = *v;
            else
                error(node.source(), fmt::format("{}: invalid address \"{}\"; expected \"host:port\", {}",
                                                 side, text->get(), endpoint_example));
            return result;
        }
        const toml::table* table = node.as_table();
        if (!table) {
            error(
                node.source(),
                fmt::format("{} must be a string \"host:port\" or a table {{ address = \"host:port\", via = "
                            "\"TUNNEL\" }}, not {}",
                            side, type_name(node.type())));
            return result;
        }
        table_reader r(*this, *table, fmt::format("services.{}.{}", service, side));
        r.require("address");
        if (auto v = r.endpoint_value("address")) result.address = *v;
        if (auto v = r.string("via")) {
            result.via = *v;
            if (!out.find_tunnel(*v)) {
                std::string known;
                for (const tunnel_config& tunnel : out.tunnels)
                    known += (known.empty() ? "" : ", ") + tunnel.name;
                error(table->get("via")->source(),
                      fmt::format("via = \"{}\" names no tunnel; {}", *v,
                                  known.empty() ? std::string("no [tunnels.NAME] table is defined")
                                                : "defined tunnels: " + known));
            }
        }
        r.report_unknown_keys();
        return result;
    }

    /// Reports each listen address already used earlier in the file.
    void check_listen_addresses()
    {
        std::sort(listens_.begin(), listens_.end(), [](const listen_use& a, const listen_use& b) {
            return position_of(a.node->source()) < position_of(b.node->source());
        });
        for (std::size_t i = 0; i < listens_.size(); ++i) {
            for (std::size_t j = 0; j < i; ++j) {
                if (listens_[j].address != listens_[i].address) continue;
                error(listens_[i].node->source(),
                      fmt::format("listen address {} is already used by {} (line {})",
                                  listens_[i].address.to_string(), listens_[j].owner,
                                  position_of(listens_[j].node->source()).line));
                break;
            }
        }
    }

    struct listen_use {
        std::string owner; ///< who listens, as the message names it
        endpoint address;
        const toml::node* node;
    };

    std::filesystem::path file_;
    std::vector<config_error> errors_;
    std::vector<listen_use> listens_;
};

bool table_reader::require(std::string_view key)
{
    if (table_.contains(key)) return true;
    owner_.error(table_.source(), fmt::format("{} is missing required key \"{}\"", where_, key));
    return false;
}

const toml::value<std::string>* table_reader::string_node(std::string_view key, std::string_view what)
{
    const toml::node* node = find(key);
    if (!node) return nullptr;
    if (const auto* text = node->as_string()) return text;
    owner_.error(node->source(), fmt::format("{} must be {}, not {}", key, what, type_name(node->type())));
    return nullptr;
}

std::optional<std::string> table_reader::string(std::string_view key)
{
    const auto* text = string_node(key, "a string");
    if (!text) return std::nullopt;
    if (text->get().empty()) {
        owner_.error(text->source(), fmt::format("{} must not be empty", key));
        return std::nullopt;
    }
    return text->get();
}

std::optional<std::filesystem::path> table_reader::path(std::string_view key)
{
    auto text = string(key);
    if (!text) return std::nullopt;
    return std::filesystem::path(*text);
}

std::optional<bool> table_reader::boolean(std::string_view key)
{
    const toml::node* node = find(key);
    if (!node) return std::nullopt;
    if (const auto* value = node->as_boolean()) return value->get();
    owner_.error(node->source(),
                 fmt::format("{} must be true or false, not {}", key, type_name(node->type())));
    return std::nullopt;
}

std::optional<std::int64_t> table_reader::integer(std::string_view key, std::int64_t min, std::int64_t max)
{
    const toml::node* node = find(key);
    if (!node) return std::nullopt;
    const auto* value = node->as_integer();
    if (!value) {
        owner_.error(node->source(),
                     fmt::format("{} must be an integer, not {}", key, type_name(node->type())));
        return std::nullopt;
    }
    if (value->get() < min || value->get() > max) {
        owner_.error(node->source(),
                     fmt::format("{} = {} is out of range; expected {}..{}", key, value->get(), min, max));
        return std::nullopt;
    }
    return value->get();
}

std::optional<duration> table_reader::duration_value(std::string_view key, bool positive)
{
    const auto* text = string_node(key, fmt::format("a duration string, {}", duration_example));
    if (!text) return std::nullopt;
    const auto value = parse_duration(text->get());
    if (!value) {
        owner_.error(text->source(),
                     fmt::format("{}: invalid duration \"{}\"; expected an integer and a unit "
                                 "(ms, s, m, h), {}",
                                 key, text->get(), duration_example));
        return std::nullopt;
    }
    if (positive && value->count() == 0) {
        owner_.error(text->source(), fmt::format("{} must be greater than zero, {}", key, duration_example));
        return std::nullopt;
    }
    return value;
}

std::optional<std::uint64_t> table_reader::size(std::string_view key, bool positive)
{
    const auto* text = string_node(key, fmt::format("a size string, {}", size_example));
    if (!text) return std::nullopt;
    const auto value = parse_size(text->get());
    if (!value) {
        owner_.error(text->source(), fmt::format("{}: invalid size \"{}\"; expected an integer and a unit "
                                                 "(B, KiB, MiB, GiB, TiB, KB, MB, GB, TB), {}",
                                                 key, text->get(), size_example));
        return std::nullopt;
    }
    if (positive && *value == 0) {
        owner_.error(text->source(), fmt::format("{} must be greater than zero, {}", key, size_example));
        return std::nullopt;
    }
    return value;
}

std::optional<endpoint> table_reader::endpoint_value(std::string_view key)
{
    const auto* text = string_node(key, fmt::format("a \"host:port\" string, {}", endpoint_example));
    if (!text) return std::nullopt;
    auto value = parse_endpoint(text->get());
    if (!value)
        owner_.error(text->source(),
                     fmt::format("{}: invalid address \"{}\"; expected \"host:port\" with a port "
                                 "in 1..65535, {}",
                                 key, text->get(), endpoint_example));
    return value;
}

std::optional<std::string> table_reader::choice(std::string_view key,
                                                std::initializer_list<std::string_view> choices)
{
    const auto* text = string_node(key, "a string");
    if (!text) return std::nullopt;
    if (std::find(choices.begin(), choices.end(), text->get()) != choices.end()) return text->get();
    std::string listed;
    for (std::string_view c : choices)
        listed += fmt::format("{}\"{}\"", listed.empty() ? "" : ", ", c);
    owner_.error(text->source(), fmt::format("{} = \"{}\" is not one of {}", key, text->get(), listed));
    return std::nullopt;
}

void table_reader::report_unknown_keys()
{
    for (auto&& [key, node] : table_) {
        if (std::find(known_.begin(), known_.end(), key.str()) != known_.end()) continue;
        std::string message =
            fmt::format("unknown key \"{}\" {}{}", key.str(), where_ == top_level ? "at " : "in ", where_);
        std::string_view nearest;
        std::size_t best = 3; // more than two edits away is not a typo
        for (std::string_view candidate : known_) {
            const std::size_t d = edit_distance(key.str(), candidate);
            if (d < best) {
                best = d;
                nearest = candidate;
            }
        }
        if (!nearest.empty()) message += fmt::format("; did you mean \"{}\"?", nearest);
        owner_.error(key.source(), std::move(message));
    }
}

} // namespace

namespace detail {

parse_output parse_with_files(std::string_view text, const std::filesystem::path& path)
{
    return parser(path).run(text);
}

} // namespace detail

load_result parse(std::string_view text, const std::filesystem::path& path)
{
    return detail::parse_with_files(text, path).result;
}

} // namespace tunneld::config
