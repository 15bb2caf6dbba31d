#include "fleet/watch.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

namespace tunneld::fleet {

namespace asio = boost::asio;

watch_cursor::decision watch_cursor::on_message(const etcd::watch_message& message)
{
    decision out;
    if (message.canceled) {
        out.what = message.compact_revision > 0 ? verdict::resync : verdict::restart;
        return out;
    }
    // etcd sends nothing older than the start revision; dropping it anyway keeps "none twice"
    // true even against a server or proxy that replays. One transaction's events share a
    // revision and come in one message, so the bound is the one before this message.
    const std::int64_t first_new = next_;
    for (const etcd::event& e : message.events) {
        if (e.kv.mod_revision < first_new) continue;
        next_ = std::max(next_, e.kv.mod_revision + 1);
        out.events.push_back(e);
    }
    if (!out.events.empty()) {
        out.what = verdict::deliver;
        return out;
    }
    // A progress notification says every change up to its header revision has been sent.
    if (message.progress() && message.revision >= next_) next_ = message.revision + 1;
    return out;
}

void prefix_mirror::reset(const etcd::range_response& snapshot)
{
    entries_.clear();
    for (const etcd::key_value& kv : snapshot.kvs)
        entries_[kv.key] = kv;
    revision_ = snapshot.revision;
}

void prefix_mirror::replace(std::string_view prefix, const etcd::range_response& read)
{
    auto it = entries_.lower_bound(std::string(prefix));
    while (it != entries_.end() && it->first.starts_with(prefix))
        it = entries_.erase(it);
    for (const etcd::key_value& kv : read.kvs)
        entries_[kv.key] = kv;
    revision_ = std::max(revision_, read.revision);
}

void prefix_mirror::apply(const std::vector<etcd::event>& events)
{
    for (const etcd::event& e : events) {
        if (e.kind == etcd::event::type::put)
            entries_[e.kv.key] = e.kv;
        else
            entries_.erase(e.kv.key);
        revision_ = std::max(revision_, e.kv.mod_revision);
    }
}

asio::awaitable<void> watch_prefix(etcd::client& client, std::string prefix, watch_options options,
                                   std::function<void(const prefix_update&)> on_update,
                                   std::function<void(const watch_status&)> on_status,
                                   std::shared_ptr<etcd::watch_handle> handle)
{
    asio::steady_timer pause(client.get_executor());
    auto retry_delay = options.retry_min;
    auto wait_before_retry = [&]() -> asio::awaitable<void> {
        pause.expires_after(retry_delay);
        handle->abort = [&pause] { pause.cancel(); };
        co_await pause.async_wait(asio::as_tuple(asio::use_awaitable));
        handle->abort = nullptr;
        retry_delay = std::min(retry_delay * 2, options.retry_max);
    };
    std::optional<watch_cursor> cursor;
    while (!handle->stopped) {
        if (!cursor) {
            // Named outside co_await: g++ 12 destroys a co_await expression's temporaries twice (PR 100611).
            auto read = etcd::range_request::prefix(prefix);
            auto snapshot = co_await client.range(std::move(read), etcd::clock::now() + options.call_timeout);
            if (handle->stopped) break;
            if (!snapshot) {
                on_status({false, snapshot.err()});
                co_await wait_before_retry();
                continue;
            }
            cursor.emplace(snapshot->revision);
            on_status({true, std::nullopt});
            on_update({true, snapshot->revision, std::move(snapshot->kvs), {}});
        }
        bool delivered = false;
        bool compacted = false;
        etcd::watch_create request{prefix, etcd::prefix_end(prefix), cursor->next_revision(), true};
        std::function<void(const etcd::watch_message&)> on_message = [&](const etcd::watch_message& message) {
            if (!delivered) on_status({true, std::nullopt, true});
            delivered = true;
            retry_delay = options.retry_min;
            auto decision = cursor->on_message(message);
            if (decision.what == watch_cursor::verdict::deliver)
                on_update({false, cursor->next_revision() - 1, {}, std::move(decision.events)});
            if (decision.what == watch_cursor::verdict::resync) compacted = true;
        };
        const etcd::error ended = co_await client.watch(std::move(request), std::move(on_message),
                                                        etcd::clock::now() + options.call_timeout,
                                                        options.stall_timeout, *handle);
        if (handle->stopped) break;
        if (compacted || ended.code == etcd::errc::compacted) {
            cursor.reset(); // read the prefix again, at once
            continue;
        }
        // A stream that delivered and then went quiet past the stall timeout is reopened at once,
        // still counted as connected: only a failure to reopen it says etcd is gone.
        if (ended.code == etcd::errc::timeout && delivered) continue;
        on_status({false, ended});
        co_await wait_before_retry();
    }
}

} // namespace tunneld::fleet
