// DeliverySession: addresses, connections, TLS and AUTH. The jobs are in delivery_jobs.cpp.
#include "gateway/smtp/delivery_session.hpp"

#include "gateway/common/log.hpp"
#include "gateway/common/metrics.hpp"
#include "gateway/common/net.hpp"
#include "gateway/smtp/secrets.hpp"

#include <chrono>

namespace gateway {

namespace {

template <typename F>
void guarded(const std::shared_ptr<DeliverySession>& s, F&& f) {
    try {
        f();
    } catch (const std::exception& e) {
        log::error(log::Component::Smtp, std::string("delivery session failed: ") + e.what());
        s->abort();
    }
}

const std::vector<std::string>& available_mechanisms() {
    static const std::vector<std::string> m = auth::client_mechanisms();
    return m;
}

}  // namespace

DeliverySession::DeliverySession(SessionContext ctx, Destination destination)
    : m_ctx(std::move(ctx)), m_destination(std::move(destination)) {
    m_policy = m_destination.kind == Destination::Kind::Upstream ? SecurityPolicy::for_upstream(m_destination.upstream)
                                                                 : SecurityPolicy::for_direct(m_ctx.config->direct);
}

DeliverySession::~DeliverySession() = default;

int64_t DeliverySession::now_us() const {
    using namespace std::chrono;
    return duration_cast<microseconds>(system_clock::now().time_since_epoch()).count();
}

std::string DeliverySession::host_label() const {
    const auto& h = hop();
    return h.host + "[" + h.address.to_string() + "]";
}

std::string DeliverySession::server_name() const {
    return m_destination.kind == Destination::Kind::Upstream ? m_destination.upstream.host : hop().host;
}

void DeliverySession::start() {
    m_start_us = m_setup_us = now_us();
    m_timer = new uv_timer_t;
    uv_timer_init(m_ctx.loop, m_timer);
    m_timer->data = nullptr;
    std::weak_ptr<DeliverySession> weak = shared_from_this();
    auto done = [weak](HopList hops) {
        if (auto s = weak.lock(); s && !s->m_ended) guarded(s, [&] { s->on_hops(std::move(hops)); });
    };
    if (m_destination.kind == Destination::Kind::Direct)
        m_ctx.hops->direct(m_destination.domain, m_destination.port, m_ctx.config->delivery.address_preference, done);
    else
        m_ctx.hops->upstream(m_destination.upstream.host, m_destination.port, m_ctx.config->delivery.address_preference,
                             done);
}

// Postfix's smtp_helo_name and smtp_bind_address: on a host with several addresses, the one
// whose PTR and SPF `smtpgw doctor` checks.
std::string DeliverySession::helo_name() const {
    if (m_destination.kind == Destination::Kind::Upstream && !m_destination.upstream.helo_name.empty())
        return m_destination.upstream.helo_name;
    return m_ctx.config->hostname;
}

std::string DeliverySession::source_address() const {
    return m_destination.kind == Destination::Kind::Upstream ? m_destination.upstream.source_address
                                                             : m_ctx.config->direct.source_address;
}

void DeliverySession::on_hops(HopList list) {
    if (list.outcome != HopList::Outcome::Ok) {
        DestinationFailure f;
        f.outcome = list.outcome == HopList::Outcome::Bounce ? DestinationFailure::Outcome::Bounce
                                                             : DestinationFailure::Outcome::Defer;
        f.dsn = list.dsn;
        f.reason = list.reason;
        f.site_failure = f.outcome == DestinationFailure::Outcome::Defer;
        auto self = shared_from_this();
        m_ctx.owner->destination_failed(m_destination.key(), f);
        return end();
    }
    m_hops = std::move(list.hops);
    m_hop = 0;
    m_hop_end = m_hops.size();
    connect_next();
}

void DeliverySession::connect_next() {
    if (m_hop >= m_hop_end) {
        // Every address has been tried.
        Failure last = m_last_failure.value_or(Failure{"4.4.1", "no address could be reached", "none", true});
        if (m_job) {
            defer_open_recipients(last);
        } else if (!m_ever_ready) {
            DestinationFailure d;
            d.dsn = last.dsn;
            d.reason = last.reason;
            d.relay = last.relay;
            auto self = shared_from_this();
            m_ctx.owner->session_failed(m_destination.key(), d);
        }
        return end();
    }
    const NextHop& hop = this->hop();
    auto addr = to_sockaddr({hop.address.to_string(), hop.port});
    m_state = ConnectionState();
    m_state.plaintext_only = m_retry_plaintext;
    m_retry_plaintext = false;
    ClientTransport::Handler& handler = *this;
    m_transport = std::make_shared<ClientTransport>(m_ctx.loop, handler);
    m_transport->connect(reinterpret_cast<const sockaddr*>(&*addr), source_address());
    if (m_ended || m_connected) return;
    m_timer->data = this;
    uv_timer_start(
        m_timer,
        [](uv_timer_t* t) {
            auto* s = static_cast<DeliverySession*>(t->data);
            if (s) guarded(s->shared_from_this(), [&] { s->on_timeout(); });
        },
        uint64_t(m_ctx.config->delivery.timeouts.connect.count()) * 1000, 0);
}

void DeliverySession::on_connected(int status) {
    auto self = shared_from_this();
    guarded(self, [&] {
        uv_timer_stop(m_timer);
        const NextHop& hop = this->hop();
        if (status != 0) {
            m_last_failure = Failure{"4.4.1", "connect to " + hop.label() + ": " + uv_text(status), "none", true};
            // As Postfix's smtp logs it: every failed attempt, also when a later address takes the mail.
            log::info(log::Component::Smtp, m_last_failure->reason);
            for (size_t i : m_pending)
                carry(i, *m_last_failure);
            close_socket();
            m_hop++;
            return connect_next();
        }
        m_connected = true;
        m_client = std::make_unique<SmtpClient>(
            ClientSettings{helo_name(), m_ctx.config->delivery.line_length, m_ctx.config->hostname});
        // Implicit TLS (RFC 8314): the handshake comes before the greeting.
        if (m_policy.level == conf::Security::Implicit && !m_state.plaintext_only) begin_tls();
        arm_timer();
    });
}

void DeliverySession::begin_tls() {
    std::string error;
    auto options = TlsContexts::options_for(m_destination.upstream);
    options.verify = m_policy.verify;
    auto ctx = m_ctx.tls->client(options, error);
    if (!ctx) return fail_hop("4.7.0", "client TLS configuration problem: " + error);
    m_handshaking = true;
    arm_timer();
    m_transport->start_tls(ctx, server_name());
}

void DeliverySession::on_tls(bool ok, const std::string& error, bool peer_spoke_plaintext) {
    auto self = shared_from_this();
    guarded(self, [&] {
        m_handshaking = false;
        std::string label = host_label();
        if (!ok) {
            auto step = handshake_failed(m_policy, error, peer_spoke_plaintext, label);
            if (step.kind == SecurityStep::Kind::Fail) return fail_hop(step.dsn, step.reason);
            // Opportunistic without credentials: the same address again, in plaintext.
            log::info(log::Component::Smtp,
                      label + ": Cannot start TLS: handshake failure: " + error + "; trying again without TLS");
            close_socket();
            m_retry_plaintext = true;
            return connect_next();
        }
        auto info = m_transport->tls_info();
        m_state.tls_active = true;
        metrics::tls_session("out", info.version);
        std::string trust = info.verified ? "Verified" : info.has_certificate ? "Untrusted" : "Anonymous";
        log::info(log::Component::Smtp, trust + " TLS connection established to " + hop().label() + ": " +
                                            info.version + " with cipher " + info.cipher);
        if (auto refused = certificate_refused(m_policy, info.verified, info.verify_problem))
            return fail_hop(refused->dsn, refused->reason);
        if (m_policy.level != conf::Security::Implicit || m_state.plaintext_only) m_client->tls_started();
        send_output();
        arm_timer();
    });
}

void DeliverySession::on_data(std::string_view plaintext) {
    auto self = shared_from_this();
    guarded(self, [&] {
        if (!m_client) return;
        uint64_t before = m_client->replies_received();
        m_client->feed(plaintext);
        bool progress = m_client->replies_received() != before;
        handle_events();
        if (m_ended || !m_client) return;
        send_output();
        // The stage's timeout runs from the last complete reply, not from the last octet: a
        // reply that trickles in does not keep the connection alive.
        if (progress) arm_timer();
    });
}

void DeliverySession::on_lost() {
    auto self = shared_from_this();
    guarded(self, [&] {
        if (m_quitting || (m_idle && !m_job)) return end();
        std::string stage = m_handshaking ? "performing the TLS handshake" : while_text(m_client->stage());
        connection_lost("lost connection with " + host_label() + " while " + stage);
    });
}

void DeliverySession::on_sent() {
    auto self = shared_from_this();
    guarded(self, [&] {
        if (m_client && m_client->stage() == ClientStage::Content) {
            arm_timer();  // progress
            read_content();
        }
    });
}

void DeliverySession::handle_events() {
    for (auto& ev : m_client->take_events()) {
        if (m_ended || !m_client) return;
        std::string label = host_label();
        switch (ev.kind) {
        case ClientEvent::Kind::Ready: on_ready(); break;
        case ClientEvent::Kind::SiteFailed: {
            if (m_quitting) return end();
            std::string dsn = reply_dsn(ev.reply);
            std::string reason;
            if (ev.stage == ClientStage::Greeting) {
                reason = "host " + label + " refused to talk to me: " + ev.reply.text();
                dsn[0] = '4';  // Postfix's smtp_skip_5xx_greeting: try elsewhere, later
            } else {
                reason = said_reason(label, ev.reply, in_reply_to(ev.stage));
            }
            if (auto hint = hint_for(ev.reply, m_policy); !hint.empty()) reason += " (" + hint + ")";
            if (thread_limit(ev.reply)) return throttled(reason);
            return fail_hop(dsn, reason);
        }
        case ClientEvent::Kind::TlsReady: begin_tls(); break;
        case ClientEvent::Kind::StartTlsRefused: {
            auto step = starttls_refused(m_policy, ev.reply, label);
            if (step.kind == SecurityStep::Kind::Fail) return fail_hop(step.dsn, step.reason);
            m_state.tls_refused = true;
            on_ready();
            break;
        }
        case ClientEvent::Kind::AuthChallenge: {
            std::string response, error;
            if (!m_sasl || !m_sasl->step(ev.detail, response, error))
                return fail_hop("4.7.0",
                                "SASL authentication failed; cannot authenticate to server " + label + ": " + error);
            m_client->auth_response(response);
            break;
        }
        case ClientEvent::Kind::AuthSucceeded:
            m_sasl.reset();
            m_state.authenticated = true;
            on_ready();
            break;
        case ClientEvent::Kind::AuthFailed:
            m_sasl.reset();
            // A bearer token may have expired since it was fetched: fetch it again, once.
            if (m_auth_mechanism == "XOAUTH2" && !m_token_retried && ev.reply.code == 535) {
                m_token_retried = true;
                secret_refused(*m_policy.auth, m_token);
                return begin_auth(m_auth_mechanism);
            }
            {
                metrics::auth_failure("out");
                auto step = auth_refused(m_policy, ev.reply, label);
                return fail_hop(step.dsn, step.reason);
            }
        case ClientEvent::Kind::RecipientDone: on_recipient(ev); break;
        case ClientEvent::Kind::NeedContent:
            m_content_offset = 0;
            m_content_done = false;
            read_content();
            break;
        case ClientEvent::Kind::MessageSent: finish_job_on_this_hop(&ev.reply, ev.stage, true); break;
        case ClientEvent::Kind::MessageFailed: finish_job_on_this_hop(&ev.reply, ev.stage, false); break;
        case ClientEvent::Kind::ProtocolError:
            return connection_lost("protocol error with " + label + " while " + while_text(ev.stage) + ": " +
                                   ev.detail);
        case ClientEvent::Kind::Loop: return fail_loop("host " + label + " " + ev.detail);
        }
    }
    if (m_quitting && m_client && m_client->stage() == ClientStage::Closed) end();
}

void DeliverySession::on_ready() {
    // Security first: STARTTLS, then AUTH, after every EHLO (client_security.hpp).
    auto step = next_step(m_policy, m_client->capabilities(), m_state, host_label(), available_mechanisms());
    if (step.kind != SecurityStep::Kind::Proceed) return on_security_step(step);
    m_ever_ready = true;
    if (!m_ready_us) m_ready_us = now_us();
    take_next_job();
}

void DeliverySession::on_security_step(const SecurityStep& step) {
    switch (step.kind) {
    case SecurityStep::Kind::StartTls: m_client->start_tls(); break;
    case SecurityStep::Kind::Authenticate: begin_auth(step.mechanism); break;
    case SecurityStep::Kind::Fail: fail_hop(step.dsn, step.reason); break;
    case SecurityStep::Kind::Proceed: break;
    }
}

void DeliverySession::begin_auth(const std::string& mechanism) {
    m_auth_mechanism = mechanism;
    std::weak_ptr<DeliverySession> weak = shared_from_this();
    uint64_t generation = m_generation;
    fetch_secret(
        m_ctx.loop, *m_policy.auth,
        [weak, generation, mechanism](bool ok, const std::string& secret, const std::string& error) {
            auto s = weak.lock();
            if (!s || s->m_ended || s->m_generation != generation || !s->m_client) return;
            guarded(s, [&] {
                std::string label = s->host_label();
                if (!ok) return s->fail_hop("4.7.0", "SASL authentication to " + label + " not attempted: " + error);
                if (s->m_policy.auth->oauth2) s->m_token = secret;
                std::string initial, why;
                bool has_initial = false;
                s->m_sasl = auth::SaslClient::start(mechanism, s->server_name(), {s->m_policy.auth->username, secret},
                                                    initial, has_initial, why);
                if (!s->m_sasl)
                    return s->fail_hop(
                        "4.7.0", "SASL authentication failed; cannot authenticate to server " + label + ": " + why);
                s->m_client->auth(mechanism, initial, has_initial);
                s->send_output();
                s->arm_timer();
            });
        });
}

// The server takes no more connections for this account: whatever this session held goes back
// to the queue manager, which opens fewer connections from now on.
void DeliverySession::throttled(const std::string& reason) {
    for (size_t i : m_pending) {
        if (m_resolved.count(i)) continue;
        record(i, RcptStatus::Deferred, "4.3.2", reason);
        m_results.back().again = true;
    }
    m_pending.clear();
    complete_job();
    auto self = shared_from_this();
    m_ctx.owner->session_throttled(this, reason);
    end();
}

void DeliverySession::fail_hop(const std::string& dsn, const std::string& reason) {
    m_last_failure = Failure{dsn, reason, hop().label(), true};
    for (size_t i : m_pending)
        carry(i, *m_last_failure);
    close_socket();
    m_hop++;
    connect_next();
}

void DeliverySession::send_output() {
    if (!m_client || !m_transport) return;
    std::string out = m_client->take_output();
    if (!out.empty()) m_transport->send(std::move(out));
}

void DeliverySession::arm_timer() {
    if (!m_timer || !m_client) return;
    const auto& t = m_ctx.config->delivery.timeouts;
    conf::Seconds s{0};
    if (m_idle)
        s = m_ctx.config->delivery.connection_reuse;
    else if (m_handshaking)
        s = t.helo;  // Postfix's smtp_starttls_timeout defaults to the same 300s
    else {
        switch (m_client->stage()) {
        case ClientStage::Greeting:
        case ClientStage::Helo:
        case ClientStage::StartTls:
        case ClientStage::Auth: s = t.helo; break;
        case ClientStage::Mail: s = t.mail; break;
        case ClientStage::Rcpt: s = t.rcpt; break;
        case ClientStage::Data: s = t.data_init; break;
        case ClientStage::Content: s = t.data_xfer; break;
        case ClientStage::DataDone: s = t.data_done; break;
        case ClientStage::Rset: s = t.rset; break;
        case ClientStage::Quit: s = t.quit; break;
        case ClientStage::Ready:
        case ClientStage::Closed: uv_timer_stop(m_timer); return;
        }
    }
    m_timer->data = this;
    uv_timer_start(
        m_timer,
        [](uv_timer_t* timer) {
            auto* s = static_cast<DeliverySession*>(timer->data);
            if (s) guarded(s->shared_from_this(), [&] { s->on_timeout(); });
        },
        uint64_t(s.count()) * 1000 + (s.count() == 0 ? 1 : 0), 0);
}

void DeliverySession::on_timeout() {
    if (m_ended) return;
    if (!m_connected) {
        m_last_failure = Failure{"4.4.1", "connect to " + hop().label() + ": Connection timed out", "none", true};
        log::info(log::Component::Smtp, m_last_failure->reason);
        for (size_t i : m_pending)
            carry(i, *m_last_failure);
        close_socket();
        m_hop++;
        return connect_next();
    }
    if (m_idle) {
        m_idle = false;
        m_ctx.owner->session_idle(this, false);
        m_quitting = true;
        m_client->quit();
        send_output();
        return arm_timer();
    }
    if (m_quitting) return end();
    std::string stage = m_handshaking ? "performing the TLS handshake" : while_text(m_client->stage());
    std::string why = "conversation with " + host_label() + " timed out while " + stage;
    if (m_client->stage() == ClientStage::Greeting && !m_handshaking)
        if (auto hint = greeting_timeout_hint(m_policy); !hint.empty()) why += " (" + hint + ")";
    connection_lost(why);
}

// Postfix's words: "mail for DESTINATION loops back to myself", a bounce (5.4.6) for what this
// session holds and everything queued for the destination.
void DeliverySession::fail_loop(const std::string& why) {
    std::string name =
        m_destination.kind == Destination::Kind::Direct ? m_destination.domain : m_destination.upstream.host;
    std::string reason = "mail for " + name + " loops back to myself (" + why + ")";
    std::string relay = hop().label();
    for (size_t i : m_pending)
        if (!m_resolved.count(i)) record(i, RcptStatus::Bounced, "5.4.6", reason);
    m_pending.clear();
    complete_job();
    DestinationFailure f;
    f.outcome = DestinationFailure::Outcome::Bounce;
    f.dsn = "5.4.6";
    f.reason = reason;
    f.relay = relay;
    f.site_failure = false;
    auto self = shared_from_this();
    m_ctx.owner->destination_failed(m_destination.key(), f);
    close_socket();
    end();
}

void DeliverySession::connection_lost(const std::string& why) {
    std::string relay = hop().label();
    close_socket();
    if (m_idle) {
        m_idle = false;
        m_ctx.owner->session_idle(this, false);
    }
    if (m_quitting || (!m_job && m_ever_ready)) return end();
    m_last_failure = Failure{"4.4.2", why, relay, true};
    // Recipients not yet settled try the next address (or are deferred after the last one).
    if (m_job) {
        std::vector<size_t> open;
        for (size_t i : m_pending)
            if (!m_resolved.count(i)) {
                open.push_back(i);
                carry(i, *m_last_failure);
            }
        m_pending = open;
    }
    m_hop++;
    connect_next();
}

void DeliverySession::close_socket() {
    m_generation++;
    m_job_sent = false;
    m_client.reset();
    m_sasl.reset();
    m_connected = false;
    m_handshaking = false;
    m_reading_content = false;
    if (m_timer) uv_timer_stop(m_timer);
    if (m_transport) m_transport->close();
    m_transport.reset();
}

void DeliverySession::abort() {
    if (m_ended) return;
    m_ended = true;
    close_socket();
    if (m_timer) {
        m_timer->data = nullptr;
        uv_close(reinterpret_cast<uv_handle_t*>(m_timer),
                 [](uv_handle_t* h) { delete reinterpret_cast<uv_timer_t*>(h); });
        m_timer = nullptr;
    }
}

void DeliverySession::end() {
    if (m_ended) return;
    auto self = shared_from_this();  // the owner may drop its reference below
    abort();
    m_ctx.owner->session_closed(this);
}

}  // namespace gateway
