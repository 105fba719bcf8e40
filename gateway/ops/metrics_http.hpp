// GET /metrics (`metrics.listen`): the counters of common/metrics.hpp and the queue's state in
// the Prometheus text exposition format 0.0.4. Also, for load balancers and orchestrators,
// GET /healthz (200 while the loop answers) and GET /readyz (200 when the gateway takes mail;
// 503 with the reason while it starts, drains after SIGTERM, or its spool is full). Served by
// web_server.hpp (libmicrohttpd on the event loop) from the counters directly; the queue is
// asked at each scrape. At most 64 connections, each with 10 seconds for its request; when all
// 64 are taken, the oldest one without a request goes.
#pragma once

#include "conf/config.hpp"
#include "gateway/ops/web_server.hpp"

#include <uv.h>

#include <cstdint>
#include <functional>
#include <memory>
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
    WebResponse answer(const WebRequest& r) const;
    std::function<QueueState()> m_queue;
    std::unique_ptr<WebServer> m_web;
};

}  // namespace gateway::metrics
