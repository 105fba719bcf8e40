// Where to connect for a destination: RFC 5321 section 5 and RFC 7505 for direct delivery,
// the configured host for an upstream. The result is the ordered list of addresses to try, or
// the reason there is none, already in the words the delivery line will use.
#pragma once

#include "conf/cidr.hpp"
#include "conf/config.hpp"
#include "gateway/dns/dns.hpp"

#include <functional>
#include <random>
#include <string>
#include <vector>

namespace gateway {

struct NextHop {
    std::string host;  // the MX or upstream name, as it appears in relay=HOST[IP]:PORT
    conf::IpAddress address;
    uint16_t port = 25;
    unsigned preference = 0;

    std::string label() const;  // "HOST[IP]:PORT"
};

struct HopList {
    enum class Outcome { Ok, Defer, Bounce } outcome = Outcome::Ok;
    std::string dsn;     // for Defer and Bounce
    std::string reason;  // for Defer and Bounce
    std::vector<NextHop> hops;
};

using HopCallback = std::function<void(HopList)>;

// Decides whether an address and port is this gateway (a mail loop).
using SelfTest = std::function<bool(const conf::IpAddress&, uint16_t port)>;

class HopResolver {
public:
    static constexpr size_t k_address_limit = 5;  // Postfix's smtp_mx_address_limit

    HopResolver(dns::Client& dns, SelfTest is_self) : m_dns(dns), m_is_self(std::move(is_self)) {}

    // MX hosts by preference (equal ones shuffled), their addresses, implicit MX, null MX.
    void direct(const std::string& domain, uint16_t port, conf::AddressPreference pref, HopCallback done);
    // A smarthost: an address literal, or a name and its A/AAAA records.
    void upstream(const std::string& host, uint16_t port, conf::AddressPreference pref, HopCallback done);

private:
    void resolve_mx_hosts(const std::string& domain, std::vector<dns::MxRecord> mx, uint16_t port,
                          conf::AddressPreference pref, HopCallback done);
    // The addresses of one host: shuffled (a dead first address would cost every attempt a
    // connect timeout), then the preferred family first (Postfix's smtp_randomize_addresses and
    // smtp_address_preference).
    void order(std::vector<conf::IpAddress>& addresses, conf::AddressPreference pref);
    HopList finish_direct(const std::string& domain, std::vector<NextHop> hops) const;
    HopList without_self(const std::string& host, HopList list) const;

    dns::Client& m_dns;
    SelfTest m_is_self;
    std::mt19937 m_random{std::random_device{}()};
};

}  // namespace gateway
