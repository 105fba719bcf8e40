// Next hops (RFC 5321 section 5, RFC 7505), routes and patterns, reasons and delays, notices.
#include "conf/config_load.hpp"
#include "gateway/common/patterns.hpp"
#include "gateway/queue/bounce.hpp"
#include "gateway/queue/routing.hpp"
#include "gateway/smtp/delivery.hpp"
#include "gateway/smtp/nexthop.hpp"

#include <catch2/catch.hpp>

#include <algorithm>
#include <map>
#include <set>

using namespace gateway;

namespace {

// DNS answers from a table; a name that is not there is NXDOMAIN.
struct FakeDns : dns::Client {
    std::map<std::string, std::pair<dns::Status, std::vector<dns::MxRecord>>> mx_table;
    std::map<std::string, std::pair<dns::Status, std::vector<std::string>>> a_table;

    void mx(const std::string& name, dns::MxCallback done) override {
        auto it = mx_table.find(name);
        if (it == mx_table.end()) return done(dns::Status::NotFound, {});
        done(it->second.first, it->second.second);
    }
    void addresses(const std::string& name, dns::AddressCallback done) override {
        auto it = a_table.find(name);
        if (it == a_table.end()) return done(dns::Status::NotFound, {});
        std::vector<conf::IpAddress> out;
        for (const auto& a : it->second.second)
            out.push_back(*conf::IpAddress::parse(a));
        done(it->second.first, out);
    }
};

HopList resolve_direct(HopResolver& r, const std::string& domain,
                       conf::AddressPreference pref = conf::AddressPreference::Ipv4) {
    HopList out;
    r.direct(domain, 25, pref, [&](HopList h) { out = std::move(h); });
    return out;
}

std::vector<std::string> labels(const HopList& h) {
    std::vector<std::string> out;
    for (const auto& hop : h.hops)
        out.push_back(hop.label());
    return out;
}

}  // namespace

TEST_CASE("MX hosts in preference order, their addresses in turn", "[nexthop]") {
    FakeDns dns;
    dns.mx_table["example.org"] = {dns::Status::Ok, {{20, "mx2.example.org"}, {10, "mx1.example.org"}}};
    dns.a_table["mx1.example.org"] = {dns::Status::Ok, {"192.0.2.1", "2001:db8::1"}};
    dns.a_table["mx2.example.org"] = {dns::Status::Ok, {"192.0.2.2"}};
    HopResolver r(dns, nullptr);
    auto h = resolve_direct(r, "example.org");
    REQUIRE(h.outcome == HopList::Outcome::Ok);
    CHECK(labels(h) == std::vector<std::string>{"mx1.example.org[192.0.2.1]:25", "mx1.example.org[2001:db8::1]:25",
                                                "mx2.example.org[192.0.2.2]:25"});
}

TEST_CASE("a host's addresses are shuffled, the preferred family first", "[nexthop]") {
    FakeDns dns;
    dns.mx_table["example.org"] = {dns::Status::Ok, {{10, "mx.example.org"}}};
    dns.a_table["mx.example.org"] = {dns::Status::Ok, {"192.0.2.1", "192.0.2.2", "2001:db8::1", "2001:db8::2"}};
    dns.a_table["up.example.org"] = {dns::Status::Ok, {"192.0.2.7", "192.0.2.8"}};
    HopResolver r(dns, nullptr);
    std::set<std::string> firsts, v6_firsts, upstream_firsts;
    for (int i = 0; i < 64; ++i) {
        auto any = resolve_direct(r, "example.org", conf::AddressPreference::Any);
        REQUIRE(any.hops.size() == 4);
        firsts.insert(any.hops[0].address.to_string());
        auto v6 = resolve_direct(r, "example.org", conf::AddressPreference::Ipv6);
        CHECK(v6.hops[0].address.v6);
        CHECK(v6.hops[1].address.v6);
        CHECK_FALSE(v6.hops[2].address.v6);
        v6_firsts.insert(v6.hops[0].address.to_string());
        r.upstream("up.example.org", 25, conf::AddressPreference::Any,
                   [&](HopList h) { upstream_firsts.insert(h.hops.at(0).address.to_string()); });
    }
    // A dead first address does not cost every attempt its timeout.
    CHECK(firsts.size() == 4);
    CHECK(v6_firsts == std::set<std::string>{"2001:db8::1", "2001:db8::2"});
    CHECK(upstream_firsts == std::set<std::string>{"192.0.2.7", "192.0.2.8"});
}

TEST_CASE("equal preferences are shuffled", "[nexthop]") {
    FakeDns dns;
    dns.mx_table["example.org"] = {dns::Status::Ok,
                                   {{10, "a.example.org"}, {10, "b.example.org"}, {5, "z.example.org"}}};
    dns.a_table["a.example.org"] = {dns::Status::Ok, {"192.0.2.1"}};
    dns.a_table["b.example.org"] = {dns::Status::Ok, {"192.0.2.2"}};
    dns.a_table["z.example.org"] = {dns::Status::Ok, {"192.0.2.9"}};
    HopResolver r(dns, nullptr);
    std::set<std::string> seconds;
    for (int i = 0; i < 64; ++i) {
        auto h = resolve_direct(r, "example.org");
        REQUIRE(h.hops.size() == 3);
        CHECK(h.hops[0].host == "z.example.org");  // the best preference always first
        seconds.insert(h.hops[1].host);
    }
    CHECK(seconds == std::set<std::string>{"a.example.org", "b.example.org"});
}

TEST_CASE("no MX, null MX, lookup failures", "[nexthop]") {
    FakeDns dns;
    dns.mx_table["implicit.org"] = {dns::Status::NoData, {}};
    dns.a_table["implicit.org"] = {dns::Status::Ok, {"192.0.2.5"}};
    dns.mx_table["null.org"] = {dns::Status::Ok, {{0, ""}}};
    dns.mx_table["flaky.org"] = {dns::Status::TempFail, {}};
    dns.mx_table["noaddr.org"] = {dns::Status::Ok, {{10, "ghost.noaddr.org"}}};
    dns.mx_table["halfdown.org"] = {dns::Status::Ok, {{10, "down.halfdown.org"}}};
    dns.a_table["down.halfdown.org"] = {dns::Status::TempFail, {}};
    HopResolver r(dns, nullptr);

    auto implicit = resolve_direct(r, "implicit.org");
    REQUIRE(implicit.outcome == HopList::Outcome::Ok);
    CHECK(labels(implicit) == std::vector<std::string>{"implicit.org[192.0.2.5]:25"});

    auto null = resolve_direct(r, "null.org");
    CHECK(null.outcome == HopList::Outcome::Bounce);
    CHECK(null.dsn == "5.1.0");
    CHECK(null.reason == "Domain null.org does not accept mail (nullMX)");

    auto nx = resolve_direct(r, "nosuch.org");
    CHECK(nx.outcome == HopList::Outcome::Bounce);
    CHECK(nx.dsn == "5.4.4");
    CHECK(nx.reason == "Host or domain name not found. Name service error for name=nosuch.org type=A: Host not found");

    auto flaky = resolve_direct(r, "flaky.org");
    CHECK(flaky.outcome == HopList::Outcome::Defer);
    CHECK(flaky.dsn == "4.4.3");
    CHECK(flaky.reason ==
          "Host or domain name not found. Name service error for name=flaky.org type=MX: Host not found, try again");

    auto noaddr = resolve_direct(r, "noaddr.org");
    CHECK(noaddr.outcome == HopList::Outcome::Bounce);
    CHECK(noaddr.dsn == "5.4.4");
    CHECK(noaddr.reason.find("name=ghost.noaddr.org type=A") != std::string::npos);

    auto halfdown = resolve_direct(r, "halfdown.org");
    CHECK(halfdown.outcome == HopList::Outcome::Defer);
    CHECK(halfdown.dsn == "4.4.3");

    auto literal = resolve_direct(r, "[192.0.2.77]");
    REQUIRE(literal.outcome == HopList::Outcome::Ok);
    CHECK(labels(literal) == std::vector<std::string>{"[192.0.2.77][192.0.2.77]:25"});
}

TEST_CASE("at most five addresses are tried", "[nexthop]") {
    FakeDns dns;
    dns.mx_table["big.org"] = {dns::Status::Ok, {{10, "a.big.org"}, {20, "b.big.org"}}};
    dns.a_table["a.big.org"] = {dns::Status::Ok, {"192.0.2.1", "192.0.2.2", "192.0.2.3", "192.0.2.4"}};
    dns.a_table["b.big.org"] = {dns::Status::Ok, {"192.0.2.5", "192.0.2.6", "192.0.2.7"}};
    HopResolver r(dns, nullptr);
    CHECK(resolve_direct(r, "big.org").hops.size() == 5);
}

TEST_CASE("an MX that is this gateway", "[nexthop]") {
    FakeDns dns;
    dns.mx_table["self.org"] = {dns::Status::Ok, {{10, "gw.self.org"}}};
    dns.mx_table["backup.org"] = {dns::Status::Ok, {{10, "primary.backup.org"}, {20, "gw.self.org"}, {30, "c.org"}}};
    dns.a_table["gw.self.org"] = {dns::Status::Ok, {"192.0.2.25"}};
    dns.a_table["primary.backup.org"] = {dns::Status::Ok, {"192.0.2.10"}};
    dns.a_table["c.org"] = {dns::Status::Ok, {"192.0.2.30"}};
    HopResolver r(dns,
                  [](const conf::IpAddress& a, uint16_t port) { return a.to_string() == "192.0.2.25" && port == 25; });
    auto self = resolve_direct(r, "self.org");
    CHECK(self.outcome == HopList::Outcome::Bounce);
    CHECK(self.dsn == "5.4.6");
    CHECK(self.reason == "mail for self.org loops back to myself");
    // As a backup MX: only the better ones are tried.
    auto backup = resolve_direct(r, "backup.org");
    REQUIRE(backup.outcome == HopList::Outcome::Ok);
    CHECK(labels(backup) == std::vector<std::string>{"primary.backup.org[192.0.2.10]:25"});
}

TEST_CASE("upstream hosts", "[nexthop]") {
    FakeDns dns;
    dns.a_table["smtp.relay.org"] = {dns::Status::Ok, {"192.0.2.40", "192.0.2.41"}};
    dns.a_table["flaky.relay.org"] = {dns::Status::TempFail, {}};
    HopResolver r(dns, nullptr);
    HopList h;
    const auto any = conf::AddressPreference::Any;
    r.upstream("smtp.relay.org", 587, any, [&](HopList x) { h = std::move(x); });
    auto got = labels(h);
    std::sort(got.begin(), got.end());  // in random order
    CHECK(got == std::vector<std::string>{"smtp.relay.org[192.0.2.40]:587", "smtp.relay.org[192.0.2.41]:587"});
    r.upstream("192.0.2.99", 25, any, [&](HopList x) { h = std::move(x); });
    CHECK(labels(h) == std::vector<std::string>{"192.0.2.99[192.0.2.99]:25"});
    // A smarthost that does not resolve is a configuration problem: deferred, never bounced.
    r.upstream("typo.relay.org", 25, any, [&](HopList x) { h = std::move(x); });
    CHECK(h.outcome == HopList::Outcome::Defer);
    CHECK(h.dsn == "4.3.5");
    CHECK(h.reason ==
          "Host or domain name not found. Name service error for name=typo.relay.org type=A: Host not found");
    r.upstream("flaky.relay.org", 25, any, [&](HopList x) { h = std::move(x); });
    CHECK(h.dsn == "4.4.3");
}

TEST_CASE("globs and sender patterns", "[patterns]") {
    CHECK(glob_match("*", "anything"));
    CHECK(glob_match("*.example.com", "a.example.com"));
    CHECK(glob_match("*.example.com", "A.B.Example.COM"));
    CHECK_FALSE(glob_match("*.example.com", "example.com"));
    CHECK(glob_match("printer-*@*.corp.example", "printer-3f@floor2.corp.example"));
    CHECK_FALSE(glob_match("printer-*@*.corp.example", "scanner@floor2.corp.example"));
    CHECK(glob_match("a*b*c", "aXXbYYc"));
    CHECK_FALSE(glob_match("a*b*c", "aXXbYY"));

    CHECK(SenderPattern("*@scanner.local").matches("copier@scanner.local"));
    CHECK(SenderPattern("hr.example.com").matches("boss@HR.example.com"));
    CHECK_FALSE(SenderPattern("hr.example.com").matches("boss@x.hr.example.com"));
    CHECK_FALSE(SenderPattern("*@scanner.local").matches(""));
    CHECK(SenderPattern("<>").matches(""));
    CHECK_FALSE(SenderPattern("<>").matches("a@b.example"));
    std::vector<std::string> caps;
    REQUIRE(SenderPattern("/^(.+)@legacy\\.example$/").matches("jane@Legacy.example", &caps));
    CHECK(caps.at(1) == "jane");
}

TEST_CASE("routes: first match wins, recipient domain and original sender", "[routing]") {
    auto r = conf::load_string(R"(
routes:
  - { to: [example.com, "*.example.com"], via: exchange }
  - { from: "*@hr.example.com", via: [elastic, exchange] }
  - { to: "*", via: direct }
upstreams:
  exchange: { host: exch.example.com }
  elastic: { host: smtp.elasticemail.com }
)",
                               "r.yaml");
    REQUIRE(r.ok());
    Router router(*r.config);
    CHECK(router.via("a@x.org", "u@example.com") == std::vector<std::string>{"exchange"});
    CHECK(router.via("a@x.org", "u@sub.example.com") == std::vector<std::string>{"exchange"});
    CHECK(router.via("boss@hr.example.com", "u@gmail.example") == std::vector<std::string>{"elastic", "exchange"});
    CHECK(router.via("a@x.org", "u@gmail.example") == std::vector<std::string>{"direct"});
    CHECK(router.via("", "u@gmail.example") == std::vector<std::string>{"direct"});
}

TEST_CASE("reasons and delays in Postfix's format", "[delivery]") {
    ServerReply r{550, {"550-5.1.1 The account does not exist.", "550 5.1.1 Try again."}};
    CHECK(said_reason("mx.example.org[192.0.2.1]", r, "RCPT TO command") ==
          "host mx.example.org[192.0.2.1] said: 550-5.1.1 The account does not exist. 550 5.1.1 Try again. (in reply "
          "to RCPT TO command)");
    CHECK(reply_dsn(r) == "5.1.1");
    struct Case {
        double s;
        const char* text;
    } cases[] = {{0, "0"},   {0.004, "0"},  {0.07, "0.07"}, {0.19, "0.19"},       {0.5, "0.5"}, {1.3, "1.3"},
                 {1.0, "1"}, {9.99, "9.9"}, {75.4, "75"},   {191726.8, "191726"}, {-1, "0"}};
    for (const auto& c : cases) {
        INFO(c.s);
        CHECK(format_delay(c.s) == c.text);
    }
}

TEST_CASE("a bounce is a multipart/report with the reasons and the original headers", "[bounce]") {
    Envelope e;
    e.id = "ABC123";
    e.sender = "scanner@corp.example";
    e.message_id = "<m1@corp.example>";
    e.arrival_us = 1795803759000000;
    Recipient a("gone@example.org");
    a.status = RcptStatus::Bounced;
    a.dsn = "5.1.1";
    a.reason =
        "host mx.example.org[192.0.2.1] said: 550 5.1.1 <gone@example.org>: User unknown (in reply to RCPT TO "
        "command)";
    a.relay = "mx.example.org[192.0.2.1]:25";
    a.last_attempt_us = 1795803760000000;
    Recipient b("late@example.net");
    b.status = RcptStatus::Bounced;
    b.dsn = "4.4.1";
    b.reason = "connect to mx.example.net[192.0.2.2]:25: Connection refused";
    b.relay = "none";
    e.recipients = {a, b};
    NoticeInput in;
    in.original = &e;
    in.recipients = {0, 1};
    in.original_headers = header_section("Received: from x\r\n\tby y\r\nSubject: scan\r\nFrom: s@c\r\n\r\nbody\r\n");
    in.hostname = "gw.example";
    in.now = 1795803761;
    in.boundary = "B0UND";
    auto m = build_notice(in);
    CHECK(in.original_headers == "Subject: scan\r\nFrom: s@c\r\n");
    CHECK(m.find("From: MAILER-DAEMON@gw.example (Mail Delivery System)\r\n") == 0);
    CHECK(m.find("To: <scanner@corp.example>\r\n") != std::string::npos);
    CHECK(m.find("Subject: Undelivered Mail Returned to Sender\r\n") != std::string::npos);
    CHECK(m.find("Content-Type: multipart/report; report-type=delivery-status;\r\n\tboundary=\"B0UND\"") !=
          std::string::npos);
    CHECK(m.find("Reporting-MTA: dns; gw.example\r\n") != std::string::npos);
    CHECK(m.find("Final-Recipient: rfc822; gone@example.org\r\nAction: failed\r\nStatus: 5.1.1\r\n"
                 "Remote-MTA: dns; mx.example.org\r\nDiagnostic-Code: smtp; 550 5.1.1 <gone@example.org>: User "
                 "unknown\r\nLast-Attempt-Date: ") != std::string::npos);
    CHECK(m.find("Final-Recipient: rfc822; late@example.net\r\nAction: failed\r\nStatus: 4.4.1\r\nDiagnostic-Code: "
                 "X-Smtpgw; connect to mx.example.net[192.0.2.2]:25: Connection refused\r\n") != std::string::npos);
    CHECK(m.find("Content-Type: text/rfc822-headers\r\n\r\nSubject: scan\r\nFrom: s@c\r\n") != std::string::npos);
    CHECK(m.find("What usually fixes it: The recipient's mail server says this address does not exist.") !=
          std::string::npos);
    CHECK(m.substr(m.size() - 11) == "--B0UND--\r\n");
    for (size_t pos = m.find('\n'); pos != std::string::npos; pos = m.find('\n', pos + 1))
        REQUIRE(m[pos - 1] == '\r');
}
