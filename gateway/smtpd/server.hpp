// The listening side of the gateway on one libuv loop: listeners, connection accounting,
// signals, reload and orderly shutdown. Each accepted socket becomes a ServerConnection.
//
// Call order: start() binds every listener (throws on failure); the loop runs; stop() (also
// on SIGTERM/SIGINT) closes the listeners, asks every session to finish, and calls the
// stopped callback once the last connection is gone.
#pragma once

#include "auth/sasl_server.hpp"
#include "conf/config.hpp"
#include "gateway/common/queue_id.hpp"
#include "gateway/dns/dns.hpp"
#include "gateway/queue/spool.hpp"
#include "gateway/smtpd/access_policy.hpp"
#include "gateway/smtpd/auth_limits.hpp"
#include "gateway/smtpd/auth_worker.hpp"
#include "gateway/smtpd/rate_limiter.hpp"
#include "gateway/smtpd/smtp_session.hpp"
#include "tls/tls_engine.hpp"

#include <uv.h>

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace gateway {

class ServerConnection;

// What one listener's sessions need, shared by them and replaced as a whole on reload.
struct ListenerSettings {
    conf::Listen listen;
    SessionPolicy policy;
    std::vector<conf::Cidr> clients;
    std::shared_ptr<tls::Context> tls;  // for starttls and implicit listeners
    auth::ServerOptions sasl;
    bool client_names = false;  // dns.client_names
};

class Server {
public:
    Server(uv_loop_t* loop, std::shared_ptr<const conf::Config> config, Spool& spool);
    ~Server();
    Server(const Server&) = delete;
    Server& operator=(const Server&) = delete;

    void start();
    // Warns about files the gateway will read later (the sasldb at each AUTH, the certificate on
    // SIGHUP) and cannot read as the account it runs as.
    void check_files() const;
    void stop(std::function<void()> stopped);
    // Applies a new configuration to listeners that exist; listen address changes need a restart.
    void reload(std::shared_ptr<const conf::Config> config);
    // Called for every message the listener has made durable (the queue manager takes it up).
    // A small message's content comes along, so that its first delivery need not read it back.
    using StoredFn = std::function<void(const Envelope&, std::shared_ptr<const std::string> content)>;
    void on_stored(StoredFn f) { m_on_stored = std::move(f); }
    // The resolver for client names (dns.client_names); none: every client is "unknown".
    void set_resolver(dns::Resolver* resolver) { m_resolver = resolver; }
    dns::Resolver* resolver() const { return m_resolver; }
    // The queue IDs already in the spool, so new ones never repeat them.
    void observe_queue_id(const std::string& id) { m_ids.observe(id); }

    // Ports actually bound, in listener order (for listeners configured with port 0 in tests).
    std::vector<int> bound_ports() const;

    // Used by connections.
    uv_loop_t* loop() const { return m_loop; }
    Spool& spool() { return m_spool; }
    const conf::Config& config() const { return *m_config; }
    std::string next_queue_id();
    void message_stored(const Envelope& e, std::shared_ptr<const std::string> content);
    // Messages' contents kept in memory between their first octet and their hand-over to the
    // queue manager, in all sessions together: at most k_copy_total octets.
    bool copy_reserve(size_t octets) {
        if (m_copy_bytes + octets > k_copy_total) return false;
        m_copy_bytes += octets;
        return true;
    }
    void copy_release(size_t octets) { m_copy_bytes -= octets; }
    static constexpr size_t k_copy_total = 64 * 1024 * 1024;
    void connection_closed(ServerConnection* c, const conf::IpAddress& ip, bool counted);
    uv_buf_t read_buffer();
    AuthWorker& auth_worker() { return m_auth; }
    AuthLimits& auth_limits() { return m_auth_limits; }  // to refuse a client that keeps guessing
    const RateLimiter& rate_limiter() const { return m_limiter; }

private:
    size_t m_copy_bytes = 0;  // see copy_reserve()
    struct Listener;
    void on_connection(Listener& l);
    // The limits for the client at `ip` (behind a balancer: the address its PROXY header names).
    void admit(const std::shared_ptr<ServerConnection>& conn, const conf::IpAddress& ip);
    std::shared_ptr<const ListenerSettings> settings_for(const conf::Listen& l);
    std::shared_ptr<tls::Context> load_tls(const conf::Config& c) const;  // throws with the reason
    // Contexts for listeners with tls_protocols or tls_ciphers, by listen address; throws.
    std::map<std::string, std::shared_ptr<tls::Context>> load_legacy_tls(const conf::Config& c) const;

    uv_loop_t* m_loop;
    std::shared_ptr<const conf::Config> m_config;
    Spool& m_spool;
    QueueIdGenerator m_ids;
    std::vector<std::unique_ptr<Listener>> m_listeners;
    std::map<ServerConnection*, std::shared_ptr<ServerConnection>> m_connections;
    std::map<conf::IpAddress, unsigned> m_per_client;  // sessions that were not refused
    size_t m_active = 0;
    std::function<void()> m_stopped;
    StoredFn m_on_stored;
    bool m_stopping = false;
    uv_timer_t* m_drain_timer = nullptr;
    std::vector<char> m_read_buffer;
    std::shared_ptr<const SenderRewriter> m_rewriter;
    dns::Resolver* m_resolver = nullptr;
    std::shared_ptr<tls::Context> m_tls;  // the certificate offered to clients
    std::map<std::string, std::shared_ptr<tls::Context>> m_legacy_tls;
    AuthWorker m_auth;
    AuthLimits m_auth_limits;
    std::shared_ptr<const AccessPolicy> m_access;  // policy:, replaced on reload
    RateLimiter m_limiter;                         // kept across reloads
};

}  // namespace gateway
