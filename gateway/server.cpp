#include "gateway/server.hpp"

#include "gateway/log.hpp"
#include "gateway/net.hpp"
#include "gateway/server_connection.hpp"

#include <chrono>
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
    return p;
}

constexpr size_t k_read_buffer = 64 * 1024;

}  // namespace

struct Server::Listener {
    uv_tcp_t tcp{};
    Server* server = nullptr;
    std::shared_ptr<const ListenerSettings> settings;
};

Server::Server(uv_loop_t* loop, std::shared_ptr<const conf::Config> config, Spool& spool)
    : m_loop(loop), m_config(std::move(config)), m_spool(spool), m_read_buffer(k_read_buffer) {}

Server::~Server() = default;

std::shared_ptr<const ListenerSettings> Server::settings_for(const conf::Listen& l) const {
    auto s = std::make_shared<ListenerSettings>();
    s->listen = l;
    s->policy = make_policy(*m_config, l);
    s->clients = m_config->clients;
    return s;
}

void Server::start() {
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
    const auto& limits = m_config->limits;
    Reply refusal;
    bool refuse = false;
    if (m_stopping) {
        refusal = replies::shutting_down(m_config->hostname), refuse = true;
    } else if (m_active >= limits.connections) {
        refusal = replies::too_many_connections(m_config->hostname), refuse = true;
    } else if (m_per_client[*ip] >= limits.connections_per_client) {
        refusal = replies::too_many_connections_from(m_config->hostname, ip->to_string()), refuse = true;
    }
    if (!refuse) {
        m_per_client[*ip]++;
        m_active++;
    }
    conn->start(*ip, refuse ? &refusal : nullptr);
}

void Server::connection_closed(ServerConnection* c, const conf::IpAddress& ip, bool counted) {
    if (counted) {
        m_active--;
        auto it = m_per_client.find(ip);
        if (it != m_per_client.end() && --it->second == 0) m_per_client.erase(it);
    }
    m_connections.erase(c);
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
    if (m_on_stored) m_on_stored(e, std::move(content));
}

uv_buf_t Server::read_buffer() { return uv_buf_init(m_read_buffer.data(), unsigned(m_read_buffer.size())); }

void Server::stop(std::function<void()> stopped) {
    if (m_stopping) return;
    m_stopping = true;
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
}

void Server::reload(std::shared_ptr<const conf::Config> config) {
    m_config = std::move(config);
    log::set_level(m_config->log.level);
    for (auto& l : m_listeners) {
        const conf::Listen* match = nullptr;
        for (const auto& n : m_config->listen)
            if (n.endpoint.host == l->settings->listen.endpoint.host &&
                n.endpoint.port == l->settings->listen.endpoint.port)
                match = &n;
        if (!match) {
            log::warning(log::Component::Master, "listener " + l->settings->listen.address +
                                                     " is no longer configured; it stays open until a restart");
            continue;
        }
        l->settings = settings_for(*match);
    }
    for (const auto& n : m_config->listen) {
        bool known = false;
        for (auto& l : m_listeners)
            known = known || (n.endpoint.host == l->settings->listen.endpoint.host &&
                              n.endpoint.port == l->settings->listen.endpoint.port);
        if (!known) log::warning(log::Component::Master, "new listener " + n.address + " opens after a restart");
    }
}

}  // namespace gateway
