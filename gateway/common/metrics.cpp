#include "gateway/common/metrics.hpp"

#include <string_view>

namespace gateway::metrics {

namespace {

Counters& mutable_counters() {
    static Counters c;
    return c;
}

}  // namespace

const Counters& counters() { return mutable_counters(); }

void message_received() { mutable_counters().received++; }

void message_rejected(const char* stage, const std::string& status) { mutable_counters().rejected[{stage, status}]++; }

void delivery(const std::string& route, const char* status, char dsn_class, double seconds) {
    auto& c = mutable_counters();
    c.deliveries[{route, status, std::string(1, dsn_class)}]++;
    if (std::string_view(status) != "sent") return;
    auto& h = c.delay;
    for (size_t i = 0; i < k_delay_buckets.size(); ++i)
        if (seconds <= k_delay_buckets[i]) h.counts[i]++;
    h.count++;
    h.sum += seconds;
}

void tls_session(const char* direction, const std::string& version) { mutable_counters().tls[{direction, version}]++; }

void auth_failure(const char* direction) { mutable_counters().auth_failures[direction]++; }
void rate_limited(const char* limit) { mutable_counters().rate_limited[limit]++; }
void tls_legacy_session(const std::string& version, const std::string& client) {
    auto& m = mutable_counters().tls_legacy;
    auto key = std::make_pair(version, client);
    if (m.size() >= 1000 && !m.count(key)) key.second = "other";
    m[key]++;
}
void rate_limit_keys(uint64_t keys, uint64_t untracked) {
    mutable_counters().rate_limit_keys = keys;
    mutable_counters().rate_limit_untracked = untracked;
}

void connection_opened() {
    mutable_counters().connections++;
    mutable_counters().open_connections++;
}

void connection_closed() { mutable_counters().open_connections--; }

}  // namespace gateway::metrics
