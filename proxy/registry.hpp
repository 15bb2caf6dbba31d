#pragma once
// The connection registry: every live client of a service, which side it is on, and how to cut it.
// Thread-safe; cutting a client always runs on the thread that owns its sockets.

#include "proxy/close_reason.hpp"
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

namespace tunneld::proxy {

namespace asio = boost::asio;

/// One client as the registry sees it. The owning coroutine installs `on_cut`, which closes the
/// client's sockets; it is called only on `executor()`'s thread.
class client_handle : public std::enable_shared_from_this<client_handle> {
public:
    client_handle(std::uint64_t id, side s, asio::any_io_executor executor);

    std::uint64_t id() const { return id_; }
    side current_side() const { return side_; }

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

private:
    void run_cut();

    const std::uint64_t id_;
    const side side_;
    mutable std::mutex mutex_;
    asio::any_io_executor executor_; // guarded by mutex_
    std::function<void()> action_;   // guarded by mutex_; runs only on executor_
    std::optional<close_reason> reason_; // guarded by mutex_
    std::atomic<bool> cut_requested_{false};
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

private:
    mutable std::mutex mutex_;
    std::map<std::uint64_t, std::shared_ptr<client_handle>> clients_; // guarded by mutex_
};

} // namespace tunneld::proxy
