// Counters for Prometheus. Every floor counts here; ops/metrics_http.hpp shows them at
// GET /metrics. Everything is counted on the event loop thread, so plain integers do.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <string>
#include <tuple>
#include <utility>

namespace gateway::metrics {

void message_received();
void message_rejected(const char* stage, const std::string& status);  // "RCPT", "5.7.1"
void delivery(const std::string& route, const char* status, char dsn_class, double seconds_since_arrival);
void tls_session(const char* direction, const std::string& version);  // "in" / "out", "TLSv1.2"
// A client session on TLS 1.0 or 1.1, by client address (at most 1000 addresses; then "other").
void tls_legacy_session(const std::string& version, const std::string& client);
void auth_failure(const char* direction);
void rate_limited(const char* limit);  // "messages", "recipients", "connections"
void rate_limit_keys(uint64_t keys, uint64_t untracked);
void connection_opened();
void connection_closed();

// Seconds from acceptance to delivery.
constexpr std::array<double, 12> k_delay_buckets = {0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600, 14400, 86400};

struct Histogram {
    std::array<uint64_t, k_delay_buckets.size()> counts{};  // cumulative: counts[i] is <= k_delay_buckets[i]
    uint64_t count = 0;
    double sum = 0;
};

struct Counters {
    uint64_t received = 0;
    std::map<std::pair<std::string, std::string>, uint64_t> rejected;                  // stage, status
    std::map<std::tuple<std::string, std::string, std::string>, uint64_t> deliveries;  // route, status, class
    std::map<std::pair<std::string, std::string>, uint64_t> tls;                       // direction, version
    std::map<std::pair<std::string, std::string>, uint64_t> tls_legacy;                // version, client
    std::map<std::string, uint64_t> auth_failures;                                     // direction
    std::map<std::string, uint64_t> rate_limited;                                      // limit
    uint64_t rate_limit_keys = 0;       // addresses and users with a rate window running
    uint64_t rate_limit_untracked = 0;  // new keys not tracked: the table was full
    uint64_t connections = 0;
    int64_t open_connections = 0;
    Histogram delay;
};

const Counters& counters();

}  // namespace gateway::metrics
