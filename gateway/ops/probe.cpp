#include "gateway/ops/probe.hpp"

#include "auth/sasl_client.hpp"
#include "gateway/common/net.hpp"
#include "gateway/dns/dns.hpp"
#include "gateway/smtp/client_security.hpp"
#include "gateway/smtp/client_transport.hpp"
#include "gateway/smtp/delivery.hpp"
#include "gateway/smtp/nexthop.hpp"
#include "gateway/smtp/oauth2.hpp"
#include "gateway/smtp/secrets.hpp"
#include "gateway/smtp/smtp_client.hpp"
#include "gateway/smtp/tls_contexts.hpp"

#include <uv.h>

namespace gateway {

namespace {

std::string join(const std::vector<std::string>& v, const char* sep = " ") {
    std::string out;
    for (const auto& s : v)
        out += (out.empty() ? "" : sep) + s;
    return out.empty() ? "(none)" : out;
}

class Probe : private ClientTransport::Handler {
public:
    Probe(uv_loop_t* loop, const conf::Config& config, const ProbeTarget& target, std::ostream& out)
        : m_loop(loop),
          m_config(config),
          m_target(target),
          m_out(out),
          m_resolver(loop, config.dns),
          m_hops(m_resolver, nullptr) {
        m_policy = SecurityPolicy::for_upstream(target.upstream);
        uv_timer_init(loop, &m_timer);
        m_timer.data = this;
    }

    void start() {
        const auto& u = m_target.upstream;
        m_out << "probe: " << u.host << ":" << u.port << " ("
              << (m_target.configured ? "upstream " + u.name + ", " : std::string()) << "security "
              << conf::to_string(u.security) << ", verify " << (u.verify ? "yes" : "no")
              << (u.auth ? ", auth as " + u.auth->username : std::string()) << ")\n";
        m_hops.upstream(u.host, u.port, m_config.delivery.address_preference,
                        [this](HopList h) { on_hops(std::move(h)); });
    }

    bool compatible() const { return m_compatible; }

private:
    void on_hops(HopList h) {
        if (h.outcome != HopList::Outcome::Ok) return finish(false, h.reason);
        m_list = std::move(h.hops);
        connect();
    }

    void connect() {
        if (m_hop >= m_list.size()) return finish(false, m_last_connect_error);
        auto addr = to_sockaddr({m_list[m_hop].address.to_string(), m_list[m_hop].port});
        ClientTransport::Handler& handler = *this;
        m_transport = std::make_shared<ClientTransport>(m_loop, handler);
        m_transport->connect(reinterpret_cast<const sockaddr*>(&*addr), m_target.upstream.source_address);
        arm(m_config.delivery.timeouts.connect.count());
    }

    std::string label() const { return m_list[m_hop].host + "[" + m_list[m_hop].address.to_string() + "]"; }

    void arm(long seconds) {
        uv_timer_start(
            &m_timer, [](uv_timer_t* t) { static_cast<Probe*>(t->data)->on_timeout(); }, uint64_t(seconds) * 1000, 0);
    }

    void on_timeout() {
        if (!m_client) {
            m_last_connect_error = "connect to " + m_list[m_hop].label() + ": Connection timed out";
            m_out << "connect: " << m_last_connect_error << "\n";
            m_transport->close();
            m_hop++;
            return connect();
        }
        std::string why = "conversation with " + label() + " timed out while " +
                          (m_handshaking ? std::string("performing the TLS handshake") : while_text(m_client->stage()));
        if (m_client->stage() == ClientStage::Greeting)
            if (auto hint = greeting_timeout_hint(m_policy); !hint.empty()) why += " (" + hint + ")";
        finish(false, why);
    }

    void on_connected(int status) override {
        if (status != 0) {
            m_last_connect_error = "connect to " + m_list[m_hop].label() + ": " + uv_text(status);
            m_out << "connect: " << m_last_connect_error << "\n";
            m_hop++;
            return connect();
        }
        m_out << "connected: " << m_list[m_hop].label() << "\n";
        const auto& u = m_target.upstream;
        m_client = std::make_unique<SmtpClient>(ClientSettings{u.helo_name.empty() ? m_config.hostname : u.helo_name,
                                                               m_config.delivery.line_length, m_config.hostname});
        if (m_policy.level == conf::Security::Implicit) begin_tls();
        arm(m_config.delivery.timeouts.helo.count());
    }

    void begin_tls() {
        std::string error;
        auto ctx = m_tls.client(TlsContexts::options_for(m_target.upstream), error);
        if (!ctx) return finish(false, "client TLS configuration problem: " + error);
        m_handshaking = true;
        m_transport->start_tls(ctx, m_target.upstream.host);
    }

    void on_tls(bool ok, const std::string& error, bool plaintext) override {
        m_handshaking = false;
        if (!ok) {
            m_out << "TLS: handshake failed: " << error << "\n";
            auto step = handshake_failed(m_policy, error, plaintext, label());
            if (step.kind == SecurityStep::Kind::Fail) return finish(false, step.reason);
            return finish(false, "Cannot start TLS: handshake failure with " + label() + ": " + error +
                                     " (delivery would retry without TLS, unprotected)");
        }
        auto info = m_transport->tls_info();
        m_tls_active = true;
        m_state.tls_active = true;
        m_out << "TLS: " << info.version << " with cipher " << info.cipher << "\n";
        if (info.has_certificate) {
            m_out << "certificate: subject " << info.certificate.subject << "\n";
            m_out << "certificate: issuer " << info.certificate.issuer << "\n";
            m_out << "certificate: valid " << info.certificate.not_before << " to " << info.certificate.not_after
                  << "\n";
            m_out << "certificate: names " << join(info.certificate.names, ", ") << "\n";
        }
        m_out << "verification: "
              << (info.verified ? "ok (chain and name " + m_target.upstream.host + ")"
                                : "failed: " + info.verify_problem)
              << (m_target.upstream.verify ? "" : " (verify: false, not required)") << "\n";
        if (auto refused = certificate_refused(m_policy, info.verified, info.verify_problem))
            m_failure = refused->reason;
        if (m_policy.level != conf::Security::Implicit) m_client->tls_started();
        flush();
    }

    void on_data(std::string_view bytes) override {
        m_client->feed(bytes);
        for (auto& ev : m_client->take_events()) {
            if (m_finished) return;
            handle(ev);
        }
        flush();
    }

    void handle(const ClientEvent& ev) {
        switch (ev.kind) {
        case ClientEvent::Kind::Ready: return on_ready();
        case ClientEvent::Kind::SiteFailed:
            if (ev.stage == ClientStage::Greeting) m_out << "greeting: " << ev.reply.text() << "\n";
            return finish(false, ev.stage == ClientStage::Greeting
                                     ? "host " + label() + " refused to talk to me: " + ev.reply.text()
                                     : said_reason(label(), ev.reply, in_reply_to(ev.stage)));
        case ClientEvent::Kind::TlsReady: m_out << "STARTTLS: " << ev.reply.text() << "\n"; return begin_tls();
        case ClientEvent::Kind::StartTlsRefused: {
            m_out << "STARTTLS: " << ev.reply.text() << "\n";
            auto step = starttls_refused(m_policy, ev.reply, label());
            if (step.kind == SecurityStep::Kind::Fail) return finish(false, step.reason);
            m_state.tls_refused = true;
            return on_ready();
        }
        case ClientEvent::Kind::AuthChallenge: {
            std::string response, error;
            if (!m_sasl || !m_sasl->step(ev.detail, response, error))
                return finish(false,
                              "SASL authentication failed; cannot authenticate to server " + label() + ": " + error);
            m_client->auth_response(response);
            return;
        }
        case ClientEvent::Kind::AuthSucceeded:
            m_out << "AUTH: " << ev.reply.text() << "\n";
            m_state.authenticated = true;
            return on_ready();
        case ClientEvent::Kind::AuthFailed:
            m_out << "AUTH: " << ev.reply.text() << "\n";
            return finish(false, auth_refused(m_policy, ev.reply, label()).reason);
        case ClientEvent::Kind::ProtocolError:
            return finish(false, "protocol error with " + label() + ": " + ev.detail);
        case ClientEvent::Kind::Loop:
            return finish(false, "host " + label() + " " + ev.detail + ": the upstream is this gateway (a mail loop)");
        default: return;
        }
    }

    void on_ready() {
        const auto& caps = m_client->capabilities();
        if (!m_greeted) {
            m_greeted = true;
            m_out << "greeting: " << m_client->greeting().text() << "\n";
        }
        if (!m_printed[m_tls_active]) {  // once per side of TLS
            m_printed[m_tls_active] = true;
            const char* when = m_tls_active ? " after TLS" : "";
            m_out << "EHLO" << when << ": " << join(keywords(caps)) << "\n";
            m_out << "AUTH offered" << when << ": " << join(caps.auth) << "\n";
        }
        if (!m_failure.empty()) return finish(false, m_failure);
        static const std::vector<std::string> available = auth::client_mechanisms();
        auto step = next_step(m_policy, caps, m_state, label(), available);
        switch (step.kind) {
        case SecurityStep::Kind::StartTls: return m_client->start_tls();
        case SecurityStep::Kind::Fail: return finish(false, step.reason);
        case SecurityStep::Kind::Authenticate: return authenticate(step.mechanism);
        case SecurityStep::Kind::Proceed: return finish(true, {});
        }
    }

    static std::vector<std::string> keywords(const ServerCapabilities& c) {
        std::vector<std::string> k;
        if (c.pipelining) k.push_back("PIPELINING");
        if (c.size_offered) k.push_back(c.size ? "SIZE " + std::to_string(c.size) : "SIZE");
        if (c.eightbitmime) k.push_back("8BITMIME");
        if (c.smtputf8) k.push_back("SMTPUTF8");
        if (c.starttls) k.push_back("STARTTLS");
        if (!c.auth.empty()) k.push_back("AUTH " + join(c.auth));
        return k;
    }

    void authenticate(const std::string& mechanism) {
        const auto& a = *m_target.upstream.auth;
        m_out << "mechanism: " << mechanism << " (the first of "
              << (a.mechanisms.empty() ? std::string("the default order") : join(a.mechanisms))
              << " that the server offers)\n";
        if (a.oauth2) {
            const auto& o = *a.oauth2;
            m_out << "token: " << o.token_endpoint << " (tenant " << (o.tenant.empty() ? "-" : o.tenant) << ", client "
                  << o.client_id << ", " << (o.client_secret_file.empty() ? "certificate" : "client secret")
                  << ", scope " << o.scope << ")\n";
            return oauth2::get_token(m_loop, o, [this, mechanism](const oauth2::Token& t) {
                if (t.ok) m_out << "token: " << describe(t) << "\n";
                send_auth(mechanism, t.ok, t.access_token, t.error);
            });
        }
        fetch_secret(m_loop, a, [this, mechanism](bool ok, const std::string& secret, const std::string& error) {
            send_auth(mechanism, ok, secret, error);
        });
    }

    // What the token says about itself; never the token.
    static std::string describe(const oauth2::Token& t) {
        std::time_t at = std::time_t(t.expires_at);
        std::tm tm{};
        gmtime_r(&at, &tm);
        char when[40];
        std::strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S UTC", &tm);
        std::string out = std::string(t.fetched ? "fetched" : "in memory") + ", expires " + when + " (in " +
                          std::to_string(std::max<int64_t>(t.expires_at - std::time(nullptr), 0)) + " s)";
        if (!t.audience.empty()) out += ", audience " + t.audience;
        if (!t.tenant_id.empty()) out += ", tenant ID " + t.tenant_id;
        if (!t.audience.empty()) out += ", roles " + join(t.roles);
        return out;
    }

    void send_auth(const std::string& mechanism, bool ok, const std::string& secret, const std::string& error) {
        if (!ok) return finish(false, "SASL authentication not attempted: " + error);
        std::string initial, why;
        bool has_initial = false;
        m_sasl = auth::SaslClient::start(mechanism, m_target.upstream.host, {m_target.upstream.auth->username, secret},
                                         initial, has_initial, why);
        if (!m_sasl)
            return finish(false, "SASL authentication failed; cannot authenticate to server " + label() + ": " + why);
        m_client->auth(mechanism, initial, has_initial);
        flush();
    }

    void on_lost() override {
        if (m_finished) return;
        finish(false,
               "lost connection with " + label() + " while " +
                   (m_handshaking ? std::string("performing the TLS handshake") : while_text(m_client->stage())));
    }

    void on_sent() override {}

    void flush() {
        if (!m_client || !m_transport || m_finished) return;
        std::string out = m_client->take_output();
        if (!out.empty()) m_transport->send(std::move(out));
        arm(m_config.delivery.timeouts.helo.count());
    }

    void finish(bool ok, const std::string& reason) {
        if (m_finished) return;
        m_finished = true;
        m_compatible = ok;
        if (m_client && m_transport && ok) {
            m_client->quit();
            m_transport->send(m_client->take_output());
        }
        m_out << "verdict: " << (ok ? "compatible" : "NOT compatible: " + reason) << "\n";
        uv_timer_stop(&m_timer);
        uv_close(reinterpret_cast<uv_handle_t*>(&m_timer), nullptr);
        if (m_transport) m_transport->close();
        m_resolver.close();
    }

    uv_loop_t* m_loop;
    const conf::Config& m_config;
    ProbeTarget m_target;
    std::ostream& m_out;
    dns::Resolver m_resolver;
    HopResolver m_hops;
    TlsContexts m_tls;
    SecurityPolicy m_policy;
    std::vector<NextHop> m_list;
    size_t m_hop = 0;
    std::string m_last_connect_error = "no address to connect to";
    std::shared_ptr<ClientTransport> m_transport;
    std::unique_ptr<SmtpClient> m_client;
    std::unique_ptr<auth::SaslClient> m_sasl;
    ConnectionState m_state;
    uv_timer_t m_timer{};
    std::string m_failure;  // a problem found on the way; the verdict once the capabilities are shown
    bool m_greeted = false;
    bool m_printed[2] = {false, false};
    bool m_handshaking = false, m_tls_active = false, m_finished = false, m_compatible = false;
};

}  // namespace

int run_probe(const conf::Config& config, const ProbeTarget& target, std::ostream& out) {
    uv_loop_t loop;
    uv_loop_init(&loop);
    bool compatible = false;
    {
        Probe probe(&loop, config, target, out);
        probe.start();
        uv_run(&loop, UV_RUN_DEFAULT);
        compatible = probe.compatible();
    }
    oauth2::stop();
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    return compatible ? 0 : 1;
}

}  // namespace gateway
