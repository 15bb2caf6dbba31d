#pragma once
// Test bed pieces for fleet/ against a real etcd: a throwaway single-node etcd on loopback
// (data directory on tmpfs, free ports, killed with the test), an event loop on its own thread,
// a TCP relay that can freeze or cut the connections through it, and small helpers for the tests.

#include "fleet/etcd_client.hpp"
#include "free_port.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/use_future.hpp>
#include <boost/asio/write.hpp>
#include <chrono>
#include <csignal>
#include <fcntl.h>
#include <filesystem>
#include <fstream>
#include <future>
#include <set>
#include <sstream>
#include <string>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>
#include <vector>

namespace tunneld::fleet::testbed {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using namespace std::chrono_literals;

using test_bed::free_port;

inline bool port_open(std::uint16_t port)
{
    asio::io_context ctx;
    tcp::socket socket(ctx);
    boost::system::error_code ec;
    socket.connect({asio::ip::make_address("127.0.0.1"), port}, ec);
    return !ec;
}

/// `etcd` on 127.0.0.1 with a data directory under /dev/shm; stopped and removed with the object.
class etcd_server {
public:
    /// `tls`: clients connect with https:// (the TLS flags come in `extra`).
    explicit etcd_server(std::vector<std::string> extra = {}, bool tls = false)
        : client_port_(free_port()), peer_port_(free_port()), extra_(std::move(extra)), tls_(tls)
    {
        std::string pattern = "/dev/shm/tunneld-etcd-XXXXXX";
        if (!::mkdtemp(pattern.data())) throw std::runtime_error("mkdtemp");
        dir_ = pattern;
        start();
    }
    ~etcd_server()
    {
        stop();
        std::filesystem::remove_all(dir_);
    }

    std::uint16_t port() const { return client_port_; }
    std::string url() const
    {
        return (tls_ ? "https://127.0.0.1:" : "http://127.0.0.1:") + std::to_string(client_port_);
    }
    const std::filesystem::path& directory() const { return dir_; }
    pid_t pid() const { return pid_; }

    void start()
    {
        const std::string client = url();
        const std::string peer = "http://127.0.0.1:" + std::to_string(peer_port_);
        std::vector<std::string> args{"/usr/bin/etcd",
                                      "--name=t",
                                      "--data-dir=" + (dir_ / "data").string(),
                                      "--listen-client-urls=" + client,
                                      "--advertise-client-urls=" + client,
                                      "--listen-peer-urls=" + peer,
                                      "--initial-advertise-peer-urls=" + peer,
                                      "--initial-cluster=t=" + peer,
                                      "--experimental-watch-progress-notify-interval=500ms",
                                      "--log-outputs=stderr"};
        args.insert(args.end(), extra_.begin(), extra_.end());
        const std::string log = (dir_ / "etcd.log").string();
        pid_ = ::fork();
        if (pid_ == 0) {
            ::prctl(PR_SET_PDEATHSIG, SIGKILL);
            const int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0600);
            ::dup2(fd, 1);
            ::dup2(fd, 2);
            std::vector<char*> argv;
            for (auto& a : args)
                argv.push_back(a.data());
            argv.push_back(nullptr);
            ::execv(argv[0], argv.data());
            ::_exit(127);
        }
        const auto deadline = std::chrono::steady_clock::now() + 30s;
        while (!port_open(client_port_)) {
            if (std::chrono::steady_clock::now() > deadline) throw std::runtime_error("etcd did not start: " + log_text());
            std::this_thread::sleep_for(20ms);
        }
    }

    /// SIGTERM (or `sig`) and wait: the port is closed when this returns.
    void stop(int sig = SIGTERM)
    {
        if (pid_ <= 0) return;
        ::kill(pid_, SIGCONT);
        ::kill(pid_, sig);
        int status = 0;
        ::waitpid(pid_, &status, 0);
        pid_ = -1;
    }
    void restart()
    {
        stop();
        start();
    }
    void freeze() { ::kill(pid_, SIGSTOP); }
    void thaw() { ::kill(pid_, SIGCONT); }

    std::string log_text() const
    {
        std::ifstream in(dir_ / "etcd.log");
        std::stringstream text;
        text << in.rdbuf();
        return text.str();
    }

private:
    std::filesystem::path dir_;
    std::uint16_t client_port_;
    std::uint16_t peer_port_;
    std::vector<std::string> extra_;
    bool tls_ = false;
    pid_t pid_ = -1;
};

/// One io_context run by its own thread for the test's lifetime.
class event_loop {
public:
    event_loop() : guard_(ctx_.get_executor()), thread_([this] { ctx_.run(); }) {}
    ~event_loop()
    {
        guard_.reset();
        ctx_.stop();
        thread_.join();
    }
    asio::io_context& context() { return ctx_; }
    asio::any_io_executor executor() { return ctx_.get_executor(); }

    /// Runs `a` on the loop and waits for its result.
    template <class T>
    T run(asio::awaitable<T> a)
    {
        return asio::co_spawn(ctx_, std::move(a), asio::use_future).get();
    }
    /// Runs `f` on the loop thread and waits for its result (for objects that live on the loop).
    template <class F>
    auto on_loop(F f) -> decltype(f())
    {
        std::packaged_task<decltype(f())()> task(std::move(f));
        auto result = task.get_future();
        asio::post(ctx_, [&task] { task(); });
        return result.get();
    }

private:
    asio::io_context ctx_;
    asio::executor_work_guard<asio::io_context::executor_type> guard_;
    std::thread thread_;
};

/// A TCP relay from a free loopback port to `target`: `freeze()` stops copying bytes on every
/// connection (a black hole: the peer sees a stall), `cut()` closes every connection and thaws.
class relay {
public:
    explicit relay(std::uint16_t target)
        : target_(target), acceptor_(loop_.context(), {asio::ip::make_address("127.0.0.1"), 0})
    {
        asio::co_spawn(loop_.context(), accept(), asio::detached);
    }
    ~relay()
    {
        loop_.on_loop([this] {
            acceptor_.close();
            for (auto& s : sockets_)
                s->close();
            return 0;
        });
        // Let the pumps see their closed sockets and end before the members go.
        std::this_thread::sleep_for(50ms);
        loop_.on_loop([] { return 0; });
    }
    std::uint16_t port() const { return acceptor_.local_endpoint().port(); }
    std::string url() const { return "http://127.0.0.1:" + std::to_string(port()); }
    void freeze()
    {
        loop_.on_loop([this] { return frozen_ = true; });
    }
    void cut()
    {
        loop_.on_loop([this] {
            for (auto& s : sockets_)
                s->close();
            sockets_.clear();
            frozen_ = false;
            return 0;
        });
    }

private:
    asio::awaitable<void> accept()
    {
        for (;;) {
            auto [ec, client] = co_await acceptor_.async_accept(asio::as_tuple(asio::use_awaitable));
            if (ec) co_return;
            auto upstream = std::make_shared<tcp::socket>(loop_.context());
            auto downstream = std::make_shared<tcp::socket>(std::move(client));
            auto [cec] = co_await upstream->async_connect({asio::ip::make_address("127.0.0.1"), target_},
                                                          asio::as_tuple(asio::use_awaitable));
            if (cec) continue;
            sockets_.insert(upstream);
            sockets_.insert(downstream);
            asio::co_spawn(loop_.context(), pump(downstream, upstream), asio::detached);
            asio::co_spawn(loop_.context(), pump(upstream, downstream), asio::detached);
        }
    }
    asio::awaitable<void> pump(std::shared_ptr<tcp::socket> from, std::shared_ptr<tcp::socket> to)
    {
        std::array<char, 16384> buf;
        asio::steady_timer wait(loop_.context());
        for (;;) {
            while (frozen_ && from->is_open()) {
                wait.expires_after(10ms);
                co_await wait.async_wait(asio::as_tuple(asio::use_awaitable));
            }
            auto [ec, n] = co_await from->async_read_some(asio::buffer(buf), asio::as_tuple(asio::use_awaitable));
            // Bytes read just before a freeze are held back too: frozen means nothing gets through.
            while (frozen_ && from->is_open()) {
                wait.expires_after(10ms);
                co_await wait.async_wait(asio::as_tuple(asio::use_awaitable));
            }
            if (ec || !to->is_open()) break;
            auto [wec, _] = co_await asio::async_write(*to, asio::buffer(buf, n), asio::as_tuple(asio::use_awaitable));
            if (wec) break;
        }
        boost::system::error_code ignored;
        to->shutdown(tcp::socket::shutdown_send, ignored);
    }

    std::uint16_t target_;
    event_loop loop_;
    tcp::acceptor acceptor_;
    std::set<std::shared_ptr<tcp::socket>> sockets_;
    bool frozen_ = false;
};

/// The client endpoint of an etcd URL on loopback.
inline config::etcd_endpoint endpoint_of(const std::string& url)
{
    const auto colon = url.rfind(':');
    return {url.starts_with("https://"), {"127.0.0.1", static_cast<std::uint16_t>(std::stoi(url.substr(colon + 1)))}};
}

inline etcd::client_options options(std::vector<std::string> urls)
{
    etcd::client_options o;
    for (auto& u : urls)
        o.endpoints.push_back(endpoint_of(u));
    return o;
}

/// The value of a call that must succeed (throws with etcd's error otherwise).
template <class T>
T expect_ok(etcd::result<T> r)
{
    if (!r) throw std::runtime_error("etcd call failed: " + r.err().to_string());
    return std::move(*r);
}

/// Waits up to `limit` for `predicate` (evaluated on the loop) to hold.
template <class F>
bool eventually(event_loop& loop, std::chrono::milliseconds limit, F predicate)
{
    const auto deadline = std::chrono::steady_clock::now() + limit;
    while (std::chrono::steady_clock::now() < deadline) {
        if (loop.on_loop(predicate)) return true;
        std::this_thread::sleep_for(20ms);
    }
    return loop.on_loop(predicate);
}

} // namespace tunneld::fleet::testbed
