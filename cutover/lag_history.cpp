#include "cutover/lag_history.hpp"

namespace tunneld::cutover {

void lag_history::add(const lag_reading& reading, std::int64_t unix_ms)
{
    lag_sample sample{.unix_ms = unix_ms,
                      .at = reading.at,
                      .bytes = reading.bytes,
                      .seconds = reading.seconds,
                      .link = reading.link,
                      .replica_position = reading.replica_position};
    // Why replace: probes may run every 200ms; the graph needs one point a second.
    if (!samples_.empty() && reading.at - samples_.back().at < resolution_ && samples_.size() > 1 &&
        reading.at - samples_[samples_.size() - 2].at < resolution_)
        samples_.back() = sample;
    else
        samples_.push_back(sample);
    while (!samples_.empty() && reading.at - samples_.front().at > window_)
        samples_.pop_front();
}

std::optional<double> lag_history::replay_rate(std::chrono::milliseconds over) const
{
    const lag_sample* first = nullptr;
    const lag_sample* last = nullptr;
    for (auto it = samples_.rbegin(); it != samples_.rend(); ++it) {
        if (!it->replica_position) continue;
        if (!last) last = &*it;
        if (last->at - it->at > over) break;
        if (*it->replica_position > *last->replica_position) return std::nullopt; // went back
        first = &*it;
    }
    if (!first || !last || first == last) return std::nullopt;
    const double seconds = std::chrono::duration<double>(last->at - first->at).count();
    if (seconds <= 0) return std::nullopt;
    return static_cast<double>(*last->replica_position - *first->replica_position) / seconds;
}

} // namespace tunneld::cutover
