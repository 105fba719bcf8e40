#include "gateway/ops/metrics_http.hpp"

#include "gateway/common/metrics.hpp"

#include <cstdio>
#include <stdexcept>

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

HttpServer::HttpServer(uv_loop_t* loop, conf::HostPort endpoint, std::function<QueueState()> queue)
    : m_queue(std::move(queue)) {
    // Scrapers are few; each has ten seconds for its request.
    WebLimits limits;
    limits.connections = 64;
    limits.per_client = 0;
    limits.timeout_seconds = 10;
    m_web = std::make_unique<WebServer>(
        loop, std::move(endpoint), [this](const WebRequest& r, const WebRespond& respond) { respond(answer(r)); },
        limits);
}

HttpServer::~HttpServer() = default;

WebResponse HttpServer::answer(const WebRequest& r) const {
    const char* text = "text/plain; charset=utf-8";
    if (r.method != "GET" && r.method != "HEAD") return {405, text, "method not allowed\n", {{"Allow", "GET, HEAD"}}};
    if (r.path == "/metrics") return {200, "text/plain; version=0.0.4; charset=utf-8", exposition(m_queue()), {}};
    if (r.path == "/healthz") return {200, text, "ok\n", {}};
    if (r.path == "/readyz") {
        std::string why = m_queue().not_ready;
        return {why.empty() ? 200 : 503, text, why.empty() ? "ready\n" : "not ready: " + why + "\n", {}};
    }
    return {404, text, "smtpgw serves /metrics, /healthz and /readyz\n", {}};
}

void HttpServer::start() {
    try {
        m_web->start();
    } catch (const std::exception& e) {
        throw std::runtime_error(std::string("metrics.listen ") + e.what());
    }
}

void HttpServer::close() { m_web->close(); }

}  // namespace gateway::metrics
