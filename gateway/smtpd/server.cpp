#include "gateway/smtpd/server.hpp"

#include "gateway/common/log.hpp"
#include "gateway/common/metrics.hpp"
#include "gateway/common/net.hpp"
#include "gateway/smtpd/server_connection.hpp"

#include <unistd.h>
#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <stdexcept>

namespace gateway {

namespace {

SessionPolicy make_policy(const conf::Config& c, const conf::Listen& l) {
    SessionPolicy p;
    p.hostname = c.hostname;
    p.message_size = c.limits.message_size;
    p.max_recipients = c.limits.recipients;
    p.max_errors = c.limits.errors;
    p.line_length = c.limits.line_length;
    p.reject_bare_lf = l.bare_newline == conf::BareNewline::Reject;
    p.address_literals = c.limits.address_literals;
    return p;
}

constexpr size_t k_read_buffer = 64 * 1024;
constexpr uint64_t k_drain_ms = 10000;  // SIGTERM: time for messages in transfer to finish

// A sasldb that cannot be read fails every AUTH (454); say so when the configuration is loaded.
void check_sasldb(const conf::Config& c) {
    bool auth = std::any_of(c.listen.begin(), c.listen.end(),
                            [](const conf::Listen& l) { return l.auth != conf::ListenAuth::None; });
    if (!auth || !c.sasl) return;
    if (c.sasl->pwcheck == conf::ServerSasl::Check::Saslauthd) {
        if (::access(c.sasl->saslauthd_socket.c_str(), W_OK) != 0)
            log::warning(log::Component::Master, "sasl.saslauthd_socket " + c.sasl->saslauthd_socket + ": " +
                                                     std::strerror(errno) +
                                                     "; every AUTH gets 454 4.7.0 until saslauthd listens there");
        return;
    }
    if (::access(c.sasl->sasldb.c_str(), R_OK) == 0) return;
    log::warning(log::Component::Master,
                 "sasl.sasldb " + c.sasl->sasldb + ": " + std::strerror(errno) +
                     "; every AUTH gets 454 4.7.0 until it can be read (smtpgw user add creates it)");
}

}  // namespace

struct Server::Listener {
    uv_tcp_t tcp{};
    Server* server = nullptr;
    std::shared_ptr<const ListenerSettings> settings;
};

Server::Server(uv_loop_t* loop, std::shared_ptr<const conf::Config> config, Spool& spool)
    : m_loop(loop),
      m_config(std::move(config)),
      m_spool(spool),
      m_read_buffer(k_read_buffer),
      m_rewriter(std::make_shared<SenderRewriter>(m_config->sender)),
      m_access(std::make_shared<AccessPolicy>(m_config->policy)) {}

Server::~Server() = default;

std::shared_ptr<const ListenerSettings> Server::settings_for(const conf::Listen& l) {
    auto s = std::make_shared<ListenerSettings>();
    s->listen = l;
    s->policy = make_policy(*m_config, l);
    s->clients = l.clients ? *l.clients : m_config->clients;
    s->policy.listener = l.address;
    s->policy.access = m_access;
    s->policy.limiter = &m_limiter;
    auto context = m_tls;
    if (l.legacy_tls()) {
        auto it = m_legacy_tls.find(l.address);
        context = it == m_legacy_tls.end() ? nullptr : it->second;
    }
    s->tls = l.tls == conf::ListenTls::None ? nullptr : context;
    s->policy.starttls = l.tls == conf::ListenTls::StartTls && context;
    s->policy.rewriter = m_rewriter;
    s->client_names = m_config->dns.client_names;
    if (m_config->sasl) {
        s->policy.auth = l.auth;
        s->policy.mechanisms = m_config->sasl->mechanisms;
        s->policy.auth_without_tls = m_config->sasl->plaintext_without_tls;
        bool saslauthd = m_config->sasl->pwcheck == conf::ServerSasl::Check::Saslauthd;
        s->sasl = auth::ServerOptions{m_config->sasl->sasldb, m_config->sasl->mechanisms, m_config->hostname,
                                      saslauthd ? m_config->sasl->saslauthd_socket : ""};
    }
    return s;
}

std::shared_ptr<tls::Context> Server::load_tls(const conf::Config& c) const {
    if (!c.tls) return nullptr;
    std::string error;
    auto ctx = tls::server_context(c.tls->certificate, c.tls->key, error);
    if (!ctx) throw std::runtime_error(error);
    return ctx;
}

std::map<std::string, std::shared_ptr<tls::Context>> Server::load_legacy_tls(const conf::Config& c) const {
    std::map<std::string, std::shared_ptr<tls::Context>> out;
    if (!c.tls) return out;
    for (const auto& l : c.listen) {
        if (!l.legacy_tls() || l.tls == conf::ListenTls::None) continue;
        tls::ServerProfile profile;
        profile.min_minor = int(l.tls_min) + 1;
        profile.max_minor = int(l.tls_max) + 1;
        profile.legacy_ciphers = l.tls_ciphers == conf::TlsCiphers::Legacy;
        std::string error;
        auto ctx = tls::server_context(c.tls->certificate, c.tls->key, error, profile);
        if (!ctx) throw std::runtime_error("listener " + l.address + ": " + error);
        out[l.address] = ctx;
    }
    return out;
}

void Server::check_files() const {
    check_sasldb(*m_config);
    if (!m_config->tls) return;
    for (const auto& [key, path] :
         {std::pair{"tls.certificate", m_config->tls->certificate}, {"tls.key", m_config->tls->key}})
        if (::access(path.c_str(), R_OK) != 0)
            log::warning(log::Component::Master, std::string(key) + " " + path + ": " + std::strerror(errno) +
                                                     "; a reload (SIGHUP) keeps the certificate loaded now");
}

void Server::start() {
    m_tls = load_tls(*m_config);
    m_legacy_tls = load_legacy_tls(*m_config);
    m_auth.start(m_loop);
    for (const auto& l : m_config->listen) {
        auto listener = std::make_unique<Listener>();
        listener->server = this;
        listener->settings = settings_for(l);
        auto addr = to_sockaddr(l.endpoint);
        if (!addr) throw std::runtime_error("listen address " + l.address + " is not usable");
        uv_tcp_init(m_loop, &listener->tcp);
        listener->tcp.data = listener.get();
        // [::] means IPv6 only; list 0.0.0.0 as well to accept IPv4.
        unsigned flags = addr->ss_family == AF_INET6 ? UV_TCP_IPV6ONLY : 0;
        int r = uv_tcp_bind(&listener->tcp, reinterpret_cast<const sockaddr*>(&*addr), flags);
        if (r == 0)
            r = uv_listen(reinterpret_cast<uv_stream_t*>(&listener->tcp), 511, [](uv_stream_t* s, int status) {
                auto* l = static_cast<Listener*>(s->data);
                if (status == 0)
                    l->server->on_connection(*l);
                else
                    log::warning(log::Component::Smtpd, "accept failed: " + uv_text(status));
            });
        if (r != 0) {
            uv_close(reinterpret_cast<uv_handle_t*>(&listener->tcp), nullptr);
            m_listeners.push_back(std::move(listener));  // freed after the loop has closed the handle
            throw std::runtime_error("cannot listen on " + l.address + ": " + uv_text(r));
        }
        auto port = local_port(&listener->tcp);
        log::info(log::Component::Master, "listening on " + l.address +
                                              (port ? " (port " + std::to_string(*port) + ")" : "") +
                                              ", tls=" + conf::to_string(l.tls) + ", auth=" + conf::to_string(l.auth));
        m_listeners.push_back(std::move(listener));
    }
}

std::vector<int> Server::bound_ports() const {
    std::vector<int> out;
    for (const auto& l : m_listeners)
        out.push_back(local_port(&l->tcp).value_or(0));
    return out;
}

void Server::on_connection(Listener& l) {
    auto conn = std::make_shared<ServerConnection>(*this, l.settings);
    if (uv_accept(reinterpret_cast<uv_stream_t*>(&l.tcp), reinterpret_cast<uv_stream_t*>(conn->tcp())) != 0) {
        conn->abandon();
        m_connections[conn.get()] = conn;
        return;
    }
    m_connections[conn.get()] = conn;
    auto ip = peer_address(conn->tcp());
    if (!ip) {
        conn->abandon();
        return;
    }
    const conf::Listen& listen = l.settings->listen;
    if (listen.proxy_protocol && !m_stopping) {
        // Only the balancers may say who the client is; the header comes before anything else.
        bool proxy = std::any_of(listen.proxies.begin(), listen.proxies.end(),
                                 [&](const conf::Cidr& c) { return c.contains(*ip); });
        if (!proxy) {
            log::warning(log::Component::Smtpd, "connect from " + ip->to_string() + " to " + listen.address +
                                                    ": not in its proxies (a PROXY protocol listener); closed");
            conn->abandon();
            return;
        }
        // Connections still waiting for their header count too: limits.connections bounds them all.
        if (m_connections.size() > m_config->limits.connections) {
            log::warning(log::Component::Smtpd, "connect from " + ip->to_string() + " to " + listen.address +
                                                    ": limits.connections reached before its PROXY header; closed");
            conn->abandon();
            return;
        }
        std::weak_ptr<ServerConnection> weak = conn;
        conn->await_proxy_header(*ip, [this, weak](const conf::IpAddress& client) {
            if (auto c = weak.lock()) admit(c, client);
        });
        return;
    }
    admit(conn, *ip);
}

void Server::admit(const std::shared_ptr<ServerConnection>& conn, const conf::IpAddress& client) {
    const conf::IpAddress* ip = &client;
    const auto& limits = m_config->limits;
    Reply refusal;
    bool refuse = false;
    if (m_stopping) {
        refusal = replies::shutting_down(m_config->hostname), refuse = true;
    } else if (m_active >= limits.connections) {
        refusal = replies::too_many_connections(m_config->hostname), refuse = true;
    } else if (m_per_client[*ip] >= limits.connections_per_client) {
        refusal = replies::too_many_connections_from(m_config->hostname, ip->to_string()), refuse = true;
    } else if (limits.connection_rate.count &&
               !m_limiter.take("c:" + ip->to_string(), 1, limits.connection_rate.count, limits.connection_rate.seconds,
                               int64_t(uv_now(m_loop)) * 1000)) {
        // Postfix's words (smtpd_client_connection_rate_limit), then its 421.
        log::warning(log::Component::Smtpd, "Connection rate limit exceeded: more than " +
                                                std::to_string(limits.connection_rate.count) + " per " +
                                                period_words(limits.connection_rate.seconds) + " from " +
                                                ip->to_string() + " for service smtp");
        metrics::rate_limited("connections");
        refusal = replies::too_many_connections_from(m_config->hostname, ip->to_string()), refuse = true;
    }
    if (!refuse) {
        m_per_client[*ip]++;
        m_active++;
        metrics::connection_opened();
    }
    conn->start(*ip, refuse ? &refusal : nullptr);
}

void Server::connection_closed(ServerConnection* c, const conf::IpAddress& ip, bool counted) {
    if (counted) {
        m_active--;
        metrics::connection_closed();
        auto it = m_per_client.find(ip);
        if (it != m_per_client.end() && --it->second == 0) m_per_client.erase(it);
    }
    m_connections.erase(c);
    if (m_stopping && m_connections.empty() && m_drain_timer) {
        uv_close(reinterpret_cast<uv_handle_t*>(m_drain_timer),
                 [](uv_handle_t* h) { delete reinterpret_cast<uv_timer_t*>(h); });
        m_drain_timer = nullptr;
    }
    if (m_stopping && m_connections.empty() && m_stopped) {
        auto stopped = std::move(m_stopped);
        m_stopped = nullptr;
        stopped();
    }
}

std::string Server::next_queue_id() {
    using namespace std::chrono;
    return m_ids.next(duration_cast<microseconds>(system_clock::now().time_since_epoch()).count());
}

void Server::message_stored(const Envelope& e, std::shared_ptr<const std::string> content) {
    log::info(log::Component::Cleanup, e.id + ": message-id=" + e.message_id);
    metrics::message_received();
    if (m_on_stored) m_on_stored(e, std::move(content));
}

uv_buf_t Server::read_buffer() { return uv_buf_init(m_read_buffer.data(), unsigned(m_read_buffer.size())); }

void Server::stop(std::function<void()> stopped) {
    if (m_stopping) return;
    m_stopping = true;
    m_auth.close();
    for (auto& l : m_listeners)
        if (!uv_is_closing(reinterpret_cast<uv_handle_t*>(&l->tcp)))
            uv_close(reinterpret_cast<uv_handle_t*>(&l->tcp), nullptr);
    if (m_connections.empty()) return stopped();
    m_stopped = std::move(stopped);
    // Copy: shutting a session down may close it and remove it from the map.
    std::vector<std::shared_ptr<ServerConnection>> all;
    for (auto& [ptr, conn] : m_connections)
        all.push_back(conn);
    for (auto& c : all)
        c->shutdown();
    // A message still being transferred gets this long to finish; then it is cut off with 421
    // (and never acknowledged, so the client still has it).
    m_drain_timer = new uv_timer_t;
    uv_timer_init(m_loop, m_drain_timer);
    m_drain_timer->data = this;
    uv_timer_start(
        m_drain_timer,
        [](uv_timer_t* t) {
            auto* self = static_cast<Server*>(t->data);
            std::vector<std::shared_ptr<ServerConnection>> left;
            for (auto& [ptr, conn] : self->m_connections)
                left.push_back(conn);
            for (auto& c : left)
                c->shutdown(true);
        },
        k_drain_ms, 0);
}

void Server::reload(std::shared_ptr<const conf::Config> config) {
    // The certificate files are read again; if they no longer load, the old ones stay.
    try {
        auto tls = load_tls(*config);
        m_legacy_tls = load_legacy_tls(*config);
        m_tls = tls;
    } catch (const std::exception& e) {
        log::error(log::Component::Master,
                   std::string("TLS certificate not reloaded, keeping the old one: ") + e.what());
    }
    m_config = std::move(config);
    m_rewriter = std::make_shared<SenderRewriter>(m_config->sender);
    m_access = std::make_shared<AccessPolicy>(m_config->policy);
    log::set_level(m_config->log.level);
    check_sasldb(*m_config);
    // Listeners pair with the new `listen:` entries by address, in order (port 0 may appear twice).
    auto same = [](const conf::Listen& a, const conf::Listen& b) {
        return a.endpoint.host == b.endpoint.host && a.endpoint.port == b.endpoint.port;
    };
    std::vector<bool> used(m_config->listen.size(), false);
    for (auto& l : m_listeners) {
        const conf::Listen* match = nullptr;
        for (size_t i = 0; i < m_config->listen.size() && !match; ++i)
            if (!used[i] && same(m_config->listen[i], l->settings->listen)) {
                used[i] = true;
                match = &m_config->listen[i];
            }
        if (!match) {
            log::warning(log::Component::Master, "listener " + l->settings->listen.address +
                                                     " is no longer configured; it stays open until a restart");
            continue;
        }
        l->settings = settings_for(*match);
    }
    for (size_t i = 0; i < m_config->listen.size(); ++i) {
        if (!used[i])
            log::warning(log::Component::Master,
                         "new listener " + m_config->listen[i].address + " opens after a restart");
    }
}

}  // namespace gateway
