#include "gateway/smtp/nexthop.hpp"

#include "gateway/common/idn.hpp"
#include "gateway/common/text.hpp"

#include <algorithm>
#include <memory>

namespace gateway {

namespace {

std::string lookup_error(const std::string& name, const char* type, dns::Status s) {
    return "Host or domain name not found. Name service error for name=" + name + " type=" + type + ": " +
           dns::status_text(s);
}

HopList failure(HopList::Outcome outcome, const char* dsn, std::string reason) {
    HopList h;
    h.outcome = outcome;
    h.dsn = dsn;
    h.reason = std::move(reason);
    return h;
}

}  // namespace

std::string NextHop::label() const { return host + "[" + address.to_string() + "]:" + std::to_string(port); }

void HopResolver::order(std::vector<conf::IpAddress>& addresses, conf::AddressPreference pref) {
    std::shuffle(addresses.begin(), addresses.end(), m_random);
    if (pref == conf::AddressPreference::Any) return;
    bool v6_first = pref == conf::AddressPreference::Ipv6;
    std::stable_partition(addresses.begin(), addresses.end(), [&](const auto& a) { return a.v6 == v6_first; });
}

void HopResolver::direct(const std::string& domain, uint16_t port, conf::AddressPreference pref, HopCallback done) {
    // An address literal ([192.0.2.1]) is its own host (RFC 5321 5.1).
    if (domain.size() > 2 && domain.front() == '[' && domain.back() == ']') {
        std::string inner = domain.substr(1, domain.size() - 2);
        if (inner.rfind("IPv6:", 0) == 0 || inner.rfind("ipv6:", 0) == 0) inner = inner.substr(5);
        auto a = conf::IpAddress::parse(inner);
        if (!a) return done(failure(HopList::Outcome::Bounce, "5.1.2", "bad address literal " + domain));
        return done(finish_direct(domain, {NextHop{domain, *a, port, 0}}));
    }
    // RFC 5890: an internationalized domain is looked up in its A-label form.
    auto ace = ascii_domain(domain);
    if (!ace)
        return done(failure(
            HopList::Outcome::Bounce, "5.1.2",
            "bad destination domain: " + printable(domain) + " is not an internationalized domain name (RFC 5890)"));
    m_dns.mx(
        *ace, [this, domain = *ace, port, pref, done = std::move(done)](dns::Status s, std::vector<dns::MxRecord> mx) {
            switch (s) {
            case dns::Status::TempFail:
                return done(failure(HopList::Outcome::Defer, "4.4.3", lookup_error(domain, "MX", s)));
            case dns::Status::NotFound:
            case dns::Status::NoData:
                // RFC 5321 5.1: no MX records: the domain itself is the implicit MX, preference 0.
                return resolve_mx_hosts(domain, {dns::MxRecord{0, domain}}, port, pref, done);
            case dns::Status::Ok: break;
            }
            // RFC 7505 3: a lone "." MX says the domain accepts no mail.
            bool only_null = std::all_of(mx.begin(), mx.end(), [](const auto& r) { return r.host.empty(); });
            if (only_null)
                return done(
                    failure(HopList::Outcome::Bounce, "5.1.0", "Domain " + domain + " does not accept mail (nullMX)"));
            mx.erase(std::remove_if(mx.begin(), mx.end(), [](const auto& r) { return r.host.empty(); }), mx.end());
            // RFC 5321 5.1: by preference; equal preferences in random order.
            std::shuffle(mx.begin(), mx.end(), m_random);
            std::stable_sort(mx.begin(), mx.end(),
                             [](const auto& a, const auto& b) { return a.preference < b.preference; });
            resolve_mx_hosts(domain, std::move(mx), port, pref, done);
        });
}

void HopResolver::resolve_mx_hosts(const std::string& domain, std::vector<dns::MxRecord> mx, uint16_t port,
                                   conf::AddressPreference pref, HopCallback done) {
    struct Pending {
        std::vector<dns::MxRecord> mx;
        std::vector<std::vector<conf::IpAddress>> addresses;
        std::vector<dns::Status> status;
        size_t outstanding;
        HopCallback done;
    };
    auto p = std::make_shared<Pending>();
    p->mx = std::move(mx);
    p->addresses.resize(p->mx.size());
    p->status.resize(p->mx.size(), dns::Status::TempFail);
    p->outstanding = p->mx.size();
    p->done = std::move(done);
    for (size_t i = 0; i < p->mx.size(); ++i) {
        m_dns.addresses(p->mx[i].host, [this, p, i, domain, port, pref](dns::Status s, std::vector<conf::IpAddress> a) {
            p->status[i] = s;
            order(a, pref);
            p->addresses[i] = std::move(a);
            if (--p->outstanding > 0) return;
            std::vector<NextHop> hops;
            for (size_t j = 0; j < p->mx.size(); ++j)
                for (const auto& addr : p->addresses[j])
                    hops.push_back({p->mx[j].host, addr, port, p->mx[j].preference});
            if (!hops.empty()) return p->done(finish_direct(domain, std::move(hops)));
            // No usable address: a temporary failure anywhere defers; otherwise the lookup error is final.
            for (size_t j = 0; j < p->mx.size(); ++j)
                if (p->status[j] == dns::Status::TempFail)
                    return p->done(
                        failure(HopList::Outcome::Defer, "4.4.3", lookup_error(p->mx[j].host, "A", p->status[j])));
            p->done(
                failure(HopList::Outcome::Bounce, "5.4.4", lookup_error(p->mx.front().host, "A", p->status.front())));
        });
    }
}

HopList HopResolver::finish_direct(const std::string& domain, std::vector<NextHop> hops) const {
    // Postfix's loop rule: an MX that is this gateway cuts the list at its preference; nothing
    // left means the mail would come back here.
    for (size_t i = 0; i < hops.size(); ++i) {
        if (!m_is_self || !m_is_self(hops[i].address, hops[i].port)) continue;
        unsigned self_pref = hops[i].preference;
        hops.erase(
            std::remove_if(hops.begin(), hops.end(), [&](const NextHop& h) { return h.preference >= self_pref; }),
            hops.end());
        if (hops.empty())
            return failure(HopList::Outcome::Bounce, "5.4.6", "mail for " + domain + " loops back to myself");
        break;
    }
    if (hops.size() > k_address_limit) hops.resize(k_address_limit);
    HopList out;
    out.hops = std::move(hops);
    return out;
}

// An upstream whose address and port are one of this gateway's listeners is a loop.
HopList HopResolver::without_self(const std::string& host, HopList list) const {
    if (!m_is_self) return list;
    auto& h = list.hops;
    h.erase(std::remove_if(h.begin(), h.end(), [&](const NextHop& n) { return m_is_self(n.address, n.port); }),
            h.end());
    if (h.empty()) return failure(HopList::Outcome::Bounce, "5.4.6", "mail for " + host + " loops back to myself");
    return list;
}

void HopResolver::upstream(const std::string& host, uint16_t port, conf::AddressPreference pref, HopCallback done) {
    if (auto a = conf::IpAddress::parse(host)) {
        HopList out;
        out.hops.push_back({host, *a, port, 0});
        return done(without_self(host, std::move(out)));
    }
    m_dns.addresses(
        host, [this, host, port, pref, done = std::move(done)](dns::Status s, std::vector<conf::IpAddress> addrs) {
            if (s == dns::Status::TempFail)
                return done(failure(HopList::Outcome::Defer, "4.4.3", lookup_error(host, "A", s)));
            if (addrs.empty())
                // A smarthost that does not resolve is a configuration problem: never bounce for it.
                return done(failure(HopList::Outcome::Defer, "4.3.5", lookup_error(host, "A", s)));
            order(addrs, pref);
            HopList out;
            for (const auto& a : addrs) {
                if (out.hops.size() == k_address_limit) break;
                out.hops.push_back({host, a, port, 0});
            }
            done(without_self(host, std::move(out)));
        });
}

}  // namespace gateway
