// Counters for Prometheus (`metrics.listen`: GET /metrics in the text exposition format 0.0.4).
// Everything is counted on the event loop thread, so plain integers do; the HTTP endpoint runs on
// the same loop and answers from them directly.
#pragma once

#include "conf/config.hpp"

#include <uv.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <set>
#include <string>

namespace gateway::metrics {

void message_received();
void message_rejected(const char* stage, const std::string& status);  // "RCPT", "5.7.1"
void delivery(const std::string& route, const char* status, char dsn_class, double seconds_since_arrival);
void tls_session(const char* direction, const std::string& version);  // "in" / "out", "TLSv1.2"
void auth_failure(const char* direction);
void connection_opened();
void connection_closed();

struct QueueState {
    uint64_t messages = 0;
    double oldest_age_seconds = 0;
};
// The queue is asked at each scrape.
void set_queue_probe(std::function<QueueState()> probe);

std::string exposition();  // the whole /metrics body
void reset();              // tests

class HttpServer {
public:
    HttpServer(uv_loop_t* loop, conf::HostPort endpoint);
    ~HttpServer();
    HttpServer(const HttpServer&) = delete;
    HttpServer& operator=(const HttpServer&) = delete;
    void start();  // throws with the reason
    void close();

private:
    struct Conn;
    uv_loop_t* m_loop;
    conf::HostPort m_endpoint;
    uv_tcp_t* m_tcp = nullptr;
    std::set<Conn*> m_conns;
};

}  // namespace gateway::metrics
