#include "conf/cidr.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cstring>

namespace conf {

namespace {

const uint8_t k_v4_mapped_prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

IpAddress fold_mapped(IpAddress a) {
    if (a.v6 && std::memcmp(a.bytes.data(), k_v4_mapped_prefix, 12) == 0) {
        IpAddress v4;
        std::memcpy(v4.bytes.data(), a.bytes.data() + 12, 4);
        return v4;
    }
    return a;
}

}  // namespace

std::optional<IpAddress> IpAddress::parse(std::string_view text) {
    std::string s(text);
    IpAddress a;
    if (inet_pton(AF_INET, s.c_str(), a.bytes.data()) == 1) return a;
    a.v6 = true;
    if (inet_pton(AF_INET6, s.c_str(), a.bytes.data()) == 1) return fold_mapped(a);
    return std::nullopt;
}

std::optional<IpAddress> IpAddress::from_sockaddr(const sockaddr* sa) {
    IpAddress a;
    if (sa->sa_family == AF_INET) {
        const auto* in = reinterpret_cast<const sockaddr_in*>(sa);
        std::memcpy(a.bytes.data(), &in->sin_addr, 4);
        return a;
    }
    if (sa->sa_family == AF_INET6) {
        const auto* in6 = reinterpret_cast<const sockaddr_in6*>(sa);
        a.v6 = true;
        std::memcpy(a.bytes.data(), &in6->sin6_addr, 16);
        return fold_mapped(a);
    }
    return std::nullopt;
}

std::string IpAddress::to_string() const {
    char buf[INET6_ADDRSTRLEN];
    inet_ntop(v6 ? AF_INET6 : AF_INET, bytes.data(), buf, sizeof buf);
    return buf;
}

std::optional<Cidr> Cidr::parse(std::string_view text, std::string* error) {
    auto fail = [&](const char* why) -> std::optional<Cidr> {
        if (error) *error = why;
        return std::nullopt;
    };
    auto slash = text.find('/');
    auto addr = IpAddress::parse(text.substr(0, slash));
    if (!addr) return fail("not an IP address");
    // A mapped ::ffff:a.b.c.d/N was folded to IPv4; its prefix counts the 96 mapped bits.
    bool folded = addr->v6 == false && text.substr(0, slash).find(':') != std::string_view::npos;
    unsigned max = addr->v6 ? 128 : 32;
    unsigned prefix = max;
    if (slash != std::string_view::npos) {
        auto digits = text.substr(slash + 1);
        if (digits.empty() || digits.size() > 3) return fail("bad prefix length");
        prefix = 0;
        for (char c : digits) {
            if (c < '0' || c > '9') return fail("bad prefix length");
            prefix = prefix * 10 + unsigned(c - '0');
        }
        if (folded) {
            if (prefix < 96 || prefix > 128) return fail("prefix length out of range");
            prefix -= 96;
        }
        if (prefix > max) return fail("prefix length out of range");
    }
    Cidr c{*addr, prefix};
    for (unsigned bit = prefix; bit < max; ++bit) {
        if (c.network.bytes[bit / 8] & (0x80u >> (bit % 8))) return fail("host bits set after the prefix length");
    }
    return c;
}

bool Cidr::contains(const IpAddress& a) const {
    if (a.v6 != network.v6) return false;
    unsigned full = prefix / 8;
    if (std::memcmp(a.bytes.data(), network.bytes.data(), full) != 0) return false;
    unsigned rest = prefix % 8;
    if (rest == 0) return true;
    uint8_t mask = uint8_t(0xff00u >> rest);
    return (a.bytes[full] & mask) == (network.bytes[full] & mask);
}

std::string Cidr::to_string() const { return network.to_string() + "/" + std::to_string(prefix); }

}  // namespace conf
