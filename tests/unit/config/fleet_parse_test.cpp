// `[fleet]`: the DESIGN.md contract is accepted, every mistake is one `PATH:LINE:COL: message`,
// and load() checks the files it names (credentials and client key private, like an identity).
#include "config/config.hpp"
#include "config/parse_fleet.hpp"

#include <filesystem>
#include <fmt/format.h>
#include <fstream>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

namespace tunneld::config {
namespace {

using namespace std::chrono_literals;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
namespace fs = std::filesystem;

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

std::string host_name()
{
    char host[256] = {};
    ::gethostname(host, sizeof host - 1);
    return host;
}

TEST(ParseFleet, WithoutFleetTableThereIsNoFleet)
{
    const auto c = accepted("[daemon]\nlog_level = \"info\"\n");
    ASSERT_TRUE(c);
    EXPECT_FALSE(c->fleet);
}

TEST(ParseFleet, AcceptsTheDocumentedTableWithDefaults)
{
    // Copied from the contract in DESIGN.md.
    const auto c = accepted(R"([fleet]
etcd     = ["http://127.0.0.1:2379"]   # endpoints; https:// with the files below
name     = "legacy-eu1"                # key prefix: every member of one fleet uses the same name
# member = "web-7"                     # default: the host name
)");
    ASSERT_TRUE(c);
    ASSERT_TRUE(c->fleet);
    const fleet_config& f = *c->fleet;
    EXPECT_THAT(f.etcd, ElementsAre(etcd_endpoint{false, {"127.0.0.1", 2379}}));
    EXPECT_EQ(f.name, "legacy-eu1");
    EXPECT_EQ(f.member, host_name());
    EXPECT_EQ(f.ack_timeout, 2s);
    EXPECT_FALSE(f.ca_file);
    EXPECT_FALSE(f.credentials_file);
}

TEST(ParseFleet, ReadsEveryKeyAndResolvesRelativeFiles)
{
    const auto c = accepted(R"([fleet]
etcd = ["https://10.0.0.5:2379/", "https://[::1]:2379"]
name = "eu_1"
member = "web-7.eu"
ca_file = "etcd/ca.pem"
cert_file = "/etc/tunneld/etcd/client.pem"
key_file = "etcd/client.key"
credentials_file = "etcd/credentials"
ack_timeout = "750ms"
)");
    ASSERT_TRUE(c);
    const fleet_config& f = *c->fleet;
    EXPECT_THAT(f.etcd, ElementsAre(etcd_endpoint{true, {"10.0.0.5", 2379}}, etcd_endpoint{true, {"::1", 2379}}));
    EXPECT_EQ(f.etcd[1].to_string(), "https://[::1]:2379");
    EXPECT_EQ(f.member, "web-7.eu");
    EXPECT_EQ(f.ca_file, fs::path("/etc/tunneld/etcd/ca.pem"));
    EXPECT_EQ(f.cert_file, fs::path("/etc/tunneld/etcd/client.pem"));
    EXPECT_EQ(f.key_file, fs::path("/etc/tunneld/etcd/client.key"));
    EXPECT_EQ(f.credentials_file, fs::path("/etc/tunneld/etcd/credentials"));
    EXPECT_EQ(f.ack_timeout, 750ms);
}

TEST(ParseFleet, MissingEndpointsAndNameAreReportedAtTheTable)
{
    EXPECT_THAT(errors_of("[fleet]\nmember = \"a\"\n"),
                ElementsAre("t.toml:1:1: [fleet] is missing required key \"etcd\"",
                            "t.toml:1:1: [fleet] is missing required key \"name\""));
}

TEST(ParseFleet, BadEndpointsPointAtTheListItem)
{
    EXPECT_THAT(errors_of(R"([fleet]
name = "f"
etcd = ["http://127.0.0.1:2379", "127.0.0.1:2379", "http://127.0.0.1:2379", "http://h:2379/v3", 7]
)"),
                ElementsAre(HasSubstr("t.toml:3:34: etcd[1] must be a URL"),
                            "t.toml:3:52: etcd[2]: http://127.0.0.1:2379 is listed twice",
                            HasSubstr("t.toml:3:77: etcd[3] must be a URL"),
                            HasSubstr("t.toml:3:97: etcd[4] must be a URL")));
    EXPECT_THAT(errors_of("[fleet]\nname = \"f\"\netcd = []\n"),
                ElementsAre(HasSubstr("t.toml:3:8: etcd must be a non-empty list of URLs")));
    EXPECT_THAT(errors_of("[fleet]\nname = \"f\"\netcd = \"http://127.0.0.1:2379\"\n"),
                ElementsAre(HasSubstr("t.toml:3:8: etcd must be a non-empty list of URLs")));
}

TEST(ParseFleet, UnknownKeysAreRefusedAndKnownOnesListed)
{
    EXPECT_THAT(errors_of("[fleet]\netcd = [\"http://127.0.0.1:2379\"]\nname = \"f\"\nendpoints = 1\n"),
                ElementsAre("t.toml:4:1: unknown key \"endpoints\" in [fleet]; known keys: etcd, name, member, "
                            "ca_file, cert_file, key_file, credentials_file, ack_timeout"));
}

TEST(ParseFleet, NamesMustBeSafeKeySegments)
{
    EXPECT_THAT(errors_of("[fleet]\netcd = [\"http://127.0.0.1:2379\"]\nname = \"eu/1\"\nmember = \"../x\"\n"),
                ElementsAre(HasSubstr("t.toml:3:8: name \"eu/1\" may contain only"),
                            HasSubstr("t.toml:4:10: member \"../x\" may contain only")));
    EXPECT_THAT(errors_of("[fleet]\netcd = [\"http://127.0.0.1:2379\"]\nname = \"\"\n"),
                ElementsAre("t.toml:3:8: name must not be empty"));
}

TEST(ParseFleet, ClientCertificateIsAPairAndTlsFilesNeedHttps)
{
    EXPECT_THAT(errors_of(R"([fleet]
etcd = ["https://127.0.0.1:2379"]
name = "f"
cert_file = "c.pem"
)"),
                ElementsAre("t.toml:4:13: cert_file needs key_file too: a client certificate is a pair"));
    EXPECT_THAT(errors_of(R"([fleet]
etcd = ["http://127.0.0.1:2379"]
name = "f"
ca_file = "ca.pem"
)"),
                ElementsAre("t.toml:4:11: ca_file is set but no etcd endpoint is https://"));
}

TEST(ParseFleet, AckTimeoutMustBeAPositiveDuration)
{
    for (std::string_view bad : {R"("0s")", R"("2")", "2"}) {
        EXPECT_THAT(errors_of(fmt::format("[fleet]\netcd = [\"http://127.0.0.1:2379\"]\nname = \"f\"\n"
                                          "ack_timeout = {}\n",
                                          bad)),
                    ElementsAre(HasSubstr("t.toml:4:15: ack_timeout must be a duration greater than zero")))
            << bad;
    }
}

TEST(ParseFleet, FleetMustBeATable)
{
    EXPECT_THAT(errors_of("fleet = \"x\"\n"), ElementsAre("t.toml:1:9: fleet must be a table"));
}

TEST(ParseEtcdEndpoint, SchemesAndPorts)
{
    using detail::parse_etcd_endpoint;
    EXPECT_EQ(parse_etcd_endpoint("http://a:1"), (etcd_endpoint{false, {"a", 1}}));
    EXPECT_EQ(parse_etcd_endpoint("https://a:2379/"), (etcd_endpoint{true, {"a", 2379}}));
    EXPECT_FALSE(parse_etcd_endpoint("http://a"));
    EXPECT_FALSE(parse_etcd_endpoint("http://a:0"));
    EXPECT_FALSE(parse_etcd_endpoint("http://:2379"));
    EXPECT_FALSE(parse_etcd_endpoint("grpc://a:2379"));
    EXPECT_FALSE(parse_etcd_endpoint("HTTP://a:2379"));
}

class LoadFleet : public ::testing::Test {
protected:
    void SetUp() override
    {
        std::string pattern = (fs::temp_directory_path() / "tunneld-fleet-XXXXXX").string();
        ASSERT_NE(::mkdtemp(pattern.data()), nullptr);
        dir_ = pattern;
    }
    void TearDown() override { fs::remove_all(dir_); }

    fs::path write(const std::string& name, std::string_view text, fs::perms mode)
    {
        const fs::path path = dir_ / name;
        std::ofstream(path) << text;
        fs::permissions(path, mode);
        return path;
    }

    std::vector<std::string> errors_of(std::string_view fleet_keys)
    {
        const fs::path config = write("tunneld.toml",
                                      fmt::format("[fleet]\netcd = [\"https://127.0.0.1:2379\"]\nname = "
                                                  "\"f\"\n{}",
                                                  fleet_keys),
                                      fs::perms::owner_read | fs::perms::owner_write);
        const load_result result = load(config);
        std::vector<std::string> printed;
        for (const config_error& e : result.errors)
            printed.push_back(e.to_string().substr(dir_.string().size() + 1));
        return printed;
    }

    static constexpr auto private_mode = fs::perms::owner_read | fs::perms::owner_write;
    static constexpr auto public_mode = private_mode | fs::perms::group_read | fs::perms::others_read;
    fs::path dir_;
};

TEST_F(LoadFleet, AcceptsPrivateCredentialsAndKeyWithPublicCertificates)
{
    write("credentials", "tunneld s3cret\n", private_mode);
    write("client.key", "key", private_mode);
    write("client.pem", "cert", public_mode);
    write("ca.pem", "ca", public_mode);
    EXPECT_THAT(errors_of("credentials_file = \"credentials\"\nkey_file = \"client.key\"\ncert_file = "
                          "\"client.pem\"\nca_file = \"ca.pem\"\n"),
                ElementsAre());
}

TEST_F(LoadFleet, RefusesCredentialsReadableByOthersWithoutShowingThem)
{
    write("credentials", "tunneld s3cret\n", public_mode);
    const auto errors = errors_of("credentials_file = \"credentials\"\n");
    ASSERT_EQ(errors.size(), 1u);
    EXPECT_THAT(errors[0], HasSubstr("tunneld.toml:4:20: credentials_file "));
    EXPECT_THAT(errors[0], HasSubstr("is readable by group or others (mode 0644); chmod 600 it"));
    EXPECT_THAT(errors[0], ::testing::Not(HasSubstr("s3cret")));
}

TEST_F(LoadFleet, RefusesAClientKeyWritableByGroupAndMissingFiles)
{
    write("client.key", "key", private_mode | fs::perms::group_write);
    write("client.pem", "cert", public_mode);
    const auto errors = errors_of("key_file = \"client.key\"\ncert_file = \"client.pem\"\nca_file = \"nope.pem\"\n");
    ASSERT_EQ(errors.size(), 2u);
    EXPECT_THAT(errors[0], HasSubstr("tunneld.toml:4:12: key_file "));
    EXPECT_THAT(errors[0], HasSubstr("is writable by group or others (mode 0620)"));
    EXPECT_THAT(errors[1], HasSubstr("tunneld.toml:6:11: ca_file "));
    EXPECT_THAT(errors[1], HasSubstr("cannot be read: No such file or directory"));
}

} // namespace
} // namespace tunneld::config
