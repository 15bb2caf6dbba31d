// The `[fleet]` table -> fleet_config. Same error style as parse.cpp: every problem becomes a
// config_error at the value's line and column, none stops the parse, unknown keys are refused.
#include "config/parse_fleet.hpp"

#include <algorithm>
#include <array>
#include <fmt/format.h>
#include <unistd.h>

namespace tunneld::config::detail {

namespace {

constexpr std::string_view url_example = R"(e.g. "http://127.0.0.1:2379" or "https://10.0.0.5:2379")";
constexpr std::array<std::string_view, 8> known_keys{"etcd",     "name",      "member",           "ca_file",
                                                     "cert_file", "key_file", "credentials_file", "ack_timeout"};

/// Letters, digits, '-', '_' (and '.' where `dots`): safe inside an etcd key path segment.
bool valid_segment(std::string_view name, bool dots)
{
    if (name.empty() || name == "." || name == "..") return false;
    return std::all_of(name.begin(), name.end(), [&](char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
               c == '-' || (dots && c == '.');
    });
}

class fleet_reader {
public:
    fleet_reader(const std::filesystem::path& file, std::vector<config_error>& errors,
                 std::vector<named_file>& files)
        : file_(file), errors_(errors), files_(files)
    {
    }

    void error(const toml::node& node, std::string message)
    {
        const auto& begin = node.source().begin;
        errors_.push_back({file_, begin.line == 0 ? 1u : begin.line, begin.line == 0 ? 1u : begin.column,
                           std::move(message)});
    }

    /// The non-empty string under `key`, or nullopt (reported when present but not one).
    std::optional<std::string> string(const toml::table& table, std::string_view key)
    {
        const toml::node* node = table.get(key);
        if (!node) return std::nullopt;
        const auto* text = node->as_string();
        if (!text) {
            error(*node, fmt::format("{} must be a string", key));
            return std::nullopt;
        }
        if (text->get().empty()) {
            error(*node, fmt::format("{} must not be empty", key));
            return std::nullopt;
        }
        return text->get();
    }

    /// A file path under `key`, made relative to the config's directory, recorded for `load`.
    std::optional<std::filesystem::path> file(const toml::table& table, std::string_view key, bool secret)
    {
        auto text = string(table, key);
        if (!text) return std::nullopt;
        std::filesystem::path path(*text);
        if (path.is_relative()) path = file_.parent_path() / path;
        const auto& begin = table.get(key)->source().begin;
        files_.push_back({key, path, begin.line, begin.column, secret});
        return path;
    }

    void read(const toml::table& table, fleet_config& out)
    {
        for (auto&& [key, node] : table) {
            if (std::find(known_keys.begin(), known_keys.end(), key.str()) != known_keys.end()) continue;
            std::string listed;
            for (std::string_view k : known_keys)
                listed += fmt::format("{}{}", listed.empty() ? "" : ", ", k);
            errors_.push_back({file_, key.source().begin.line, key.source().begin.column,
                               fmt::format("unknown key \"{}\" in [fleet]; known keys: {}", key.str(), listed)});
        }
        for (std::string_view required : {"etcd", "name"}) {
            if (!table.contains(required))
                error(table, fmt::format("[fleet] is missing required key \"{}\"", required));
        }
        if (const toml::node* node = table.get("etcd")) read_endpoints(*node, out);
        if (auto v = string(table, "name")) {
            if (valid_segment(*v, false))
                out.name = *v;
            else
                error(*table.get("name"),
                      fmt::format("name \"{}\" may contain only letters, digits, '-' and '_' (it is an etcd "
                                  "key prefix)",
                                  *v));
        }
        if (auto v = string(table, "member")) {
            if (valid_segment(*v, true))
                out.member = *v;
            else
                error(*table.get("member"),
                      fmt::format("member \"{}\" may contain only letters, digits, '-', '_' and '.'", *v));
        } else if (!table.contains("member")) {
            std::array<char, 256> host{};
            const bool named = ::gethostname(host.data(), host.size() - 1) == 0;
            const std::string hostname = named ? host.data() : "";
            if (valid_segment(hostname, true))
                out.member = hostname;
            else
                error(table, fmt::format("[fleet] member defaults to the host name, and \"{}\" is not usable as "
                                         "one; set member = \"NAME\"",
                                         hostname));
        }
        out.ca_file = file(table, "ca_file", false);
        out.cert_file = file(table, "cert_file", false);
        out.key_file = file(table, "key_file", true);
        out.credentials_file = file(table, "credentials_file", true);
        if (out.cert_file.has_value() != out.key_file.has_value()) {
            const char* given = out.cert_file ? "cert_file" : "key_file";
            error(*table.get(given), fmt::format("{} needs {} too: a client certificate is a pair", given,
                                                 out.cert_file ? "key_file" : "cert_file"));
        }
        const bool any_tls = std::any_of(out.etcd.begin(), out.etcd.end(), [](auto& e) { return e.tls; });
        if (!any_tls) {
            for (std::string_view key : {"ca_file", "cert_file", "key_file"}) {
                if (const toml::node* node = table.get(key); node && node->is_string())
                    error(*node, fmt::format("{} is set but no etcd endpoint is https://", key));
            }
        }
        if (const toml::node* node = table.get("ack_timeout")) {
            const auto* text = node->as_string();
            const auto value = text ? parse_duration(text->get()) : std::nullopt;
            if (!value || value->count() == 0)
                error(*node, R"(ack_timeout must be a duration greater than zero, e.g. "500ms" or "2s")");
            else
                out.ack_timeout = *value;
        }
    }

private:
    void read_endpoints(const toml::node& node, fleet_config& out)
    {
        const toml::array* list = node.as_array();
        if (!list || list->empty()) {
            error(node, fmt::format("etcd must be a non-empty list of URLs, {}",
                                    R"(e.g. ["http://127.0.0.1:2379"])"));
            return;
        }
        for (std::size_t i = 0; i < list->size(); ++i) {
            const toml::node& item = *list->get(i);
            const auto* text = item.as_string();
            const auto value = text ? parse_etcd_endpoint(text->get()) : std::nullopt;
            if (!value) {
                error(item, fmt::format("etcd[{}] must be a URL \"http://host:port\" or \"https://host:port\", {}",
                                        i, url_example));
                continue;
            }
            if (std::find(out.etcd.begin(), out.etcd.end(), *value) != out.etcd.end()) {
                error(item, fmt::format("etcd[{}]: {} is listed twice", i, value->to_string()));
                continue;
            }
            out.etcd.push_back(*value);
        }
    }

    const std::filesystem::path& file_;
    std::vector<config_error>& errors_;
    std::vector<named_file>& files_;
};

} // namespace

std::optional<etcd_endpoint> parse_etcd_endpoint(std::string_view text)
{
    etcd_endpoint result;
    if (text.starts_with("https://")) {
        result.tls = true;
        text.remove_prefix(8);
    } else if (text.starts_with("http://")) {
        text.remove_prefix(7);
    } else {
        return std::nullopt;
    }
    if (text.ends_with('/')) text.remove_suffix(1);
    if (text.find('/') != std::string_view::npos) return std::nullopt;
    auto address = parse_endpoint(text);
    if (!address || address->host.empty()) return std::nullopt;
    result.address = std::move(*address);
    return result;
}

void read_fleet(const toml::node& node, const std::filesystem::path& file, config& out,
                std::vector<config_error>& errors, std::vector<named_file>& files)
{
    fleet_reader reader(file, errors, files);
    const toml::table* table = node.as_table();
    if (!table) {
        reader.error(node, "fleet must be a table");
        return;
    }
    fleet_config fleet;
    reader.read(*table, fleet);
    out.fleet = std::move(fleet);
}

} // namespace tunneld::config::detail
