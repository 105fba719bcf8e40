#include "conf/config_checks.hpp"
#include "conf/config_load.hpp"

#include <catch2/catch.hpp>

#include <sys/stat.h>
#include <unistd.h>
#include <algorithm>
#include <cstdio>
#include <fstream>

using namespace conf;

namespace {

// A file that exists for the duration of a test.
struct TempFile {
    std::string path;
    explicit TempFile(const std::string& content) {
        char name[] = "/tmp/smtpgw-conf-XXXXXX";
        int fd = mkstemp(name);
        path = name;
        ::write(fd, content.data(), content.size());
        ::close(fd);
    }
    ~TempFile() { std::remove(path.c_str()); }
};

std::string errors_of(const LoadResult& r) {
    std::string out;
    for (const auto& d : r.diagnostics)
        out += d.format() + "\n";
    return out;
}

}  // namespace

TEST_CASE("the embedded default configuration", "[config]") {
    auto r = load_default();
    REQUIRE(r.ok());
    const auto& c = *r.config;
    REQUIRE(c.listen.size() == 1);
    CHECK(c.listen[0].endpoint.host == "127.0.0.1");
    CHECK(c.listen[0].endpoint.port == 2525);
    REQUIRE(c.clients.size() == 2);
    CHECK(c.clients[0].contains(IpAddress::parse("127.0.0.1").value()));
    CHECK(c.clients[1].contains(IpAddress::parse("::1").value()));
    REQUIRE(c.routes.size() == 1);
    CHECK(c.routes[0].via == std::vector<std::string>{"direct"});
    CHECK(c.direct.security == Security::Opportunistic);
    CHECK(c.queue.dir == "./smtpgw-spool");
    CHECK(c.log.file.empty());
    CHECK_FALSE(c.hostname.empty());
    CHECK(c.limits.message_size == 25u * 1024 * 1024);
    CHECK(c.queue.lifetime == std::chrono::hours(120));
}

TEST_CASE("the full schema of the contract loads", "[config]") {
    TempFile cert("cert"), key("key"), secret("secret"), sasldb("");
    std::string yaml = R"(
hostname: relay.example.com
listen:
  - address: 0.0.0.0:25
    tls: starttls
    auth: optional
  - address: "[::]:465"
    tls: implicit
    auth: required
    bare_newline: reject
clients: [127.0.0.0/8, "::1/128", 10.20.0.0/16]
tls: { certificate: CERT, key: KEY }
sasl:
  sasldb: SASLDB
  mechanisms: [PLAIN, LOGIN, SCRAM-SHA-256]
sender:
  rewrite:
    - { from: "*@scanner.local", to: "scans@example.com" }
    - { from: "/^(.+)@legacy\\.example$/", to: "$1@example.com" }
  header_from: keep
routes:
  - { to: [example.com, "*.example.com"], via: exchange }
  - { from: "*@hr.example.com", via: [elastic, exchange] }
  - { to: "*", via: direct }
upstreams:
  exchange: { host: exch01.corp.example.com, port: 25, security: opportunistic }
  elastic:
    host: smtp.elasticemail.com
    port: 2525
    security: mandatory
    verify: true
    auth:
      username: relay@example.com
      password_file: SECRET
      mechanisms: [CRAM-MD5, PLAIN, LOGIN]
limits: { message_size: 25M, recipients: 100, connections: 1000, connections_per_client: 50 }
direct: { security: opportunistic, port: 25 }
dns: { servers: ["127.0.0.1:5353"] }
queue: { dir: /var/spool/smtpgw, retry: [1m, 5m, 15m, 30m, 1h], lifetime: 5d, delay_warning: 4h }
log: { file: /var/log/smtpgw.log, level: info }
control: { socket: /run/smtpgw/control.sock }
doctor: { dnsbl: [zen.spamhaus.org] }
)";
    for (auto [from, to] :
         {std::pair{"CERT", cert.path}, {"KEY", key.path}, {"SECRET", secret.path}, {"SASLDB", sasldb.path}})
        yaml.replace(yaml.find(from), std::string(from).size(), to);
    auto r = load_string(yaml, "full.yaml");
    INFO(errors_of(r));
    REQUIRE(r.ok());
    const auto& c = *r.config;
    CHECK(c.hostname == "relay.example.com");
    REQUIRE(c.listen.size() == 2);
    CHECK(c.listen[1].endpoint.host == "::");
    CHECK(c.listen[1].endpoint.port == 465);
    CHECK(c.listen[1].tls == ListenTls::Implicit);
    CHECK(c.listen[1].auth == ListenAuth::Required);
    CHECK(c.listen[1].bare_newline == BareNewline::Reject);
    CHECK(c.clients.size() == 3);
    CHECK(c.sender.rewrite.size() == 2);
    CHECK(c.sender.rewrite[1].to == "$1@example.com");
    REQUIRE(c.routes.size() == 3);
    CHECK(c.routes[1].via == std::vector<std::string>{"elastic", "exchange"});
    REQUIRE(c.upstreams.size() == 2);
    CHECK(c.upstreams[1].security == Security::Mandatory);
    REQUIRE(c.upstreams[1].auth);
    CHECK(c.upstreams[1].auth->mechanisms == std::vector<std::string>{"CRAM-MD5", "PLAIN", "LOGIN"});
    CHECK(c.dns.servers.at(0).port == 5353);
    CHECK(c.queue.retry.size() == 5);
    CHECK(c.queue.delay_warning == std::chrono::hours(4));
    CHECK(c.control_socket() == "/run/smtpgw/control.sock");
}

TEST_CASE("an implicit upstream defaults to port 465", "[config]") {
    auto r = load_string("upstreams:\n  relay: { host: smtp.example.com, security: implicit }\n", "t.yaml");
    REQUIRE(r.ok());
    CHECK(r.config->upstreams[0].port == 465);
}

TEST_CASE("bad configurations fail for the stated reason, at the right place", "[config]") {
    struct Case {
        const char* yaml;
        const char* expected;  // a line of the output
    } cases[] = {
        {"listen:\n  - address: 0.0.0.0:25\n    tsl: starttls\n",
         "t.yaml:3:5: error: listen[0].tsl: unknown key (did you mean tls?)"},
        {"hostnme: x\n", "t.yaml:1:1: error: hostnme: unknown key (did you mean hostname?)"},
        {"direct: { source_address: eth0 }\n",
         "t.yaml:1:27: error: direct.source_address: \"eth0\" is not an IP address of this machine"},
        {"upstreams:\n  u: { host: a.example, source_address: 10.0.0.300 }\n",
         "t.yaml:2:41: error: upstreams.u.source_address: \"10.0.0.300\" is not an IP address of this machine"},
        {"delivery: { address_preference: ipv5 }\n",
         "t.yaml:1:33: error: delivery.address_preference: \"ipv5\" is not one of any | ipv4 | ipv6"},
        {"limits:\n  message_size: 25X\n",
         "t.yaml:2:17: error: limits.message_size: \"25X\" is not a size (a number of bytes, or with k, M or G)"},
        {"queue:\n  lifetime: 5 days\n",
         "t.yaml:2:13: error: queue.lifetime: \"5 days\" is not a duration (a number with s, m, h or d)"},
        {"clients: [10.0.0.0/8, 10.1.2.3/8]\n",
         "t.yaml:1:23: error: clients: \"10.1.2.3/8\" is not a network (host bits set after the prefix length), e.g. "
         "10.20.0.0/16"},
        {"clients: [example.com]\n",
         "t.yaml:1:11: error: clients: \"example.com\" is not a network (not an IP address), e.g. 10.20.0.0/16"},
        {"listen:\n  - address: 0.0.0.0\n",
         "t.yaml:2:14: error: listen[0].address: \"0.0.0.0\" is not IP:PORT (use [::]:25 for IPv6)"},
        {"listen:\n  - address: 0.0.0.0:25\n    tls: yes\n",
         "t.yaml:3:10: error: listen[0].tls: \"yes\" is not one of none | starttls | implicit"},
        {"listen:\n  - address: 0.0.0.0:25\n    tls: starttls\n",
         "t.yaml:2:5: error: listen[0].tls: starttls needs the tls: section (certificate and key)"},
        {"listen:\n  - { address: 0.0.0.0:25, proxy_protocol: true }\n",
         "t.yaml:2:5: error: listen[0].proxies: missing: with proxy_protocol: true, give the load balancers' "
         "addresses (only they may send the PROXY header, or anyone could claim any client address), e.g. proxies: "
         "[10.0.0.5/32]"},
        {"listen:\n  - { address: 0.0.0.0:25, proxies: [10.0.0.5] }\n",
         "t.yaml:2:37: error: listen[0].proxies: has no effect without proxy_protocol: true"},
        {"limits:\n  recipients: 0\n",
         "t.yaml:2:15: error: limits.recipients: \"0\" is not a whole number from 1 to 100000"},
        {"limits:\n  recipients: [1, 2]\n",
         "t.yaml:2:15: error: limits.recipients: expected a single value, not a list or mapping"},
        {"routes:\n  - { to: example.com, via: nowhere }\n",
         "t.yaml:2:5: error: routes[0].via: no upstream named \"nowhere\" (define it under upstreams:, or use direct)"},
        {"routes:\n  - { to: \"exa mple.com\", via: direct }\n",
         "t.yaml:2:11: error: routes[0].to: \"exa mple.com\" is not a domain pattern (example.com, *.example.com or "
         "*)"},
        {"sender:\n  rewrite:\n    - { from: \"*@scanner.local\", to: \"not an address\" }\n",
         "t.yaml:3:38: error: sender.rewrite[0].to: \"not an address\" is not an email address (user@example.com; $1 "
         "for a capture)"},
        {"sender:\n  rewrite:\n    - { from: \"/(unclosed/\", to: \"a@example.com\" }\n",
         "t.yaml:3:15: error: sender.rewrite[0].from: \"/(unclosed/\" is not a valid regular expression"},
        {"upstreams:\n  relay: { host: smtp.example.com, auth: { username: u } }\n",
         "t.yaml:2:42: error: upstreams.relay.auth: give exactly one of password_file, oauth2 (XOAUTH2), token_file "
         "(XOAUTH2) or token_command (XOAUTH2)"},
        {"upstreams:\n  relay: { host: smtp.example.com, auth: { username: u, token_file: /etc/hostname, mechanisms: "
         "[NTLM] } }\n",
         "is not supported (PLAIN, LOGIN, CRAM-MD5, DIGEST-MD5, SCRAM-SHA-1, SCRAM-SHA-256, XOAUTH2)"},
        {"upstreams:\n  relay: { host: \"smtp example\" }\n",
         "t.yaml:2:18: error: upstreams.relay.host: \"smtp example\" is not a host name or IP address"},
        {"upstreams:\n  direct: { host: a.example }\n",
         "t.yaml:2:3: error: upstreams.direct: \"direct\" is not a usable upstream name"},
        {"upstreams:\n  relay: { host: a.example, port: 70000 }\n",
         "t.yaml:2:35: error: upstreams.relay.port: \"70000\" is not a whole number from 1 to 65535"},
        {"log: { level: verbose }\n",
         "t.yaml:1:15: error: log.level: \"verbose\" is not one of debug | info | warning | error"},
        {"dns: { servers: [\"127.0.0.1:99999\"] }\n",
         "t.yaml:1:17: error: dns.servers: \"127.0.0.1:99999\" is not IP or IP:PORT"},
        {"listen: [{ address: \"127.0.0.1:25\" }, { address: \"127.0.0.1:25\" }]\n",
         "t.yaml:1:39: error: listen[1].address: 127.0.0.1:25 is already listed"},
        {"listen: []\n", "error: listen: at least one listener is needed"},
        {"limits:\n  recipients: 5\n  recipients: 6\n",
         "t.yaml:3:3: error: limits.recipients: key given more than once"},
        {"tls: { certificate: /nonexistent.pem, key: /nonexistent.key }\n",
         "t.yaml:1:21: error: tls.certificate: cannot read /nonexistent.pem: No such file or directory"},
        {"listen:\n  - address: [0.0.0.0:25\n", "t.yaml:3:1: error: YAML syntax: "},
        {"- just\n- a list\n", "t.yaml:1:1: error: : expected a mapping of keys"},
        {"queue: { retry: [] }\n", "error: queue.retry: needs at least one interval"},
    };
    for (const auto& c : cases) {
        auto r = load_string(c.yaml, "t.yaml");
        std::string out = errors_of(r);
        INFO("yaml:\n" << c.yaml << "output:\n" << out);
        CHECK_FALSE(r.ok());
        CHECK(out.find(c.expected) != std::string::npos);
    }
}

TEST_CASE("every problem in a file is reported, not only the first", "[config]") {
    auto r =
        load_string("hostname: \"bad host\"\nlimits: { recipients: x, errors: 0 }\nlog: { level: loud }\n", "t.yaml");
    CHECK_FALSE(r.ok());
    CHECK(std::count_if(r.diagnostics.begin(), r.diagnostics.end(), [](const Diagnostic& d) { return d.error; }) == 4);
}

TEST_CASE("check-config warns about what is valid but will not work", "[config]") {
    char dir[] = "/tmp/smtpgw-conf-XXXXXX";
    REQUIRE(mkdtemp(dir));
    std::string open_secret = std::string(dir) + "/open.secret", closed = std::string(dir) + "/closed.secret";
    for (const auto& [path, mode] : {std::pair{open_secret, 0644}, std::pair{closed, 0600}}) {
        FILE* f = std::fopen(path.c_str(), "w");
        REQUIRE(f);
        std::fputs("pw\n", f);
        std::fclose(f);
        chmod(path.c_str(), mode_t(mode));
    }
    auto r = load_string(
        "hostname: relay\n"
        "sender:\n"
        "  rewrite:\n"
        "    - { from: \"*@scanner.local\", to: noreply@mydomain.local }\n"
        "    - { from: \"/^(.+)@old\\\\.example$/\", to: \"$1@example.com\" }\n"
        "    - { from: \"/^(.+)@(.+)\\\\.lan$/\", to: \"$1@$2\" }\n"
        "upstreams:\n"
        "  a: { host: smtp.example.com, port: 465, security: mandatory, verify: true }\n"
        "  b: { host: smtp.example.com, port: 587, security: implicit }\n"
        "  c: { host: smtp.example.com, port: 587, security: mandatory,\n"
        "       auth: { username: u, password_file: " +
            open_secret +
            " } }\n"
            "  d: { host: smtp.example.com, port: 587, security: mandatory, verify: true,\n"
            "       auth: { username: u, password_file: " +
            closed +
            " } }\n"
            "  e: { host: smtp.example.com, port: 587, security: mandatory, verify: true,\n"
            "       auth: { username: u, password_file: /nonexistent/secret } }\n",
        "t.yaml");
    REQUIRE(r.ok());
    std::vector<std::string> warnings;
    for (const auto& d : r.diagnostics) {
        CHECK_FALSE(d.error);
        warnings.push_back(d.format());
    }
    auto has = [&](const std::string& text) {
        return std::any_of(warnings.begin(), warnings.end(),
                           [&](auto& w) { return w.find(text) != std::string::npos; });
    };
    INFO([&] {
        std::string all;
        for (auto& w : warnings)
            all += w + "\n";
        return all;
    }());
    CHECK(
        has("t.yaml:4:7: warning: sender.rewrite[0].to: noreply@mydomain.local cannot be a sender on the Internet "
            "(.local is not a public domain): receiving servers refuse mail from a domain that does not resolve "
            "(450 4.1.8 Sender address rejected: Domain not found)"));
    CHECK(
        has("t.yaml: warning: hostname: the bounce address MAILER-DAEMON@relay cannot be a sender on the Internet "
            "(\"relay\" is a bare host name, not an Internet domain)"));
    CHECK(
        has("t.yaml:8:3: warning: upstreams.a: port 465 speaks TLS from the first byte (RFC 8314), so with security: "
            "mandatory the gateway waits for a greeting that never comes; set security: implicit"));
    CHECK(
        has("t.yaml:9:3: warning: upstreams.b: port 587 starts in plaintext and offers STARTTLS, so security: "
            "implicit fails at the TLS handshake; set security: mandatory"));
    CHECK(has("t.yaml:10:3: warning: upstreams.c: security: mandatory without verify: true"));
    CHECK(has("warning: upstreams.c.auth.password_file: " + open_secret +
              " can be read by every user on this machine (mode 0644); chmod 600"));
    CHECK(
        has("t.yaml:15:44: warning: upstreams.e.auth.password_file: cannot read /nonexistent/secret: No such file or "
            "directory; mail for this upstream stays queued until it can be read"));
    CHECK_FALSE(has("upstreams.d"));
    CHECK_FALSE(has("sender.rewrite[1]"));
    CHECK_FALSE(has("sender.rewrite[2]"));
    CHECK(warnings.size() == 7);
    std::remove(open_secret.c_str());
    std::remove(closed.c_str());
    rmdir(dir);
}

TEST_CASE("check-config warns about /metrics reachable from other hosts", "[config]") {
    for (const auto& [listen, warns] : {std::pair{"0.0.0.0:9465", true},
                                        {"192.0.2.4:9465", true},
                                        {"\"[::]:9465\"", true},
                                        {"127.0.0.1:9465", false},
                                        {"127.0.2.3:9465", false},
                                        {"\"[::1]:9465\"", false}}) {
        auto r =
            load_string(std::string("hostname: relay.example.com\nmetrics: { listen: ") + listen + " }\n", "t.yaml");
        REQUIRE(r.ok());
        bool warned = std::any_of(r.diagnostics.begin(), r.diagnostics.end(), [](const Diagnostic& d) {
            return d.text.find("metrics.listen: ") == 0 &&
                   d.text.find("can be reached from other hosts") != std::string::npos;
        });
        INFO(listen);
        CHECK(warned == warns);
    }
}

TEST_CASE("a place to write is judged by the nearest folder that exists", "[config]") {
    std::string why;
    CHECK(check_writable_place("/nonexistent-smtpgw/a/b/smtpgw.log", why));
    CHECK(check_writable_place("relative/smtpgw-spool", why));
    CHECK(check_writable_place("/", why));
    CHECK(why.empty());
}

TEST_CASE("an empty file means all defaults", "[config]") {
    auto r = load_string("", "empty.yaml");
    REQUIRE(r.ok());
    const auto& c = *r.config;
    CHECK(c.routes.at(0).via.at(0) == "direct");
    REQUIRE(c.listen.size() == 1);
    CHECK(c.listen[0].address == "127.0.0.1:2525");
    CHECK(c.clients.size() == 2);
}

TEST_CASE("a missing file is reported with its name", "[config]") {
    auto r = load_file("/nonexistent/smtpgw.yaml");
    CHECK_FALSE(r.ok());
    CHECK(r.first_error() == "/nonexistent/smtpgw.yaml: error: cannot read the configuration file");
}
