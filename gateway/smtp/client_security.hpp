// What the SMTP client does about TLS and AUTH on a connection, and why it gives up when it
// does. Pure decisions, no I/O: the delivery session and `smtpgw probe` both follow them.
//
// The order on a connection: after each EHLO, next_step() says STARTTLS, AUTH with a given
// mechanism, go ahead with mail, or fail with a reason. Every failure is a deferral (4.x.x):
// nothing bounces for a configuration problem. The reasons start with Postfix's words where
// Postfix has them (postfix-client.md 1.3, 2.3) and then say what the server offered, what the
// configuration allows, whether TLS was active, and which setting would change it.
#pragma once

#include "conf/config.hpp"
#include "gateway/smtp/smtp_client.hpp"

#include <optional>
#include <string>
#include <vector>

namespace gateway {

struct SecurityPolicy {
    conf::Security level = conf::Security::Opportunistic;
    bool verify = false;
    std::string setting;  // the configuration that sets it: "upstreams.NAME" or "direct"
    std::optional<conf::UpstreamAuth> auth;
    uint16_t port = 25;

    static SecurityPolicy for_upstream(const conf::Upstream& u);
    static SecurityPolicy for_direct(const conf::Direct& d);
};

struct SecurityStep {
    enum class Kind { StartTls, Authenticate, Proceed, Fail } kind = Kind::Proceed;
    std::string mechanism;  // Authenticate
    std::string dsn;        // Fail
    std::string reason;     // Fail
};

struct ConnectionState {
    bool tls_active = false;
    bool tls_refused = false;     // STARTTLS was tried and refused (opportunistic: carry on in plaintext)
    bool plaintext_only = false;  // a failed handshake is being retried without TLS
    bool authenticated = false;
};

// The mechanism to use: the first of auth.mechanisms (or a default order) that the server
// offers and this build has, skipping clear-text ones without TLS unless allowed.
SecurityStep choose_mechanism(const SecurityPolicy& p, const std::vector<std::string>& offered, bool tls_active,
                              bool starttls_offered, const std::string& host,
                              const std::vector<std::string>& available);

SecurityStep next_step(const SecurityPolicy& p, const ServerCapabilities& caps, const ConnectionState& s,
                       const std::string& host, const std::vector<std::string>& available);

// STARTTLS answered with something other than 220.
SecurityStep starttls_refused(const SecurityPolicy& p, const ServerReply& reply, const std::string& host);

// The TLS handshake failed: retry this host in plaintext (opportunistic, and no credentials:
// Postfix's rule), or fail with mbedTLS's reason.
SecurityStep handshake_failed(const SecurityPolicy& p, const std::string& error, bool peer_spoke_plaintext,
                              const std::string& host);

// After the handshake: a certificate that had to verify and did not.
std::optional<SecurityStep> certificate_refused(const SecurityPolicy& p, bool verified, const std::string& problem);

// "SASL authentication failed; server HOST said: 535 ...", soft-bounced to 4.x.x, with a hint
// for replies an admin will not decode alone.
SecurityStep auth_refused(const SecurityPolicy& p, const ServerReply& reply, const std::string& host);

// A sentence of advice for well-known upstream replies (Exchange Online, ElasticEmail, ...);
// empty when there is nothing useful to add.
std::string hint_for(const ServerReply& reply, const SecurityPolicy& p);

// The greeting never came: on port 465 that is usually a TLS server reached in plaintext.
std::string greeting_timeout_hint(const SecurityPolicy& p);

}  // namespace gateway
