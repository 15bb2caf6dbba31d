#include "proxy/registry.hpp"

#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <vector>

namespace tunneld::proxy {

client_handle::client_handle(std::uint64_t id, side s, asio::any_io_executor executor)
    : id_(id), side_(s), executor_(std::move(executor))
{
}

void client_handle::rehome(asio::any_io_executor executor)
{
    std::lock_guard lock(mutex_);
    executor_ = std::move(executor);
}

void client_handle::on_cut(std::function<void()> action)
{
    std::lock_guard lock(mutex_);
    action_ = std::move(action);
}

void client_handle::cut(close_reason reason)
{
    asio::any_io_executor executor = [&] {
        std::lock_guard lock(mutex_);
        if (!reason_) reason_ = reason;
        return executor_;
    }();
    cut_requested_.store(true, std::memory_order_release);
    asio::post(executor, [self = shared_from_this()] { self->run_cut(); });
}

bool client_handle::on_own_thread(void (client_handle::*again)())
{
    // The client may have moved to a tunnel session's loop since the call was posted: follow it.
    const auto* loop = executor_.target<asio::io_context::executor_type>();
    if (loop && !loop->running_in_this_thread()) {
        asio::post(executor_, [self = shared_from_this(), again] { ((*self).*again)(); });
        return false;
    }
    return true;
}

void client_handle::run_cut()
{
    std::function<void()> action;
    {
        std::lock_guard lock(mutex_);
        if (!on_own_thread(&client_handle::run_cut)) return;
        action = action_;
    }
    if (action) action();
}

void client_handle::order(move_order o, side to)
{
    target_.store(to, std::memory_order_release);
    order_.store(o, std::memory_order_release);
    const asio::any_io_executor executor = [&] {
        std::lock_guard lock(mutex_);
        return executor_;
    }();
    asio::post(executor, [self = shared_from_this()] { self->run_order(); });
}

void client_handle::on_order(std::function<void()> action)
{
    std::lock_guard lock(mutex_);
    order_action_ = std::move(action);
}

void client_handle::run_order()
{
    std::function<void()> action;
    {
        std::lock_guard lock(mutex_);
        if (!on_own_thread(&client_handle::run_order)) return;
        action = order_action_;
    }
    if (action) action();
}

close_reason client_handle::cut_reason() const
{
    std::lock_guard lock(mutex_);
    return reason_.value_or(close_reason::shutdown);
}

void client_registry::add(std::shared_ptr<client_handle> client)
{
    std::lock_guard lock(mutex_);
    clients_.emplace(client->id(), std::move(client));
}

void client_registry::remove(std::uint64_t id)
{
    std::lock_guard lock(mutex_);
    clients_.erase(id);
}

std::size_t client_registry::count(side s) const
{
    std::lock_guard lock(mutex_);
    std::size_t n = 0;
    for (const auto& [id, client] : clients_)
        n += client->current_side() == s ? 1 : 0;
    return n;
}

std::size_t client_registry::count() const
{
    std::lock_guard lock(mutex_);
    return clients_.size();
}

std::size_t client_registry::cut(side s, close_reason reason)
{
    const auto victims = on_side(s);
    for (const auto& client : victims)
        client->cut(reason);
    return victims.size();
}

std::vector<std::shared_ptr<client_handle>> client_registry::on_side(side s) const
{
    std::vector<std::shared_ptr<client_handle>> out;
    std::lock_guard lock(mutex_);
    for (const auto& [id, client] : clients_)
        if (client->current_side() == s) out.push_back(client);
    return out;
}

std::size_t client_registry::cut_all(close_reason reason)
{
    std::vector<std::shared_ptr<client_handle>> victims;
    {
        std::lock_guard lock(mutex_);
        for (const auto& [id, client] : clients_)
            victims.push_back(client);
    }
    for (auto& client : victims)
        client->cut(reason);
    return victims.size();
}

} // namespace tunneld::proxy
