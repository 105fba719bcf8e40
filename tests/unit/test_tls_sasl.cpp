// A TLS client and server engine face to face in memory; the SASL client against an
// in-process Cyrus SASL server with a temporary sasldb.
#include "auth/sasl_client.hpp"
#include "auth/sasl_server.hpp"
#include "tls/password_hash.hpp"
#include "tls/tls_engine.hpp"

#include <catch2/catch.hpp>

#include <unistd.h>
#include <cstdlib>

namespace {

// Throwaway certificates, made once for the whole run by tests/tools/make-certs.
const std::string& cert_dir() {
    static std::string dir = [] {
        char name[] = "/tmp/smtpgw-certs-XXXXXX";
        std::string d = mkdtemp(name);
        std::string cmd = std::string(SMTPGW_SOURCE_DIR) + "/tests/tools/make-certs " + d + " relay.example.test";
        REQUIRE(std::system(cmd.c_str()) == 0);
        return d;
    }();
    return dir;
}

std::string file(const std::string& name) { return cert_dir() + "/" + name; }

// Moves bytes both ways until neither side has more to say; returns the handshake results.
std::pair<tls::Result, tls::Result> handshake(tls::Engine& client, tls::Engine& server) {
    tls::Result c = tls::Result::WantIo, s = tls::Result::WantIo;
    for (int round = 0; round < 20; ++round) {
        if (c == tls::Result::WantIo) c = client.handshake();
        server.receive(client.take_output());
        if (s == tls::Result::WantIo) s = server.handshake();
        client.receive(server.take_output());
        if (c != tls::Result::WantIo && s != tls::Result::WantIo) break;
    }
    return {c, s};
}

struct Pair {
    std::shared_ptr<tls::Context> client_ctx, server_ctx;
    std::unique_ptr<tls::Engine> client, server;

    Pair(const std::string& server_cert, const std::string& expected_name, bool verify = true) {
        std::string error;
        client_ctx = tls::client_context({verify, file("ca.pem"), "", ""}, error);
        REQUIRE(client_ctx);
        server_ctx = tls::server_context(file(server_cert + ".pem"), file(server_cert + ".key"), error);
        INFO(error);
        REQUIRE(server_ctx);
        client = std::make_unique<tls::Engine>(client_ctx, tls::Engine::Role::Client, expected_name);
        server = std::make_unique<tls::Engine>(server_ctx, tls::Engine::Role::Server, "");
    }
};

}  // namespace

TEST_CASE("TLS engines face to face: handshake, data both ways, close", "[tls]") {
    Pair p("relay.example.test", "relay.example.test");
    auto [c, s] = handshake(*p.client, *p.server);
    REQUIRE(c == tls::Result::Ok);
    REQUIRE(s == tls::Result::Ok);
    auto info = p.client->info();
    CHECK(info.version == "TLSv1.2");
    CHECK_FALSE(info.cipher.empty());
    CHECK(info.verified);
    CHECK(info.verify_problem.empty());
    CHECK(info.certificate.names == std::vector<std::string>{"relay.example.test"});
    CHECK(info.certificate.issuer.find("smtpgw Test CA") != std::string::npos);

    REQUIRE(p.client->write("EHLO gw.example\r\n") == tls::Result::Ok);
    p.server->receive(p.client->take_output());
    std::string got;
    CHECK(p.server->read(got) == tls::Result::WantIo);
    CHECK(got == "EHLO gw.example\r\n");
    std::string big(100000, 'x');
    REQUIRE(p.server->write(big) == tls::Result::Ok);
    p.client->receive(p.server->take_output());
    got.clear();
    p.client->read(got);
    CHECK(got == big);

    p.client->close();
    p.server->receive(p.client->take_output());
    got.clear();
    CHECK(p.server->read(got) == tls::Result::Closed);
}

TEST_CASE("certificate problems are named precisely", "[tls]") {
    SECTION("name mismatch") {
        Pair p("relay.example.test", "mx.other.test");
        auto [c, s] = handshake(*p.client, *p.server);
        REQUIRE(c == tls::Result::Ok);  // reported, not enforced, by the engine
        auto info = p.client->info();
        CHECK_FALSE(info.verified);
        CHECK(info.name_mismatch);
        CHECK(info.verify_problem == "name mismatch: expected mx.other.test, the certificate names relay.example.test");
    }
    SECTION("unknown issuer") {
        Pair p("other", "relay.example.test");
        handshake(*p.client, *p.server);
        auto info = p.client->info();
        CHECK_FALSE(info.verified);
        CHECK(info.verify_problem == "unknown issuer: \"CN=Someone Else CA\" is not a CA in " + file("ca.pem"));
    }
    SECTION("expired") {
        Pair p("expired", "relay.example.test");
        handshake(*p.client, *p.server);
        auto info = p.client->info();
        CHECK_FALSE(info.verified);
        CHECK(info.verify_problem == "certificate has expired (not after 2020-02-01 00:00:00 UTC)");
    }
}

TEST_CASE("a plaintext SMTP server met with TLS from the first byte", "[tls]") {
    std::string error;
    auto ctx = tls::client_context({false, "", "", ""}, error);
    REQUIRE(ctx);
    tls::Engine client(ctx, tls::Engine::Role::Client, "relay.example.test");
    CHECK(client.handshake() == tls::Result::WantIo);
    client.receive("220 relay.example.test ESMTP Postfix\r\n");
    CHECK(client.handshake() == tls::Result::Failed);
    CHECK(client.peer_spoke_plaintext());
    CHECK_FALSE(client.error().empty());
}

TEST_CASE("a client certificate loads only with its own key", "[tls]") {
    std::string error;
    CHECK(tls::client_context({false, "", file("client.pem"), file("client.key")}, error));
    auto wrong = tls::client_context({false, "", file("client.pem"), file("other.key")}, error);
    CHECK_FALSE(wrong);
    CHECK(error == "the key " + file("other.key") + " does not belong to the certificate " + file("client.pem"));
    CHECK_FALSE(tls::client_context({false, "", file("nothere.pem"), file("client.key")}, error));
    CHECK(error.rfind("cannot load the certificate " + file("nothere.pem") + ": ", 0) == 0);
}

TEST_CASE("a missing CA file is an error, not silence", "[tls]") {
    std::string error;
    CHECK_FALSE(tls::client_context({true, "/nonexistent/ca.pem", "", ""}, error));
    CHECK(error.find("cannot load the trusted certificates in /nonexistent/ca.pem") == 0);
}

namespace {

struct Sasldb {
    std::string dir, path;
    Sasldb() {
        char name[] = "/tmp/smtpgw-sasldb-XXXXXX";
        dir = mkdtemp(name);
        path = dir + "/sasldb2";
        std::string error;
        INFO(error);
        REQUIRE(auth::set_password(path, "gw.example", "alice", "s3cret pass", error));
    }
    ~Sasldb() { std::system(("rm -rf '" + dir + "'").c_str()); }
};

// Runs a whole exchange as the SMTP dialog would; returns the server's outcome.
auth::Outcome exchange(const Sasldb& db, const std::string& mech, const std::string& user, const std::string& pass,
                       std::string* who = nullptr) {
    auth::ServerOptions options{db.path, {mech}, "gw.example", ""};
    std::string initial, error;
    bool has_initial = false;
    auto client = auth::SaslClient::start(mech, "gw.example", {user, pass}, initial, has_initial, error);
    INFO(mech << ": " << error);
    REQUIRE(client);
    std::string challenge, detail;
    auth::Outcome outcome;
    auto server = auth::SaslServer::start(
        options, mech, has_initial ? std::optional<std::string>(initial) : std::nullopt, challenge, outcome, detail);
    REQUIRE(server);
    for (int i = 0; i < 10 && outcome == auth::Outcome::Continue; ++i) {
        std::string response;
        if (!client->step(challenge, response, error)) return auth::Outcome::Invalid;
        outcome = server->step(response, challenge, detail);
    }
    if (who) *who = server->username();
    return outcome;
}

}  // namespace

TEST_CASE("the SASL client against Cyrus's server, every mechanism", "[sasl]") {
    Sasldb db;
    for (const char* mech : {"PLAIN", "LOGIN", "CRAM-MD5", "DIGEST-MD5", "SCRAM-SHA-1", "SCRAM-SHA-256"}) {
        INFO(mech);
        std::string who;
        CHECK(exchange(db, mech, "alice", "s3cret pass", &who) == auth::Outcome::Success);
        CHECK(who == "alice");
        CHECK(exchange(db, mech, "alice", "wrong", nullptr) == auth::Outcome::Failure);
        CHECK(exchange(db, mech, "mallory", "s3cret pass", nullptr) == auth::Outcome::Failure);
    }
}

TEST_CASE("SASL helpers", "[sasl]") {
    std::string out;
    CHECK(auth::base64_encode("user=a@b\x01"
                              "auth=Bearer t\x01\x01") == "dXNlcj1hQGIBYXV0aD1CZWFyZXIgdAEB");
    REQUIRE(auth::base64_decode("VXNlcm5hbWU6", out));
    CHECK(out == "Username:");
    CHECK_FALSE(auth::base64_decode("!!!", out));
    CHECK(auth::sends_secret_in_clear("PLAIN"));
    CHECK(auth::sends_secret_in_clear("XOAUTH2"));
    CHECK_FALSE(auth::sends_secret_in_clear("CRAM-MD5"));
    auto mechs = auth::client_mechanisms();
    for (const char* m : {"XOAUTH2", "PLAIN", "LOGIN", "CRAM-MD5", "SCRAM-SHA-256"})
        CHECK(std::find(mechs.begin(), mechs.end(), std::string(m)) != mechs.end());
    std::string initial, error;
    bool has = false;
    auto x = auth::SaslClient::start("XOAUTH2", "h", {"a@b", "t"}, initial, has, error);
    REQUIRE(x);
    CHECK(has);
    CHECK(initial == std::string("user=a@b\x01"
                                 "auth=Bearer t\x01\x01"));
}

TEST_CASE("console passwords are salted PBKDF2 hashes", "[tls]") {
    std::string a = tls::hash_password("correct horse", 1000), b = tls::hash_password("correct horse", 1000);
    CHECK(a.rfind("pbkdf2-sha256$1000$", 0) == 0);
    CHECK(a != b);  // another salt each time
    CHECK(tls::verify_password("correct horse", a));
    CHECK(tls::verify_password("correct horse", b));
    CHECK_FALSE(tls::verify_password("correct horsE", a));
    CHECK_FALSE(tls::verify_password("", a));
    for (const char* bad : {"", "pbkdf2-sha256$", "pbkdf2-sha256$0$AAAA$AAAA", "pbkdf2-sha256$99999999$x$y",
                            "md5$1$x$y", "pbkdf2-sha256$1000$!!$!!"})
        CHECK_FALSE(tls::verify_password("correct horse", bad));
    CHECK(tls::random_bytes(32).size() == 32);
    CHECK(tls::random_bytes(16) != tls::random_bytes(16));
}
