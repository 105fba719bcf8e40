#include "gateway/smtpd/auth_limits.hpp"

#include <algorithm>
#include <iterator>
#include <vector>

namespace gateway {

conf::IpAddress AuthLimits::key(const conf::IpAddress& ip) {
    conf::IpAddress k = ip;
    if (k.v6) std::fill(k.bytes.begin() + 8, k.bytes.end(), 0);  // the /64
    return k;
}

void AuthLimits::expire(Entry& e, int64_t now_us) const {
    while (!e.failures.empty() && e.failures.front() <= now_us - k_window_us)
        e.failures.pop_front();
}

AuthLimits::Entry& AuthLimits::entry(const conf::IpAddress& k, int64_t now_us) {
    auto it = m_entries.find(k);
    if (it == m_entries.end()) {
        if (m_entries.size() >= k_max_addresses) make_room(now_us);
        it = m_entries.emplace(k, Entry{}).first;
    }
    it->second.last_us = now_us;
    return it->second;
}

// Entries with nothing left to remember go; if that is not enough, the least recently active
// idle ones, down to nine tenths of the limit.
void AuthLimits::make_room(int64_t now_us) {
    std::vector<std::pair<int64_t, conf::IpAddress>> idle;
    for (auto it = m_entries.begin(); it != m_entries.end();) {
        expire(it->second, now_us);
        bool busy = it->second.in_progress > 0 || !it->second.waiting.empty();
        if (!busy && it->second.failures.empty()) {
            it = m_entries.erase(it);
            continue;
        }
        if (!busy) idle.emplace_back(it->second.last_us, it->first);
        ++it;
    }
    size_t target = k_max_addresses / 10 * 9;
    if (m_entries.size() <= target) return;
    std::sort(idle.begin(), idle.end());
    for (const auto& [last, k] : idle) {
        if (m_entries.size() <= target) break;
        m_entries.erase(k);
    }
}

bool AuthLimits::blocked(const conf::IpAddress& ip, int64_t now_us) {
    auto it = m_entries.find(key(ip));
    if (it == m_entries.end()) return false;
    expire(it->second, now_us);
    return it->second.failures.size() >= k_limit;
}

bool AuthLimits::begin(const conf::IpAddress& ip, int64_t now_us, Resume resume) {
    Entry& e = entry(key(ip), now_us);
    expire(e, now_us);
    if (e.failures.size() + e.in_progress >= k_limit && e.in_progress > 0) {
        e.waiting.push_back(std::move(resume));
        return false;
    }
    e.in_progress++;
    return true;
}

void AuthLimits::end(const conf::IpAddress& ip, bool failed, int64_t now_us) {
    auto k = key(ip);
    auto it = m_entries.find(k);
    if (it == m_entries.end()) return;
    Entry& e = it->second;
    if (e.in_progress > 0) e.in_progress--;
    if (failed) {
        e.failures.push_back(now_us);
        if (e.failures.size() > k_limit) e.failures.pop_front();
    }
    e.last_us = now_us;
    // One waiting attempt takes the place that came free; once the address is blocked, every
    // waiting one is let go, to be refused. A resumed attempt calls begin() again, which may
    // change the table: the rest waits in a list of its own meanwhile.
    bool now_blocked = blocked(ip, now_us);
    std::deque<Resume> waiting = std::move(e.waiting);
    e.waiting.clear();
    while (!waiting.empty()) {
        Resume r = std::move(waiting.front());
        waiting.pop_front();
        if (r() && !now_blocked) break;
    }
    if (!waiting.empty()) {
        auto& again = entry(k, now_us).waiting;
        again.insert(again.begin(), std::make_move_iterator(waiting.begin()), std::make_move_iterator(waiting.end()));
    }
}

}  // namespace gateway
