#include "config/config.hpp"

#include <fstream>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sstream>

namespace tunneld::config {
namespace {

using namespace std::chrono_literals;
using ::testing::ElementsAre;

// Copied verbatim from the contract in DESIGN.md.
constexpr std::string_view documented_example = R"([daemon]
control_socket = "/run/tunneld/control.sock"
state_file     = "/var/lib/tunneld/state.json"
health_listen  = "127.0.0.1:9740"
log_level      = "info"

[tunnels.vpc]
address     = "203.0.113.10:22"
user        = "tunnel"
identity    = "/etc/tunneld/id_ed25519"
known_hosts = "/etc/tunneld/known_hosts"
sessions    = 2
keepalive   = "5s"
keepalive_max_missed = 3

[services.redis]
kind    = "redis"
listen  = "127.0.0.1:6379"
old     = "10.0.1.20:6379"
new     = { address = "10.8.1.20:6379", via = "vpc" }
max_lag = "1MiB"
pause_timeout = "5s"

[services.app]
kind   = "tcp"
listen = "127.0.0.1:8080"
old    = "10.0.1.40:8080"
new    = { address = "10.8.1.40:8080", via = "vpc" }
drain_timeout = "30s"
)";

/// Every error of `text` as printed by `tunneld --check-config`, for a file named t.toml.
std::vector<std::string> errors_of(std::string_view text)
{
    const load_result result = parse(text, "t.toml");
    EXPECT_NE(result.value == nullptr, result.errors.empty()) << "value XOR errors";
    std::vector<std::string> printed;
    for (const config_error& e : result.errors)
        printed.push_back(e.to_string());
    return printed;
}

std::shared_ptr<const config> accepted(std::string_view text)
{
    load_result result = parse(text, "/etc/tunneld/tunneld.toml");
    for (const config_error& e : result.errors)
        ADD_FAILURE() << e.to_string();
    return result.value;
}

TEST(Parse, AcceptsTheDocumentedExample)
{
    const auto c = accepted(documented_example);
    ASSERT_TRUE(c);
    EXPECT_EQ(c->source, "/etc/tunneld/tunneld.toml");
    EXPECT_EQ(c->daemon.control_socket, "/run/tunneld/control.sock");
    EXPECT_EQ(c->daemon.state_file, "/var/lib/tunneld/state.json");
    EXPECT_EQ(c->daemon.health_listen, (endpoint{"127.0.0.1", 9740}));
    EXPECT_EQ(c->daemon.log_level, "info");

    ASSERT_EQ(c->tunnels.size(), 1u);
    const tunnel_config& vpc = c->tunnels[0];
    EXPECT_EQ(vpc.name, "vpc");
    EXPECT_EQ(vpc.address, (endpoint{"203.0.113.10", 22}));
    EXPECT_EQ(vpc.user, "tunnel");
    EXPECT_EQ(vpc.identity, "/etc/tunneld/id_ed25519");
    EXPECT_FALSE(vpc.uses_agent());
    EXPECT_EQ(vpc.known_hosts, "/etc/tunneld/known_hosts");
    EXPECT_EQ(vpc.sessions, 2u);
    EXPECT_EQ(vpc.keepalive, 5s);
    EXPECT_EQ(vpc.keepalive_max_missed, 3u);
    EXPECT_EQ(c->find_tunnel("vpc"), &vpc);
    EXPECT_EQ(c->find_tunnel("nope"), nullptr);

    ASSERT_EQ(c->services.size(), 2u);
    const service_config& app = c->services[0]; // sorted by name
    const service_config& redis = c->services[1];
    EXPECT_EQ(app.name, "app");
    EXPECT_EQ(redis.name, "redis");
    EXPECT_EQ(c->find_service("redis"), &redis);
    EXPECT_EQ(c->find_service("nope"), nullptr);

    EXPECT_EQ(redis.kind, service_kind::redis);
    EXPECT_EQ(redis.listen, (endpoint{"127.0.0.1", 6379}));
    EXPECT_EQ(redis.old_backend.address, (endpoint{"10.0.1.20", 6379}));
    EXPECT_EQ(redis.old_backend.via, std::nullopt);
    EXPECT_EQ(redis.new_backend.address, (endpoint{"10.8.1.20", 6379}));
    EXPECT_EQ(redis.new_backend.via, std::optional<std::string>("vpc"));
    EXPECT_EQ(redis.max_lag, 1024u * 1024);
    EXPECT_EQ(redis.pause_timeout, 5s);
    EXPECT_EQ(redis.mode, switch_mode::pause);

    EXPECT_EQ(app.kind, service_kind::tcp);
    EXPECT_EQ(app.listen, (endpoint{"127.0.0.1", 8080}));
    EXPECT_EQ(app.old_backend.address, (endpoint{"10.0.1.40", 8080}));
    EXPECT_EQ(app.old_backend.via, std::nullopt);
    EXPECT_EQ(app.new_backend.address, (endpoint{"10.8.1.40", 8080}));
    EXPECT_EQ(app.new_backend.via, std::optional<std::string>("vpc"));
    EXPECT_EQ(app.drain_timeout, 30s);
    EXPECT_EQ(app.mode, switch_mode::drain);
}

TEST(Parse, ExampleFileHoldsTheDocumentedExampleAndIsAccepted)
{
    std::ifstream in(TUNNELD_EXAMPLE_CONFIG);
    ASSERT_TRUE(in) << TUNNELD_EXAMPLE_CONFIG;
    std::stringstream text;
    text << in.rdbuf();

    // Each section of the documented block appears in the file verbatim.
    std::string_view rest = documented_example;
    while (!rest.empty()) {
        const auto end = rest.find("\n\n");
        const std::string_view section =
            rest.substr(0, end == std::string_view::npos ? rest.size() : end + 1);
        EXPECT_NE(text.str().find(section), std::string::npos) << section;
        rest.remove_prefix(end == std::string_view::npos ? rest.size() : end + 2);
    }

    const auto from_file = accepted(text.str());
    const auto from_doc = accepted(documented_example);
    ASSERT_TRUE(from_file && from_doc);
    EXPECT_EQ(from_file->daemon, from_doc->daemon);
    EXPECT_EQ(from_file->tunnels, from_doc->tunnels);
    EXPECT_EQ(from_file->services, from_doc->services);
}

TEST(Parse, EveryPrefixOfTheExampleGivesAValueOrErrorsWithPositions)
{
    for (std::size_t n = 0; n <= documented_example.size(); ++n) {
        const load_result result = parse(documented_example.substr(0, n), "t.toml");
        ASSERT_NE(result.value == nullptr, result.errors.empty()) << n;
        for (const config_error& e : result.errors) {
            EXPECT_GE(e.line, 1u) << n << ": " << e.to_string();
            EXPECT_GE(e.column, 1u) << n << ": " << e.to_string();
        }
    }
}

constexpr std::string_view minimal = R"([tunnels.gw]
address = "192.0.2.1:22"
user = "u"
identity = "agent"
known_hosts = "/k"

[services.s]
listen = "127.0.0.1:1000"
old = "10.0.0.1:1000"
new = "10.0.0.2:1000"
)";

TEST(Parse, FillsEveryDefault)
{
    const auto c = accepted(minimal);
    ASSERT_TRUE(c);
    EXPECT_EQ(c->daemon, daemon_config{});
    EXPECT_EQ(c->daemon.control_socket, "/run/tunneld/control.sock");
    EXPECT_EQ(c->daemon.state_file, "/var/lib/tunneld/state.json");
    EXPECT_EQ(c->daemon.health_listen, std::nullopt);
    EXPECT_EQ(c->daemon.log_level, "info");
    EXPECT_EQ(c->daemon.control_group, std::nullopt);
    EXPECT_EQ(c->daemon.shutdown_timeout, 30s);
    EXPECT_EQ(c->daemon.threads, 0u);

    ASSERT_EQ(c->tunnels.size(), 1u);
    const tunnel_config& t = c->tunnels[0];
    EXPECT_TRUE(t.uses_agent());
    EXPECT_EQ(t.identity, "agent"); // not made relative to the config's directory
    EXPECT_EQ(t.sessions, 2u);
    EXPECT_EQ(t.keepalive, 5s);
    EXPECT_EQ(t.keepalive_max_missed, 3u);
    EXPECT_EQ(t.connect_timeout, 10s);
    EXPECT_EQ(t.reconnect_max, 30s);
    EXPECT_EQ(t.channel_window, 12u << 20);

    ASSERT_EQ(c->services.size(), 1u);
    const service_config& s = c->services[0];
    EXPECT_EQ(s.kind, service_kind::tcp);
    EXPECT_EQ(s.mode, switch_mode::drain);
    EXPECT_EQ(s.old_backend.via, std::nullopt);
    EXPECT_EQ(s.connect_timeout, 5s);
    EXPECT_EQ(s.drain_timeout, 30s);
    EXPECT_EQ(s.pause_timeout, 5s);
    EXPECT_EQ(s.max_clients, 1024u);
    EXPECT_EQ(s.buffer_size, 64u * 1024);
    EXPECT_EQ(s.split_percent, std::nullopt);
    EXPECT_FALSE(s.split_sticky);
    EXPECT_EQ(s.max_lag, std::nullopt);
    EXPECT_EQ(s.max_lag_seconds, std::nullopt);
    EXPECT_EQ(s.probe_interval, 1s);
    EXPECT_EQ(s.probe_timeout, 2s);
    EXPECT_EQ(s.credentials_file, std::nullopt);
    EXPECT_EQ(s.fence, redis_fence::replicaof);
    EXPECT_EQ(s.fence_replicaof, std::nullopt);
    EXPECT_EQ(s.rollback_replicaof, std::nullopt);
    EXPECT_EQ(s.promote_command, std::nullopt);
    EXPECT_EQ(s.fence_command, std::nullopt);
    EXPECT_EQ(s.unfence_command, std::nullopt);
}

TEST(Parse, AcceptsAnEmptyFile)
{
    const auto c = accepted("");
    ASSERT_TRUE(c);
    EXPECT_TRUE(c->tunnels.empty());
    EXPECT_TRUE(c->services.empty());
}

TEST(Parse, ModeDefaultsToPauseForDatabases)
{
    const auto c = accepted(R"(
[services.pg]
kind = "postgres"
listen = "127.0.0.1:5432"
old = "10.0.0.1:5432"
new = "10.0.0.2:5432"
[services.r]
kind = "redis"
listen = "127.0.0.1:6379"
old = "10.0.0.1:6379"
new = "10.0.0.2:6379"
[services.t]
kind = "tcp"
mode = "kill"
listen = "127.0.0.1:80"
old = "10.0.0.1:80"
new = "10.0.0.2:80"
)");
    ASSERT_TRUE(c);
    EXPECT_EQ(c->find_service("pg")->mode, switch_mode::pause);
    EXPECT_EQ(c->find_service("r")->mode, switch_mode::pause);
    EXPECT_EQ(c->find_service("t")->mode, switch_mode::kill);
}

TEST(Parse, ReadsEveryOptionalKey)
{
    const auto c = accepted(R"([daemon]
control_group = "ops"
shutdown_timeout = "1m"
threads = 4
log_level = "debug"
state_file = "state/state.json"

[tunnels.gw]
address = "[2001:db8::1]:2222"
user = "u"
identity = "keys/id"
known_hosts = "/k"
sessions = 4
keepalive = "250ms"
keepalive_max_missed = 5
connect_timeout = "3s"
reconnect_max = "1m"
channel_window = "64MiB"

[services.r]
kind = "redis"
listen = "127.0.0.1:6379"
old = { address = "10.0.0.1:6379" }
new = { address = "10.0.0.2:6379", via = "gw" }
mode = "drain"
connect_timeout = "1s"
drain_timeout = "0s"
pause_timeout = "10s"
max_clients = 10
buffer_size = "16KiB"
max_lag = "0B"
max_lag_seconds = "2s"
probe_interval = "500ms"
probe_timeout = "1s"
credentials_file = "redis.auth"
fence = "min-replicas"
fence_replicaof = "10.8.0.2:6379"
rollback_replicaof = "10.0.0.1:6379"
promote_command = "promote.sh"
fence_command = "fence.sh"
unfence_command = "unfence.sh"

[services.t]
listen = "127.0.0.1:80"
old = "10.0.0.1:80"
new = "10.0.0.2:80"
split_percent = 100
split_sticky = true
)");
    ASSERT_TRUE(c);
    EXPECT_EQ(c->daemon.control_group, "ops");
    EXPECT_EQ(c->daemon.shutdown_timeout, 1min);
    EXPECT_EQ(c->daemon.threads, 4u);
    EXPECT_EQ(c->daemon.log_level, "debug");
    EXPECT_EQ(c->daemon.state_file, "/etc/tunneld/state/state.json");

    const tunnel_config& t = *c->find_tunnel("gw");
    EXPECT_EQ(t.address, (endpoint{"2001:db8::1", 2222}));
    EXPECT_EQ(t.identity, "/etc/tunneld/keys/id");
    EXPECT_EQ(t.sessions, 4u);
    EXPECT_EQ(t.keepalive, 250ms);
    EXPECT_EQ(t.keepalive_max_missed, 5u);
    EXPECT_EQ(t.connect_timeout, 3s);
    EXPECT_EQ(t.reconnect_max, 1min);
    EXPECT_EQ(t.channel_window, 64u << 20);

    const service_config& r = *c->find_service("r");
    EXPECT_EQ(r.old_backend.address, (endpoint{"10.0.0.1", 6379}));
    EXPECT_EQ(r.old_backend.via, std::nullopt);
    EXPECT_EQ(r.new_backend.address, (endpoint{"10.0.0.2", 6379}));
    EXPECT_EQ(r.new_backend.via, std::optional<std::string>("gw"));
    EXPECT_EQ(r.mode, switch_mode::drain);
    EXPECT_EQ(r.connect_timeout, 1s);
    EXPECT_EQ(r.drain_timeout, 0s);
    EXPECT_EQ(r.pause_timeout, 10s);
    EXPECT_EQ(r.max_clients, 10u);
    EXPECT_EQ(r.buffer_size, 16u * 1024);
    EXPECT_EQ(r.max_lag, 0u);
    EXPECT_EQ(r.max_lag_seconds, duration(2s));
    EXPECT_EQ(r.probe_interval, 500ms);
    EXPECT_EQ(r.probe_timeout, 1s);
    EXPECT_EQ(r.credentials_file, std::filesystem::path("/etc/tunneld/redis.auth"));
    EXPECT_EQ(r.fence, redis_fence::min_replicas);
    EXPECT_EQ(r.fence_replicaof, (endpoint{"10.8.0.2", 6379}));
    EXPECT_EQ(r.rollback_replicaof, (endpoint{"10.0.0.1", 6379}));
    EXPECT_EQ(r.promote_command, "promote.sh");
    EXPECT_EQ(r.fence_command, "fence.sh");
    EXPECT_EQ(r.unfence_command, "unfence.sh");

    const service_config& s = *c->find_service("t");
    EXPECT_EQ(s.split_percent, 100u);
    EXPECT_TRUE(s.split_sticky);
}

TEST(ParseErrors, SyntaxErrorCarriesTomlsMessageAndPosition)
{
    EXPECT_THAT(errors_of("[daemon]\nlog_level = \n"),
                ElementsAre("t.toml:2:13: Error while parsing key-value pair: expected value, saw '\\n'"));
    EXPECT_THAT(
        errors_of("[daemon]\nthreads = 1\nthreads = 2\n"),
        ElementsAre("t.toml:3:11: Error while parsing key-value pair: cannot redefine existing integer "
                    "'threads'"));
}

TEST(ParseErrors, UnknownKeysNameTheKeyAndTheTable)
{
    EXPECT_THAT(
        errors_of("[daemon]\nlog_levl = \"info\"\n\n[daemons]\n"),
        ElementsAre("t.toml:2:1: unknown key \"log_levl\" in [daemon]; did you mean \"log_level\"?",
                    "t.toml:4:2: unknown key \"daemons\" at the top level; did you mean \"daemon\"?"));
    EXPECT_THAT(errors_of(R"([tunnels.gw]
address = "192.0.2.1:22"
user = "u"
identity = "agent"
known_hosts = "/k"
password = "hunter2"
)"),
                ElementsAre("t.toml:6:1: unknown key \"password\" in [tunnels.gw]"));
    EXPECT_THAT(errors_of(R"([services.s]
listen = "127.0.0.1:1000"
old = "10.0.0.1:1000"
new = { address = "10.0.0.2:1000", vai = "gw" }
)"),
                ElementsAre("t.toml:4:36: unknown key \"vai\" in services.s.new; did you mean \"via\"?"));
}

TEST(ParseErrors, WrongTypesPointAtTheValue)
{
    EXPECT_THAT(
        errors_of(R"([daemon]
threads = "4"
shutdown_timeout = 30
health_listen = 9740
control_group = ""
daemon_x = 1
)"),
        ElementsAre("t.toml:2:11: threads must be an integer, not a string",
                    "t.toml:3:20: shutdown_timeout must be a duration string, e.g. \"250ms\", \"5s\", "
                    "\"2m\" or \"1h\", not an integer",
                    "t.toml:4:17: health_listen must be a \"host:port\" string, e.g. \"127.0.0.1:6379\" or "
                    "\"[::1]:6379\", not an integer",
                    "t.toml:5:17: control_group must not be empty",
                    "t.toml:6:1: unknown key \"daemon_x\" in [daemon]"));
    EXPECT_THAT(errors_of("daemon = 1\ntunnels = []\n"),
                ElementsAre("t.toml:1:10: daemon must be a table, not an integer",
                            "t.toml:2:11: tunnels must be a table, not an array"));
    EXPECT_THAT(
        errors_of(R"([services.s]
listen = "127.0.0.1:1000"
old = 5
new = { via = "gw" }
split_sticky = "yes"
)"),
        ElementsAre("t.toml:3:7: old must be a string \"host:port\" or a table { address = \"host:port\", "
                    "via = \"TUNNEL\" }, not an integer",
                    "t.toml:4:7: services.s.new is missing required key \"address\"",
                    "t.toml:4:15: via = \"gw\" names no tunnel; no [tunnels.NAME] table is defined",
                    "t.toml:5:16: split_sticky must be true or false, not a string"));
}

/// The keys of a [tunnels.gw] table after its `address`.
constexpr std::string_view after_address = R"(
user = "tunnel"
identity = "/k"
known_hosts = "/kh"
)";

TEST(Parse, TunnelAddressIsOneGatewayOrAList)
{
    const auto one = accepted(std::string("[tunnels.gw]\naddress = \"192.0.2.1:22\"") + std::string(after_address));
    ASSERT_TRUE(one);
    EXPECT_EQ(one->tunnels[0].gateways(), (std::vector<endpoint>{{"192.0.2.1", 22}}));
    EXPECT_TRUE(one->tunnels[0].more_gateways.empty());
    const auto many = accepted(
        std::string("[tunnels.gw]\naddress = [\"192.0.2.1:22\", \"[2001:db8::2]:2222\", \"gw3.example:22\"]") +
        std::string(after_address));
    ASSERT_TRUE(many);
    const auto& t = many->tunnels[0];
    EXPECT_EQ(t.address, (endpoint{"192.0.2.1", 22}));
    EXPECT_EQ(t.gateways(),
              (std::vector<endpoint>{{"192.0.2.1", 22}, {"2001:db8::2", 2222}, {"gw3.example", 22}}));
}

TEST(ParseErrors, GatewayListsPointAtTheBadItem)
{
    EXPECT_THAT(errors_of(std::string("[tunnels.gw]\naddress = []") + std::string(after_address)),
                ElementsAre("t.toml:2:11: address = [] lists no gateway; expected \"host:port\" or a list of "
                            "them, e.g. [\"203.0.113.10:22\", \"203.0.113.11:22\"]"));
    EXPECT_THAT(
        errors_of(std::string("[tunnels.gw]\naddress = [\"192.0.2.1:22\", 22, \"192.0.2.2\", \"192.0.2.1:22\"]") +
                  std::string(after_address)),
        ElementsAre("t.toml:2:28: address[1] must be a \"host:port\" string, not an integer",
                    "t.toml:2:32: address[2]: invalid address \"192.0.2.2\"; expected \"host:port\" with a "
                    "port in 1..65535, e.g. \"127.0.0.1:6379\" or \"[::1]:6379\"",
                    "t.toml:2:45: address[3]: gateway 192.0.2.1:22 is listed twice"));
    EXPECT_THAT(errors_of(std::string("[tunnels.gw]\naddress = 22") + std::string(after_address)),
                ElementsAre("t.toml:2:11: address must be a \"host:port\" string or a list of them, e.g. "
                            "[\"203.0.113.10:22\", \"203.0.113.11:22\"], not an integer"));
}

TEST(ParseErrors, ChannelWindowOutsideItsRangeNamesTheBounds)
{
    for (const auto& [value, bytes] : {std::pair{"32KiB", "32768"}, std::pair{"2GiB", "2147483648"}}) {
        EXPECT_THAT(errors_of(std::string("[tunnels.gw]\naddress = \"192.0.2.1:22\"") + std::string(after_address) +
                              "channel_window = \"" + value + "\"\n"),
                    ElementsAre(std::string("t.toml:6:18: channel_window must be between \"64KiB\" and \"1GiB\", not ") +
                                bytes + " bytes"));
    }
}

TEST(ParseErrors, BadDurationsSizesAndAddressesQuoteTheTextAndAnExample)
{
    EXPECT_THAT(
        errors_of(R"([services.s]
listen = "127.0.0.1"
old = "10.0.0.1:0"
new = "10.0.0.2:1000"
drain_timeout = "5 sec"
max_lag = "1M"
probe_interval = "0ms"
buffer_size = "0B"
)"),
        ElementsAre("t.toml:2:10: listen: invalid address \"127.0.0.1\"; expected \"host:port\" with a port "
                    "in 1..65535, e.g. \"127.0.0.1:6379\" or \"[::1]:6379\"",
                    "t.toml:3:7: old: invalid address \"10.0.0.1:0\"; expected \"host:port\", e.g. "
                    "\"127.0.0.1:6379\" or \"[::1]:6379\"",
                    "t.toml:5:17: drain_timeout: invalid duration \"5 sec\"; expected an integer and a unit "
                    "(ms, s, m, h), e.g. \"250ms\", \"5s\", \"2m\" or \"1h\"",
                    "t.toml:6:11: max_lag: invalid size \"1M\"; expected an integer and a unit (B, KiB, MiB, "
                    "GiB, TiB, KB, MB, GB, TB), e.g. \"0B\", \"64KiB\", \"1MiB\" or \"2GiB\"",
                    "t.toml:7:18: probe_interval must be greater than zero, e.g. \"250ms\", \"5s\", \"2m\" "
                    "or \"1h\"",
                    "t.toml:8:15: buffer_size must be greater than zero, e.g. \"0B\", \"64KiB\", \"1MiB\" "
                    "or \"2GiB\""));
}

TEST(ParseErrors, ChoicesAndRangesListWhatIsAllowed)
{
    EXPECT_THAT(
        errors_of(R"([daemon]
log_level = "verbose"

[tunnels.gw]
address = "192.0.2.1:22"
user = "u"
identity = "agent"
known_hosts = "/k"
sessions = 0
keepalive_max_missed = -1

[services.s]
kind = "mysql"
mode = "pause-all"
fence = "off"
listen = "127.0.0.1:1000"
old = "10.0.0.1:1000"
new = "10.0.0.2:1000"
split_percent = 101
)"),
        ElementsAre("t.toml:2:13: log_level = \"verbose\" is not one of \"trace\", \"debug\", \"info\", "
                    "\"warn\", \"error\"",
                    "t.toml:9:12: sessions = 0 is out of range; expected 1..64",
                    "t.toml:10:24: keepalive_max_missed = -1 is out of range; expected 1..1000",
                    "t.toml:13:8: kind = \"mysql\" is not one of \"tcp\", \"redis\", \"postgres\"",
                    "t.toml:14:8: mode = \"pause-all\" is not one of \"kill\", \"drain\", \"pause\"",
                    "t.toml:15:9: fence = \"off\" is not one of \"replicaof\", \"min-replicas\", \"none\"",
                    "t.toml:19:17: split_percent = 101 is out of range; expected 0..100"));
}

TEST(ParseErrors, UnfenceCommandNeedsAFenceCommand)
{
    EXPECT_THAT(errors_of(R"([services.pg]
kind = "postgres"
listen = "127.0.0.1:5432"
old = "10.0.0.1:5432"
new = "10.0.0.2:5432"
unfence_command = "unfence.sh"
)"),
                ElementsAre("t.toml:6:19: unfence_command lifts what fence_command did, and service \"pg\" has no "
                            "fence_command; set both or neither"));
}

TEST(ParseErrors, SplitPercentOnlyForTcp)
{
    EXPECT_THAT(
        errors_of(R"([services.r]
kind = "redis"
listen = "127.0.0.1:6379"
old = "10.0.0.1:6379"
new = "10.0.0.2:6379"
split_percent = 10
)"),
        ElementsAre("t.toml:6:17: split_percent applies only to kind = \"tcp\" services; service \"r\" is "
                    "kind = \"redis\""));
}

TEST(ParseErrors, MissingRequiredKeysPointAtTheTable)
{
    EXPECT_THAT(errors_of("\n[tunnels.gw]\naddress = \"192.0.2.1:22\"\n\n[services.s]\nkind = \"tcp\"\n"),
                ElementsAre("t.toml:2:1: [tunnels.gw] is missing required key \"user\"",
                            "t.toml:2:1: [tunnels.gw] is missing required key \"identity\"",
                            "t.toml:2:1: [tunnels.gw] is missing required key \"known_hosts\"",
                            "t.toml:5:1: [services.s] is missing required key \"listen\"",
                            "t.toml:5:1: [services.s] is missing required key \"old\"",
                            "t.toml:5:1: [services.s] is missing required key \"new\""));
}

TEST(ParseErrors, DuplicateListenAddressesNameTheFirstUser)
{
    EXPECT_THAT(
        errors_of(R"([daemon]
health_listen = "127.0.0.1:9740"

[services.b]
listen = "127.0.0.1:1000"
old = "10.0.0.1:1000"
new = "10.0.0.2:1000"

[services.a]
listen = "127.0.0.1:1000"
old = "10.0.0.1:1000"
new = "10.0.0.2:1000"

[services.c]
listen = "127.0.0.1:9740"
old = "10.0.0.1:1000"
new = "10.0.0.2:1000"
)"),
        ElementsAre("t.toml:10:10: listen address 127.0.0.1:1000 is already used by service \"b\" (line 5)",
                    "t.toml:15:10: listen address 127.0.0.1:9740 is already used by [daemon] health_listen "
                    "(line 2)"));
}

TEST(ParseErrors, ViaMustNameATunnel)
{
    EXPECT_THAT(errors_of(R"([tunnels.vpc]
address = "192.0.2.1:22"
user = "u"
identity = "agent"
known_hosts = "/k"

[tunnels.dc]
address = "192.0.2.2:22"
user = "u"
identity = "agent"
known_hosts = "/k"

[services.s]
listen = "127.0.0.1:1000"
old = { address = "10.0.0.1:1000", via = "vcp" }
new = { address = "10.0.0.2:1000", via = "vpc" }
)"),
                ElementsAre("t.toml:15:42: via = \"vcp\" names no tunnel; defined tunnels: dc, vpc"));
}

TEST(ParseErrors, NamesAreWordsOnly)
{
    EXPECT_THAT(
        errors_of("[services.\"my redis\"]\nlisten = \"127.0.0.1:1\"\n"),
        ElementsAre("t.toml:1:11: service name \"my redis\" may contain only letters, digits, '-' and '_'"));
}

TEST(ParseErrors, CollectsEveryErrorInFileOrder)
{
    const auto errors = errors_of(R"([services.s]
listen = "127.0.0.1:99999"
old = "10.0.0.1:1000"
new = { address = "10.0.0.2:1000", via = "nowhere" }
drain_timeout = "-1s"
colour = "blue"

[daemon]
threads = -2
)");
    EXPECT_THAT(errors,
                ElementsAre(::testing::StartsWith("t.toml:2:10: listen: invalid address \"127.0.0.1:99999\""),
                            ::testing::StartsWith("t.toml:4:42: via = \"nowhere\" names no tunnel"),
                            ::testing::StartsWith("t.toml:5:17: drain_timeout: invalid duration \"-1s\""),
                            "t.toml:6:1: unknown key \"colour\" in [services.s]",
                            "t.toml:9:11: threads = -2 is out of range; expected 0..1024"));
}

} // namespace
} // namespace tunneld::config
