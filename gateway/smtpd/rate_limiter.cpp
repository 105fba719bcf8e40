#include "gateway/smtpd/rate_limiter.hpp"

#include "gateway/common/metrics.hpp"

namespace gateway {

bool RateLimiter::take(const std::string& key, unsigned n, unsigned limit, unsigned seconds, int64_t now_us) {
    bool ok = count(key, n, limit, seconds, now_us);
    metrics::rate_limit_keys(m_windows.size(), m_untracked);
    return ok;
}

bool RateLimiter::count(const std::string& key, unsigned n, unsigned limit, unsigned seconds, int64_t now_us) {
    auto it = m_windows.find(key);
    if (it != m_windows.end() && it->second.end_us <= now_us) {
        m_windows.erase(it);
        it = m_windows.end();
    }
    if (it == m_windows.end()) {
        if (m_windows.size() >= m_max) prune(now_us);
        if (m_windows.size() >= m_max) {
            ++m_untracked;
            return true;
        }
        it = m_windows.emplace(key, Window{now_us + int64_t(seconds) * 1000000, 0}).first;
    }
    if (it->second.count + n > limit) return false;
    it->second.count += n;
    return true;
}

void RateLimiter::prune(int64_t now_us) {
    // A full table is scanned at most once a second, however many new keys arrive.
    if (now_us - m_pruned_us < 1000000) return;
    m_pruned_us = now_us;
    for (auto it = m_windows.begin(); it != m_windows.end();)
        it = it->second.end_us <= now_us ? m_windows.erase(it) : std::next(it);
}

}  // namespace gateway
