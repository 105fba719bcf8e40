// Rate limits kept in memory, as Postfix's anvil keeps them: per key (a client address, an AUTH
// user) a fixed window that begins with the key's first event and lasts the limit's period; the
// count starts again in the next window. At most `max_keys` keys are kept: windows that have
// ended are dropped first; when every kept window is still running, a new key is not tracked
// (and not limited) until room is made, and the count of such keys is kept for /metrics.
// Everything runs on the loop.
#pragma once

#include <cstdint>
#include <string>
#include <unordered_map>

namespace gateway {

class RateLimiter {
public:
    explicit RateLimiter(size_t max_keys = 100000) : m_max(max_keys) {}

    // Counts `n` events for `key` when that keeps it within `limit` per `seconds`; false, with
    // nothing counted, when it would not.
    bool take(const std::string& key, unsigned n, unsigned limit, unsigned seconds, int64_t now_us);

    size_t size() const { return m_windows.size(); }
    uint64_t untracked() const { return m_untracked; }

private:
    struct Window {
        int64_t end_us = 0;
        unsigned count = 0;
    };
    bool count(const std::string& key, unsigned n, unsigned limit, unsigned seconds, int64_t now_us);
    void prune(int64_t now_us);

    std::unordered_map<std::string, Window> m_windows;
    size_t m_max;
    int64_t m_pruned_us = 0;
    uint64_t m_untracked = 0;
};

}  // namespace gateway
