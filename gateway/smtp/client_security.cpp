#include "gateway/smtp/client_security.hpp"

#include <algorithm>

namespace gateway {

namespace {

SecurityStep fail(const std::string& dsn, std::string reason) {
    SecurityStep s;
    s.kind = SecurityStep::Kind::Fail;
    s.dsn = dsn;
    s.reason = std::move(reason);
    return s;
}

SecurityStep step(SecurityStep::Kind k, std::string mechanism = {}) {
    SecurityStep s;
    s.kind = k;
    s.mechanism = std::move(mechanism);
    return s;
}

std::string join(const std::vector<std::string>& v) {
    std::string out;
    for (const auto& s : v)
        out += (out.empty() ? "" : " ") + s;
    return out.empty() ? "(none)" : out;
}

bool contains(const std::vector<std::string>& v, const std::string& s) {
    return std::find(v.begin(), v.end(), s) != v.end();
}

bool clear_text(const std::string& m) { return m == "PLAIN" || m == "LOGIN" || m == "XOAUTH2"; }

// Without auth.mechanisms: the strongest first, XOAUTH2 only with a token.
std::vector<std::string> allowed_mechanisms(const conf::UpstreamAuth& a) {
    if (!a.mechanisms.empty()) return a.mechanisms;
    if (a.oauth2 || !a.token_file.empty() || !a.token_command.empty()) return {"XOAUTH2"};
    return {"SCRAM-SHA-256", "SCRAM-SHA-1", "CRAM-MD5", "DIGEST-MD5", "PLAIN", "LOGIN"};
}

}  // namespace

SecurityPolicy SecurityPolicy::for_upstream(const conf::Upstream& u) {
    SecurityPolicy p;
    p.level = u.security;
    p.verify = u.verify;
    p.setting = "upstreams." + u.name;
    p.auth = u.auth;
    p.port = u.port;
    return p;
}

SecurityPolicy SecurityPolicy::for_direct(const conf::Direct& d) {
    SecurityPolicy p;
    p.level = d.security;
    p.setting = "direct";
    p.port = d.port;
    return p;
}

SecurityStep choose_mechanism(const SecurityPolicy& p, const std::vector<std::string>& offered, bool tls_active,
                              bool starttls_offered, const std::string& host,
                              const std::vector<std::string>& available) {
    const std::string tls = tls_active ? "TLS active" : "no TLS";
    if (offered.empty()) {
        std::string r = "SASL authentication failed: server " + host + " offered no AUTH on this connection (" + tls +
                        "); credentials are configured in " + p.setting + ".auth";
        if (!tls_active && starttls_offered)
            r += "; it offers STARTTLS, and servers usually offer AUTH only after it: set security: opportunistic "
                 "or mandatory in " +
                 p.setting;
        else
            r += "; check that this server accepts authentication, or remove " + p.setting + ".auth";
        return fail("4.7.0", r);
    }
    auto allowed = allowed_mechanisms(*p.auth);
    std::vector<std::string> clear_only;
    for (const auto& m : allowed) {
        if (!contains(offered, m) || !contains(available, m)) continue;
        if (clear_text(m) && !tls_active && !p.auth->allow_plaintext) {
            clear_only.push_back(m);
            continue;
        }
        return step(SecurityStep::Kind::Authenticate, m);
    }
    if (!clear_only.empty())
        return fail("4.7.0", "SASL authentication failed: server " + host + " and " + p.setting +
                                 ".auth.mechanisms have only " + join(clear_only) +
                                 " in common, which send the password in clear, and TLS is not active: set security: "
                                 "mandatory in " +
                                 p.setting + " (or auth.allow_plaintext: true)");
    return fail("4.7.0", "SASL authentication failed: server " + host +
                             " offered no compatible authentication mechanisms for this type of connection security: "
                             "the server offered " +
                             join(offered) + ", " + p.setting + ".auth.mechanisms allows " + join(allowed) + ", " +
                             tls);
}

SecurityStep next_step(const SecurityPolicy& p, const ServerCapabilities& caps, const ConnectionState& s,
                       const std::string& host, const std::vector<std::string>& available) {
    using conf::Security;
    if (!s.tls_active && !s.plaintext_only && !s.tls_refused) {
        if (p.level == Security::Opportunistic && caps.starttls) return step(SecurityStep::Kind::StartTls);
        if (p.level == Security::Mandatory) {
            if (caps.starttls) return step(SecurityStep::Kind::StartTls);
            return fail("4.7.4", "TLS is required, but was not offered by host " + host + " (security: mandatory in " +
                                     p.setting + ")");
        }
    }
    if (p.auth && !s.authenticated) return choose_mechanism(p, caps.auth, s.tls_active, caps.starttls, host, available);
    return step(SecurityStep::Kind::Proceed);
}

SecurityStep starttls_refused(const SecurityPolicy& p, const ServerReply& reply, const std::string& host) {
    if (p.level != conf::Security::Mandatory) return step(SecurityStep::Kind::Proceed);  // opportunistic
    return fail(reply.status(), "TLS is required, but host " + host + " refused to start TLS: " + reply.text());
}

SecurityStep handshake_failed(const SecurityPolicy& p, const std::string& error, bool peer_spoke_plaintext,
                              const std::string& host) {
    if (peer_spoke_plaintext)
        return fail("4.7.5",
                    "Cannot start TLS: host " + host +
                        " greeted in plaintext: it expects STARTTLS, not TLS from the first byte: set security: "
                        "mandatory (or opportunistic) in " +
                        p.setting + ", and the submission port (587)");
    std::string r = "Cannot start TLS: handshake failure with " + host + ": " + error;
    // Postfix's rule: only an opportunistic connection without credentials falls back to plaintext.
    if (p.level == conf::Security::Opportunistic && !p.auth) return step(SecurityStep::Kind::Proceed);
    return fail("4.7.5", r);
}

std::optional<SecurityStep> certificate_refused(const SecurityPolicy& p, bool verified, const std::string& problem) {
    if (!p.verify || verified) return std::nullopt;
    return fail("4.7.5", "Server certificate not verified: " + problem + " (verify: true in " + p.setting +
                             (p.setting == "direct" ? "" : "; ca_file names a private CA") + ")");
}

SecurityStep auth_refused(const SecurityPolicy& p, const ServerReply& reply, const std::string& host) {
    // Postfix's smtp_sasl_auth_soft_bounce: a refused AUTH is deferred, never bounced.
    std::string dsn = reply.status();
    dsn[0] = '4';
    std::string r = "SASL authentication failed; server " + host + " said: " + reply.text();
    std::string hint = hint_for(reply, p);
    if (!hint.empty()) r += " (" + hint + ")";
    return fail(dsn, r);
}

std::string hint_for(const ServerReply& reply, const SecurityPolicy& p) {
    std::string text = reply.text();
    auto has = [&](const char* s) { return text.find(s) != std::string::npos; };
    std::string status = reply.status();
    if (status == "5.7.139" && has("SmtpClientAuthentication is disabled"))
        return "Exchange Online: SMTP AUTH is turned off for the whole tenant (Set-TransportConfig "
               "-SmtpClientAuthenticationDisabled $false), or use XOAUTH2 with auth.oauth2";
    if (status == "5.7.139" && has("security defaults"))
        return "Exchange Online: Entra security defaults block basic authentication; use XOAUTH2 with "
               "auth.oauth2";
    if (status == "5.7.139")
        return "Exchange Online: SMTP AUTH is off for this mailbox (Authenticated SMTP in the mailbox's email apps), "
               "or "
               "basic authentication is disabled: use XOAUTH2";
    if (status == "5.7.57")
        return "the server wants authentication before MAIL: configure " + p.setting +
               ".auth, with security: mandatory (Exchange Online offers AUTH only after STARTTLS)";
    if (status == "5.7.60" || has("send as this sender") || has("SendAsDenied"))
        return "the account may not send as this sender: rewrite the envelope sender to the authenticated mailbox "
               "with sender.rewrite, or grant Send As";
    if (status == "5.7.64")
        return "Exchange Online connector: the sender domain or the relay's IP address does not match the connector; "
               "rewrite the sender into an accepted domain with sender.rewrite";
    if (status == "5.7.3" && reply.code == 535 && p.auth && p.auth->oauth2)
        return "Exchange Online refused the application's token for " + p.auth->username +
               ": register the application's service principal in Exchange (New-ServicePrincipal) and give it "
               "FullAccess to the mailbox (Add-MailboxPermission), and check that SMTP AUTH is on for the mailbox";
    if (status == "5.7.3" && reply.code == 535)
        return "the user name or the password (or token) is wrong: check " + p.setting + ".auth";
    if (reply.code == 504 && status == "5.7.4")
        return "the server does not accept this mechanism: adjust " + p.setting + ".auth.mechanisms";
    if (status == "5.7.3" && has("STARTTLS"))
        return "the server wants TLS first: set security: mandatory in " + p.setting;
    bool upstream = p.setting != "direct";
    if (upstream && (has("Relay access denied") || has("Access denied")))
        return "the server does not relay for this gateway: allow its address there, authenticate (auth:), or send a "
               "client certificate it knows (" +
               p.setting + ".tls)";
    if (reply.code == 432 || (status == "4.3.2" && has("thread limit")))
        return "the server takes no more connections for this account now (Exchange Online allows a mailbox 3): "
               "the mail is sent again over fewer connections; set " +
               (upstream ? p.setting + ".concurrency" : std::string("delivery.destination_concurrency")) +
               " to stay below the limit";
    if (has("SubmissionQuotaExceeded"))
        return "the account's sending quota is used up (Exchange Online: about 10,000 recipients a day): the message "
               "waits and is tried again on the retry schedule" +
               (upstream ? "; spread the load over more mailboxes or set " + p.setting + ".rate" : std::string());
    if (status == "4.7.66") return "the server refuses TLS 1.0 and 1.1; smtpgw uses TLS 1.2, check for a proxy";
    if (reply.code == 535) return "check the user name and the password in " + p.setting + ".auth";
    return {};
}

std::string greeting_timeout_hint(const SecurityPolicy& p) {
    if (p.port == 465 && p.level != conf::Security::Implicit)
        return "port 465 usually expects TLS from the first byte: set security: implicit in " + p.setting;
    return {};
}

}  // namespace gateway
