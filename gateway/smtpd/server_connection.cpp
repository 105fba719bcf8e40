#include "gateway/smtpd/server_connection.hpp"

#include "gateway/common/log.hpp"
#include "gateway/common/metrics.hpp"
#include "gateway/common/net.hpp"
#include "gateway/common/text.hpp"
#include "gateway/dns/spf.hpp"
#include "gateway/queue/spool.hpp"
#include "gateway/smtpd/proxy_protocol.hpp"

#include <algorithm>
#include <cctype>
#include <chrono>
#include <random>

namespace gateway {

namespace {

struct WriteRequest {
    uv_write_t req;
    std::string data;
    ServerConnection* owner = nullptr;
};

constexpr size_t k_max_buffered_input = 256 * 1024;
// Replies handed to the socket that the client has not taken yet. Past this a client that
// pipelines commands without reading gets no further replies made, and is not read from.
constexpr size_t k_max_output_backlog = 16 * 1024;
// Once the session has said its last reply: the most time the client gets to take it (less
// when limits.command_timeout is shorter).
constexpr uint64_t k_close_drain_ms = 10 * 1000;
// A message up to this size is also kept in memory (within Server::k_copy_total in all), so that
// its first delivery does not read it back from the spool.
constexpr size_t k_copy_limit = 1024 * 1024;

template <typename F>
void guarded(ServerConnection* c, const char* where, F&& f);

}  // namespace

ServerConnection::ServerConnection(Server& server, std::shared_ptr<const ListenerSettings> settings)
    : m_server(server), m_settings(std::move(settings)) {
    uv_tcp_init(server.loop(), &m_tcp);
    uv_timer_init(server.loop(), &m_timer);
    m_tcp.data = this;
    m_timer.data = this;
    m_handles_open = 2;
}

ServerConnection::~ServerConnection() { drop_copy(); }

void ServerConnection::await_proxy_header(const conf::IpAddress& proxy,
                                          std::function<void(const conf::IpAddress&)> admit) {
    m_ip = proxy;
    m_proxy_admit = std::move(admit);
    uv_timer_start(
        &m_timer,
        [](uv_timer_t* h) {
            auto* c = static_cast<ServerConnection*>(h->data);
            guarded(c, "timer", [&] {
                log::warning(log::Component::Smtpd, "PROXY header from " + c->m_ip.to_string() +
                                                        ": none within limits.handshake_timeout; closed");
                c->close({});
            });
        },
        uint64_t(m_server.config().limits.handshake_timeout.count()) * 1000, 0);
    int r = uv_read_start(
        reinterpret_cast<uv_stream_t*>(&m_tcp),
        [](uv_handle_t* h, size_t, uv_buf_t* buf) {
            *buf = static_cast<ServerConnection*>(h->data)->m_server.read_buffer();
        },
        [](uv_stream_t* s, ssize_t nread, const uv_buf_t* buf) {
            auto* c = static_cast<ServerConnection*>(s->data);
            guarded(c, "read", [&] {
                if (nread < 0) return c->close({});
                if (nread > 0) c->on_proxy_bytes(std::string_view(buf->base, size_t(nread)));
            });
        });
    if (r != 0) close({});
}

void ServerConnection::on_proxy_bytes(std::string_view bytes) {
    m_proxy_in.append(bytes);
    ProxyHeader header;
    std::string error;
    auto r = parse_proxy_header(m_proxy_in, header, error);
    if (r == ProxyParse::Incomplete) return;
    uv_read_stop(reinterpret_cast<uv_stream_t*>(&m_tcp));
    uv_timer_stop(&m_timer);
    if (r == ProxyParse::Invalid) {
        log::warning(log::Component::Smtpd, "PROXY header from " + m_ip.to_string() + ": " + error + "; closed");
        m_proxy_admit = nullptr;
        return close({});
    }
    m_early = m_proxy_in.substr(header.length);
    std::string().swap(m_proxy_in);
    auto admit = std::move(m_proxy_admit);
    m_proxy_admit = nullptr;
    if (!header.local)
        log::debug(log::Component::Smtpd, "PROXY v" + std::to_string(header.version) + " from " + m_ip.to_string() +
                                              ": client " + header.source->to_string() + " port " +
                                              std::to_string(header.source_port));
    admit(header.local ? m_ip : *header.source);
}

void ServerConnection::take_early_input() {
    if (m_early.empty() || m_closing) return;
    std::string early = std::move(m_early);
    m_early.clear();
    if (m_tls)
        on_ciphertext(early);
    else
        m_session->feed(early);
    after_step();
}

void ServerConnection::start(conf::IpAddress ip, const Reply* refusal) {
    m_ip = ip;
    m_counted = refusal == nullptr;
    if (refusal) m_refusal = *refusal;
    uv_tcp_nodelay(&m_tcp, 1);
    dns::Resolver* resolver = m_server.resolver();
    if (refusal || !resolver || !m_settings->client_names) return begin("unknown");
    std::weak_ptr<ServerConnection> weak = shared_from_this();
    look_up_client_name(*resolver, ip, [weak](const std::string& name) {
        auto self = weak.lock();
        if (self && !self->m_closing) guarded(self.get(), "client name", [&] { self->begin(name); });
    });
}

// Postfix's rule: the first name of the address's PTR record, if that name resolves back to the
// address; otherwise "unknown" (with a warning when the name points elsewhere).
void ServerConnection::look_up_client_name(dns::Resolver& resolver, const conf::IpAddress& ip,
                                           const std::function<void(const std::string&)>& done) {
    resolver.ptr(spf::reverse_name(ip), [&resolver, ip, done](dns::Status s, std::vector<std::string> names) {
        if (s != dns::Status::Ok || names.empty()) return done("unknown");
        std::string name = names.front();
        // It goes into the log and Received: as the client's name: a host name or nothing.
        bool host_name = !name.empty() && name.size() <= 253 && std::all_of(name.begin(), name.end(), [](char c) {
            return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '.' || c == '_';
        });
        if (!host_name) {
            log::warning(log::Component::Smtpd,
                         "malformed host name " + printable(name) + " in the PTR record of " + ip.to_string());
            return done("unknown");
        }
        resolver.addresses(name, [ip, name, done](dns::Status, std::vector<conf::IpAddress> addresses) {
            if (std::find(addresses.begin(), addresses.end(), ip) != addresses.end()) return done(name);
            log::warning(log::Component::Smtpd, "hostname " + name + " does not resolve to address " + ip.to_string());
            done("unknown");
        });
    });
}

void ServerConnection::begin(const std::string& name) {
    ClientInfo client;
    client.ip = m_ip.to_string();
    client.name = name;
    for (const auto& net : m_settings->clients)
        client.may_relay = client.may_relay || net.contains(m_ip);
    m_session = std::make_unique<SmtpSession>(m_settings->policy, std::move(client), *this);
    if (m_settings->listen.tls == conf::ListenTls::Implicit && m_settings->tls) {
        // A refusal cannot be said before TLS, and no handshake is done for a client refused:
        // the connection closes at once, with the reason in the log.
        if (m_refusal) {
            m_session->start_refused(*m_refusal);
            m_session->take_output();
            return close({});
        }
        // RFC 8314: TLS from the first byte; the greeting comes once the handshake is done.
        begin_tls();
        update_reading();
        return take_early_input();
    }
    greet();
    take_early_input();
}

void ServerConnection::greet() {
    if (m_refusal)
        m_session->start_refused(*m_refusal);
    else
        m_session->start();
    after_step();
}

void ServerConnection::begin_tls() {
    m_tls = std::make_unique<tls::Engine>(m_settings->tls, tls::Engine::Role::Server, "");
    // The whole handshake gets limits.handshake_timeout from here, however the bytes trickle in.
    uv_timer_start(
        &m_timer,
        [](uv_timer_t* h) {
            auto* c = static_cast<ServerConnection*>(h->data);
            guarded(c, "timer", [&] { c->close("timeout"); });
        },
        uint64_t(m_server.config().limits.handshake_timeout.count()) * 1000, 0);
}

void ServerConnection::start_tls() { m_tls_after_write = true; }

void ServerConnection::on_ciphertext(std::string_view bytes) {
    m_tls->receive(bytes);
    if (!m_tls_ready) {
        auto r = m_tls->handshake();
        if (m_tls->has_output()) write_raw(m_tls->take_output());
        if (r == tls::Result::WantIo) return;
        if (r != tls::Result::Ok) {
            // An old device is the usual cause: say which listener setting would take it.
            std::string error = m_tls->error(), hint;
            if (error.find("min/max boundaries") != std::string::npos &&
                m_settings->listen.tls_min != conf::TlsVersion::Tls10)
                hint =
                    " (the client speaks an older TLS than this listener accepts; for a device that cannot be "
                    "updated, a listener with tls_protocols: [tls1.0, tls1.1, tls1.2] takes it)";
            else if (error.find("no ciphersuites in common") != std::string::npos &&
                     m_settings->listen.tls_ciphers != conf::TlsCiphers::Legacy)
                hint =
                    " (the client offers only older cipher suites; for a device that cannot be updated, a "
                    "listener with tls_ciphers: legacy takes it)";
            log::warning(log::Component::Smtpd,
                         m_session->client().label() + ": TLS handshake failed: " + error + hint);
            return close("TLS handshake failed");
        }
        m_tls_ready = true;
        auto info = m_tls->info();
        metrics::tls_session("in", info.version);
        if (info.version == "TLSv1.0" || info.version == "TLSv1.1")
            metrics::tls_legacy_session(info.version, m_session->client().ip);
        std::string description = info.version + " with cipher " + info.cipher;
        log::info(log::Component::Smtpd,
                  "Anonymous TLS connection established from " + m_session->client().label() + ": " + description);
        bool implicit_first = !m_session->tls_active() && m_settings->listen.tls == conf::ListenTls::Implicit;
        m_session->on_tls_started(description);
        if (implicit_first) greet();
    }
    std::string plain;
    auto r = m_tls->read(plain);
    if (m_tls->has_output()) write_raw(m_tls->take_output());
    if (!plain.empty()) m_session->feed(plain);
    if (r == tls::Result::Closed || r == tls::Result::Failed) return close("lost connection");
}

void ServerConnection::shutdown(bool force) {
    m_stopping = true;
    m_force_stop = m_force_stop || force;
    if (m_proxy_admit) {  // still waiting for the balancer's header: nothing to finish
        m_proxy_admit = nullptr;
        return close({});
    }
    if (!m_session || m_closing) return;
    m_session->on_shutdown(m_force_stop);
    after_step();
}

void ServerConnection::abandon() { close("shutdown"); }

// Sends what the session produced, then decides whether to read, wait or close.
void ServerConnection::after_step() {
    if (m_closing) return;
    while (m_session->has_output()) {
        send(m_session->take_output());
        if (m_closing) return;
        if (output_backlog() >= k_max_output_backlog || !m_session->can_resume()) break;
        m_session->resume();  // the next batch of pipelined commands
    }
    if (m_tls_after_write) {  // the 220 to STARTTLS is on its way in plaintext; TLS follows
        m_tls_after_write = false;
        begin_tls();
    }
    if (m_session->closing()) {
        if (m_reading) uv_read_stop(reinterpret_cast<uv_stream_t*>(&m_tcp)), m_reading = false;
        if (m_writes_in_flight == 0) return close({});
        // A client that does not take the last replies is cut off after the drain time.
        uv_timer_start(
            &m_timer,
            [](uv_timer_t* h) {
                auto* c = static_cast<ServerConnection*>(h->data);
                guarded(c, "timer", [&] { c->close("lost connection"); });
            },
            std::min<uint64_t>(k_close_drain_ms, uint64_t(m_server.config().limits.command_timeout.count()) * 1000), 0);
        return;
    }
    if (m_stopping && !m_session->waiting()) {
        m_session->on_shutdown(m_force_stop);
        if (m_session->closing()) return after_step();
    }
    update_reading();
    arm_timer();
}

void ServerConnection::update_reading() {
    // While a commit is in flight the session keeps what arrives (a pipelined next transaction)
    // and works on it afterwards; reading stops only when that grows large.
    bool want = !m_spool_paused && m_session->buffered_input() < k_max_buffered_input &&
                output_backlog() < k_max_output_backlog;
    auto* stream = reinterpret_cast<uv_stream_t*>(&m_tcp);
    if (want && !m_reading) {
        int r = uv_read_start(
            stream,
            [](uv_handle_t* h, size_t, uv_buf_t* buf) {
                *buf = static_cast<ServerConnection*>(h->data)->m_server.read_buffer();
            },
            [](uv_stream_t* s, ssize_t nread, const uv_buf_t* buf) {
                auto* c = static_cast<ServerConnection*>(s->data);
                guarded(c, "read", [&] { c->on_read(nread, buf); });
            });
        if (r != 0) return close("lost connection");
        m_reading = true;
    } else if (!want && m_reading) {
        uv_read_stop(stream);
        m_reading = false;
    }
}

void ServerConnection::arm_timer() {
    if (m_tls && !m_tls_ready) return;  // the handshake's own deadline runs (begin_tls)
    std::chrono::seconds t{0};
    switch (m_session->timeout()) {
    case TimeoutKind::None: uv_timer_stop(&m_timer); return;
    case TimeoutKind::Command: t = m_server.config().limits.command_timeout; break;
    case TimeoutKind::Data: t = m_server.config().limits.data_timeout; break;
    }
    uv_timer_start(
        &m_timer,
        [](uv_timer_t* h) {
            auto* c = static_cast<ServerConnection*>(h->data);
            guarded(c, "timer", [&] {
                c->m_session->on_timeout();
                c->after_step();
            });
        },
        uint64_t(t.count()) * 1000, 0);
}

void ServerConnection::on_read(ssize_t nread, const uv_buf_t* buf) {
    if (nread == 0) return;  // EAGAIN
    if (nread < 0) {
        m_reading = false;
        uv_read_stop(reinterpret_cast<uv_stream_t*>(&m_tcp));
        return close("lost connection");
    }
    if (m_tls)
        on_ciphertext(std::string_view(buf->base, size_t(nread)));
    else
        m_session->feed(std::string_view(buf->base, size_t(nread)));
    after_step();
}

void ServerConnection::send(std::string&& bytes) {
    if (!m_tls_ready) return write_raw(std::move(bytes));
    if (m_tls->write(bytes) != tls::Result::Ok) return close("lost connection");
    write_raw(m_tls->take_output());
}

size_t ServerConnection::output_backlog() const {
    return uv_stream_get_write_queue_size(reinterpret_cast<const uv_stream_t*>(&m_tcp));
}

void ServerConnection::write_raw(std::string&& bytes) {
    if (bytes.empty() || m_closing) return;
    auto* stream = reinterpret_cast<uv_stream_t*>(&m_tcp);
    uv_buf_t b = uv_buf_init(bytes.data(), unsigned(bytes.size()));
    if (m_writes_in_flight == 0) {
        int n = uv_try_write(stream, &b, 1);
        if (n == int(bytes.size())) return;
        if (n > 0)
            bytes.erase(0, size_t(n));
        else if (n != UV_EAGAIN)
            return close("lost connection");
    }
    auto* w = new WriteRequest;
    w->data = std::move(bytes);
    w->owner = this;
    w->req.data = w;
    uv_buf_t wb = uv_buf_init(w->data.data(), unsigned(w->data.size()));
    int r = uv_write(&w->req, stream, &wb, 1, [](uv_write_t* req, int status) {
        auto* w = static_cast<WriteRequest*>(req->data);
        auto* c = w->owner;
        delete w;
        guarded(c, "write", [&] {
            c->m_writes_in_flight--;
            if (status < 0) return c->close("lost connection");
            if (c->m_session->closing()) {
                if (c->m_writes_in_flight == 0) c->close({});
            } else if (c->output_backlog() < k_max_output_backlog && (!c->m_reading || c->m_session->can_resume())) {
                c->after_step();  // the client took its replies: go on with its input
            }
        });
    });
    if (r != 0) {
        delete w;
        return close("lost connection");
    }
    m_writes_in_flight++;
}

void ServerConnection::close(std::string_view reason) {
    if (m_closing) return;
    m_closing = true;
    auth_cancel();
    if (m_session) m_session->on_disconnect(reason);
    auto closed = [](uv_handle_t* h) { static_cast<ServerConnection*>(h->data)->on_handle_closed(); };
    uv_close(reinterpret_cast<uv_handle_t*>(&m_timer), closed);
    uv_close(reinterpret_cast<uv_handle_t*>(&m_tcp), closed);
}

void ServerConnection::on_handle_closed() {
    if (--m_handles_open == 0) m_server.connection_closed(this, m_ip, m_counted);  // may destroy this
}

void ServerConnection::fail(const char* where, const std::exception& e) {
    log::error(log::Component::Smtpd, std::string("connection ") + where + " failed: " + e.what());
    close("internal error");
}

std::string ServerConnection::new_queue_id() {
    m_txn_id = m_server.next_queue_id();
    return m_txn_id;
}

int64_t ServerConnection::now_us() {
    using namespace std::chrono;
    return duration_cast<microseconds>(system_clock::now().time_since_epoch()).count();
}

bool ServerConnection::storage_low() { return m_server.spool().storage_low(m_server.config().limits.message_size); }

void ServerConnection::message_write(std::string&& content) {
    if (!m_txn) m_txn = m_server.spool().begin(m_txn_id);
    if (m_copying && m_copy.size() + content.size() <= k_copy_limit && m_server.copy_reserve(content.size())) {
        m_copy += content;
    } else if (m_copying) {
        m_copying = false;
        drop_copy();
    }
    std::weak_ptr<ServerConnection> weak = shared_from_this();
    bool keep_reading = m_server.spool().write(m_txn, std::move(content), [weak] {
        if (auto c = weak.lock(); c && !c->m_closing) {
            c->m_spool_paused = false;
            c->after_step();
        }
    });
    if (!keep_reading) m_spool_paused = true;  // after_step() stops reading
}

void ServerConnection::message_commit(Envelope&& envelope) {
    if (!m_txn) m_txn = m_server.spool().begin(m_txn_id);
    std::weak_ptr<ServerConnection> weak = shared_from_this();
    Server* server = &m_server;
    auto copy = m_copying ? std::make_shared<const std::string>(std::move(m_copy)) : nullptr;
    size_t counted = copy ? copy->size() : 0;
    m_copy = std::string();
    m_copying = true;
    m_server.spool().commit(m_txn, std::move(envelope),
                            [weak, server, copy, counted](CommitResult r, const Envelope& e) {
                                server->copy_release(counted);  // the queue manager's cache has a limit of its own
                                if (r == CommitResult::Stored) server->message_stored(e, copy);
                                auto c = weak.lock();
                                if (!c || c->m_closing) return;
                                guarded(c.get(), "commit", [&] {
                                    c->m_session->on_commit_result(r);
                                    c->after_step();
                                });
                            });
    m_txn.reset();
}

void ServerConnection::auth_start(const std::string& mechanism, const std::optional<std::string>& initial) {
    std::weak_ptr<ServerConnection> weak = shared_from_this();
    auto resume = [weak, mechanism, initial] {
        auto c = weak.lock();
        if (!c || c->m_closing) return false;
        guarded(c.get(), "auth", [&] { c->auth_resume(mechanism, initial); });
        return true;
    };
    if (!m_server.auth_limits().begin(m_ip, now_us(), resume)) return;  // others from this address first
    m_auth_counted = true;
    m_auth = m_server.auth_worker().begin(
        m_settings->sasl, mechanism, initial,
        [weak](AuthOutcome o, const std::string& challenge, const std::string& user, const std::string& detail) {
            if (auto c = weak.lock(); c && !c->m_closing)
                guarded(c.get(), "auth", [&] { c->auth_result(o, challenge, user, detail); });
        });
}

void ServerConnection::auth_step(const std::string& response) {
    std::weak_ptr<ServerConnection> weak = shared_from_this();
    m_server.auth_worker().step(
        m_auth, response,
        [weak](AuthOutcome o, const std::string& challenge, const std::string& user, const std::string& detail) {
            if (auto c = weak.lock(); c && !c->m_closing)
                guarded(c.get(), "auth", [&] { c->auth_result(o, challenge, user, detail); });
        });
}

// A waiting attempt's turn: the others from its address ended, in failure perhaps.
void ServerConnection::auth_resume(const std::string& mechanism, const std::optional<std::string>& initial) {
    if (m_server.auth_limits().blocked(m_ip, now_us())) {
        m_session->on_auth_result(AuthOutcome::Blocked, {}, {}, {});
        return after_step();
    }
    auth_start(mechanism, initial);
}

void ServerConnection::auth_release() {
    if (m_auth) m_server.auth_worker().cancel(m_auth);
    m_auth.reset();
}

void ServerConnection::auth_finished(bool failed) {
    if (!m_auth_counted) return;
    m_auth_counted = false;
    m_server.auth_limits().end(m_ip, failed, now_us());
}

// The client cancelled with "*", sent what cannot be decoded, or went away: an exchange it did
// not finish counts as a failed one.
void ServerConnection::auth_cancel() {
    auth_release();
    auth_finished(true);
}

bool ServerConnection::auth_blocked() { return m_server.auth_limits().blocked(m_ip, now_us()); }

void ServerConnection::auth_result(AuthOutcome outcome, const std::string& challenge, const std::string& user,
                                   const std::string& detail) {
    if (outcome != AuthOutcome::Continue) {
        auth_release();
        auth_finished(outcome == AuthOutcome::Failure || outcome == AuthOutcome::Invalid);
    }
    if (outcome != AuthOutcome::Failure) {
        m_session->on_auth_result(outcome, challenge, user, detail);
        return after_step();
    }
    // A failure is answered after a short random pause, which slows down guessing.
    struct Delay {
        uv_timer_t timer;
        std::weak_ptr<ServerConnection> connection;
        std::string user, detail;
    };
    auto* d = new Delay{{}, shared_from_this(), user, detail};
    d->timer.data = d;
    uv_timer_init(m_server.loop(), &d->timer);
    static thread_local std::mt19937 random{std::random_device{}()};
    uint64_t ms = 500 + random() % 1000;
    uv_timer_start(
        &d->timer,
        [](uv_timer_t* t) {
            auto* d = static_cast<Delay*>(t->data);
            if (auto c = d->connection.lock(); c && !c->m_closing) {
                guarded(c.get(), "auth", [&] {
                    c->m_session->on_auth_result(AuthOutcome::Failure, {}, d->user, d->detail);
                    c->after_step();
                });
            }
            uv_close(reinterpret_cast<uv_handle_t*>(t), [](uv_handle_t* h) { delete static_cast<Delay*>(h->data); });
        },
        ms, 0);
}

void ServerConnection::message_abort() {
    if (m_txn) m_server.spool().abort(m_txn);
    m_txn.reset();
    drop_copy();
    m_copying = true;
}

void ServerConnection::drop_copy() {
    m_server.copy_release(m_copy.size());
    std::string().swap(m_copy);
}

namespace {

template <typename F>
void guarded(ServerConnection* c, const char* where, F&& f) {
    try {
        f();
    } catch (const std::exception& e) {
        c->fail(where, e);
    }
}

}  // namespace

}  // namespace gateway
