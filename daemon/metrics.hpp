#pragma once
// GET /metrics: the Prometheus text exposition (format 0.0.4) of the daemon, serialised by
// prometheus-cpp's core library (its TextSerializer; Beast serves the text). Every family but one
// is built from the status snapshot at scrape time, so /metrics and /status never disagree; the
// switch hold histogram counts what only the daemon sees, as it happens.

#include "control/status_json.hpp"

#include <array>
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <prometheus/histogram.h>
#include <prometheus/metric_family.h>
#include <string>
#include <string_view>
#include <vector>

namespace tunneld::daemon {

/// The content type `GET /metrics` answers with.
inline constexpr std::string_view metrics_content_type = "text/plain; version=0.0.4; charset=utf-8";

/// Upper bounds, in seconds, of `tunneld_switch_hold_seconds` (pause_timeout is 5s by default).
inline constexpr std::array<double, 12> hold_bounds{0.01, 0.025, 0.05, 0.1,  0.25, 0.5,
                                                    1.0,  2.5,   5.0,  10.0, 30.0, 60.0};

/// `tunneld_switch_hold_seconds` of each service, as prometheus-cpp collected them (no labels).
using hold_histograms = std::map<std::string, prometheus::ClientMetric, std::less<>>;

/// Every `tunneld_` family of `status` plus the hold histograms, in a fixed order. Every family is
/// present even with no sample, so dashboards and alert rules find each name from the first
/// scrape; a value the snapshot does not know (lag without a probe answer) has no sample, never a
/// made-up zero; each service and tunnel has its histograms from the start (zero counts), so that
/// increase() sees the first observation. Pure.
std::vector<prometheus::MetricFamily> metric_families(const control::status_snapshot& status,
                                                      const hold_histograms& holds);

/// The families' text. Pure.
std::string render_metrics(const std::vector<prometheus::MetricFamily>& families);

/// What the daemon counts for /metrics beyond its snapshot. Thread-safe.
class metrics {
public:
    /// Counts one switch or rollback of `service` that held new clients for `held`.
    void observe_hold(const std::string& service, std::chrono::milliseconds held);

    /// The text of GET /metrics for `status`.
    std::string render(const control::status_snapshot& status) const;

private:
    mutable std::mutex mutex_;
    /// service -> its hold histogram; guarded by mutex_ (prometheus::Histogram is neither
    /// copyable nor movable, hence the pointer)
    std::map<std::string, std::unique_ptr<prometheus::Histogram>, std::less<>> holds_;
};

} // namespace tunneld::daemon
