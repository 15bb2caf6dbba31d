#pragma once
// The last minutes of a service's lag readings: the status page's lag graph, and the replay rate
// a dry run estimates its hold from. Pure: readings and times come in as parameters.

#include "cutover/lag.hpp"

#include <chrono>
#include <cstdint>
#include <deque>
#include <optional>
#include <vector>

namespace tunneld::cutover {

/// One kept reading, stamped with the wall clock for display.
struct lag_sample {
    std::int64_t unix_ms = 0; ///< wall clock, for the page's time axis
    std::chrono::steady_clock::time_point at;
    std::optional<std::uint64_t> bytes;
    std::optional<double> seconds;
    link_state link = link_state::unknown;
    std::optional<std::uint64_t> replica_position;
};

/// At most one sample per `resolution`, for the last `window`; the newest reading within a
/// resolution step replaces the one kept for it.
class lag_history {
public:
    explicit lag_history(std::chrono::milliseconds window = std::chrono::minutes(10),
                         std::chrono::milliseconds resolution = std::chrono::seconds(1))
        : window_(window), resolution_(resolution)
    {
    }

    void add(const lag_reading& reading, std::int64_t unix_ms);
    /// Oldest first.
    const std::deque<lag_sample>& samples() const { return samples_; }
    /// Bytes per second new replayed over the last `over` (first to last sample with a position);
    /// nullopt with fewer than two such samples, no time between them, or a position that went
    /// back (the replica restarted or resynced).
    std::optional<double> replay_rate(std::chrono::milliseconds over = std::chrono::seconds(30)) const;

private:
    std::chrono::milliseconds window_;
    std::chrono::milliseconds resolution_;
    std::deque<lag_sample> samples_;
};

} // namespace tunneld::cutover
