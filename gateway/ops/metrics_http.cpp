#include "gateway/ops/metrics_http.hpp"

#include "gateway/common/metrics.hpp"
#include "gateway/common/net.hpp"

#include <cstdio>
#include <stdexcept>
#include <string_view>

namespace gateway::metrics {

namespace {

std::string label_value(const std::string& v) {
    std::string out;
    for (char c : v) {
        if (c == '\\' || c == '"') out += '\\';
        if (c == '\n') {
            out += "\\n";
            continue;
        }
        out += c;
    }
    return out;
}

std::string number(double v) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.10g", v);
    return buf;
}

void header(std::string& out, const char* name, const char* type, const char* help) {
    out += std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " " + type + "\n";
}

}  // namespace

std::string exposition(const QueueState& q) {
    const Counters& c = counters();
    std::string out;
    // One sample: `labels` are name/value pairs, values escaped here.
    auto sample = [&out](const char* name, std::initializer_list<std::pair<const char*, std::string>> labels,
                         const std::string& value) {
        out += name;
        if (labels.size()) {
            char sep = '{';
            for (const auto& [k, v] : labels) {
                out += sep;
                out += std::string(k) + "=\"" + label_value(v) + "\"";
                sep = ',';
            }
            out += '}';
        }
        out += " " + value + "\n";
    };
    header(out, "smtpgw_messages_received_total", "counter", "Messages accepted and stored in the queue.");
    sample("smtpgw_messages_received_total", {}, std::to_string(c.received));
    header(out, "smtpgw_messages_rejected_total", "counter",
           "Refusals to clients, by SMTP stage and enhanced status code.");
    for (const auto& [k, v] : c.rejected)
        sample("smtpgw_messages_rejected_total", {{"stage", k.first}, {"status", k.second}}, std::to_string(v));
    header(out, "smtpgw_deliveries_total", "counter",
           "Delivery outcomes per recipient, by route (upstream name or direct), status and DSN class.");
    for (const auto& [k, v] : c.deliveries)
        sample("smtpgw_deliveries_total",
               {{"route", std::get<0>(k)}, {"status", std::get<1>(k)}, {"dsn_class", std::get<2>(k)}},
               std::to_string(v));
    header(out, "smtpgw_delivery_delay_seconds", "histogram", "Time from acceptance to successful delivery.");
    for (size_t i = 0; i < k_delay_buckets.size(); ++i)
        sample("smtpgw_delivery_delay_seconds_bucket", {{"le", number(k_delay_buckets[i])}},
               std::to_string(c.delay.counts[i]));
    sample("smtpgw_delivery_delay_seconds_bucket", {{"le", "+Inf"}}, std::to_string(c.delay.count));
    sample("smtpgw_delivery_delay_seconds_sum", {}, number(c.delay.sum));
    sample("smtpgw_delivery_delay_seconds_count", {}, std::to_string(c.delay.count));
    header(out, "smtpgw_queue_messages", "gauge", "Messages in the queue.");
    sample("smtpgw_queue_messages", {}, std::to_string(q.messages));
    header(out, "smtpgw_queue_oldest_message_age_seconds", "gauge", "Age of the oldest message in the queue.");
    sample("smtpgw_queue_oldest_message_age_seconds", {}, number(q.oldest_age_seconds));
    header(out, "smtpgw_queue_destinations", "gauge",
           "Destinations in use: mail queued for them, connections open, or a failure within the last minutes.");
    sample("smtpgw_queue_destinations", {}, std::to_string(q.destinations));
    header(out, "smtpgw_tls_sessions_total", "counter",
           "TLS sessions established, from clients (in) and to servers (out).");
    for (const auto& [k, v] : c.tls)
        sample("smtpgw_tls_sessions_total", {{"direction", k.first}, {"version", k.second}}, std::to_string(v));
    header(out, "smtpgw_tls_legacy_sessions_total", "counter",
           "Client TLS sessions on TLS 1.0 or 1.1, by version and client address: the devices that still need "
           "tls_protocols.");
    for (const auto& [k, v] : c.tls_legacy)
        sample("smtpgw_tls_legacy_sessions_total", {{"version", k.first}, {"client", k.second}}, std::to_string(v));
    header(out, "smtpgw_auth_failures_total", "counter",
           "Failed SMTP AUTH: clients of the gateway (in), the gateway at upstreams (out).");
    for (const char* d : {"in", "out"}) {
        auto it = c.auth_failures.find(d);
        sample("smtpgw_auth_failures_total", {{"direction", d}},
               std::to_string(it == c.auth_failures.end() ? 0 : it->second));
    }
    header(out, "smtpgw_rate_limited_total", "counter",
           "Refusals for a rate limit: messages and recipients (policy rules), connections (limits.connection_rate).");
    for (const char* l : {"messages", "recipients", "connections"}) {
        auto it = c.rate_limited.find(l);
        sample("smtpgw_rate_limited_total", {{"limit", l}},
               std::to_string(it == c.rate_limited.end() ? 0 : it->second));
    }
    header(out, "smtpgw_rate_limit_keys", "gauge", "Client addresses and users with a rate limit window running.");
    sample("smtpgw_rate_limit_keys", {}, std::to_string(c.rate_limit_keys));
    header(out, "smtpgw_rate_limit_untracked_total", "counter",
           "New addresses or users not rate limited because the table (100,000 entries) was full.");
    sample("smtpgw_rate_limit_untracked_total", {}, std::to_string(c.rate_limit_untracked));
    header(out, "smtpgw_connections_total", "counter", "Client connections accepted.");
    sample("smtpgw_connections_total", {}, std::to_string(c.connections));
    header(out, "smtpgw_connections_open", "gauge", "Client connections open now.");
    sample("smtpgw_connections_open", {}, std::to_string(c.open_connections));
    return out;
}

// --- the HTTP endpoint ------------------------------------------------------------------------

namespace {
constexpr size_t k_max_connections = 64;          // scrapers are few
constexpr uint64_t k_request_timeout_ms = 10000;  // to send the request line and headers
}  // namespace

struct HttpServer::Conn {
    uv_tcp_t tcp{};
    HttpServer* owner = nullptr;
    std::string in, out;
    uv_write_t write{};
    bool answered = false;
    uint64_t since_ms = 0;

    void close() {
        owner->m_conns.erase(this);
        uv_close(reinterpret_cast<uv_handle_t*>(&tcp), [](uv_handle_t* h) { delete static_cast<Conn*>(h->data); });
    }
};

HttpServer::HttpServer(uv_loop_t* loop, conf::HostPort endpoint, std::function<QueueState()> queue)
    : m_loop(loop), m_endpoint(std::move(endpoint)), m_queue(std::move(queue)) {}

HttpServer::~HttpServer() = default;

void HttpServer::start() {
    auto addr = to_sockaddr(m_endpoint);
    if (!addr) throw std::runtime_error("metrics.listen " + m_endpoint.host + " is not usable");
    m_tcp = new uv_tcp_t;
    uv_tcp_init(m_loop, m_tcp);
    m_tcp->data = this;
    int r = uv_tcp_bind(m_tcp, reinterpret_cast<const sockaddr*>(&*addr), 0);
    if (r == 0)
        r = uv_listen(reinterpret_cast<uv_stream_t*>(m_tcp), 64, [](uv_stream_t* server, int status) {
            if (status != 0) return;
            auto* self = static_cast<HttpServer*>(server->data);
            // Full: the connection waiting longest for its request goes, so that idle
            // connections cannot keep a scraper out.
            if (self->m_conns.size() >= k_max_connections) self->close_oldest();
            bool full = self->m_conns.size() >= k_max_connections;  // all of them being answered
            auto* c = new Conn;
            c->owner = self;
            c->since_ms = uv_now(self->m_loop);
            uv_tcp_init(self->m_loop, &c->tcp);
            c->tcp.data = c;
            if (uv_accept(server, reinterpret_cast<uv_stream_t*>(&c->tcp)) != 0 || full) {
                uv_close(reinterpret_cast<uv_handle_t*>(&c->tcp),
                         [](uv_handle_t* h) { delete static_cast<Conn*>(h->data); });
                return;
            }
            self->m_conns.insert(c);
            uv_read_start(
                reinterpret_cast<uv_stream_t*>(&c->tcp),
                [](uv_handle_t*, size_t, uv_buf_t* buf) {
                    static char storage[4096];
                    *buf = uv_buf_init(storage, sizeof storage);
                },
                [](uv_stream_t* s, ssize_t n, const uv_buf_t* buf) {
                    auto* c = static_cast<Conn*>(s->data);
                    if (c->answered) return;
                    if (n < 0) return c->close();
                    c->in.append(buf->base, size_t(n));
                    bool complete = c->in.find("\r\n\r\n") != std::string::npos;
                    if (!complete && c->in.size() < 8192) return;
                    c->answered = true;
                    uv_read_stop(s);
                    std::string status = "200 OK", type = "text/plain; version=0.0.4; charset=utf-8", body;
                    bool head = c->in.rfind("HEAD ", 0) == 0;
                    std::string_view target(c->in);
                    target.remove_prefix(head ? 5 : 4);
                    auto is = [&](std::string_view path) {
                        return target.substr(0, path.size()) == path && target.size() > path.size() &&
                               (target[path.size()] == ' ' || target[path.size()] == '?');
                    };
                    bool metrics_path = is("/metrics");
                    if (!complete) {
                        status = "431 Request Header Fields Too Large";
                    } else if (!head && c->in.rfind("GET ", 0) != 0) {
                        status = "405 Method Not Allowed";
                    } else if (metrics_path) {
                        body = exposition(c->owner->m_queue());
                    } else if (is("/healthz")) {
                        type = "text/plain; charset=utf-8", body = "ok\n";
                    } else if (is("/readyz")) {
                        type = "text/plain; charset=utf-8";
                        std::string why = c->owner->m_queue().not_ready;
                        if (!why.empty()) status = "503 Service Unavailable";
                        body = why.empty() ? "ready\n" : "not ready: " + why + "\n";
                    } else {
                        status = "404 Not Found";
                        body = "smtpgw serves /metrics, /healthz and /readyz\n";
                    }
                    c->out = "HTTP/1.1 " + status + "\r\nContent-Type: " + type +
                             "\r\nContent-Length: " + std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n" +
                             (head ? std::string() : body);
                    uv_buf_t out = uv_buf_init(c->out.data(), unsigned(c->out.size()));
                    c->write.data = c;
                    uv_write(&c->write, s, &out, 1, [](uv_write_t* w, int) { static_cast<Conn*>(w->data)->close(); });
                });
        });
    if (r != 0) {
        uv_close(reinterpret_cast<uv_handle_t*>(m_tcp), [](uv_handle_t* h) { delete reinterpret_cast<uv_tcp_t*>(h); });
        m_tcp = nullptr;
        throw std::runtime_error("metrics.listen " + m_endpoint.host + ":" + std::to_string(m_endpoint.port) + ": " +
                                 uv_strerror(r));
    }
    m_sweep = new uv_timer_t;
    uv_timer_init(m_loop, m_sweep);
    m_sweep->data = this;
    uv_timer_start(
        m_sweep, [](uv_timer_t* t) { static_cast<HttpServer*>(t->data)->close_idle(); }, 1000, 1000);
}

void HttpServer::close_idle() {
    uint64_t now = uv_now(m_loop);
    auto conns = m_conns;
    for (Conn* c : conns)
        if (!c->answered && now - c->since_ms >= k_request_timeout_ms) c->close();
}

void HttpServer::close_oldest() {
    Conn* oldest = nullptr;
    for (Conn* c : m_conns)
        if (!c->answered && (!oldest || c->since_ms < oldest->since_ms)) oldest = c;
    if (oldest) oldest->close();
}

void HttpServer::close() {
    auto conns = m_conns;
    for (Conn* c : conns)
        c->close();
    if (m_sweep) {
        uv_close(reinterpret_cast<uv_handle_t*>(m_sweep),
                 [](uv_handle_t* h) { delete reinterpret_cast<uv_timer_t*>(h); });
        m_sweep = nullptr;
    }
    if (m_tcp) {
        uv_close(reinterpret_cast<uv_handle_t*>(m_tcp), [](uv_handle_t* h) { delete reinterpret_cast<uv_tcp_t*>(h); });
        m_tcp = nullptr;
    }
}

}  // namespace gateway::metrics
