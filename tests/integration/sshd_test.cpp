// tunnel/ against a real OpenSSH sshd started by tools/testbed, with an in-process backend on
// 127.0.0.1. Scenarios (each states its goal):
//  1. 64 MiB each way through one channel arrive byte-identical (sha256).
//  2. Half-close travels both ways (client EOF first; backend EOF first).
//  3. 200 concurrent channels over 2 sessions all echo correctly, spread over both sessions.
//  4. sshd's session processes killed mid-transfer: channels fail promptly with session_lost,
//     the pool reconnects, a new channel works.
//  5. A SIGSTOP'd gateway is declared dead within keepalive x keepalive_max_missed.
//  6. Unknown and changed host keys are refused before any authentication attempt; hashed
//     known_hosts entries are accepted.
//  7. A group-readable identity file is refused by start_pool, naming the file and mode.
//  8. A refused channel open (closed port) fails only that open; other channels keep flowing.
//  9. A gateway rekeying every 1 MiB (RekeyLimit 1M) keeps 20 loaded channels byte-identical.
// 10. Two gateways: channels spread over both; one SIGKILLed (listener and session processes): its
//     channels are cut with session_lost, a connect loop running through it sees no failed
//     connect; it is restarted and new channels go to it again.
// 11. The same with the gateway SIGSTOPped (silent): detected within keepalive x
//     keepalive_max_missed, opens raced to the other gateway, SIGCONT brings it back.
// 12. A gateway with a changed host key is refused on every retry and stays down while the
//     other serves every client.
// 13. A 40 ms round trip (a delaying relay in front of sshd): bulk transfers arrive intact.
// 14. A caller's open goes to the session on its own loop while that session is as idle as any
//     (no thread hop), else to the idler session; open_executor says which beforehand.

#include "tunnel/channel.hpp"
#include "tunnel/tunnel.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/use_future.hpp>
#include <boost/asio/write.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fmt/format.h>
#include <fstream>
#include <functional>
#include <future>
#include <gtest/gtest.h>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <openssl/evp.h>
#include <poll.h>
#include <random>
#include <set>
#include <signal.h>
#include <sstream>
#include <sys/stat.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>

// No LeakSanitizer suppression: libssh2 is linked statically, built with frame pointers, and its
// one leak seen here (the AES-GCM MAC key, once per key exchange) is fixed by a patch
// (third_party/libssh2/patches).

namespace {

namespace asio = boost::asio;
using namespace std::chrono_literals;
using namespace boost::asio::experimental::awaitable_operators;
using boost::system::error_code;
using tunneld::tunnel::channel;
using tunneld::tunnel::tunnel_errc;
using tcp = asio::ip::tcp;
constexpr auto use_tuple = asio::as_tuple(asio::use_awaitable);
namespace fs = std::filesystem;

// --- test bed -------------------------------------------------------------------------------

/// `tools/testbed up --sshd --json`: up until the destructor closes its stdin.
/// A child process whose stdin is a pipe held open until stop(), and the first line it printed.
struct child_process {
    pid_t pid = -1;
    int stdin_fd = -1;
    std::string first_line;

    /// Starts `args` and waits up to a minute for its first line of output.
    explicit child_process(std::vector<std::string> args)
    {
        int in[2], out[2];
        if (::pipe(in) != 0 || ::pipe(out) != 0) throw std::runtime_error("pipe");
        pid = ::fork();
        if (pid == 0) {
            ::dup2(in[0], 0);
            ::dup2(out[1], 1);
            ::close(in[1]);
            ::close(out[0]);
            std::vector<char*> argv;
            for (auto& a : args)
                argv.push_back(a.data());
            argv.push_back(nullptr);
            ::execv(argv[0], argv.data());
            ::_exit(127);
        }
        ::close(in[0]);
        ::close(out[1]);
        stdin_fd = in[1];
        const auto deadline = std::chrono::steady_clock::now() + 60s;
        char c = 0;
        while (std::chrono::steady_clock::now() < deadline) {
            pollfd p{out[0], POLLIN, 0};
            if (::poll(&p, 1, 1000) <= 0) continue;
            if (::read(out[0], &c, 1) != 1) break;
            if (c == '\n') break;
            first_line += c;
        }
        ::close(out[0]);
    }
    child_process(const child_process&) = delete;
    child_process& operator=(const child_process&) = delete;
    /// Closes its stdin (it exits on that) and reaps it.
    ~child_process()
    {
        ::close(stdin_fd);
        int status = 0;
        ::waitpid(pid, &status, 0);
    }
};

class testbed {
public:
    explicit testbed(std::vector<std::string> extra = {})
        : child_([&] {
              std::vector<std::string> args{TUNNELD_SOURCE_DIR "/tools/testbed", "up", "--sshd", "--json"};
              args.insert(args.end(), extra.begin(), extra.end());
              return args;
          }())
    {
        info_ = nlohmann::json::parse(child_.first_line);
    }
    const nlohmann::json& sshd() const { return info_["sshd"]; }
    std::string sshd_log() const
    {
        std::ifstream f(sshd()["log"].get<std::string>());
        std::stringstream s;
        s << f.rdbuf();
        return s.str();
    }
    std::vector<int> sshd_descendants() const
    {
        std::vector<int> out;
        std::set<int> parents{sshd()["pid"].get<int>()};
        for (bool grew = true; grew;) {
            grew = false;
            for (auto& entry : fs::directory_iterator("/proc")) {
                const auto name = entry.path().filename().string();
                if (name.find_first_not_of("0123456789") != std::string::npos) continue;
                std::ifstream stat(entry.path() / "stat");
                std::string text;
                std::getline(stat, text);
                const auto close = text.rfind(')');
                if (close == std::string::npos) continue;
                std::istringstream rest(text.substr(close + 2));
                char state;
                int ppid = 0;
                rest >> state >> ppid;
                const int pid = std::stoi(name);
                if (parents.count(ppid) && !parents.count(pid)) {
                    parents.insert(pid);
                    out.push_back(pid);
                    grew = true;
                }
            }
        }
        return out;
    }

private:
    child_process child_;
    nlohmann::json info_;
};

/// Event loops, one thread each, as the daemon runs them.
class event_loops {
public:
    explicit event_loops(unsigned n)
    {
        for (unsigned i = 0; i < n; ++i) {
            contexts_.push_back(std::make_unique<asio::io_context>(1));
            guards_.emplace_back(contexts_.back()->get_executor());
        }
        for (auto& c : contexts_)
            threads_.emplace_back([ctx = c.get()] { ctx->run(); });
    }
    ~event_loops()
    {
        for (auto& c : contexts_)
            c->stop();
        for (auto& t : threads_)
            t.join();
    }
    std::vector<asio::io_context*> pointers()
    {
        std::vector<asio::io_context*> out;
        for (auto& c : contexts_)
            out.push_back(c.get());
        return out;
    }
    asio::io_context& operator[](std::size_t i) { return *contexts_[i]; }

private:
    std::vector<std::unique_ptr<asio::io_context>> contexts_;
    std::vector<asio::executor_work_guard<asio::io_context::executor_type>> guards_;
    std::vector<std::thread> threads_;
};

/// A TCP backend on 127.0.0.1 running `serve` for every accepted connection.
class backend {
public:
    using handler = std::function<asio::awaitable<void>(tcp::socket)>;
    explicit backend(handler serve)
        : acceptor_(context_, {asio::ip::make_address("127.0.0.1"), 0}), serve_(std::move(serve))
    {
        port_ = acceptor_.local_endpoint().port();
        asio::co_spawn(context_, accept_loop(), asio::detached);
        thread_ = std::thread([this] { context_.run(); });
    }
    ~backend()
    {
        context_.stop();
        thread_.join();
    }
    std::uint16_t port() const { return port_; }

private:
    asio::awaitable<void> accept_loop()
    {
        for (;;) {
            auto [ec, socket] = co_await acceptor_.async_accept(use_tuple);
            if (ec) co_return;
            asio::co_spawn(context_, serve_(std::move(socket)), asio::detached);
        }
    }
    asio::io_context context_{1};
    tcp::acceptor acceptor_;
    handler serve_;
    std::uint16_t port_ = 0;
    std::thread thread_;
};

asio::awaitable<void> echo(tcp::socket socket)
{
    // No buffer until there is data: idle clients cost the backend almost nothing, so the
    // per-channel memory measured in this process is tunnel/'s.
    co_await socket.async_wait(tcp::socket::wait_read, use_tuple);
    std::vector<char> buf(64 * 1024);
    for (;;) {
        auto [ec, n] = co_await socket.async_read_some(asio::buffer(buf), use_tuple);
        if (ec) break;
        auto [wec, w] = co_await asio::async_write(socket, asio::buffer(buf.data(), n), use_tuple);
        if (wec) co_return;
    }
    error_code ignored;
    socket.shutdown(tcp::socket::shutdown_send, ignored);
    // Linger until the client closes, so that the FIN is not turned into a reset.
    co_await socket.async_read_some(asio::buffer(buf), use_tuple);
}

class sha256 {
public:
    sha256() : ctx_(EVP_MD_CTX_new()) { EVP_DigestInit_ex(ctx_, EVP_sha256(), nullptr); }
    ~sha256() { EVP_MD_CTX_free(ctx_); }
    void update(const void* p, std::size_t n) { EVP_DigestUpdate(ctx_, p, n); }
    std::string hex()
    {
        unsigned char digest[32];
        unsigned len = 0;
        EVP_DigestFinal_ex(ctx_, digest, &len);
        std::string out;
        char two[3];
        for (unsigned i = 0; i < len; ++i) {
            std::snprintf(two, sizeof two, "%02x", digest[i]);
            out += two;
        }
        return out;
    }

private:
    EVP_MD_CTX* ctx_;
};

struct transfer_result {
    error_code write_ec;
    error_code read_ec;
    std::string sent_hash;
    std::string received_hash;
    std::uint64_t sent = 0;
    std::uint64_t received = 0;
};

/// Writes `total` pseudo-random bytes, then EOF, while reading the echo until EOF.
asio::awaitable<transfer_result> echo_transfer(std::shared_ptr<channel> ch, std::size_t total,
                                               std::uint64_t seed)
{
    transfer_result r;
    auto writer = [&]() -> asio::awaitable<void> {
        sha256 hash;
        std::vector<std::uint64_t> buf(8 * 1024);
        std::uint64_t x = seed * 0x9E3779B97F4A7C15ULL + 1;
        while (r.sent < total) {
            for (auto& word : buf) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                word = x;
            }
            const auto n = std::min<std::size_t>(buf.size() * 8, total - r.sent);
            hash.update(buf.data(), n);
            auto [ec, w] = co_await asio::async_write(*ch, asio::buffer(buf.data(), n), use_tuple);
            if (ec) {
                r.write_ec = ec;
                co_return;
            }
            r.sent += n;
        }
        ch->shutdown_send();
        r.sent_hash = hash.hex();
    };
    auto reader = [&]() -> asio::awaitable<void> {
        sha256 hash;
        std::vector<char> buf(64 * 1024);
        for (;;) {
            auto [ec, n] = co_await ch->async_read_some(asio::buffer(buf), use_tuple);
            if (ec) {
                r.read_ec = ec;
                break;
            }
            hash.update(buf.data(), n);
            r.received += n;
        }
        r.received_hash = hash.hex();
    };
    co_await (writer() && reader());
    co_return r;
}

template <class T>
T run_on(asio::any_io_executor ex, asio::awaitable<T> work, std::chrono::seconds limit = 60s)
{
    auto future = asio::co_spawn(ex, std::move(work), asio::use_future);
    if (future.wait_for(limit) != std::future_status::ready) throw std::runtime_error("timed out");
    return future.get();
}

bool eventually(const std::function<bool()>& condition, std::chrono::milliseconds limit)
{
    const auto deadline = std::chrono::steady_clock::now() + limit;
    while (std::chrono::steady_clock::now() < deadline) {
        if (condition()) return true;
        std::this_thread::sleep_for(20ms);
    }
    return condition();
}

std::int64_t resident_bytes()
{
    std::ifstream statm("/proc/self/statm");
    std::int64_t pages = 0, resident = 0;
    statm >> pages >> resident;
    return resident * ::sysconf(_SC_PAGESIZE);
}

tunneld::config::tunnel_config settings_for(const testbed& bed, unsigned sessions = 2)
{
    tunneld::config::tunnel_config s;
    s.name = "vpc";
    s.address = {bed.sshd()["host"].get<std::string>(), bed.sshd()["port"].get<std::uint16_t>()};
    s.user = bed.sshd()["user"].get<std::string>();
    s.identity = bed.sshd()["user_key"].get<std::string>();
    s.known_hosts = bed.sshd()["known_hosts"].get<std::string>();
    s.sessions = sessions;
    s.keepalive = 2s;
    s.keepalive_max_missed = 2;
    s.connect_timeout = 5s;
    s.reconnect_max = 2s;
    return s;
}

/// A pool on its own loops plus a client loop; stops everything in the right order.
struct pool_fixture {
    explicit pool_fixture(const tunneld::config::tunnel_config& settings, unsigned loops_count = 2)
        : loops(loops_count), client(1)
    {
        pool = tunneld::tunnel::start_pool(settings, loops.pointers());
    }
    ~pool_fixture()
    {
        pool->stop();
        std::this_thread::sleep_for(100ms);
    }
    bool wait_up(unsigned n, std::chrono::milliseconds limit = 10s)
    {
        return eventually([&] { return pool->status().sessions_up >= n; }, limit);
    }
    std::pair<std::error_code, std::shared_ptr<channel>> open(std::uint16_t port,
                                                              std::string host = "127.0.0.1")
    {
        return run_on(client[0].get_executor(), pool->open_channel(host, port), 30s);
    }

    event_loops loops;
    event_loops client;
    std::shared_ptr<tunneld::tunnel::pool> pool;
};

// A shared sshd for the scenarios that do not disturb it.
class Tunnel : public ::testing::Test {
protected:
    static void SetUpTestSuite() { bed_ = new testbed(); }
    static void TearDownTestSuite()
    {
        delete bed_;
        bed_ = nullptr;
    }
    static testbed* bed_;
};
testbed* Tunnel::bed_ = nullptr;

/// One cipher (and MAC) the transport offers; sshd is configured to accept only that one, so the
/// key scenarios below run once on each.
struct cipher_case {
    const char* name; // gtest parameter name
    const char* cipher;
    const char* mac; // "<implicit>" for AEAD ciphers, as sshd logs it
};

void PrintTo(const cipher_case& c, std::ostream* os)
{
    *os << c.cipher << " " << c.mac;
}

std::vector<std::string> sshd_config_for(const cipher_case& c)
{
    std::vector<std::string> lines{"--sshd-config", std::string("Ciphers ") + c.cipher, "--sshd-config",
                                   "LogLevel DEBUG1"};
    if (std::string_view(c.mac) != "<implicit>") {
        lines.push_back("--sshd-config");
        lines.push_back(std::string("MACs ") + c.mac);
    }
    return lines;
}

// The key scenarios on every cipher offered, each cipher with an sshd of its own that accepts
// only it (created on first use, shared by that cipher's scenarios).
class TunnelCipher : public ::testing::TestWithParam<cipher_case> {
protected:
    static testbed& bed()
    {
        auto& slot = beds_[GetParam().name];
        if (!slot) slot = std::make_unique<testbed>(sshd_config_for(GetParam()));
        return *slot;
    }
    static void TearDownTestSuite() { beds_.clear(); }
    static std::map<std::string, std::unique_ptr<testbed>> beds_;
};
std::map<std::string, std::unique_ptr<testbed>> TunnelCipher::beds_;

const cipher_case offered_ciphers[] = {
    {"aes128_gcm", "aes128-gcm@openssh.com", "<implicit>"},
    {"chacha20_poly1305", "chacha20-poly1305@openssh.com", "<implicit>"},
    {"aes128_ctr_etm", "aes128-ctr", "hmac-sha2-256-etm@openssh.com"},
};
INSTANTIATE_TEST_SUITE_P(Offered, TunnelCipher, ::testing::ValuesIn(offered_ciphers),
                         [](const auto& info) { return std::string(info.param.name); });

TEST_P(TunnelCipher, NegotiatesTheCipherSshdAccepts)
{
    pool_fixture f(settings_for(bed(), 1));
    ASSERT_TRUE(f.wait_up(1)) << f.pool->status().last_error;
    const auto expected = fmt::format("kex: client->server cipher: {} MAC: {} compression: none",
                                      GetParam().cipher, GetParam().mac);
    const auto expected_back = fmt::format("kex: server->client cipher: {} MAC: {} compression: none",
                                           GetParam().cipher, GetParam().mac);
    EXPECT_TRUE(eventually([&] { return bed().sshd_log().find(expected_back) != std::string::npos; }, 5s));
    EXPECT_NE(bed().sshd_log().find(expected), std::string::npos) << bed().sshd_log();
}

TEST_P(TunnelCipher, Transfers64MiBEachWayWithMatchingHash)
{
    backend echo_backend(echo);
    pool_fixture f(settings_for(bed()));
    ASSERT_TRUE(f.wait_up(2));
    auto [ec, ch] = f.open(echo_backend.port());
    ASSERT_FALSE(ec) << ec.message();
    const auto started = std::chrono::steady_clock::now();
    auto r = run_on(ch->get_executor(), echo_transfer(ch, 64 << 20, 1), 60s);
    const auto seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    std::cout << "64 MiB each way in " << seconds << " s\n";
    EXPECT_FALSE(r.write_ec) << r.write_ec.message();
    EXPECT_EQ(r.read_ec, asio::error::eof) << r.read_ec.message();
    EXPECT_EQ(r.sent, 64U << 20);
    EXPECT_EQ(r.received, 64U << 20);
    EXPECT_EQ(r.sent_hash, r.received_hash);
    const auto status = f.pool->status();
    EXPECT_GE(status.bytes_up, 64U << 20);
    EXPECT_GE(status.bytes_down, 64U << 20);
    EXPECT_TRUE(status.since_last_receive.has_value());
    asio::post(ch->get_executor(), [ch] { ch->close(); });
}

TEST_P(TunnelCipher, HalfCloseTravelsBothWays)
{
    // Backend speaks first and closes its sending side; then reads until the client's EOF.
    std::promise<std::string> received_by_backend;
    backend greeter([&](tcp::socket socket) -> asio::awaitable<void> {
        co_await asio::async_write(socket, asio::buffer(std::string_view("hello")), use_tuple);
        socket.shutdown(tcp::socket::shutdown_send);
        std::string got;
        std::vector<char> buf(1024);
        for (;;) {
            auto [ec, n] = co_await socket.async_read_some(asio::buffer(buf), use_tuple);
            if (ec) break;
            got.append(buf.data(), n);
        }
        received_by_backend.set_value(got);
    });
    backend echo_backend(echo);
    pool_fixture f(settings_for(bed()));
    ASSERT_TRUE(f.wait_up(1));

    // Client EOF first: the echo backend sees EOF, still answers, then its EOF comes back.
    {
        auto [ec, ch] = f.open(echo_backend.port());
        ASSERT_FALSE(ec) << ec.message();
        auto r = run_on(ch->get_executor(), echo_transfer(ch, 5, 7), 20s);
        EXPECT_EQ(r.received, 5U);
        EXPECT_EQ(r.sent_hash, r.received_hash);
        EXPECT_EQ(r.read_ec, asio::error::eof);
        asio::post(ch->get_executor(), [ch] { ch->close(); });
    }
    // Backend EOF first: the client reads "hello" + EOF and can still send afterwards.
    {
        auto [ec, ch] = f.open(greeter.port());
        ASSERT_FALSE(ec) << ec.message();
        auto got = run_on(
            ch->get_executor(),
            [](std::shared_ptr<channel> c) -> asio::awaitable<std::string> {
                std::string text;
                std::vector<char> buf(1024);
                for (;;) {
                    auto [rec, n] = co_await c->async_read_some(asio::buffer(buf), use_tuple);
                    if (rec) {
                        if (rec != asio::error::eof) text += "<" + rec.message() + ">";
                        break;
                    }
                    text.append(buf.data(), n);
                }
                auto [wec, w] =
                    co_await asio::async_write(*c, asio::buffer(std::string_view("after-eof")), use_tuple);
                if (wec) text += "<write " + wec.message() + ">";
                c->shutdown_send();
                co_return text;
            }(ch),
            20s);
        EXPECT_EQ(got, "hello");
        auto backend_got = received_by_backend.get_future();
        ASSERT_EQ(backend_got.wait_for(10s), std::future_status::ready);
        EXPECT_EQ(backend_got.get(), "after-eof");
        asio::post(ch->get_executor(), [ch] { ch->close(); });
    }
}

TEST_P(TunnelCipher, TwoHundredConcurrentChannelsOverTwoSessions)
{
    backend echo_backend(echo);
    pool_fixture f(settings_for(bed()));
    ASSERT_TRUE(f.wait_up(2));
    constexpr int count = 200;
    std::vector<std::shared_ptr<channel>> channels;
    const auto rss_before = resident_bytes();
    const auto started = std::chrono::steady_clock::now();
    for (int i = 0; i < count; ++i) {
        auto [ec, ch] = f.open(echo_backend.port());
        ASSERT_FALSE(ec) << i << ": " << ec.message();
        channels.push_back(ch);
    }
    const auto per_open =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - started).count() / count;
    std::cout << "sequential open on warm sessions: " << per_open << " ms per channel; resident memory "
              << static_cast<double>(resident_bytes() - rss_before) / count / 1024
              << " KiB per idle channel\n";
    EXPECT_EQ(f.pool->status().channels, static_cast<unsigned>(count));
    std::set<std::string> executors;
    std::vector<std::future<transfer_result>> results;
    for (int i = 0; i < count; ++i) {
        auto& ch = channels[static_cast<std::size_t>(i)];
        results.push_back(asio::co_spawn(ch->get_executor(),
                                         echo_transfer(ch, 64 * 1024, static_cast<std::uint64_t>(i)),
                                         asio::use_future));
    }
    for (auto& future : results) {
        ASSERT_EQ(future.wait_for(30s), std::future_status::ready);
        auto r = future.get();
        EXPECT_EQ(r.received, 64U * 1024);
        EXPECT_EQ(r.sent_hash, r.received_hash);
        EXPECT_EQ(r.read_ec, asio::error::eof);
    }
    // Both sessions (on both loops) carried channels.
    std::set<const void*> contexts;
    for (auto& ch : channels)
        contexts.insert(&asio::query(ch->get_executor(), asio::execution::context));
    EXPECT_EQ(contexts.size(), 2U);
    for (auto& ch : channels)
        asio::post(ch->get_executor(), [ch] { ch->close(); });
    channels.clear();
    EXPECT_TRUE(eventually([&] { return f.pool->status().channels == 0; }, 5s));
}

TEST_F(Tunnel, OpenRunsOnTheCallersLoopWhileItsSessionIsAsIdleAsAny)
{
    // Goal: a client on a loop whose session is as idle as any opens its channel there (no hop
    // between threads); a busier local session yields to an idler one on another loop; and
    // open_executor says beforehand where the open will run.
    backend echo_backend(echo);
    pool_fixture f(settings_for(*bed_, 2)); // one session on each of f.loops[0] and f.loops[1]
    ASSERT_TRUE(f.wait_up(2));
    const asio::any_io_executor first = f.loops[0].get_executor();
    const asio::any_io_executor second = f.loops[1].get_executor();
    std::vector<std::shared_ptr<channel>> kept; // open channels count as load
    auto open_from = [&](const asio::any_io_executor& caller) {
        auto [ec, ch] = run_on(caller, f.pool->open_channel("127.0.0.1", echo_backend.port()), 30s);
        EXPECT_FALSE(ec) << ec.message();
        if (ch) kept.push_back(ch);
        return ch ? ch->get_executor() : asio::any_io_executor();
    };
    // Both sessions idle: each caller's own.
    EXPECT_TRUE(f.pool->open_executor(first) == first);
    EXPECT_TRUE(open_from(first) == first);
    // Loads 1 / 0: the second loop's session is both local and idler.
    EXPECT_TRUE(f.pool->open_executor(second) == second);
    EXPECT_TRUE(open_from(second) == second);
    // Loads 1 / 1: local again.
    EXPECT_TRUE(open_from(first) == first);
    // Loads 2 / 1: the first loop's caller is sent to the second loop's session.
    EXPECT_TRUE(f.pool->open_executor(first) == second);
    EXPECT_TRUE(open_from(first) == second);
    for (auto& ch : kept)
        asio::post(ch->get_executor(), [ch] { ch->close(); });
}

TEST_F(Tunnel, RefusedChannelOpenLeavesOtherChannelsFlowing)
{
    backend echo_backend(echo);
    pool_fixture f(settings_for(*bed_, 1));
    ASSERT_TRUE(f.wait_up(1));
    auto [ec, ch] = f.open(echo_backend.port());
    ASSERT_FALSE(ec) << ec.message();
    auto flowing = asio::co_spawn(ch->get_executor(), echo_transfer(ch, 16 << 20, 3), asio::use_future);

    std::uint16_t closed_port = 0;
    {
        asio::io_context scratch;
        tcp::acceptor a(scratch, {asio::ip::make_address("127.0.0.1"), 0});
        closed_port = a.local_endpoint().port();
    }
    const auto started = std::chrono::steady_clock::now();
    auto [refused, none] = f.open(closed_port);
    EXPECT_EQ(refused, tunnel_errc::channel_open_refused) << refused.message();
    EXPECT_EQ(none, nullptr);
    EXPECT_LT(std::chrono::steady_clock::now() - started, 2s);

    ASSERT_EQ(flowing.wait_for(30s), std::future_status::ready);
    auto r = flowing.get();
    EXPECT_EQ(r.received, 16U << 20);
    EXPECT_EQ(r.sent_hash, r.received_hash);
    const auto status = f.pool->status();
    EXPECT_EQ(status.sessions_up, 1U);
    EXPECT_EQ(status.reconnects, 0U);
    EXPECT_EQ(status.channel_open_failures, 1U);
    // And the session still opens channels.
    auto [again, ch2] = f.open(echo_backend.port());
    EXPECT_FALSE(again) << again.message();
    asio::post(ch->get_executor(), [ch] { ch->close(); });
    if (ch2) asio::post(ch2->get_executor(), [ch2] { ch2->close(); });
}

TEST_F(Tunnel, IdleChannelOutlivesKeepalivesAndStillSeesEof)
{
    // libssh2 1.10 keeps keepalive replies in its packet list: reads and EOF must still work.
    backend echo_backend(echo);
    auto settings = settings_for(*bed_, 1);
    pool_fixture f(settings);
    ASSERT_TRUE(f.wait_up(1));
    auto [ec, ch] = f.open(echo_backend.port());
    ASSERT_FALSE(ec) << ec.message();
    auto r = run_on(
        ch->get_executor(),
        [](std::shared_ptr<channel> c) -> asio::awaitable<transfer_result> {
            // A pending read while idle, cancelled after three keepalive intervals.
            asio::steady_timer idle(c->get_executor(), 6500ms);
            std::array<char, 16> buf;
            auto outcome =
                co_await (c->async_read_some(asio::buffer(buf), use_tuple) || idle.async_wait(use_tuple));
            if (outcome.index() == 0) {
                transfer_result unexpected;
                unexpected.read_ec = asio::error::fault; // data or an error on an idle channel
                co_return unexpected;
            }
            co_return co_await echo_transfer(c, 1 << 20, 9);
        }(ch),
        30s);
    EXPECT_EQ(r.received, 1U << 20);
    EXPECT_EQ(r.sent_hash, r.received_hash);
    EXPECT_EQ(r.read_ec, asio::error::eof) << r.read_ec.message();
    EXPECT_EQ(f.pool->status().sessions_up, 1U);
    EXPECT_EQ(f.pool->status().reconnects, 0U);
    asio::post(ch->get_executor(), [ch] { ch->close(); });
}

TEST_F(Tunnel, StalledReaderDoesNotSlowOtherChannels)
{
    // A backend that sends without end, to a client that never reads: the SSH window stops it.
    std::atomic<std::uint64_t> pushed{0};
    backend source([&](tcp::socket socket) -> asio::awaitable<void> {
        std::vector<char> chunk(64 * 1024, 'x');
        for (;;) {
            auto [ec, n] = co_await asio::async_write(socket, asio::buffer(chunk), use_tuple);
            if (ec) co_return;
            pushed += n;
        }
    });
    backend echo_backend(echo);
    pool_fixture f(settings_for(*bed_, 1));
    ASSERT_TRUE(f.wait_up(1));
    auto [ec, stalled] = f.open(source.port());
    ASSERT_FALSE(ec) << ec.message();
    auto [ec2, busy] = f.open(echo_backend.port());
    ASSERT_FALSE(ec2) << ec2.message();
    auto r = run_on(busy->get_executor(), echo_transfer(busy, 16 << 20, 11), 30s);
    EXPECT_EQ(r.received, 16U << 20);
    EXPECT_EQ(r.sent_hash, r.received_hash);
    // What the stalled channel's backend got rid of is bounded by the window plus socket buffers.
    std::cout << "backend pushed " << pushed.load() / 1024 << " KiB into a channel nobody reads\n";
    EXPECT_LT(pushed.load(), 16U << 20);
    EXPECT_EQ(stalled->bytes_down(), 0U);
    asio::post(stalled->get_executor(), [stalled] { stalled->close(); });
    asio::post(busy->get_executor(), [busy] { busy->close(); });
}

TEST_F(Tunnel, BackendClosingUnderFullWindowFailsPendingWrite)
{
    // The backend reads a little, then closes while the client keeps writing (iperf3 data
    // connections end like this). The gateway sends EOF + CLOSE while the client's write waits
    // for window space: that write must fail promptly, and the channel must be released.
    backend quitter([](tcp::socket socket) -> asio::awaitable<void> {
        std::vector<char> buf(1024);
        co_await asio::async_read(socket, asio::buffer(buf), use_tuple);
        // Meanwhile the client fills the gateway's window and its write waits for space.
        asio::steady_timer pause(socket.get_executor(), 500ms);
        co_await pause.async_wait(use_tuple);
        error_code ignored;
        socket.close(ignored);
    });
    pool_fixture f(settings_for(*bed_, 1));
    ASSERT_TRUE(f.wait_up(1));
    auto [ec, ch] = f.open(quitter.port());
    ASSERT_FALSE(ec) << ec.message();
    struct outcome {
        error_code read_ec, write_ec;
        std::uint64_t written = 0;
    };
    const auto started = std::chrono::steady_clock::now();
    auto r = run_on(
        ch->get_executor(),
        [](std::shared_ptr<channel> c) -> asio::awaitable<outcome> {
            outcome o;
            auto reader = [&]() -> asio::awaitable<void> {
                std::vector<char> buf(16 * 1024);
                for (;;) {
                    auto [rec, n] = co_await c->async_read_some(asio::buffer(buf), use_tuple);
                    if (rec) {
                        o.read_ec = rec;
                        co_return;
                    }
                }
            };
            auto writer = [&]() -> asio::awaitable<void> {
                std::vector<char> chunk(64 * 1024, 'y');
                for (int i = 0; i < 4096; ++i) { // 256 MiB: far beyond any window
                    auto [wec, n] = co_await asio::async_write(*c, asio::buffer(chunk), use_tuple);
                    o.written += n;
                    if (wec) {
                        o.write_ec = wec;
                        co_return;
                    }
                }
            };
            co_await (reader() && writer());
            co_return o;
        }(ch),
        30s);
    const auto seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    std::cout << "write failed after " << r.written / 1024 << " KiB in " << seconds << " s: "
              << r.write_ec.message() << "\n";
    EXPECT_EQ(r.read_ec, asio::error::eof) << r.read_ec.message();
    EXPECT_TRUE(r.write_ec) << "write never failed";
    EXPECT_GT(r.written, 64U * 1024); // more than a socket buffer: it did wait for window space
    EXPECT_LT(seconds, 10.0);
    asio::post(ch->get_executor(), [ch] { ch->close(); });
    ch.reset();
    EXPECT_TRUE(eventually([&] { return f.pool->status().channels == 0; }, 5s));
    // The session survived: a new channel still works.
    backend echo_backend(echo);
    auto [ec2, ch2] = f.open(echo_backend.port());
    ASSERT_FALSE(ec2) << ec2.message();
    auto t = run_on(ch2->get_executor(), echo_transfer(ch2, 1 << 20, 3), 20s);
    EXPECT_EQ(t.received, 1U << 20);
    EXPECT_EQ(f.pool->status().reconnects, 0U);
    asio::post(ch2->get_executor(), [ch2] { ch2->close(); });
}

TEST_F(Tunnel, HashedKnownHostsEntryIsAccepted)
{
    auto settings = settings_for(*bed_, 1);
    settings.known_hosts = bed_->sshd()["known_hosts_hashed"].get<std::string>();
    pool_fixture f(settings);
    EXPECT_TRUE(f.wait_up(1)) << f.pool->status().last_error;
}

/// Writes a known_hosts file next to the test bed's; `key` is "type base64".
fs::path write_known_hosts(const testbed& bed, const std::string& name, const std::string& host_pattern,
                           const std::string& key)
{
    const auto path = fs::path(bed.sshd()["dir"].get<std::string>()) / name;
    std::ofstream(path) << host_pattern << " " << key << "\n";
    return path;
}

std::string fresh_ed25519_public_key(const fs::path& dir)
{
    const auto key = dir / "other_host_key";
    fs::remove(key);
    fs::remove(key.string() + ".pub");
    const auto command = "ssh-keygen -q -t ed25519 -N '' -f " + key.string();
    if (std::system(command.c_str()) != 0) throw std::runtime_error("ssh-keygen failed");
    std::ifstream pub(key.string() + ".pub");
    std::string type, base64;
    pub >> type >> base64;
    return type + " " + base64;
}

std::size_t auth_attempts(const std::string& log)
{
    std::size_t n = 0;
    for (const char* marker :
         {"Accepted publickey", "Failed publickey", "Postponed publickey", "authenticating user"}) {
        for (auto pos = log.find(marker); pos != std::string::npos; pos = log.find(marker, pos + 1))
            ++n;
    }
    return n;
}

TEST_F(Tunnel, UnknownAndChangedHostKeysAreRefusedBeforeAuthentication)
{
    const auto dir = fs::path(bed_->sshd()["dir"].get<std::string>());
    const auto port = std::to_string(bed_->sshd()["port"].get<int>());
    const auto other_key = fresh_ed25519_public_key(dir);
    struct scenario {
        const char* name;
        fs::path known_hosts;
        const char* expect;
    } scenarios[] = {
        // Only some other host is known.
        {"unknown",
         write_known_hosts(*bed_, "kh_unknown", "[127.0.0.9]:" + port,
                           bed_->sshd()["host_key_pub"].get<std::string>()),
         "unknown host key"},
        // This host is known with another key.
        {"changed", write_known_hosts(*bed_, "kh_changed", "[127.0.0.1]:" + port, other_key),
         "CHANGED host key"},
    };
    for (const auto& s : scenarios) {
        SCOPED_TRACE(s.name);
        const auto attempts_before = auth_attempts(bed_->sshd_log());
        auto settings = settings_for(*bed_, 1);
        settings.known_hosts = s.known_hosts;
        pool_fixture f(settings);
        ASSERT_TRUE(eventually([&] { return !f.pool->status().last_error.empty(); }, 5s));
        const auto status = f.pool->status();
        EXPECT_EQ(status.sessions_up, 0U);
        EXPECT_NE(status.last_error.find(s.expect), std::string::npos) << status.last_error;
        EXPECT_NE(status.last_error.find("ssh-ed25519 SHA256:"), std::string::npos) << status.last_error;
        EXPECT_FALSE(f.pool->healthy());
        auto [ec, ch] = f.open(1);
        EXPECT_EQ(ec, tunnel_errc::no_healthy_session);
        std::this_thread::sleep_for(300ms); // let sshd write its log
        EXPECT_EQ(auth_attempts(bed_->sshd_log()), attempts_before) << "an authentication was attempted";
    }
}

TEST_F(Tunnel, AuthenticatesWithSshAgent)
{
    const auto dir = fs::path(bed_->sshd()["dir"].get<std::string>());
    const auto socket_path = dir / "agent.sock";
    fs::remove(socket_path);
    // Our own agent, stopped by its pid at the end.
    FILE* agent = ::popen(("ssh-agent -s -a " + socket_path.string()).c_str(), "r");
    ASSERT_NE(agent, nullptr);
    std::string output;
    // The daemonized agent keeps the pipe open: stop after the line that names its pid.
    for (char line[512];
         output.find("SSH_AGENT_PID=") == std::string::npos && std::fgets(line, sizeof line, agent);)
        output += line;
    ::pclose(agent);
    const auto at = output.find("SSH_AGENT_PID=");
    ASSERT_NE(at, std::string::npos) << output;
    const int agent_pid = std::atoi(output.c_str() + at + 14);
    ASSERT_GT(agent_pid, 0);
    const std::unique_ptr<void, std::function<void(void*)>> stop_agent(reinterpret_cast<void*>(1),
                                                                       [agent_pid](void*) {
                                                                           ::kill(agent_pid, SIGTERM);
                                                                           ::unsetenv("SSH_AUTH_SOCK");
                                                                       });
    const auto add = "SSH_AUTH_SOCK=" + socket_path.string() + " ssh-add -q " +
                     bed_->sshd()["user_key"].get<std::string>();
    ASSERT_EQ(std::system(add.c_str()), 0);
    ::setenv("SSH_AUTH_SOCK", socket_path.c_str(), 1); // read by libssh2_agent_connect
    backend echo_backend(echo);
    auto settings = settings_for(*bed_, 1);
    settings.identity = "agent";
    {
        pool_fixture f(settings);
        EXPECT_TRUE(f.wait_up(1)) << f.pool->status().last_error;
        auto [ec, ch] = f.open(echo_backend.port());
        ASSERT_FALSE(ec) << ec.message();
        auto r = run_on(ch->get_executor(), echo_transfer(ch, 4096, 21), 20s);
        EXPECT_EQ(r.sent_hash, r.received_hash);
        asio::post(ch->get_executor(), [ch] { ch->close(); });
    }
}

TEST_F(Tunnel, GroupReadableKeyIsRefusedAtStart)
{
    const auto dir = fs::path(bed_->sshd()["dir"].get<std::string>());
    const auto key = dir / "group_readable_key";
    fs::copy_file(bed_->sshd()["user_key"].get<std::string>(), key, fs::copy_options::overwrite_existing);
    ::chmod(key.c_str(), 0640);
    auto settings = settings_for(*bed_, 1);
    settings.identity = key;
    event_loops loops(1);
    try {
        tunneld::tunnel::start_pool(settings, loops.pointers());
        FAIL() << "start_pool accepted a group-readable key";
    } catch (const std::system_error& e) {
        EXPECT_EQ(e.code(), tunnel_errc::key_permissions);
        EXPECT_NE(std::string(e.what()).find(key.string()), std::string::npos) << e.what();
        EXPECT_NE(std::string(e.what()).find("0640"), std::string::npos) << e.what();
    }
}

// Scenarios that kill or freeze sshd get their own.
TEST(TunnelFailure, SessionKilledMidTransferFailsChannelsThenReconnects)
{
    testbed bed;
    backend echo_backend(echo);
    pool_fixture f(settings_for(bed, 1));
    ASSERT_TRUE(f.wait_up(1));
    auto [ec, ch] = f.open(echo_backend.port());
    ASSERT_FALSE(ec) << ec.message();
    auto transfer =
        asio::co_spawn(ch->get_executor(), echo_transfer(ch, std::size_t{1} << 40, 5), asio::use_future);
    ASSERT_TRUE(eventually([&] { return f.pool->status().bytes_down > (4U << 20); }, 10s));

    for (int pid : bed.sshd_descendants())
        ::kill(pid, SIGKILL);
    const auto killed = std::chrono::steady_clock::now();
    ASSERT_EQ(transfer.wait_for(5s), std::future_status::ready);
    EXPECT_LT(std::chrono::steady_clock::now() - killed, 2s);
    auto r = transfer.get();
    EXPECT_EQ(r.read_ec, tunnel_errc::session_lost) << r.read_ec.message();
    EXPECT_TRUE(r.write_ec == tunnel_errc::session_lost || !r.write_ec) << r.write_ec.message();

    ASSERT_TRUE(eventually(
        [&] { return f.pool->status().reconnects >= 1 && f.pool->status().sessions_up == 1; }, 10s))
        << f.pool->status().last_error;
    auto [ec2, ch2] = f.open(echo_backend.port());
    ASSERT_FALSE(ec2) << ec2.message();
    auto again = run_on(ch2->get_executor(), echo_transfer(ch2, 1 << 20, 6), 20s);
    EXPECT_EQ(again.received, 1U << 20);
    EXPECT_EQ(again.sent_hash, again.received_hash);
    asio::post(ch->get_executor(), [ch] { ch->close(); });
    asio::post(ch2->get_executor(), [ch2] { ch2->close(); });
}

TEST(TunnelFailure, StoppedGatewayIsDetectedWithinKeepaliveBound)
{
    testbed bed;
    backend echo_backend(echo);
    auto settings = settings_for(bed, 1);
    pool_fixture f(settings);
    ASSERT_TRUE(f.wait_up(1));
    auto [ec, ch] = f.open(echo_backend.port());
    ASSERT_FALSE(ec) << ec.message();
    // An idle channel with a pending read: only the keepalive can notice the gateway is gone.
    auto pending = asio::co_spawn(
        ch->get_executor(),
        [](std::shared_ptr<channel> c) -> asio::awaitable<error_code> {
            std::array<char, 16> buf;
            auto [rec, n] = co_await c->async_read_some(asio::buffer(buf), use_tuple);
            co_return rec;
        }(ch),
        asio::use_future);
    std::this_thread::sleep_for(500ms);
    ::kill(bed.sshd()["pid"].get<int>(), SIGSTOP);
    for (int pid : bed.sshd_descendants())
        ::kill(pid, SIGSTOP);
    const auto stopped = std::chrono::steady_clock::now();
    const auto bound = settings.keepalive * settings.keepalive_max_missed;
    const bool ready = pending.wait_for(bound + 3s) == std::future_status::ready;
    const auto detected = std::chrono::steady_clock::now() - stopped;
    for (int pid : bed.sshd_descendants())
        ::kill(pid, SIGCONT);
    ::kill(bed.sshd()["pid"].get<int>(), SIGCONT);
    ASSERT_TRUE(ready);
    EXPECT_EQ(pending.get(), tunnel_errc::session_lost);
    std::cout << "stopped gateway detected after "
              << std::chrono::duration_cast<std::chrono::milliseconds>(detected).count() << " ms\n";
    // The bound plus one keepalive tick (a quarter interval) and some scheduling slack.
    EXPECT_LE(detected, bound + 1s);
    EXPECT_NE(f.pool->status().last_error.find("nothing received"), std::string::npos)
        << f.pool->status().last_error;
    asio::post(ch->get_executor(), [ch] { ch->close(); });
}

// Its own sshd per cipher: RekeyLimit would slow the other scenarios down.
class TunnelRekey : public ::testing::TestWithParam<cipher_case> {};
INSTANTIATE_TEST_SUITE_P(Offered, TunnelRekey, ::testing::ValuesIn(offered_ciphers),
                         [](const auto& info) { return std::string(info.param.name); });

TEST_P(TunnelRekey, RekeyUnderLoadKeepsChannelsByteIdentical)
{
    auto config = sshd_config_for(GetParam());
    config.insert(config.end(), {"--sshd-config", "RekeyLimit 1M"});
    testbed bed(config);
    backend echo_backend(echo);
    pool_fixture f(settings_for(bed, 2));
    ASSERT_TRUE(f.wait_up(2));
    constexpr int count = 20;
    constexpr std::size_t each = (128 << 20) / count; // 128 MiB each way, 256 MiB through sshd
    std::vector<std::shared_ptr<channel>> channels;
    std::vector<std::future<transfer_result>> results;
    for (int i = 0; i < count; ++i) {
        auto [ec, ch] = f.open(echo_backend.port());
        ASSERT_FALSE(ec) << ec.message();
        channels.push_back(ch);
        results.push_back(asio::co_spawn(ch->get_executor(),
                                         echo_transfer(ch, each, 100 + static_cast<std::uint64_t>(i)),
                                         asio::use_future));
    }
    for (auto& future : results) {
        ASSERT_EQ(future.wait_for(60s), std::future_status::ready);
        auto r = future.get();
        EXPECT_EQ(r.received, each);
        EXPECT_EQ(r.sent_hash, r.received_hash);
        EXPECT_EQ(r.read_ec, asio::error::eof) << r.read_ec.message();
    }
    EXPECT_EQ(f.pool->status().reconnects, 0U);
    for (auto& ch : channels)
        asio::post(ch->get_executor(), [ch] { ch->close(); });
}

// --- a tunnel over two gateways (two sshd on loopback) -----------------------------------------

/// Settings for one tunnel over both test beds, with a known_hosts file holding both host keys
/// (or, for `changed_key_of_first`, a different key for the first gateway).
tunneld::config::tunnel_config two_gateway_settings(const testbed& first, const testbed& second,
                                                    bool changed_key_of_first = false)
{
    auto s = settings_for(first, 2);
    s.more_gateways = {{second.sshd()["host"].get<std::string>(), second.sshd()["port"].get<std::uint16_t>()}};
    // user_key and user are the same kind in both beds; each bed authorizes its own key.
    const auto dir = fs::path(first.sshd()["dir"].get<std::string>());
    const auto path = dir / (changed_key_of_first ? "kh_two_changed" : "kh_two");
    std::ofstream out(path);
    const auto first_key = changed_key_of_first ? fresh_ed25519_public_key(dir)
                                                : first.sshd()["host_key_pub"].get<std::string>();
    out << "[127.0.0.1]:" << first.sshd()["port"].get<int>() << " " << first_key << "\n";
    out << "[127.0.0.1]:" << second.sshd()["port"].get<int>() << " "
        << second.sshd()["host_key_pub"].get<std::string>() << "\n";
    s.known_hosts = path;
    // libssh2 sends a keepalive at most every 2 s: a bound under 3 s would fail idle sessions.
    s.keepalive = 1s;
    s.keepalive_max_missed = 3;
    return s;
}

/// Both beds must accept the same user key: the second bed authorizes the first bed's key too.
void authorize_first_key_on(const testbed& first, const testbed& second)
{
    std::ifstream pub(first.sshd()["user_key"].get<std::string>() + ".pub");
    std::string line;
    std::getline(pub, line);
    std::ofstream(fs::path(second.sshd()["dir"].get<std::string>()) / "authorized_keys", std::ios::app)
        << line << "\n";
}

/// One after another until `stop`: open a channel (bounded by connect_timeout, as proxy/ does),
/// echo 64 bytes, close. Counts failed connects and the longest time without a served client.
struct connect_loop_result {
    unsigned attempts = 0;
    unsigned failed_connects = 0;
    unsigned cut = 0; ///< opened, then lost before the echo came back (clients on the dead gateway)
    std::vector<std::string> reasons;
    std::chrono::milliseconds longest_gap{0};
};

asio::awaitable<connect_loop_result> connect_loop(std::shared_ptr<tunneld::tunnel::pool> pool,
                                                  std::uint16_t port, const std::atomic<bool>& stop,
                                                  std::chrono::milliseconds connect_timeout)
{
    connect_loop_result r;
    auto executor = co_await asio::this_coro::executor;
    asio::steady_timer timer(executor);
    auto last_served = std::chrono::steady_clock::now();
    std::uint64_t seed = 1000;
    auto gap_until = [&](std::chrono::steady_clock::time_point now) {
        r.longest_gap =
            std::max(r.longest_gap, std::chrono::duration_cast<std::chrono::milliseconds>(now - last_served));
    };
    while (!stop) {
        ++r.attempts;
        timer.expires_after(connect_timeout);
        auto opened = co_await (pool->open_channel("127.0.0.1", port) || timer.async_wait(use_tuple));
        if (opened.index() == 1) {
            ++r.failed_connects;
            r.reasons.push_back("open timed out");
        } else if (auto [ec, ch] = std::get<0>(std::move(opened)); ec || !ch) {
            ++r.failed_connects;
            r.reasons.push_back(ec.message());
        } else {
            auto t = co_await asio::co_spawn(ch->get_executor(), echo_transfer(ch, 64, ++seed), asio::use_awaitable);
            asio::post(ch->get_executor(), [ch] { ch->close(); });
            if (t.received == 64 && t.sent_hash == t.received_hash) {
                const auto now = std::chrono::steady_clock::now();
                gap_until(now);
                last_served = now;
            } else {
                ++r.cut;
                r.reasons.push_back("cut: " + t.read_ec.message());
            }
        }
        timer.expires_after(20ms);
        co_await timer.async_wait(use_tuple);
    }
    gap_until(std::chrono::steady_clock::now());
    co_return r;
}

tunneld::tunnel::gateway_status gateway_of(const tunneld::tunnel::pool& pool, std::size_t i)
{
    return pool.status().gateways.at(i);
}

/// A pending read on each channel: completes with the error that cut it.
std::vector<std::future<error_code>> pending_reads(const std::vector<std::shared_ptr<channel>>& channels)
{
    std::vector<std::future<error_code>> out;
    for (auto& ch : channels)
        out.push_back(asio::co_spawn(
            ch->get_executor(),
            [](std::shared_ptr<channel> c) -> asio::awaitable<error_code> {
                std::array<char, 16> buf;
                auto [rec, n] = co_await c->async_read_some(asio::buffer(buf), use_tuple);
                co_return rec;
            }(ch),
            asio::use_future));
    return out;
}

void close_all(std::vector<std::shared_ptr<channel>>& channels)
{
    for (auto& ch : channels)
        asio::post(ch->get_executor(), [ch] { ch->close(); });
    channels.clear();
}

/// sshd started again with a test bed's config (same port, same keys); killed at the end.
class restarted_sshd {
public:
    explicit restarted_sshd(const testbed& bed)
    {
        const auto config = bed.sshd()["config"].get<std::string>();
        const auto log = bed.sshd()["log"].get<std::string>();
        pid_ = ::fork();
        if (pid_ == 0) {
            ::execl("/usr/sbin/sshd", "/usr/sbin/sshd", "-D", "-f", config.c_str(), "-E", log.c_str(), nullptr);
            ::_exit(127);
        }
    }
    ~restarted_sshd()
    {
        ::kill(pid_, SIGTERM);
        int status = 0;
        ::waitpid(pid_, &status, 0);
    }

private:
    pid_t pid_ = -1;
};

/// Opens `count` channels, each checked with a 4 KiB echo; fails the test for any that does not work.
std::vector<std::shared_ptr<channel>> open_echoed(pool_fixture& f, std::uint16_t port, int count)
{
    std::vector<std::shared_ptr<channel>> out;
    for (int i = 0; i < count; ++i) {
        auto [ec, ch] = f.open(port);
        if (ec || !ch) {
            ADD_FAILURE() << "open " << i << ": " << ec.message();
            continue;
        }
        auto t = run_on(ch->get_executor(), echo_transfer(ch, 4096, 300 + static_cast<std::uint64_t>(i)), 20s);
        EXPECT_EQ(t.sent_hash, t.received_hash);
        out.push_back(ch);
    }
    return out;
}

enum class gateway_fault { killed, stopped };

/// Scenarios 10 and 11: channels spread over two gateways; the first dies (SIGKILL of sshd and its
/// session processes, or SIGSTOP of all of them: silent); its clients are cut with session_lost,
/// every new client is served through the second (no failed connect, a bounded gap); the first
/// comes back and new channels go to it again.
void lose_one_gateway(gateway_fault fault)
{
    testbed first;
    testbed second;
    authorize_first_key_on(first, second);
    backend echo_backend(echo);
    const auto settings = two_gateway_settings(first, second);
    const auto bound = settings.keepalive * settings.keepalive_max_missed;
    pool_fixture f(settings);
    ASSERT_TRUE(f.wait_up(4)) << f.pool->status().last_error;
    ASSERT_EQ(gateway_of(*f.pool, 0).state, "up");
    ASSERT_EQ(gateway_of(*f.pool, 1).state, "up");

    // Spread: 8 channels, 4 per gateway (2 per session).
    std::vector<std::shared_ptr<channel>> channels;
    for (int i = 0; i < 8; ++i) {
        auto [ec, ch] = f.open(echo_backend.port());
        ASSERT_FALSE(ec) << ec.message();
        channels.push_back(ch);
    }
    EXPECT_EQ(gateway_of(*f.pool, 0).channels, 4U);
    EXPECT_EQ(gateway_of(*f.pool, 1).channels, 4U);
    auto reads = pending_reads(channels);

    std::atomic<bool> stop{false};
    auto loop = asio::co_spawn(f.client[0].get_executor(),
                               connect_loop(f.pool, echo_backend.port(), stop, settings.connect_timeout),
                               asio::use_future);
    std::this_thread::sleep_for(500ms);

    const auto victims = first.sshd_descendants();
    const int listener = first.sshd()["pid"].get<int>();
    const int signal_number = fault == gateway_fault::killed ? SIGKILL : SIGSTOP;
    ::kill(listener, signal_number);
    for (int pid : victims)
        ::kill(pid, signal_number);
    const auto lost = std::chrono::steady_clock::now();
    const bool detected = eventually([&] { return gateway_of(*f.pool, 0).state == "down"; }, bound + 2s);
    const auto detection = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - lost);
    // Clients on the lost gateway are cut with a clear reason; those on the other keep going.
    auto count_cut = [&] {
        return std::count_if(reads.begin(), reads.end(),
                             [](auto& r) { return r.wait_for(0s) == std::future_status::ready; });
    };
    eventually([&] { return count_cut() >= 4; }, bound + 2s);
    const auto cut = count_cut();
    for (auto& read : reads) {
        if (read.wait_for(0s) == std::future_status::ready) {
            EXPECT_EQ(read.get(), tunnel_errc::session_lost);
        }
    }
    std::this_thread::sleep_for(bound + 1s); // new clients while the first gateway is gone
    stop = true;
    ASSERT_EQ(loop.wait_for(20s), std::future_status::ready);
    const auto r = loop.get();
    std::cout << (fault == gateway_fault::killed ? "SIGKILL" : "SIGSTOP")
              << " of one gateway: detected after " << detection.count() << " ms (bound " << bound.count()
              << " ms); connect loop: " << r.attempts << " clients, " << r.failed_connects
              << " failed connects, " << r.cut << " cut, longest gap " << r.longest_gap.count() << " ms\n";
    for (const auto& reason : r.reasons)
        std::cout << "  " << reason << "\n";
    EXPECT_TRUE(detected);
    EXPECT_LE(detection, bound + 1s);
    EXPECT_EQ(cut, 4) << "exactly the channels of the lost gateway are cut";
    EXPECT_EQ(r.failed_connects, 0U);
    EXPECT_GT(r.attempts, 10U);
    // A dead gateway answers with a reset; a silent one costs at most the race delay per client.
    EXPECT_LT(r.longest_gap, fault == gateway_fault::killed ? 1000ms : 1500ms);
    EXPECT_NE(gateway_of(*f.pool, 0).last_error, "");
    EXPECT_EQ(gateway_of(*f.pool, 1).state, "up");
    EXPECT_TRUE(f.pool->healthy());
    close_all(channels);
    ASSERT_TRUE(eventually([&] { return f.pool->status().channels == 0; }, 5s))
        << f.pool->status().channels << " channels";

    // The first gateway comes back: its sessions return and take new channels again.
    std::optional<restarted_sshd> again;
    if (fault == gateway_fault::killed) {
        again.emplace(first);
    } else {
        for (int pid : victims)
            ::kill(pid, SIGCONT);
        ::kill(listener, SIGCONT);
    }
    ASSERT_TRUE(eventually(
        [&] {
            const auto g = gateway_of(*f.pool, 0);
            return g.state == "up" && g.sessions_up == 2;
        },
        15s))
        << gateway_of(*f.pool, 0).last_error;
    channels = open_echoed(f, echo_backend.port(), 8);
    ASSERT_EQ(channels.size(), 8U);
    EXPECT_EQ(gateway_of(*f.pool, 0).channels, 4U);
    EXPECT_EQ(gateway_of(*f.pool, 1).channels, 4U);
    close_all(channels);
}

TEST(Gateways, KilledGatewayCostsNoNewClientAndComesBack)
{
    lose_one_gateway(gateway_fault::killed);
}

TEST(Gateways, SilentGatewayCostsNoNewClientAndComesBack)
{
    lose_one_gateway(gateway_fault::stopped);
}

/// Scenario 12: the first gateway presents a host key other than known_hosts': it is refused
/// before authentication, retried and refused again each time (never trusted), reported, and
/// stays down while the second serves every client.
TEST(Gateways, ChangedHostKeyKeepsThatGatewayDownWhileTheOtherServes)
{
    testbed first;
    testbed second;
    authorize_first_key_on(first, second);
    backend echo_backend(echo);
    const auto attempts_before = auth_attempts(first.sshd_log());
    pool_fixture f(two_gateway_settings(first, second, true));
    ASSERT_TRUE(eventually([&] { return gateway_of(*f.pool, 1).sessions_up == 2; }, 10s))
        << f.pool->status().last_error;
    // Checked again on every retry (backoff from 0.5 s, capped at reconnect_max = 2 s).
    ASSERT_TRUE(eventually([&] { return gateway_of(*f.pool, 0).failures >= 4; }, 10s));
    const auto refused = gateway_of(*f.pool, 0);
    EXPECT_EQ(refused.state, "down");
    EXPECT_EQ(refused.sessions_up, 0U);
    EXPECT_NE(refused.last_error.find("CHANGED host key"), std::string::npos) << refused.last_error;
    auto channels = open_echoed(f, echo_backend.port(), 6);
    ASSERT_EQ(channels.size(), 6U);
    EXPECT_EQ(gateway_of(*f.pool, 1).channels, 6U);
    EXPECT_EQ(gateway_of(*f.pool, 0).channels, 0U);
    EXPECT_EQ(gateway_of(*f.pool, 0).state, "down");
    std::this_thread::sleep_for(300ms); // let sshd write its log
    EXPECT_EQ(auth_attempts(first.sshd_log()), attempts_before) << "an authentication was attempted";
    close_all(channels);
}

TEST(TunnelStrictKex, SshdLogsStrictKeyExchange)
{
    // Terrapin (CVE-2023-48795): libssh2 1.11.1 offers kex-strict-c-v00@openssh.com and sshd
    // (OpenSSH 9.2 with Debian's fix) says at DEBUG3 that it uses strict KEX ordering.
    testbed bed({"--sshd-config", "LogLevel DEBUG3"});
    pool_fixture f(settings_for(bed, 1));
    ASSERT_TRUE(f.wait_up(1)) << f.pool->status().last_error;
    EXPECT_TRUE(eventually([&] { return bed.sshd_log().find("strict KEX") != std::string::npos; }, 5s))
        << bed.sshd_log();
    EXPECT_NE(bed.sshd_log().find("kex-strict-c-v00@openssh.com"), std::string::npos);
}

// Not a test: single-stream upload throughput, tunnel vs `ssh -L` with the same cipher and MAC.
// Run with --gtest_also_run_disabled_tests --gtest_filter='*Throughput*' on a Release build.
// 13. A 40 ms round trip (tools/delay_relay between the pool and sshd, 20 ms each way): a bulk
//     transfer arrives byte-identical both ways, and 128 MiB from the gateway side arrive whole
//     while the channel window grows (its rate is printed; on this test bed it has stayed
//     below the 52 MB/s a 2 MiB window allows, for a reason not found yet: docs/benchmarks.md).
TEST_F(Tunnel, LongRoundTripBulkTransferArrivesIntact)
{
    child_process relay({TUNNELD_BINARY_DIR "/tools/delay_relay",
                         fmt::format("127.0.0.1:{}", bed_->sshd()["port"].get<int>()), "20"});
    const auto relay_port = static_cast<std::uint16_t>(std::stoi(relay.first_line));
    // The relay's address needs its own known_hosts line (the key is sshd's).
    const auto known_hosts = fs::temp_directory_path() / fmt::format("tunneld-relay-{}.known_hosts", ::getpid());
    std::ofstream(known_hosts) << fmt::format("[127.0.0.1]:{} {}\n", relay_port,
                                              bed_->sshd()["host_key_pub"].get<std::string>());
    auto settings = settings_for(*bed_, 1);
    settings.address.port = relay_port;
    settings.known_hosts = known_hosts;

    constexpr std::uint64_t total = 128ULL << 20;
    backend source([&](tcp::socket socket) -> asio::awaitable<void> {
        std::vector<char> buf(256 * 1024, 'z');
        for (std::uint64_t sent = 0; sent < total; sent += buf.size()) {
            auto [ec, n] = co_await asio::async_write(socket, asio::buffer(buf), use_tuple);
            if (ec) co_return;
        }
        socket.shutdown(tcp::socket::shutdown_send);
        co_await socket.async_read_some(asio::buffer(buf), use_tuple);
    });
    backend echo_backend(echo);
    {
        pool_fixture f(settings, 1);
        ASSERT_TRUE(f.wait_up(1)) << f.pool->status().last_error;
        const auto open_started = std::chrono::steady_clock::now();
        auto [ec, ch] = f.open(echo_backend.port());
        const auto open_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - open_started);
        ASSERT_FALSE(ec) << ec.message();
        EXPECT_GE(open_ms.count(), 40.0) << "the relay delays a channel open by a round trip";
        auto r = run_on(ch->get_executor(), echo_transfer(ch, 16 << 20, 7), 60s);
        EXPECT_EQ(r.read_ec, asio::error::eof) << r.read_ec.message();
        EXPECT_EQ(r.received, 16U << 20);
        EXPECT_EQ(r.sent_hash, r.received_hash);
        asio::post(ch->get_executor(), [ch] { ch->close(); });

        auto [sec, down] = f.open(source.port());
        ASSERT_FALSE(sec) << sec.message();
        auto pull = [](std::shared_ptr<channel> c) -> asio::awaitable<std::uint64_t> {
            std::vector<char> buf(64 * 1024);
            std::uint64_t got = 0;
            for (;;) {
                auto [rec, n] = co_await c->async_read_some(asio::buffer(buf), use_tuple);
                if (rec) co_return got;
                got += n;
            }
        };
        const auto started = std::chrono::steady_clock::now();
        const auto got = run_on(down->get_executor(), pull(down), 60s);
        const auto seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
        const double mb_per_s = static_cast<double>(got) / seconds / 1e6;
        std::cout << "40 ms path, gateway -> client: " << (got >> 20) << " MiB in " << seconds << " s, "
                  << mb_per_s << " MB/s (a 2 MiB window caps at 52 MB/s)\n";
        EXPECT_EQ(got, total);
        asio::post(down->get_executor(), [down] { down->close(); });
    }
    fs::remove(known_hosts);
}

TEST_F(Tunnel, DISABLED_ThroughputAgainstSshL)
{
    std::atomic<std::uint64_t> sunk{0};
    backend sink([&](tcp::socket socket) -> asio::awaitable<void> {
        std::vector<char> buf(256 * 1024);
        for (;;) {
            auto [ec, n] = co_await socket.async_read_some(asio::buffer(buf), use_tuple);
            if (ec) co_return;
            sunk += n;
        }
    });
    constexpr std::uint64_t total = 512ULL << 20;
    auto upload = [&](auto& stream) -> asio::awaitable<double> {
        std::vector<char> buf(64 * 1024, 'y');
        const auto t0 = std::chrono::steady_clock::now();
        for (std::uint64_t sent = 0; sent < total; sent += buf.size())
            co_await asio::async_write(stream, asio::buffer(buf), asio::use_awaitable);
        co_return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    };
    double tunnel_s = 0;
    {
        pool_fixture f(settings_for(*bed_, 1));
        ASSERT_TRUE(f.wait_up(1));
        // Idle channels with a pending read, as proxy pumps keep them: they must not tax the bulk one.
        const int idle_count =
            std::getenv("TUNNEL_IDLE_CHANNELS") ? std::atoi(std::getenv("TUNNEL_IDLE_CHANNELS")) : 0;
        std::vector<std::shared_ptr<channel>> idle;
        std::array<char, 16> idle_buf{};
        for (int i = 0; i < idle_count; ++i) {
            auto [iec, ich] = f.open(sink.port());
            ASSERT_FALSE(iec);
            asio::post(ich->get_executor(), [ich, &idle_buf] {
                ich->async_read_some(asio::buffer(idle_buf), [](error_code, std::size_t) {});
            });
            idle.push_back(ich);
        }
        auto [ec, ch] = f.open(sink.port());
        ASSERT_FALSE(ec);
        tunnel_s = run_on(ch->get_executor(), upload(*ch), 120s);
        for (auto& i : idle)
            asio::post(i->get_executor(), [i] { i->close(); });
        asio::post(ch->get_executor(), [ch] { ch->close(); });
    }
    const auto local_port = std::to_string(20000 + (::getpid() % 20000));
    const auto command = "ssh -F none -N -p " + std::to_string(bed_->sshd()["port"].get<int>()) + " -i " +
                         bed_->sshd()["user_key"].get<std::string>() +
                         " -o UserKnownHostsFile=" + bed_->sshd()["known_hosts"].get<std::string>() +
                         " -o StrictHostKeyChecking=yes -o BatchMode=yes -c aes128-ctr -m hmac-sha2-256 -L " +
                         local_port + ":127.0.0.1:" + std::to_string(sink.port()) +
                         " root@127.0.0.1 & echo $!";
    FILE* p = ::popen(command.c_str(), "r");
    int ssh_pid = 0;
    ASSERT_EQ(std::fscanf(p, "%d", &ssh_pid), 1);
    ::pclose(p);
    std::this_thread::sleep_for(1500ms);
    asio::io_context io;
    tcp::socket socket(io);
    socket.connect({asio::ip::make_address("127.0.0.1"), static_cast<std::uint16_t>(std::stoi(local_port))});
    auto future = asio::co_spawn(io, upload(socket), asio::use_future);
    io.run();
    const double ssh_s = future.get();
    ::kill(ssh_pid, SIGTERM);
    const double mib = static_cast<double>(total >> 20);
    std::cout << "tunnel " << mib / tunnel_s << " MiB/s, ssh -L " << mib / ssh_s << " MiB/s, ratio "
              << ssh_s / tunnel_s << "\n";
}

} // namespace
