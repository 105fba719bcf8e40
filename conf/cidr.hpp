// IP addresses and CIDR networks: parsing, formatting, matching.
//
// IPv4-mapped IPv6 addresses (::ffff:a.b.c.d, as accepted on a dual-stack [::] listener) are
// folded to IPv4 when parsed or converted, so "127.0.0.0/8" matches them; an access list can
// never be bypassed by the address family a client happens to arrive on.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

struct sockaddr;

namespace conf {

struct IpAddress {
    bool v6 = false;
    std::array<uint8_t, 16> bytes{};  // IPv4 uses the first 4

    static std::optional<IpAddress> parse(std::string_view text);
    static std::optional<IpAddress> from_sockaddr(const sockaddr* sa);
    std::string to_string() const;
    bool operator==(const IpAddress& o) const { return v6 == o.v6 && bytes == o.bytes; }
    bool operator<(const IpAddress& o) const { return v6 != o.v6 ? v6 < o.v6 : bytes < o.bytes; }
};

struct Cidr {
    IpAddress network;
    unsigned prefix = 0;

    // "10.0.0.0/8", "::1/128", or a bare address (a host route). Host bits must be zero.
    static std::optional<Cidr> parse(std::string_view text, std::string* error = nullptr);
    bool contains(const IpAddress& a) const;
    std::string to_string() const;
};

}  // namespace conf
