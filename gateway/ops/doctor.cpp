#include "gateway/ops/doctor.hpp"

#include "conf/config_checks.hpp"
#include "gateway/common/address.hpp"
#include "gateway/common/json.hpp"
#include "gateway/dns/dns.hpp"
#include "gateway/dns/spf.hpp"
#include "gateway/ops/probe.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>
#include <algorithm>
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
