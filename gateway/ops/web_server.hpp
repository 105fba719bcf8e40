// HTTP on the event loop, for the admin console and /metrics: GNU libmicrohttpd driven by libuv. MHD runs
// without threads of its own (MHD_USE_EPOLL): its epoll descriptor is watched with a uv_poll and
// MHD_run() is called from the loop, so every handler runs on the loop like the rest of the
// gateway, with the queue and the counters at hand and no locks. (civetweb, the other library
// Debian has, always runs worker threads of its own.) A handler may answer later: the
// connection is suspended meanwhile (a doctor or probe run as a child process).
//
// Bounds (WebLimits): 64 connections at once (the console: 8 per client address), 30 s of
// inactivity, 32 KiB of memory per connection for the request head, 64 KiB of request body. When
// all places are taken, the connection that has waited longest without sending a request is
// closed, so that idle connections cannot keep a browser or a scraper out.
#pragma once

#include "conf/config.hpp"

#include <uv.h>

#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

struct MHD_Daemon;
struct MHD_Connection;

namespace gateway {

struct WebRequest {
    std::string method;                          // "GET", "POST", ...
    std::string path;                            // without the query
    std::string client;                          // the client's address
    std::map<std::string, std::string> headers;  // names in lower case
    std::map<std::string, std::string> query;    // ?a=b&c=d
    std::map<std::string, std::string> cookies;
    std::map<std::string, std::string> form;  // an application/x-www-form-urlencoded body
    bool body_too_large = false;
};

struct WebResponse {
    int status = 200;
    std::string type = "text/html; charset=utf-8";
    std::string body;
    std::vector<std::pair<std::string, std::string>> headers;
};

using WebRespond = std::function<void(WebResponse)>;

struct WebLimits {
    unsigned connections = 64;
    unsigned per_client = 8;  // 0: no limit per address
    unsigned timeout_seconds = 30;
};
using WebHandler = std::function<void(const WebRequest&, WebRespond)>;

class WebServer {
public:
    WebServer(uv_loop_t* loop, conf::HostPort endpoint, WebHandler handler, WebLimits limits = {});
    ~WebServer();
    WebServer(const WebServer&) = delete;
    WebServer& operator=(const WebServer&) = delete;
    // HTTPS with this certificate (chain) and key, PEM files read at start() (MHD uses GnuTLS).
    void use_tls(std::string certificate_file, std::string key_file);
    void start();  // throws with the reason
    void close();  // requests waiting for an answer get 503

private:
    struct Pending;  // one request, from its head to its answer
    struct Tracked;  // one connection, from its accept to its close
    struct Glue;     // the callbacks MHD calls
    friend struct Glue;
    void run();         // MHD's work for now, then the timer for its next
    void evict_idle();  // the oldest connection without a request goes

    uv_loop_t* m_loop;
    conf::HostPort m_endpoint;
    WebHandler m_handler;
    WebLimits m_limits;
    std::map<uint64_t, Tracked*> m_connections;  // by arrival
    uint64_t m_next_connection = 0;
    bool m_run_again = false;
    std::string m_cert_file, m_key_file;
    std::string m_cert_pem, m_key_pem;  // MHD's while it runs
    MHD_Daemon* m_daemon = nullptr;
    uv_poll_t* m_poll = nullptr;
    uv_timer_t* m_timer = nullptr;
    std::set<Pending*> m_suspended;
    std::shared_ptr<bool> m_alive = std::make_shared<bool>(true);
};

// URL decoding of one query or form component ('+' is a space).
std::string url_decode(const std::string& s);
// name=value&... into a map; the first of a repeated name wins.
std::map<std::string, std::string> parse_form(const std::string& body);

}  // namespace gateway
