#pragma once
// The connection registry: every live client of a service, which side it is on, and how to cut it.
// Thread-safe; cutting a client always runs on the thread that owns its sockets.

#include "proxy/close_reason.hpp"
#include "proxy/redis_session.hpp"
#include "proxy/router.hpp"

#include <atomic>
#include <boost/asio/any_io_executor.hpp>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

namespace tunneld::proxy {

namespace asio = boost::asio;

/// What a switch asks of a redis client; its pumps act on it on the client's own thread.
enum class move_order : std::uint8_t {
    none, ///< pump as usual (also: go on where you are, after a hold)
    hold, ///< stop at the next request boundary with no reply outstanding; keep the backend
    move, ///< hold, then reconnect to move_target(), replay the session state and go on there
};

/// One client as the registry sees it. The owning coroutine installs `on_cut`, which closes the
/// client's sockets; it is called only on `executor()`'s thread.
class client_handle : public std::enable_shared_from_this<client_handle> {
public:
    client_handle(std::uint64_t id, side s, asio::any_io_executor executor);

    std::uint64_t id() const { return id_; }
    side current_side() const { return side_.load(std::memory_order_acquire); }
    /// The client now talks to a backend on `s` (it was moved).
    void set_side(side s) { side_.store(s, std::memory_order_release); }

    /// Moves the client to another event loop (a tunnel session's); later cuts run there.
    void rehome(asio::any_io_executor executor);
    /// Sets what cutting does; replaces the previous action.
    void on_cut(std::function<void()> action);

    /// Asks for the client to be closed with `reason`; returns at once, the close runs on the
    /// client's own thread. Only the first reason is kept.
    void cut(close_reason reason);
    /// The reason given to cut(); meaningful once was_cut().
    close_reason cut_reason() const;
    bool was_cut() const { return cut_requested_.load(std::memory_order_acquire); }

    /// Gives the client a move order (`to`: where `move` sends it); returns at once, the
    /// client's `on_order` action runs on its own thread.
    void order(move_order o, side to = side::old_side);
    move_order current_order() const { return order_.load(std::memory_order_acquire); }
    side move_target() const { return target_.load(std::memory_order_acquire); }
    /// Sets what a new order does (wakes the pumps); replaces the previous action.
    void on_order(std::function<void()> action);
    /// The pumps say where the client stands: held at a boundary (nothing outstanding, nothing
    /// more sent to the backend), and what pins it.
    void report(bool held, pin_reason pin)
    {
        pin_.store(pin, std::memory_order_release);
        held_.store(held, std::memory_order_release);
    }
    bool held() const { return held_.load(std::memory_order_acquire); }
    pin_reason pin() const { return pin_.load(std::memory_order_acquire); }
    /// The id Redis gave the client's current backend connection (its CLIENT ID); -1 while
    /// unknown. A switch unblocks a client blocked there with CLIENT UNBLOCK.
    void set_backend_id(std::int64_t id) { backend_id_.store(id, std::memory_order_release); }
    std::int64_t backend_id() const { return backend_id_.load(std::memory_order_acquire); }

private:
    void run_cut();
    void run_order();
    /// True when called on executor_'s thread; otherwise posts `again` there and returns false.
    bool on_own_thread(void (client_handle::*again)());

    const std::uint64_t id_;
    std::atomic<side> side_;
    mutable std::mutex mutex_;
    asio::any_io_executor executor_; // guarded by mutex_
    std::function<void()> action_;   // guarded by mutex_; runs only on executor_
    std::optional<close_reason> reason_; // guarded by mutex_
    std::atomic<bool> cut_requested_{false};
    std::function<void()> order_action_; // guarded by mutex_; runs only on executor_
    std::atomic<move_order> order_{move_order::none};
    std::atomic<side> target_{side::old_side};
    std::atomic<bool> held_{false};
    std::atomic<pin_reason> pin_{pin_reason::none};
    std::atomic<std::int64_t> backend_id_{-1};
};

/// Every routed client of one service.
class client_registry {
public:
    void add(std::shared_ptr<client_handle> client);
    void remove(std::uint64_t id);

    std::size_t count(side s) const;
    std::size_t count() const;
    /// Cuts every client on side `s`; returns how many were asked to close.
    std::size_t cut(side s, close_reason reason);
    std::size_t cut_all(close_reason reason);
    /// Every client on side `s`, for a caller that orders or inspects them one by one.
    std::vector<std::shared_ptr<client_handle>> on_side(side s) const;

private:
    mutable std::mutex mutex_;
    std::map<std::uint64_t, std::shared_ptr<client_handle>> clients_; // guarded by mutex_
};

} // namespace tunneld::proxy
