#include "gateway/ops/doctor.hpp"

#include "conf/config_checks.hpp"
#include "gateway/common/address.hpp"
#include "gateway/common/json.hpp"
#include "gateway/common/text.hpp"
#include "gateway/dns/dns.hpp"
#include "gateway/dns/spf.hpp"
#include "gateway/ops/probe.hpp"
#include "gateway/smtp/dkim.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>
#include <algorithm>
#include <cctype>
#include <map>
#include <set>
#include <sstream>

namespace gateway {

namespace {

// spf::Dns answered by c-ares on a loop of its own: the doctor is a command, so it may wait.
class SyncDns : public spf::Dns {
public:
    explicit SyncDns(const conf::Dns& config) {
        uv_loop_init(&m_loop);
        m_resolver = std::make_unique<dns::Resolver>(&m_loop, config);
    }
    ~SyncDns() override {
        m_resolver->close();
        uv_run(&m_loop, UV_RUN_DEFAULT);
        uv_loop_close(&m_loop);
    }
    SyncDns(const SyncDns&) = delete;
    SyncDns& operator=(const SyncDns&) = delete;

    spf::Answer txt(const std::string& name) override {
        return wait_text([&](auto cb) { m_resolver->txt(name, cb); });
    }
    spf::Answer ptr(const std::string& name) override {
        auto answer = wait_text([&](auto cb) { m_resolver->ptr(name, cb); });
        // c-ares repeats the first name among the aliases.
        std::vector<std::string> unique;
        for (const auto& n : answer.records)
            if (std::none_of(unique.begin(), unique.end(),
                             [&](const std::string& u) { return strcasecmp(u.c_str(), n.c_str()) == 0; }))
                unique.push_back(n);
        answer.records = unique;
        return answer;
    }
    spf::Answer a(const std::string& name) override {
        return wait_addresses([&](auto cb) { m_resolver->a(name, cb); });
    }
    spf::Answer aaaa(const std::string& name) override {
        return wait_addresses([&](auto cb) { m_resolver->aaaa(name, cb); });
    }
    spf::Answer mx(const std::string& name) override {
        spf::Answer out;
        out.status = spf::Answer::Status::TempFail;  // unless an answer comes
        bool done = false;
        m_resolver->mx(name, [&](dns::Status s, std::vector<dns::MxRecord> list) {
            std::stable_sort(list.begin(), list.end(),
                             [](const auto& x, const auto& y) { return x.preference < y.preference; });
            out.status = convert(s);
            for (const auto& m : list)
                out.records.push_back(m.host);
            done = true;
        });
        run_until(done);
        return out;
    }

    // The null MX (RFC 7505) shows as one record with an empty host.
    bool null_mx(const spf::Answer& mx) const { return mx.records.size() == 1 && mx.records.front().empty(); }

private:
    static spf::Answer::Status convert(dns::Status s) {
        switch (s) {
        case dns::Status::Ok: return spf::Answer::Status::Ok;
        case dns::Status::NoData: return spf::Answer::Status::NoData;
        case dns::Status::NotFound: return spf::Answer::Status::NotFound;
        case dns::Status::TempFail: return spf::Answer::Status::TempFail;
        }
        return spf::Answer::Status::TempFail;
    }
    template <typename Start>
    spf::Answer wait_text(Start start) {
        spf::Answer out;
        out.status = spf::Answer::Status::TempFail;  // unless an answer comes
        bool done = false;
        start([&](dns::Status s, std::vector<std::string> list) {
            out.status = convert(s);
            out.records = std::move(list);
            done = true;
        });
        run_until(done);
        return out;
    }
    template <typename Start>
    spf::Answer wait_addresses(Start start) {
        spf::Answer out;
        out.status = spf::Answer::Status::TempFail;  // unless an answer comes
        bool done = false;
        start([&](dns::Status s, const std::vector<conf::IpAddress>& list) {
            out.status = convert(s);
            for (const auto& ip : list)
                out.records.push_back(ip.to_string());
            done = true;
        });
        run_until(done);
        return out;
    }
    void run_until(const bool& done) {
        while (!done)
            if (uv_run(&m_loop, UV_RUN_ONCE) == 0 && !done) break;
    }

    uv_loop_t m_loop{};
    std::unique_ptr<dns::Resolver> m_resolver;
};

enum class Level { Pass, Warn, Fail };

// Lines as the checks come, or (json) one object at the end:
// {"hostname":..,"address":..,"checks":[{"level":"PASS","check":"hostname","text":".."}],"fail":0,"warn":1,"pass":5}
class Report {
public:
    Report(std::ostream& out, bool json) : m_out(out), m_json(json) {}
    void begin(const std::string& hostname, const std::string& address, const std::string& line) {
        if (!m_json) return void(m_out << line << "\n");
        m_head = "{\"hostname\":" + json_string(hostname) + ",\"address\":" + json_string(address);
    }
    void add(Level level, const std::string& check, const std::string& text) {
        static const char* const names[] = {"PASS", "WARN", "FAIL"};
        m_counts[int(level)]++;
        if (!m_json) return void(m_out << names[int(level)] << "  " << check << ": " << text << "\n");
        m_checks += std::string(m_checks.empty() ? "" : ",") + "{\"level\":\"" + names[int(level)] +
                    "\",\"check\":" + json_string(check) + ",\"text\":" + json_string(text) + "}";
    }
    int finish() {
        if (m_json)
            m_out << m_head << ",\"checks\":[" << m_checks << "],\"fail\":" << m_counts[2]
                  << ",\"warn\":" << m_counts[1] << ",\"pass\":" << m_counts[0] << "}\n";
        else
            m_out << "-- " << m_counts[2] << " FAIL, " << m_counts[1] << " WARN, " << m_counts[0] << " PASS\n";
        return m_counts[2] ? 1 : 0;
    }

private:
    std::ostream& m_out;
    bool m_json;
    std::string m_head, m_checks;
    int m_counts[3] = {0, 0, 0};
};

bool is_private(const conf::IpAddress& ip) {
    static const char* const nets[] = {"10.0.0.0/8",  "172.16.0.0/12",  "192.168.0.0/16",
                                       "127.0.0.0/8", "169.254.0.0/16", "100.64.0.0/10",
                                       "fc00::/7",    "fe80::/10",      "::1/128"};
    for (const char* n : nets)
        if (conf::Cidr::parse(n)->contains(ip)) return true;
    return false;
}

// The address this machine would send from to the Internet (no packet leaves: a UDP connect only
// picks the route).
std::optional<conf::IpAddress> outgoing_address() {
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return std::nullopt;
    sockaddr_in to{};
    to.sin_family = AF_INET;
    to.sin_port = htons(53);
    inet_pton(AF_INET, "192.0.2.1", &to.sin_addr);
    std::optional<conf::IpAddress> out;
    sockaddr_storage local{};
    socklen_t len = sizeof local;
    if (connect(fd, reinterpret_cast<sockaddr*>(&to), sizeof to) == 0 &&
        getsockname(fd, reinterpret_cast<sockaddr*>(&local), &len) == 0)
        out = conf::IpAddress::from_sockaddr(reinterpret_cast<sockaddr*>(&local));
    ::close(fd);
    return out;
}

std::string quoted(const std::string& s) { return "\"" + s + "\""; }

std::string join(const std::vector<std::string>& v, const char* sep = ", ") {
    std::string out;
    for (const auto& s : v)
        out += (out.empty() ? "" : sep) + s;
    return out;
}

bool uses_direct(const conf::Config& c) {
    for (const auto& r : c.routes)
        if (std::find(r.via.begin(), r.via.end(), "direct") != r.via.end()) return true;
    return false;
}

// DKIM: each key's record is published and holds its public key. DMARC: for each domain mail is
// sent from (the rewrite targets and the signing domains), what receivers will find aligned.
// `bad` and `aside` as for the address checks: without direct delivery, what the upstream does
// decides (it may sign, and SPF is about its address).
void check_dkim(const conf::Config& c, SyncDns& dns, Report& report,
                const std::map<std::string, spf::Result>& spf_results, Level bad, const char* aside) {
    std::set<std::string> configured, verified;  // signing domains; those whose record holds the key
    for (const auto& k : c.dkim) {
        std::string name = k.selector + "._domainkey." + k.domain;
        std::string check = "DKIM " + name;
        std::string pem, error;
        auto key = dkim::read_key_file(k.key_file, pem, error);
        if (!key) {
            report.add(Level::Fail, check, error);
            continue;
        }
        configured.insert(ascii_lower(k.domain));
        std::string record = dkim::txt_record(*key);
        std::string about =
            k.key_file + " (" + dkim::to_string(key->algorithm) + ", " + std::to_string(key->bits) + " bits)";
        auto txt = dns.txt(name);
        if (txt.status == spf::Answer::Status::TempFail) {
            report.add(Level::Warn, check, "the DNS did not answer; try again");
            continue;
        }
        std::vector<std::string> dkim_records;
        for (const auto& r : txt.records)
            if (r.rfind("v=DKIM1", 0) == 0 || r.find("p=") != std::string::npos) dkim_records.push_back(r);
        if (dkim_records.empty()) {
            report.add(Level::Fail, check,
                       "no TXT record; publish \"" + record + "\" at " + name + " for " + about +
                           "; until then receivers cannot verify the signatures");
            continue;
        }
        std::string why;
        if (std::any_of(dkim_records.begin(), dkim_records.end(),
                        [&](const std::string& r) { return dkim::record_matches(r, *key, why); })) {
            report.add(Level::Pass, check, "the published record holds the key of " + about);
            verified.insert(ascii_lower(k.domain));
        } else {
            report.add(Level::Fail, check,
                       why + "; publish \"" + record + "\" at " + name + " for " + about +
                           ", or name the matching key file in dkim:");
        }
    }

    std::set<std::string> domains = configured, targets;
    for (const auto& r : c.sender.rewrite) {
        std::string d = ascii_lower(domain_of(r.to));
        if (!d.empty() && d.find('$') == std::string::npos && !conf::not_public(d))
            domains.insert(d), targets.insert(d);
    }
    for (const auto& d : domains) {
        // The domain's own record, else its parent's (the organizational domain, roughly).
        std::string policy_domain = d, record;
        bool tempfail = false;
        for (std::string at = d; record.empty() && !at.empty();) {
            auto txt = dns.txt("_dmarc." + at);
            tempfail = tempfail || txt.status == spf::Answer::Status::TempFail;
            for (const auto& r : txt.records)
                if (r.rfind("v=DMARC1", 0) == 0) record = r, policy_domain = at;
            auto dot = at.find('.');
            if (dot == std::string::npos || at.find('.', dot + 1) == std::string::npos) break;
            at.erase(0, dot + 1);
        }
        std::string check = "DMARC " + d;
        if (record.empty()) {
            report.add(Level::Warn, check,
                       tempfail ? "the DNS did not answer; try again"
                                : "no DMARC record at _dmarc." + d +
                                      "; receivers apply their own judgement; publish one, starting with "
                                      "\"v=DMARC1; p=none; rua=mailto:dmarc-reports@" +
                                      d + "\" to see reports first");
            continue;
        }
        std::string p = "none", adkim = "r", aspf = "r";
        for (size_t pos = 0; pos < record.size();) {
            size_t end = record.find(';', pos);
            if (end == std::string::npos) end = record.size();
            std::string item(trim_space(record.substr(pos, end - pos)));
            auto eq = item.find('=');
            if (eq != std::string::npos) {
                std::string tag = ascii_lower(trim_space(item.substr(0, eq))),
                            value = ascii_lower(trim_space(item.substr(eq + 1)));
                if (tag == "p") p = value;
                if (tag == "adkim") adkim = value;
                if (tag == "aspf") aspf = value;
            }
            pos = end + 1;
        }
        std::string head = "p=" + p + (policy_domain == d ? "" : " (of " + policy_domain + ")") + "; mail from " + d;
        // DKIM aligns when a key signs for the domain: the same one under adkim=s, a parent under r.
        std::string signer, unverified;
        for (std::string at = d; signer.empty() && !at.empty();) {
            if (verified.count(at)) signer = at;
            if (unverified.empty() && configured.count(at)) unverified = at;
            if (adkim == "s") break;
            auto dot = at.find('.');
            if (dot == std::string::npos) break;
            at.erase(0, dot + 1);
        }
        if (!signer.empty()) {
            report.add(Level::Pass, check, head + " is DKIM-signed by " + signer + " (aligned)");
            continue;
        }
        // SPF aligns for a rewritten sender when From: is in the same domain.
        auto spf = spf_results.find(d);
        bool spf_aligned = spf != spf_results.end() && spf->second == spf::Result::Pass;
        std::string advice =
            unverified.empty()
                ? "; sign it: smtpgw dkim keygen " + d + " SELECTOR, then dkim: - { domain: " + d +
                      ", selector: SELECTOR, key_file: ... }"
                : "; its signatures by " + unverified + " will not verify until the DKIM record above is mended";
        if (spf_aligned)
            report.add(Level::Pass, check,
                       head + " passes SPF as the rewritten envelope sender, " +
                           (c.sender.header_from == conf::HeaderFrom::Rewrite
                                ? "which From: carries (aligned"
                                : "aligned where From: is in " + d + " too (header_from: rewrite makes it so for all") +
                           "; not signed, so forwarded copies fail" + advice + ")");
        else if (targets.count(d) && spf == spf_results.end())
            report.add(Level::Warn, check,
                       head +
                           " has no aligned DKIM signature, and SPF was not checked (give the public sending "
                           "address with --ip)" +
                           advice);
        else
            report.add(p == "none" ? Level::Warn : bad, check,
                       head + " has neither an aligned DKIM signature nor an aligned SPF pass, so receivers " +
                           (p == "reject"       ? "refuse it"
                            : p == "quarantine" ? "file it as spam"
                                                : "report it") +
                           advice + aside);
    }
}

}  // namespace

int run_doctor(const conf::Config& c, std::optional<conf::IpAddress> ip, std::ostream& out, bool json) {
    Report report(out, json);
    SyncDns dns(c.dns);
    bool direct = uses_direct(c);
    // Without direct delivery the upstreams send to the Internet: findings about this address are
    // worth knowing, not failures.
    Level bad = direct ? Level::Fail : Level::Warn;
    const char* aside = direct ? "" : " (routes go through upstreams; this matters for direct delivery only)";

    bool from_option = ip.has_value();
    if (!ip) ip = outgoing_address();
    report.begin(
        c.hostname, ip ? ip->to_string() : "",
        "smtpgw doctor: " + c.hostname + ", sending from " +
            (ip ? ip->to_string() + (from_option ? "" : " (this machine's outgoing address; --ip to give another)")
                : std::string("an unknown address")));

    // hostname
    auto a = dns.a(c.hostname), aaaa = dns.aaaa(c.hostname);
    std::vector<std::string> addresses = a.records;
    addresses.insert(addresses.end(), aaaa.records.begin(), aaaa.records.end());
    if (auto why = conf::not_public(c.hostname))
        report.add(Level::Fail, "hostname",
                   c.hostname + ": " + *why +
                       "; set hostname: to a name in a domain you own (bounces come from "
                       "MAILER-DAEMON@hostname)");
    else if (!addresses.empty())
        report.add(Level::Pass, "hostname", c.hostname + " resolves to " + join(addresses));
    else if (a.status == spf::Answer::Status::TempFail || aaaa.status == spf::Answer::Status::TempFail)
        report.add(Level::Warn, "hostname", c.hostname + ": the DNS did not answer; try again");
    else
        report.add(Level::Fail, "hostname",
                   c.hostname + " does not resolve; publish an A record for it pointing at the sending address");

    std::map<std::string, spf::Result> spf_results;  // by rewritten sender domain
    bool usable_ip = ip && (from_option || !is_private(*ip));
    if (!usable_ip) {
        report.add(Level::Warn, "address",
                   ip ? ip->to_string() +
                            " is a private address, so the Internet sees another one (NAT); give the "
                            "public address with --ip to check reverse DNS, SPF and blocklists"
                      : std::string("cannot tell the sending address; give it with --ip"));
    } else {
        // reverse DNS (FCrDNS)
        std::string rname = spf::reverse_name(*ip);
        auto ptr = dns.ptr(rname);
        if (ptr.status == spf::Answer::Status::TempFail) {
            report.add(Level::Warn, "reverse DNS", "the PTR lookup of " + ip->to_string() + " failed; try again");
        } else if (ptr.records.empty()) {
            report.add(bad, "reverse DNS",
                       ip->to_string() +
                           " has no PTR record; ask whoever runs the address (the ISP or cloud "
                           "provider) to set it to " +
                           c.hostname + aside);
        } else {
            std::vector<std::string> confirmed;
            for (const auto& name : ptr.records) {
                auto back = ip->v6 ? dns.aaaa(name) : dns.a(name);
                for (const auto& r : back.records)
                    if (conf::IpAddress::parse(r) == ip) confirmed.push_back(name);
            }
            auto names_host = [&](const std::string& n) { return strcasecmp(n.c_str(), c.hostname.c_str()) == 0; };
            if (std::any_of(confirmed.begin(), confirmed.end(), names_host))
                report.add(Level::Pass, "reverse DNS",
                           ip->to_string() + " has PTR " + c.hostname + ", which resolves back to it");
            else if (!confirmed.empty())
                report.add(Level::Warn, "reverse DNS",
                           ip->to_string() + " has PTR " + join(confirmed) + " (confirmed), not the hostname " +
                               c.hostname + "; set hostname: " + confirmed.front() + ", or change the PTR");
            else
                report.add(bad, "reverse DNS",
                           ip->to_string() + " has PTR " + join(ptr.records) +
                               ", which does not resolve back to it; publish an A record for the name, or change "
                               "the PTR" +
                               aside);
        }

        // SPF: the HELO name, then every sender domain of the policy.
        std::vector<std::pair<std::string, std::string>> identities{{"HELO " + c.hostname, ""}};
        std::set<std::string> seen;
        for (const auto& r : c.sender.rewrite) {
            std::string d = domain_of(r.to);
            if (d.empty() || d.find('$') != std::string::npos || conf::not_public(d) || !seen.insert(d).second)
                continue;
            identities.push_back({d, "postmaster@" + d});
        }
        for (const auto& [label, sender] : identities) {
            auto o = spf::check_host(dns, *ip, sender, c.hostname);
            if (!sender.empty()) spf_results[domain_of(sender)] = o.result;
            std::string check = "SPF " + label;
            std::string subject = sender.empty() ? c.hostname : domain_of(sender);
            std::string detail = o.record.empty() ? "" : " (" + quoted(o.record) + ")";
            switch (o.result) {
            case spf::Result::Pass:
                report.add(Level::Pass, check, ip->to_string() + " is authorized by " + o.mechanism + detail);
                break;
            case spf::Result::Fail:
                report.add(bad, check,
                           ip->to_string() + " is not authorized (" + o.mechanism + ")" + detail + "; add ip" +
                               (ip->v6 ? "6:" : "4:") + ip->to_string() + " to the SPF record of " + subject + aside);
                break;
            case spf::Result::SoftFail:
            case spf::Result::Neutral:
                report.add(Level::Warn, check,
                           std::string(spf::to_string(o.result)) + ": " + ip->to_string() + " is not authorized (" +
                               o.mechanism + ")" + detail + "; add ip" + (ip->v6 ? "6:" : "4:") + ip->to_string() +
                               " to the SPF record of " + subject);
                break;
            case spf::Result::None:
                report.add(Level::Warn, check,
                           subject + " has no SPF record; publish one, e.g. \"v=spf1 ip" + (ip->v6 ? "6:" : "4:") +
                               ip->to_string() + " -all\"");
                break;
            case spf::Result::TempError:
                report.add(Level::Warn, check, "temperror: " + o.problem + "; try again");
                break;
            case spf::Result::PermError:
                report.add(bad, check,
                           "permerror: " + o.problem + detail + "; receivers treat the record as broken" + aside);
                break;
            }
        }

        // DNS blocklists
        for (const auto& zone : c.doctor.dnsbl) {
            std::string name = spf::reverse_name(*ip);
            name = name.substr(0, name.rfind(ip->v6 ? ".ip6.arpa" : ".in-addr.arpa")) + "." + zone;
            auto listed = dns.a(name);
            if (listed.status == spf::Answer::Status::TempFail) {
                report.add(Level::Warn, "blocklist " + zone, "the zone did not answer; try again");
            } else if (listed.records.empty()) {
                report.add(Level::Pass, "blocklist " + zone, ip->to_string() + " is not listed");
            } else {
                auto why = dns.txt(name);
                // 127.255.255.x: the list refuses to answer this resolver (public DNS, too many queries).
                bool refused = listed.records.front().rfind("127.255.255.", 0) == 0;
                if (refused)
                    report.add(Level::Warn, "blocklist " + zone,
                               "the list refused the query (" + listed.records.front() +
                                   "): query it through your own resolver");
                else
                    report.add(bad, "blocklist " + zone,
                               ip->to_string() + " is listed (" + join(listed.records) +
                                   (why.records.empty() ? "" : ": " + join(why.records, " ")) +
                                   "); request removal at the list's site" + aside);
            }
        }
    }

    // Sender addresses
    std::set<std::string> targets;
    for (const auto& r : c.sender.rewrite)
        if (r.to.find('$') == std::string::npos) targets.insert(r.to);
    for (const auto& t : targets) {
        std::string d = domain_of(t);
        std::string check = "sender " + t;
        if (auto why = conf::not_public(d)) {
            report.add(Level::Fail, check,
                       *why +
                           ": no server on the Internet accepts mail from it; rewrite to an address in a domain "
                           "you own");
            continue;
        }
        auto mx = dns.mx(d);
        if (mx.status == spf::Answer::Status::TempFail) {
            report.add(Level::Warn, check, "the DNS did not answer for " + d + "; try again");
        } else if (dns.null_mx(mx)) {
            report.add(Level::Fail, check,
                       d + " publishes a null MX (it accepts no mail), so replies and bounces are lost; use another "
                           "address");
        } else if (!mx.records.empty()) {
            report.add(Level::Pass, check, d + " has MX " + join(mx.records));
        } else {
            auto host = dns.a(d);
            if (!host.records.empty())
                report.add(Level::Pass, check, d + " has no MX but an address (" + join(host.records) + ")");
            else if (mx.status == spf::Answer::Status::NotFound)
                report.add(Level::Fail, check, d + " does not exist in the DNS; receivers refuse it as a sender");
            else
                report.add(Level::Fail, check, d + " has neither MX nor address: replies and bounces cannot reach it");
        }
    }

    check_dkim(c, dns, report, spf_results, bad, aside);

    // Upstreams: the probe's verdict.
    for (const auto& u : c.upstreams) {
        std::ostringstream transcript;
        int r = run_probe(c, ProbeTarget{u, true}, transcript);
        std::string text = transcript.str(), verdict;
        auto pos = text.rfind("verdict: ");
        verdict = pos == std::string::npos ? text : text.substr(pos + 9);
        while (!verdict.empty() && verdict.back() == '\n')
            verdict.pop_back();
        report.add(r == 0 ? Level::Pass : Level::Fail, "upstream " + u.name,
                   u.host + ":" + std::to_string(u.port) + ": " + verdict +
                       (r == 0 ? "" : " (smtpgw probe " + u.name + " shows the whole conversation)"));
    }
    return report.finish();
}

}  // namespace gateway
