// The console's Overview: messages received, delivered, deferred, bounced and rejected in each
// minute of the last 24 hours, and the queue's size at each minute, drawn as inline SVG. The
// counts come from common/metrics.hpp: the totals are sampled at every minute's start and a
// minute's figure is the difference. They are kept in memory (1,441 samples, about 80 KB) and
// start again with the gateway.
#pragma once

#include <cstdint>
#include <deque>
#include <string>
#include <vector>

namespace gateway {

struct ActivityTotals {
    uint64_t received = 0, delivered = 0, deferred = 0, bounced = 0, rejected = 0;
};

// The totals since the start, from the metrics counters.
ActivityTotals activity_totals();

struct ActivityMinute {
    int64_t minute = 0;  // minutes since the epoch (UTC)
    uint64_t received = 0, delivered = 0, deferred = 0, bounced = 0, rejected = 0;
    uint64_t queue = 0;  // messages in the queue at its end (at the last sample for the current minute)
};

class Activity {
public:
    // At the start of `minute`: the totals then and the queue's size.
    void sample(int64_t minute, const ActivityTotals& totals, uint64_t queue);
    // The minutes sampled in the last 24 hours, oldest first, and the current one from `now`.
    std::vector<ActivityMinute> minutes(int64_t current_minute, const ActivityTotals& now, uint64_t queue) const;

private:
    struct Sample {
        int64_t minute;
        ActivityTotals totals;
        uint64_t queue;
    };
    std::deque<Sample> m_samples;
};

struct ChartSeries {
    std::string name;
    std::string colour;            // an SVG colour
    std::vector<uint64_t> values;  // one per minute of `minutes`
    bool sum = true;               // the legend gives the sum; else the last value (a level, not a count)
};

// A line chart over the minutes given (at least the last hour is spanned), with a legend,
// hour marks and a scale. Names are escaped; no script, no style attribute (the console's CSP
// allows neither).
std::string svg_chart(const std::string& title, const std::vector<int64_t>& minutes,
                      const std::vector<ChartSeries>& series, int64_t current_minute);

}  // namespace gateway
