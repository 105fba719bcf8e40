// AUTH attempts per client address: after k_limit failures within k_window, an address may not
// try again until the oldest of them is older than k_window (421 4.7.0 and close). IPv6 clients
// count by their /64, which one host usually has whole.
//
// Attempts in progress count as well: parallel connections from one address get no more tries
// between them than one connection gets. An attempt that would go past the limit waits until
// one in progress ends, and is then let through or refused.
//
// The table holds at most k_max_addresses; expired entries go first, then the least recently
// active ones. Everything runs on the event loop.
#pragma once

#include "conf/cidr.hpp"

#include <cstdint>
#include <deque>
#include <functional>
#include <map>

namespace gateway {

class AuthLimits {
public:
    // An attempt that had to wait is resumed with this; it returns false when its connection
    // has gone, and the next one waiting is resumed instead.
    using Resume = std::function<bool()>;

    bool blocked(const conf::IpAddress& ip, int64_t now_us);
    // Starts an attempt (true), or keeps `resume` until an attempt of the same address ends.
    bool begin(const conf::IpAddress& ip, int64_t now_us, Resume resume);
    // An attempt started by begin() is over; `failed` counts it towards the limit.
    void end(const conf::IpAddress& ip, bool failed, int64_t now_us);
    size_t addresses() const { return m_entries.size(); }

    static constexpr size_t k_limit = 5;
    static constexpr int64_t k_window_us = 600LL * 1000000;  // ten minutes
    static constexpr size_t k_max_addresses = 100000;

private:
    struct Entry {
        std::deque<int64_t> failures;  // times, oldest first; at most k_limit
        unsigned in_progress = 0;
        std::deque<Resume> waiting;
        int64_t last_us = 0;
    };
    static conf::IpAddress key(const conf::IpAddress& ip);
    Entry& entry(const conf::IpAddress& k, int64_t now_us);
    void expire(Entry& e, int64_t now_us) const;
    void make_room(int64_t now_us);

    std::map<conf::IpAddress, Entry> m_entries;
};

}  // namespace gateway
