// GET /metrics (`metrics.listen`): the counters of common/metrics.hpp and the queue's state in
// the Prometheus text exposition format 0.0.4. Also, for load balancers and orchestrators,
// GET /healthz (200 while the loop answers) and GET /readyz (200 when the gateway takes mail;
// 503 with the reason while it starts, drains after SIGTERM, or its spool is full). The endpoint runs on the event loop
// and answers from the counters directly; the queue is asked at each scrape. At most 64 connections, each with 10
// seconds and 8 KiB for its request; when all 64 are taken, the oldest waiting one goes.
#pragma once

#include "conf/config.hpp"

#include <uv.h>

#include <cstdint>
#include <functional>
#include <set>
#include <string>

namespace gateway::metrics {

struct QueueState {
    uint64_t messages = 0;
    double oldest_age_seconds = 0;
    uint64_t destinations = 0;
    std::string not_ready;  // why /readyz says 503 (draining, spool full, not listening); empty: ready
};

std::string exposition(const QueueState& queue);  // the whole /metrics body

class HttpServer {
public:
    HttpServer(uv_loop_t* loop, conf::HostPort endpoint, std::function<QueueState()> queue);
    ~HttpServer();
    HttpServer(const HttpServer&) = delete;
    HttpServer& operator=(const HttpServer&) = delete;
    void start();  // throws with the reason
    void close();

private:
    struct Conn;
    void close_idle();    // connections that sent no whole request in time
    void close_oldest();  // the connection waiting longest for its request
    uv_loop_t* m_loop;
    conf::HostPort m_endpoint;
    std::function<QueueState()> m_queue;
    uv_tcp_t* m_tcp = nullptr;
    uv_timer_t* m_sweep = nullptr;
    std::set<Conn*> m_conns;
};

}  // namespace gateway::metrics
