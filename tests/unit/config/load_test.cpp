#include "config/config.hpp"

#include <filesystem>
#include <fmt/format.h>
#include <fstream>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

namespace tunneld::config {
namespace {

namespace fs = std::filesystem;
using ::testing::ElementsAre;

class Load : public ::testing::Test {
protected:
    void SetUp() override
    {
        std::string pattern = (fs::temp_directory_path() / "tunneld-config-XXXXXX").string();
        ASSERT_NE(::mkdtemp(pattern.data()), nullptr);
        dir_ = pattern;
        write("id_ed25519", "key", fs::perms::owner_read | fs::perms::owner_write);
        write("known_hosts", "hosts",
              fs::perms::owner_read | fs::perms::owner_write | fs::perms::group_read |
                  fs::perms::others_read);
    }

    void TearDown() override { fs::remove_all(dir_); }

    fs::path write(const std::string& name, std::string_view text, fs::perms mode)
    {
        const fs::path path = dir_ / name;
        std::ofstream(path) << text;
        fs::permissions(path, mode);
        return path;
    }

    /// A config file whose tunnel uses `identity`; returns its path.
    fs::path write_config(std::string_view identity)
    {
        return write("tunneld.toml",
                     fmt::format(R"([tunnels.gw]
address = "192.0.2.1:22"
user = "u"
identity = "{}"
known_hosts = "known_hosts"
)",
                                 identity),
                     fs::perms::owner_read | fs::perms::owner_write);
    }

    std::vector<std::string> errors_of(const fs::path& config, file_checks checks = file_checks::on)
    {
        const load_result result = load(config, checks);
        EXPECT_NE(result.value == nullptr, result.errors.empty()) << "value XOR errors";
        std::vector<std::string> printed;
        for (const config_error& e : result.errors)
            printed.push_back(e.to_string());
        return printed;
    }

    fs::path dir_;
};

TEST_F(Load, AcceptsAPrivateKeyAndResolvesRelativePaths)
{
    const fs::path config = write_config("id_ed25519");
    const load_result result = load(config);
    ASSERT_TRUE(result) << (result.errors.empty() ? "" : result.errors[0].to_string());
    EXPECT_EQ(result.value->source, config);
    EXPECT_EQ(result.value->tunnels[0].identity, dir_ / "id_ed25519");
    EXPECT_EQ(result.value->tunnels[0].known_hosts, dir_ / "known_hosts");
}

TEST_F(Load, AcceptsAgentWithoutAKeyFile)
{
    EXPECT_TRUE(load(write_config("agent")));
}

TEST_F(Load, RefusesAKeyReadableByGroup)
{
    const fs::path key = dir_ / "id_ed25519";
    fs::permissions(key, fs::perms::owner_read | fs::perms::owner_write | fs::perms::group_read);
    const fs::path config = write_config(key.string());
    EXPECT_THAT(
        errors_of(config),
        ElementsAre(fmt::format("{}:4:12: identity {} is readable by group or others (mode 0640); chmod "
                                "600 it",
                                config.string(), key.string())));
}

TEST_F(Load, RefusesAKeyWritableByOthers)
{
    const fs::path key = dir_ / "id_ed25519";
    fs::permissions(key, fs::perms::owner_read | fs::perms::owner_write | fs::perms::others_write);
    const fs::path config = write_config("id_ed25519");
    EXPECT_THAT(
        errors_of(config),
        ElementsAre(fmt::format("{}:4:12: identity {} is writable by group or others (mode 0602); chmod "
                                "600 it",
                                config.string(), key.string())));
}

TEST_F(Load, RefusesAMissingKeyOrKnownHostsFile)
{
    fs::remove(dir_ / "known_hosts");
    const fs::path config = write_config("missing_key");
    EXPECT_THAT(errors_of(config),
                ElementsAre(fmt::format("{}:4:12: identity {} cannot be read: No such file or directory",
                                        config.string(), (dir_ / "missing_key").string()),
                            fmt::format("{}:5:15: known_hosts {} cannot be read: No such file or directory",
                                        config.string(), (dir_ / "known_hosts").string())));
}

TEST_F(Load, RefusesADirectoryAsKey)
{
    fs::create_directory(dir_ / "keys");
    const fs::path config = write_config("keys");
    EXPECT_THAT(errors_of(config), ElementsAre(fmt::format("{}:4:12: identity {} is not a regular file",
                                                           config.string(), (dir_ / "keys").string())));
}

TEST_F(Load, FileChecksOffSkipsThem)
{
    EXPECT_TRUE(load(write_config("missing_key"), file_checks::off));
}

TEST_F(Load, ReportsFileErrorsTogetherWithParseErrors)
{
    const fs::path config = write("bad.toml", R"([tunnels.gw]
address = "192.0.2.1"
user = "u"
identity = "missing_key"
known_hosts = "known_hosts"
)",
                                  fs::perms::owner_read | fs::perms::owner_write);
    EXPECT_THAT(errors_of(config),
                ElementsAre(::testing::StartsWith(config.string() + ":2:11: address: invalid address"),
                            ::testing::StartsWith(config.string() + ":4:12: identity ")));
}

TEST_F(Load, UnreadableFileIsLineZero)
{
    const fs::path config = dir_ / "absent.toml";
    EXPECT_THAT(errors_of(config),
                ElementsAre(config.string() + ":0:0: cannot read config file: No such file or directory"));
}

TEST_F(Load, TheExampleFileFailsOnlyOnItsKeyFiles)
{
    if (fs::exists("/etc/tunneld/id_ed25519")) GTEST_SKIP() << "this host has a real key there";
    const fs::path example = TUNNELD_EXAMPLE_CONFIG;
    EXPECT_TRUE(load(example, file_checks::off));
    EXPECT_THAT(errors_of(example),
                ElementsAre(::testing::HasSubstr("identity /etc/tunneld/id_ed25519 cannot be read"),
                            ::testing::HasSubstr("known_hosts /etc/tunneld/known_hosts cannot be read")));
}

} // namespace
} // namespace tunneld::config
