#pragma once
// Watching a prefix without missing a change: the resume decision (pure, `watch_cursor`), a
// local copy of the prefix (pure, `prefix_mirror`), and the loop that keeps one up to date
// across broken streams, etcd restarts and compaction (`watch_prefix`).

#include "fleet/etcd_client.hpp"

#include <map>

namespace tunneld::fleet {

/// Where a watch stands: which revision it must (re)start from, and what each message means.
/// Invariant: every change up to `next_revision() - 1` has been delivered, none twice.
class watch_cursor {
public:
    /// After a read of the prefix at `revision`: the watch starts at revision + 1.
    explicit watch_cursor(std::int64_t revision) : next_(revision + 1) {}

    enum class verdict {
        deliver,  ///< `events` are new changes, in revision order
        progress, ///< nothing to deliver; the stream is alive (created, or a progress notification)
        resync,   ///< the start revision was compacted: read the prefix again, then `resynced`
        restart,  ///< etcd canceled the watch for another reason: open it again from next_revision
    };
    struct decision {
        verdict what = verdict::progress;
        std::vector<etcd::event> events;
    };

    decision on_message(const etcd::watch_message& message);
    /// After the re-read that a `resync` asked for, made at `revision`.
    void resynced(std::int64_t revision) { next_ = revision + 1; }
    std::int64_t next_revision() const { return next_; }

private:
    std::int64_t next_;
};

/// A local copy of every key under one prefix, as of `revision()`.
class prefix_mirror {
public:
    void reset(const etcd::range_response& snapshot);
    /// Replaces every key under `prefix` with those of `read`, a read of that prefix, and leaves
    /// the other keys alone: one mirror can hold several watched or read ranges. The mirror's
    /// revision becomes the highest it has seen.
    void replace(std::string_view prefix, const etcd::range_response& read);
    void apply(const std::vector<etcd::event>& events);
    std::int64_t revision() const { return revision_; }
    const std::map<std::string, etcd::key_value>& entries() const { return entries_; }

private:
    std::map<std::string, etcd::key_value> entries_;
    std::int64_t revision_ = 0;
};

/// What `watch_prefix` hands its caller: a whole snapshot (at the start and after compaction)
/// or the changes since the last update.
struct prefix_update {
    bool snapshot = false;
    std::int64_t revision = 0;
    std::vector<etcd::key_value> kvs; ///< snapshot: every key under the prefix
    std::vector<etcd::event> events;  ///< otherwise: the changes, in revision order
};

struct watch_options {
    /// No message (event or progress notification) for this long: the stream is stalled and is
    /// opened again. Set it above etcd's --experimental-watch-progress-notify-interval (10 min by
    /// default): a quiet stream is then told from a stalled one by the notifications; with a
    /// shorter value a quiet stream is merely reopened, which loses nothing.
    std::chrono::milliseconds stall_timeout = std::chrono::seconds(30);
    std::chrono::milliseconds call_timeout = std::chrono::seconds(2); ///< range reads and connects
    std::chrono::milliseconds retry_min = std::chrono::milliseconds(100);
    std::chrono::milliseconds retry_max = std::chrono::seconds(2);
};

/// Link state reported after each attempt: `error` empty when a stream or read succeeded.
struct watch_status {
    bool connected = false;
    std::optional<etcd::error> error;
    /// The watch stream is open (etcd answered it), not only the read before it: from now on a
    /// change is delivered as etcd sends it, not replayed later in one batch.
    bool streaming = false;
};

/// Reads `prefix`, then watches it until `handle.stop()`: `on_update` gets a snapshot, then
/// every change once and in order, across broken streams (resumed from the last revision + 1)
/// and compaction (read again, then watched from the read's revision); `on_status` hears
/// whether etcd is reachable. Both run on the client's executor.
boost::asio::awaitable<void> watch_prefix(etcd::client& client, std::string prefix, watch_options options,
                                          std::function<void(const prefix_update&)> on_update,
                                          std::function<void(const watch_status&)> on_status,
                                          std::shared_ptr<etcd::watch_handle> handle);

} // namespace tunneld::fleet
