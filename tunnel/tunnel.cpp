#include "tunnel/tunnel.hpp"

#include "tunnel/channel.hpp"
#include "tunnel/decisions.hpp"
#include "tunnel/transport.hpp"

#include <boost/asio/any_completion_handler.hpp>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/associated_cancellation_slot.hpp>
#include <boost/asio/bind_executor.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <cerrno>
#include <deque>
#include <fmt/format.h>
#include <fstream>
#include <libssh2.h>
#include <mutex>
#include <random>
#include <spdlog/spdlog.h>
#include <stdexcept>
#include <sys/stat.h>

namespace tunneld::tunnel {

namespace {

constexpr auto use_tuple = asio::as_tuple(asio::use_awaitable);
using detail::clock;

class tunnel_category_impl final : public std::error_category {
public:
    const char* name() const noexcept override { return "tunnel"; }
    std::string message(int value) const override
    {
        switch (static_cast<tunnel_errc>(value)) {
        case tunnel_errc::no_healthy_session:
            return "no healthy SSH session to the gateway";
        case tunnel_errc::host_key_unknown:
            return "the gateway's host key is not in known_hosts";
        case tunnel_errc::host_key_mismatch:
            return "the gateway's host key does not match known_hosts";
        case tunnel_errc::authentication_failed:
            return "authentication to the gateway failed";
        case tunnel_errc::channel_open_refused:
            return "the gateway refused the channel";
        case tunnel_errc::session_lost:
            return "the SSH session to the gateway was lost";
        case tunnel_errc::connect_timeout:
            return "no SSH session within connect_timeout";
        case tunnel_errc::key_permissions:
            return "the identity file is readable by group or others";
        case tunnel_errc::handshake_failed:
            return "SSH handshake failed";
        }
        return "unknown tunnel error";
    }
};

/// What the sessions of one gateway share; read by the pool from any thread.
struct gateway_health {
    explicit gateway_health(config::endpoint where) : address(std::move(where)) {}

    const config::endpoint address;
    /// A session of this gateway failed (or could not connect) and none has been established
    /// since: new channels go to other gateways while any other has a session up.
    std::atomic<bool> down{false};
    std::atomic<std::uint64_t> failures{0};

    void set_error(std::string text)
    {
        std::lock_guard lock(mutex_);
        last_error_ = std::move(text);
    }
    std::string error() const
    {
        std::lock_guard lock(mutex_);
        return last_error_;
    }

private:
    mutable std::mutex mutex_;
    std::string last_error_; ///< guarded by mutex_; the last failure, kept after recovery
};

/// One slot of the pool: keeps one transport to its gateway up on its io_context, reconnecting
/// with backoff.
class session : public std::enable_shared_from_this<session> {
public:
    /// `settings` is the tunnel's, with `address` set to this session's gateway.
    session(asio::io_context& loop, std::shared_ptr<const config::tunnel_config> settings, unsigned index,
            std::shared_ptr<std::atomic<unsigned>> pool_up, std::shared_ptr<gateway_health> gateway)
        : executor_(loop.get_executor()), settings_owner_(std::move(settings)), settings_(*settings_owner_),
          index_(index), pool_up_(std::move(pool_up)), gateway_(std::move(gateway)),
          stats_(std::make_shared<detail::session_stats>()), backoff_timer_(executor_),
          random_(std::random_device{}() + index)
    {
    }

    const std::shared_ptr<gateway_health>& gateway() const { return gateway_; }

    /// Opens started on this session and not completed yet: counted as load, so that a burst
    /// of clients spreads before any of their channels exists.
    std::atomic<unsigned> opening{0};

    asio::any_io_executor executor() const { return executor_; }
    const std::shared_ptr<detail::session_stats>& stats() const { return stats_; }

    void start() { asio::co_spawn(executor_, run(shared_from_this()), asio::detached); }

    /// Thread-safe.
    void stop()
    {
        asio::post(executor_, [self = shared_from_this()] {
            self->stopped_ = true;
            self->backoff_timer_.cancel();
            if (self->transport_) self->transport_->fail(asio::error::operation_aborted, "tunnel stopped");
        });
    }

    /// Runs on executor().
    asio::awaitable<std::pair<std::error_code, std::shared_ptr<channel>>> open(std::string host,
                                                                               std::uint16_t port)
    {
        auto current = transport_;
        if (!current || current->failed() || !stats_->up)
            co_return std::pair{make_error_code(tunnel_errc::no_healthy_session), std::shared_ptr<channel>{}};
        auto [ec, ch] = co_await asio::async_initiate<decltype(use_tuple), void(boost::system::error_code,
                                                                                std::shared_ptr<channel>)>(
            [&](auto handler) {
                current->async_open(std::move(host), port,
                                    detail::transport::open_handler(std::move(handler)));
            },
            use_tuple);
        co_return std::pair{static_cast<std::error_code>(ec), std::move(ch)};
    }

private:
    std::string label() const
    {
        return fmt::format("tunnel={} gateway={} session={}", settings_.name, gateway_->address.to_string(),
                           index_);
    }

    /// Called on every failure but a requested stop: the gateway is down until a session is back.
    void gateway_failed(const std::string& reason)
    {
        ++gateway_->failures;
        gateway_->set_error(reason);
        if (!gateway_->down.exchange(true))
            spdlog::warn("tunnel={} gateway={} state=down reason=\"{}\"", settings_.name,
                         gateway_->address.to_string(), reason);
    }

    asio::awaitable<void> run([[maybe_unused]] std::shared_ptr<session> self)
    {
        unsigned attempt = 0;
        bool was_up = false;
        std::uniform_real_distribution<double> unit(0.0, 1.0);
        while (!stopped_) {
            auto current = std::make_shared<detail::transport>(executor_, settings_owner_, index_, stats_);
            transport_ = current;
            current->set_recycle_check([pool_up = pool_up_] { return pool_up->load() > 1; });
            asio::steady_timer deadline(executor_);
            deadline.expires_after(settings_.connect_timeout);
            deadline.async_wait(
                [weak = std::weak_ptr(current), timeout = settings_.connect_timeout](auto ec) {
                    if (ec) return;
                    if (auto t = weak.lock())
                        t->fail(make_error_code(tunnel_errc::connect_timeout),
                                fmt::format("no session within connect_timeout ({} ms)", timeout.count()));
                });
            auto ec = co_await current->establish();
            deadline.cancel();
            if (!ec && !current->failed()) {
                if (was_up) ++stats_->reconnects;
                was_up = true;
                attempt = 0;
                stats_->up = true;
                ++*pool_up_;
                stats_->set_error({});
                if (gateway_->down.exchange(false))
                    spdlog::info("tunnel={} gateway={} state=up", settings_.name, gateway_->address.to_string());
                spdlog::info("{} state=up address={}:{} user={}", label(), settings_.address.host,
                             settings_.address.port, settings_.user);
                co_await current->serve();
                stats_->up = false;
                --*pool_up_;
                if (!stopped_) {
                    spdlog::warn("{} state=down reason=\"{}\"", label(), current->failure_reason());
                    gateway_failed(current->failure_reason());
                }
            } else if (!stopped_) {
                spdlog::warn("{} state=connect_failed reason=\"{}\"", label(), current->failure_reason());
                gateway_failed(current->failure_reason());
            }
            stats_->set_error(current->failure_reason());
            transport_.reset();
            if (stopped_) break;
            const auto delay = backoff_delay(attempt++, backoff_base, settings_.reconnect_max, unit(random_));
            spdlog::info("{} state=reconnect in_ms={}", label(), delay.count());
            backoff_timer_.expires_after(delay);
            co_await backoff_timer_.async_wait(use_tuple);
        }
        spdlog::info("{} state=stopped", label());
    }

    asio::any_io_executor executor_;
    std::shared_ptr<const config::tunnel_config> settings_owner_;
    const config::tunnel_config& settings_; ///< *settings_owner_
    unsigned index_;
    std::shared_ptr<std::atomic<unsigned>> pool_up_; ///< sessions up in the whole pool
    std::shared_ptr<gateway_health> gateway_;
    std::shared_ptr<detail::session_stats> stats_;
    asio::steady_timer backoff_timer_;
    std::mt19937_64 random_;
    std::shared_ptr<detail::transport> transport_; ///< the current one; loop thread only
    bool stopped_ = false;                         ///< loop thread only
};

/// The channel opens of one open_channel call, started on sessions of one or more gateways.
/// Lives on the caller's executor; an attempt that completes after the caller took a result (or
/// gave up) has its channel closed.
struct open_race {
    using result = std::pair<std::error_code, std::shared_ptr<channel>>;
    struct arrival {
        std::size_t gateway;
        result outcome;
    };

    using wait_handler = asio::any_completion_handler<void(boost::system::error_code)>;

    explicit open_race(asio::any_io_executor caller) : race_timer(std::move(caller)) {}

    /// Runs on the caller's executor.
    void arrive(std::size_t gateway, result outcome)
    {
        if (finished) {
            if (auto ch = std::move(outcome.second))
                asio::post(ch->get_executor(), [ch] { ch->close(); });
            return;
        }
        arrivals.push_back({gateway, std::move(outcome)});
        wake({});
    }

    /// Completes with success at the next arrival, asio::error::timed_out when the race timer
    /// (armed by the caller) expires first, operation_aborted when the caller is cancelled. An
    /// arrival resumes the caller directly: a timer cancelled to wake it would cost a trip
    /// through the event loop per open.
    template <class Token> auto async_wait_arrival(Token&& token)
    {
        return asio::async_initiate<Token, void(boost::system::error_code)>(
            [this](auto handler) {
                auto slot = asio::get_associated_cancellation_slot(handler);
                if (slot.is_connected())
                    slot.assign([this](asio::cancellation_type) {
                        if (!waiter) return;
                        // Not take_waiter(): clearing the slot here would destroy this lambda.
                        wait_handler h;
                        h.swap(waiter);
                        asio::post(race_timer.get_executor(), [h = std::move(h)]() mutable {
                            std::move(h)(asio::error::operation_aborted);
                        });
                    });
                // Boost 1.81's any_completion_handler move assignment recurses forever: swap.
                wait_handler taken(std::move(handler));
                waiter.swap(taken);
            },
            token);
    }

    /// Wakes the caller with `ec` if it waits. Runs on the caller's executor.
    void wake(boost::system::error_code ec)
    {
        if (waiter) take_waiter()(ec);
    }

    wait_handler take_waiter()
    {
        wait_handler h;
        h.swap(waiter);
        asio::get_associated_cancellation_slot(h).clear();
        return h;
    }

    /// The caller is done: close the channels it did not take.
    void finish()
    {
        finished = true;
        for (auto& a : arrivals)
            if (auto ch = std::move(a.outcome.second)) asio::post(ch->get_executor(), [ch] { ch->close(); });
        arrivals.clear();
    }

    asio::steady_timer race_timer; ///< armed only when another gateway could take the open
    std::uint64_t timer_armed = 0; ///< counts the race timer's waits
    wait_handler waiter;
    std::deque<arrival> arrivals;
    bool finished = false;
};

class session_pool final : public pool {
public:
    session_pool(const config::tunnel_config& settings, const std::vector<asio::io_context*>& loops)
        : settings_owner_(std::make_shared<const config::tunnel_config>(settings)),
          settings_(*settings_owner_)
    {
        const unsigned per_gateway = std::max(1U, settings_.sessions);
        unsigned index = 0;
        for (const auto& address : settings_.gateways()) {
            gateways_.push_back(std::make_shared<gateway_health>(address));
            // The transport reads the gateway from `address`: each gateway's sessions get a copy
            // of the tunnel's settings naming it.
            auto own = std::make_shared<config::tunnel_config>(settings_);
            own->address = address;
            own->more_gateways.clear();
            for (unsigned i = 0; i < per_gateway; ++i, ++index) {
                sessions_.push_back(std::make_shared<session>(*loops[index % loops.size()], own, index, pool_up_,
                                                              gateways_.back()));
                gateway_of_.push_back(gateways_.size() - 1);
                loop_of_.push_back(index % static_cast<unsigned>(loops.size()));
            }
        }
        for (auto& s : sessions_)
            s->start();
    }
    ~session_pool() override { stop(); }

    asio::awaitable<std::pair<std::error_code, std::shared_ptr<channel>>>
    open_channel(std::string host, std::uint16_t port) override
    {
        using result = open_race::result;
        const auto caller = co_await asio::this_coro::executor;
        const auto started = clock::now();
        auto race = std::make_shared<open_race>(caller);
        struct finish_on_exit {
            std::shared_ptr<open_race> race;
            ~finish_on_exit() { race->finish(); }
        } guard{race};

        std::vector<bool> tried(sessions_.size(), false);
        std::vector<unsigned> in_flight(gateways_.size(), 0);
        std::size_t pending = 0;
        result last{make_error_code(tunnel_errc::no_healthy_session), nullptr};

        // Starts an open on the least-loaded session not tried yet; `other_gateway` also skips
        // gateways that already have an open in flight (a race). False when there is none.
        auto launch = [&](bool other_gateway) {
            const auto pick = choose(caller, next_++, [&](std::size_t i) {
                return !tried[i] && !(other_gateway && in_flight[gateway_of_[i]] > 0);
            });
            if (!pick) return false;
            tried[*pick] = true;
            const auto g = gateway_of_[*pick];
            ++in_flight[g];
            ++pending;
            auto chosen = sessions_[*pick];
            ++chosen->opening;
            // Runs on the session's thread; the result comes back on the caller's executor.
            asio::co_spawn(chosen->executor(), chosen->open(host, port),
                           asio::bind_executor(caller, [race, g, chosen](std::exception_ptr e, result outcome) {
                               --chosen->opening;
                               if (e) outcome = {make_error_code(tunnel_errc::session_lost), nullptr};
                               race->arrive(g, std::move(outcome));
                           }));
            return true;
        };

        if (stopped_ || !launch(false)) co_return last;
        const auto delay = race_delay(settings_.connect_timeout, settings_.keepalive);
        auto race_at = clock::now() + delay;
        for (;;) {
            while (!race->arrivals.empty()) {
                auto arrived = std::move(race->arrivals.front());
                race->arrivals.pop_front();
                --in_flight[arrived.gateway];
                --pending;
                if (!arrived.outcome.first && arrived.outcome.second) {
                    count_open(clock::now() - started);
                    co_return std::move(arrived.outcome);
                }
                last = std::move(arrived.outcome);
                // A session that died between the choice and the open is skipped; a refusal is
                // final unless another gateway is still answering.
                const bool retry = last.first == tunnel_errc::session_lost ||
                                   last.first == tunnel_errc::no_healthy_session;
                if (retry && !stopped_ && launch(false)) race_at = clock::now() + delay;
            }
            if (pending == 0) co_return last;
            // With one gateway nothing is raced: no timer to arm and cancel per open.
            const bool timed = gateways_.size() > 1 && race_at != clock::time_point::max();
            if (timed) {
                race->race_timer.expires_at(race_at);
                // An expiry already queued when an arrival cancelled it must not wake a later wait.
                race->race_timer.async_wait([race, armed = ++race->timer_armed](boost::system::error_code ec) {
                    if (!ec && armed == race->timer_armed) race->wake(asio::error::timed_out);
                });
            }
            auto [ec] = co_await race->async_wait_arrival(use_tuple);
            if (timed) {
                ++race->timer_armed;
                race->race_timer.cancel();
            }
            if ((co_await asio::this_coro::cancellation_state).cancelled() != asio::cancellation_type::none)
                co_return result{make_error_code(std::errc::operation_canceled), nullptr};
            if (ec == asio::error::timed_out && race->arrivals.empty()) {
                // Unanswered for race_delay: the gateway may be silent, try another one too.
                race_at = launch(true) ? clock::now() + delay : clock::time_point::max();
            }
        }
    }

    asio::any_io_executor open_executor(const asio::any_io_executor& caller) const override
    {
        const auto pick = choose(caller, next_.load(), [](std::size_t) { return true; });
        return pick ? sessions_[*pick]->executor() : caller;
    }

    tunnel_status status() const override
    {
        tunnel_status out;
        out.name = settings_.name;
        out.sessions = static_cast<unsigned>(sessions_.size());
        for (const auto& g : gateways_) {
            if (!out.address.empty()) out.address += ',';
            out.address += g->address.to_string();
            gateway_status gateway;
            gateway.address = g->address.to_string();
            gateway.sessions = std::max(1U, settings_.sessions);
            gateway.failures = g->failures.load();
            gateway.last_error = g->error();
            out.gateways.push_back(std::move(gateway));
        }
        std::int64_t latest = 0;
        for (std::size_t i = 0; i < sessions_.size(); ++i) {
            const auto& st = *sessions_[i]->stats();
            auto& gateway = out.gateways[gateway_of_[i]];
            const unsigned up = st.up ? 1 : 0;
            out.sessions_up += up;
            gateway.sessions_up += up;
            const unsigned channels = st.channels;
            out.channels += channels;
            gateway.channels += channels;
            out.by_session.push_back({gateway.address, st.up.load(), channels, loop_of_[i]});
            out.bytes_up += st.bytes_up;
            out.bytes_down += st.bytes_down;
            out.reconnects += st.reconnects;
            out.channel_open_failures += st.open_failures;
            latest = std::max(latest, st.last_receive_ns.load());
            if (auto e = st.error(); !e.empty() && out.last_error.empty()) out.last_error = std::move(e);
        }
        for (std::size_t g = 0; g < gateways_.size(); ++g)
            out.gateways[g].state =
                std::string(to_string(gateway_state_of(out.gateways[g].sessions_up, gateways_[g]->down.load())));
        if (latest != 0) {
            const auto since = clock::now().time_since_epoch() - std::chrono::nanoseconds(latest);
            out.since_last_receive = std::chrono::duration_cast<std::chrono::milliseconds>(since);
        }
        for (std::size_t i = 0; i < open_counts_.size(); ++i)
            out.channel_open.counts[i] = open_counts_[i].load();
        out.channel_open.sum = std::chrono::nanoseconds(open_ns_.load());
        return out;
    }

    bool healthy() const override
    {
        for (auto& s : sessions_)
            if (s->stats()->up) return true;
        return false;
    }

    const config::tunnel_config& settings() const override { return settings_; }

    void stop() override
    {
        if (stopped_.exchange(true)) return;
        for (auto& s : sessions_)
            s->stop();
    }

private:
    /// The session an open from `caller` goes to: the least loaded among the healthy ones that
    /// `eligible` allows (decisions.hpp's least_loaded), `rotation` spreading ties.
    template <class Eligible>
    std::optional<std::size_t> choose(const asio::any_io_executor& caller, std::size_t rotation,
                                      Eligible eligible) const
    {
        std::vector<session_load> loads;
        loads.reserve(sessions_.size());
        for (std::size_t i = 0; i < sessions_.size(); ++i) {
            const auto& s = *sessions_[i];
            loads.push_back({eligible(i) && s.stats()->up.load(), s.stats()->channels.load() + s.opening.load(),
                             gateways_[gateway_of_[i]]->down.load(), s.opening.load(), s.executor() == caller});
        }
        return least_loaded(loads, rotation % sessions_.size());
    }

    /// Counts one channel handed out after `took` (open_channel runs on many callers' threads).
    void count_open(clock::duration took)
    {
        const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(took);
        ++open_counts_[channel_open_bucket(ns)];
        open_ns_ += ns.count();
    }

    std::shared_ptr<const config::tunnel_config> settings_owner_;
    const config::tunnel_config& settings_;
    std::shared_ptr<std::atomic<unsigned>> pool_up_ = std::make_shared<std::atomic<unsigned>>(0);
    std::vector<std::shared_ptr<gateway_health>> gateways_; ///< in configuration order
    std::vector<std::shared_ptr<session>> sessions_;         ///< grouped by gateway
    std::vector<std::size_t> gateway_of_;                    ///< sessions_[i]'s index in gateways_
    std::vector<unsigned> loop_of_;                          ///< sessions_[i]'s index in the pool's loops
    std::atomic<std::size_t> next_{0};
    std::atomic<bool> stopped_{false};
    std::array<std::atomic<std::uint64_t>, channel_open_bounds.size() + 1> open_counts_{}; ///< see channel_open_latency
    std::atomic<std::int64_t> open_ns_{0};
};

[[noreturn]] void refuse(tunnel_errc errc, const std::string& what)
{
    throw std::system_error(make_error_code(errc), what);
}

void check_files(const config::tunnel_config& settings)
{
    if (!settings.uses_agent()) {
        const auto path = settings.identity.string();
        struct stat info {};
        if (::stat(path.c_str(), &info) != 0)
            refuse(tunnel_errc::authentication_failed,
                   fmt::format("tunnel {}: cannot read identity file {}: {}", settings.name, path,
                               std::strerror(errno)));
        if (key_mode_too_open(info.st_mode))
            refuse(
                tunnel_errc::key_permissions,
                fmt::format("tunnel {}: identity file {} has mode {}; it must not be accessible by group or "
                            "others (chmod 600 {})",
                            settings.name, path, mode_string(info.st_mode), path));
        if (!std::ifstream(path))
            refuse(tunnel_errc::authentication_failed,
                   fmt::format("tunnel {}: cannot read identity file {}: {}", settings.name, path,
                               std::strerror(errno)));
    }
    if (!std::ifstream(settings.known_hosts))
        refuse(tunnel_errc::host_key_unknown,
               fmt::format("tunnel {}: cannot read known_hosts {}: {}", settings.name,
                           settings.known_hosts.string(), std::strerror(errno)));
}

} // namespace

const std::error_category& tunnel_category() noexcept
{
    static const tunnel_category_impl category;
    return category;
}

std::error_code make_error_code(tunnel_errc errc) noexcept
{
    return {static_cast<int>(errc), tunnel_category()};
}

void init_library()
{
    static std::once_flag once;
    std::call_once(once, [] {
        if (libssh2_init(0) != 0) throw std::runtime_error("libssh2_init failed");
    });
}

std::shared_ptr<pool> start_pool(const config::tunnel_config& settings, std::vector<asio::io_context*> loops)
{
    if (loops.empty()) throw std::invalid_argument("start_pool: no io_context to run sessions on");
    init_library();
    check_files(settings);
    return std::make_shared<session_pool>(settings, loops);
}

} // namespace tunneld::tunnel
