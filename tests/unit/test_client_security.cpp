// What the client does about TLS and AUTH, and the exact reason when it cannot go on.
#include "gateway/smtp/client_security.hpp"

#include <catch2/catch.hpp>

using namespace gateway;
using Kind = SecurityStep::Kind;

namespace {

const std::vector<std::string> k_available{"XOAUTH2",    "PLAIN",       "LOGIN",        "CRAM-MD5",
                                           "DIGEST-MD5", "SCRAM-SHA-1", "SCRAM-SHA-256"};
const std::string k_host = "relay.example.net[192.0.2.5]";

SecurityPolicy policy(conf::Security level, std::vector<std::string> mechanisms = {}, bool with_auth = true) {
    conf::Upstream u;
    u.name = "relay";
    u.host = "relay.example.net";
    u.security = level;
    u.port = 587;
    if (with_auth) {
        conf::UpstreamAuth a;
        a.username = "app@example.com";
        a.password_file = "/etc/smtpgw/relay.secret";
        a.mechanisms = std::move(mechanisms);
        u.auth = a;
    }
    return SecurityPolicy::for_upstream(u);
}

ServerCapabilities caps(bool starttls, std::vector<std::string> auth) {
    ServerCapabilities c;
    c.esmtp = true;
    c.starttls = starttls;
    c.auth = std::move(auth);
    return c;
}

}  // namespace

TEST_CASE("security levels decide STARTTLS", "[security]") {
    ConnectionState plain;
    CHECK(next_step(policy(conf::Security::None, {}, false), caps(true, {}), plain, k_host, k_available).kind ==
          Kind::Proceed);
    CHECK(
        next_step(policy(conf::Security::Opportunistic, {}, false), caps(true, {}), plain, k_host, k_available).kind ==
        Kind::StartTls);
    CHECK(
        next_step(policy(conf::Security::Opportunistic, {}, false), caps(false, {}), plain, k_host, k_available).kind ==
        Kind::Proceed);
    CHECK(next_step(policy(conf::Security::Mandatory, {}, false), caps(true, {}), plain, k_host, k_available).kind ==
          Kind::StartTls);
    auto none = next_step(policy(conf::Security::Mandatory, {}, false), caps(false, {}), plain, k_host, k_available);
    CHECK(none.kind == Kind::Fail);
    CHECK(none.dsn == "4.7.4");
    CHECK(none.reason ==
          "TLS is required, but was not offered by host relay.example.net[192.0.2.5] (security: mandatory in "
          "upstreams.relay)");
    ConnectionState tls;
    tls.tls_active = true;
    CHECK(next_step(policy(conf::Security::Mandatory, {}, false), caps(true, {}), tls, k_host, k_available).kind ==
          Kind::Proceed);
}

TEST_CASE("the mechanism is the first allowed one the server offers", "[security]") {
    ConnectionState tls;
    tls.tls_active = true;
    auto p = policy(conf::Security::Mandatory, {"CRAM-MD5", "PLAIN", "LOGIN"});
    auto s = next_step(p, caps(false, {"LOGIN", "PLAIN"}), tls, k_host, k_available);
    CHECK(s.kind == Kind::Authenticate);
    CHECK(s.mechanism == "PLAIN");
    s = next_step(p, caps(false, {"PLAIN", "CRAM-MD5"}), tls, k_host, k_available);
    CHECK(s.mechanism == "CRAM-MD5");
    tls.authenticated = true;
    CHECK(next_step(p, caps(false, {"PLAIN"}), tls, k_host, k_available).kind == Kind::Proceed);
}

TEST_CASE("every AUTH incompatibility has its reason", "[security]") {
    ConnectionState plain;
    ConnectionState tls;
    tls.tls_active = true;
    SECTION("no AUTH before STARTTLS") {
        auto s = next_step(policy(conf::Security::None), caps(true, {}), plain, k_host, k_available);
        CHECK(s.kind == Kind::Fail);
        CHECK(s.dsn == "4.7.0");
        CHECK(s.reason ==
              "SASL authentication failed: server relay.example.net[192.0.2.5] offered no AUTH on this connection (no "
              "TLS); credentials are configured in upstreams.relay.auth; it offers STARTTLS, and servers usually "
              "offer AUTH only after it: set security: opportunistic or mandatory in upstreams.relay");
    }
    SECTION("no AUTH at all") {
        auto s = next_step(policy(conf::Security::Mandatory), caps(true, {}), tls, k_host, k_available);
        CHECK(s.reason ==
              "SASL authentication failed: server relay.example.net[192.0.2.5] offered no AUTH on this connection (TLS "
              "active); credentials are configured in upstreams.relay.auth; check that this server accepts "
              "authentication, or remove upstreams.relay.auth");
    }
    SECTION("no mechanism in common") {
        auto s = next_step(policy(conf::Security::Mandatory, {"PLAIN", "LOGIN"}),
                           caps(true, {"CRAM-MD5", "DIGEST-MD5"}), tls, k_host, k_available);
        CHECK(s.kind == Kind::Fail);
        CHECK(s.reason ==
              "SASL authentication failed: server relay.example.net[192.0.2.5] offered no compatible authentication "
              "mechanisms for this type of connection security: the server offered CRAM-MD5 DIGEST-MD5, "
              "upstreams.relay.auth.mechanisms allows PLAIN LOGIN, TLS active");
    }
    SECTION("only clear-text mechanisms on a plaintext connection") {
        auto s = next_step(policy(conf::Security::None, {"PLAIN", "LOGIN"}), caps(false, {"PLAIN", "LOGIN"}), plain,
                           k_host, k_available);
        CHECK(s.kind == Kind::Fail);
        CHECK(s.reason ==
              "SASL authentication failed: server relay.example.net[192.0.2.5] and upstreams.relay.auth.mechanisms "
              "have only PLAIN LOGIN in common, which send the password in clear, and TLS is not active: set "
              "security: mandatory in upstreams.relay (or auth.allow_plaintext: true)");
        auto p = policy(conf::Security::None, {"PLAIN"});
        p.auth->allow_plaintext = true;
        CHECK(next_step(p, caps(false, {"PLAIN"}), plain, k_host, k_available).kind == Kind::Authenticate);
    }
    SECTION("a mechanism this build lacks") {
        auto s = next_step(policy(conf::Security::Mandatory, {"SCRAM-SHA-256"}), caps(false, {"SCRAM-SHA-256"}), tls,
                           k_host, {"PLAIN"});
        CHECK(s.kind == Kind::Fail);
    }
}

TEST_CASE("STARTTLS refused, handshake failed, certificate refused", "[security]") {
    ServerReply refused{454, {"454 4.7.0 TLS not available due to local problem"}};
    CHECK(starttls_refused(policy(conf::Security::Opportunistic, {}, false), refused, k_host).kind == Kind::Proceed);
    auto s = starttls_refused(policy(conf::Security::Mandatory), refused, k_host);
    CHECK(s.dsn == "4.7.0");
    CHECK(s.reason ==
          "TLS is required, but host relay.example.net[192.0.2.5] refused to start TLS: 454 4.7.0 TLS not "
          "available due to local problem");

    // Postfix's rule: plaintext again only without credentials.
    CHECK(handshake_failed(policy(conf::Security::Opportunistic, {}, false), "SSL - bad input", false, k_host).kind ==
          Kind::Proceed);
    s = handshake_failed(policy(conf::Security::Opportunistic), "SSL - bad input", false, k_host);
    CHECK(s.kind == Kind::Fail);
    CHECK(s.dsn == "4.7.5");
    CHECK(s.reason == "Cannot start TLS: handshake failure with relay.example.net[192.0.2.5]: SSL - bad input");
    s = handshake_failed(policy(conf::Security::Implicit), "x", true, k_host);
    CHECK(s.reason.find("greeted in plaintext: it expects STARTTLS, not TLS from the first byte") != std::string::npos);

    auto p = policy(conf::Security::Mandatory);
    CHECK_FALSE(certificate_refused(p, false, "certificate has expired"));  // verify: false
    p.verify = true;
    CHECK_FALSE(certificate_refused(p, true, ""));
    auto c = certificate_refused(p, false, "name mismatch: expected a, the certificate names b");
    REQUIRE(c);
    CHECK(c->dsn == "4.7.5");
    CHECK(c->reason ==
          "Server certificate not verified: name mismatch: expected a, the certificate names b (verify: true "
          "in upstreams.relay; ca_file names a private CA)");
}

TEST_CASE("a refused AUTH is deferred, with a hint for the replies admins meet", "[security]") {
    auto p = policy(conf::Security::Mandatory);
    auto s =
        auth_refused(p, ServerReply{535, {"535 5.7.8 Error: authentication failed: authentication failure"}}, k_host);
    CHECK(s.dsn == "4.7.8");
    CHECK(s.reason ==
          "SASL authentication failed; server relay.example.net[192.0.2.5] said: 535 5.7.8 Error: "
          "authentication failed: authentication failure (check the user name and the password in "
          "upstreams.relay.auth)");
    s = auth_refused(p,
                     ServerReply{535,
                                 {"535 5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for "
                                  "the Tenant."}},
                     k_host);
    CHECK(s.dsn == "4.7.139");
    CHECK(s.reason.find("SMTP AUTH is turned off for the whole tenant") != std::string::npos);
    CHECK(hint_for(ServerReply{550, {"550 5.7.60 SMTP; Client does not have permissions to send as this sender"}}, p)
              .find("sender.rewrite") != std::string::npos);
    CHECK(hint_for(ServerReply{530, {"530 5.7.57 Client not authenticated to send mail"}}, p)
              .find("security: mandatory") != std::string::npos);
    CHECK(hint_for(ServerReply{250, {"250 ok"}}, p).empty());
    auto port465 = policy(conf::Security::Mandatory);
    port465.port = 465;
    CHECK(greeting_timeout_hint(port465) ==
          "port 465 usually expects TLS from the first byte: set security: implicit in upstreams.relay");
}
