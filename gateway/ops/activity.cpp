#include "gateway/ops/activity.hpp"

#include "gateway/common/metrics.hpp"

#include <algorithm>
#include <cstdio>
#include <ctime>

namespace gateway {

namespace {

constexpr int64_t k_day_minutes = 24 * 60;

std::string escape(const std::string& s) {
    std::string out;
    for (char c : s) {
        if (c == '<')
            out += "&lt;";
        else if (c == '>')
            out += "&gt;";
        else if (c == '&')
            out += "&amp;";
        else if (c == '"')
            out += "&quot;";
        else
            out += c;
    }
    return out;
}

std::string hhmm(int64_t minute) {
    std::time_t t = std::time_t(minute * 60);
    std::tm tm{};
    gmtime_r(&t, &tm);
    char buf[8];
    std::snprintf(buf, sizeof buf, "%02d:%02d", tm.tm_hour, tm.tm_min);
    return buf;
}

// 1, 2, 5, 10, 20, 50, ... at or above `v`.
uint64_t nice_ceiling(uint64_t v) {
    uint64_t step = 1;
    while (true) {
        for (uint64_t m : {1, 2, 5})
            if (step * m >= v) return step * m;
        step *= 10;
    }
}

}  // namespace

ActivityTotals activity_totals() {
    const auto& c = metrics::counters();
    ActivityTotals t;
    t.received = c.received;
    for (const auto& [key, n] : c.deliveries) {
        const std::string& status = std::get<1>(key);
        if (status == "sent")
            t.delivered += n;
        else if (status == "deferred")
            t.deferred += n;
        else if (status == "bounced" || status == "expired")
            t.bounced += n;
    }
    for (const auto& [key, n] : c.rejected)
        t.rejected += n;
    return t;
}

void Activity::sample(int64_t minute, const ActivityTotals& totals, uint64_t queue) {
    if (!m_samples.empty() && m_samples.back().minute >= minute) return;
    m_samples.push_back({minute, totals, queue});
    while (m_samples.size() > 1 && m_samples.front().minute < minute - k_day_minutes)
        m_samples.pop_front();
}

std::vector<ActivityMinute> Activity::minutes(int64_t current_minute, const ActivityTotals& now, uint64_t queue) const {
    std::vector<ActivityMinute> out;
    for (size_t i = 0; i < m_samples.size(); ++i) {
        const Sample& s = m_samples[i];
        if (s.minute < current_minute - k_day_minutes || s.minute > current_minute) continue;
        bool last = i + 1 == m_samples.size();
        const ActivityTotals& end = last ? now : m_samples[i + 1].totals;
        ActivityMinute m;
        m.minute = s.minute;
        m.received = end.received - s.totals.received;
        m.delivered = end.delivered - s.totals.delivered;
        m.deferred = end.deferred - s.totals.deferred;
        m.bounced = end.bounced - s.totals.bounced;
        m.rejected = end.rejected - s.totals.rejected;
        m.queue = last ? queue : m_samples[i + 1].queue;
        out.push_back(m);
    }
    return out;
}

std::string svg_chart(const std::string& title, const std::vector<int64_t>& minutes,
                      const std::vector<ChartSeries>& series, int64_t current_minute) {
    const int width = 760, height = 200, left = 50, right = 10, top = 24, bottom = 24;
    const int plot_w = width - left - right, plot_h = height - top - bottom;
    int64_t last = current_minute;
    int64_t first = minutes.empty() ? last - 60 : std::min(minutes.front(), last - 60);
    first = std::max(first, last - k_day_minutes);
    uint64_t peak = 0;
    for (const auto& s : series)
        for (uint64_t v : s.values)
            peak = std::max(peak, v);
    uint64_t scale = nice_ceiling(std::max<uint64_t>(peak, 1));
    auto x = [&](int64_t minute) {
        return left + double(minute - first) * plot_w / double(std::max<int64_t>(last - first, 1));
    };
    auto y = [&](uint64_t v) { return top + plot_h - double(v) * plot_h / double(scale); };
    char buf[64];
    std::string out = "<svg class=\"chart\" xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 " +
                      std::to_string(width) + " " + std::to_string(height) + "\" role=\"img\"><title>" + escape(title) +
                      "</title>";
    // Frame, scale, and a mark every hour (every three when the span is long).
    out += "<rect x=\"" + std::to_string(left) + "\" y=\"" + std::to_string(top) + "\" width=\"" +
           std::to_string(plot_w) + "\" height=\"" + std::to_string(plot_h) + "\" fill=\"#fafafa\" stroke=\"#ccc\"/>";
    out += "<text x=\"" + std::to_string(left - 4) + "\" y=\"" + std::to_string(top + 4) +
           "\" text-anchor=\"end\" font-size=\"11\">" + std::to_string(scale) + "</text><text x=\"" +
           std::to_string(left - 4) + "\" y=\"" + std::to_string(top + plot_h) +
           "\" text-anchor=\"end\" font-size=\"11\">0</text>";
    int64_t step = last - first > 6 * 60 ? 180 : 60;
    for (int64_t m = (first / step + 1) * step; m <= last; m += step) {
        std::snprintf(buf, sizeof buf, "%.1f", x(m));
        out += std::string("<line x1=\"") + buf + "\" x2=\"" + buf + "\" y1=\"" + std::to_string(top) + "\" y2=\"" +
               std::to_string(top + plot_h) + "\" stroke=\"#e4e4e4\"/><text x=\"" + buf + "\" y=\"" +
               std::to_string(height - 6) + "\" text-anchor=\"middle\" font-size=\"11\">" + hhmm(m) + "</text>";
    }
    int legend_x = left;
    for (const auto& s : series) {
        std::string points, dots;
        size_t n = std::min(s.values.size(), minutes.size());
        for (size_t i = 0; i < n; ++i) {
            if (minutes[i] < first) continue;
            std::snprintf(buf, sizeof buf, "%.1f,%.1f ", x(minutes[i]), y(s.values[i]));
            points += buf;
            // Few minutes yet: each is marked, so that a single one shows.
            if (n <= 120) {
                std::snprintf(buf, sizeof buf, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"2.5\"/>", x(minutes[i]),
                              y(s.values[i]));
                dots += buf;
            }
        }
        if (!points.empty())
            out += "<polyline fill=\"none\" stroke-width=\"1.5\" stroke=\"" + escape(s.colour) + "\" points=\"" +
                   points + "\"><title>" + escape(s.name) + "</title></polyline>";
        if (!dots.empty()) out += "<g fill=\"" + escape(s.colour) + "\">" + dots + "</g>";
        uint64_t total = 0;
        for (uint64_t v : s.values)
            total += v;
        if (!s.sum) total = s.values.empty() ? 0 : s.values.back();
        out += "<rect x=\"" + std::to_string(legend_x) + "\" y=\"6\" width=\"10\" height=\"10\" fill=\"" +
               escape(s.colour) + "\"/><text x=\"" + std::to_string(legend_x + 14) + "\" y=\"15\" font-size=\"12\">" +
               escape(s.name) + " " + std::to_string(total) + "</text>";
        legend_x += 130;
    }
    return out + "</svg>";
}

}  // namespace gateway
