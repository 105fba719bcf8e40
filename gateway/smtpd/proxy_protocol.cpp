#include "gateway/smtpd/proxy_protocol.hpp"

#include <cstring>

namespace gateway {

namespace {

constexpr char k_v2_signature[] = "\r\n\r\n\0\r\nQUIT\n";  // 12 octets
constexpr size_t k_v2_signature_size = 12;

bool port_number(std::string_view s, uint16_t& out) {
    if (s.empty() || s.size() > 5 || (s.size() > 1 && s[0] == '0')) return false;
    unsigned v = 0;
    for (char c : s) {
        if (c < '0' || c > '9') return false;
        v = v * 10 + unsigned(c - '0');
    }
    if (v > 65535) return false;
    out = uint16_t(v);
    return true;
}

std::vector<std::string_view> words(std::string_view line) {
    std::vector<std::string_view> out;
    size_t pos = 0;
    while (pos <= line.size()) {
        size_t sp = line.find(' ', pos);
        if (sp == std::string_view::npos) sp = line.size();
        out.push_back(line.substr(pos, sp - pos));
        pos = sp + 1;
    }
    return out;
}

ProxyParse parse_v1(std::string_view in, ProxyHeader& out, std::string& error) {
    size_t end = in.find("\r\n");
    if (end == std::string_view::npos) {
        if (in.size() >= k_max_proxy_v1_length) {
            error = "PROXY v1 header without CRLF in 107 octets";
            return ProxyParse::Invalid;
        }
        if (in.find('\n') != std::string_view::npos) {
            error = "PROXY v1 header ends with a bare LF";
            return ProxyParse::Invalid;
        }
        return ProxyParse::Incomplete;
    }
    if (end + 2 > k_max_proxy_v1_length) {
        error = "PROXY v1 header longer than 107 octets";
        return ProxyParse::Invalid;
    }
    out = ProxyHeader{};
    out.version = 1;
    out.length = end + 2;
    auto w = words(in.substr(0, end));
    if (w.size() >= 2 && w[1] == "UNKNOWN") {
        out.local = true;
        return ProxyParse::Done;
    }
    if (w.size() != 6 || (w[1] != "TCP4" && w[1] != "TCP6")) {
        error = "malformed PROXY v1 header";
        return ProxyParse::Invalid;
    }
    out.source = conf::IpAddress::parse(w[2]);
    out.destination = conf::IpAddress::parse(w[3]);
    bool v6 = w[1] == "TCP6";
    if (!out.source || !out.destination || out.source->v6 != v6 || out.destination->v6 != v6 ||
        !port_number(w[4], out.source_port) || !port_number(w[5], out.destination_port)) {
        error = "malformed address or port in the PROXY v1 header";
        return ProxyParse::Invalid;
    }
    return ProxyParse::Done;
}

conf::IpAddress address(const unsigned char* p, bool v6) {
    conf::IpAddress a;
    a.v6 = v6;
    std::memcpy(a.bytes.data(), p, v6 ? 16 : 4);
    return a;
}

ProxyParse parse_v2(std::string_view in, ProxyHeader& out, std::string& error) {
    if (in.size() < 16) return ProxyParse::Incomplete;
    auto* p = reinterpret_cast<const unsigned char*>(in.data());
    if ((p[12] >> 4) != 2) {
        error = "PROXY v2 header with version " + std::to_string(p[12] >> 4);
        return ProxyParse::Invalid;
    }
    unsigned command = p[12] & 0x0f, family = p[13];
    size_t length = size_t(p[14]) << 8 | p[15];
    if (16 + length > k_max_proxy_v2_length) {
        error = "PROXY v2 header of " + std::to_string(16 + length) + " octets (at most " +
                std::to_string(k_max_proxy_v2_length) + ")";
        return ProxyParse::Invalid;
    }
    if (in.size() < 16 + length) return ProxyParse::Incomplete;
    out = ProxyHeader{};
    out.version = 2;
    out.length = 16 + length;
    if (command > 1) {
        error = "PROXY v2 header with command " + std::to_string(command);
        return ProxyParse::Invalid;
    }
    size_t addresses = 0;
    if (command == 0) {  // LOCAL: the balancer's own connection (a health check); the block is skipped
        out.local = true;
        return ProxyParse::Done;
    }
    if (family == 0x11) {  // TCP over IPv4
        addresses = 12;
    } else if (family == 0x21) {  // TCP over IPv6
        addresses = 36;
    } else if (family == 0x00) {  // UNSPEC: the connection's own address stands
        out.local = true;
        addresses = 0;
    } else {
        error = "PROXY v2 header for a transport other than TCP (family 0x" +
                std::string(1, "0123456789abcdef"[family >> 4]) + std::string(1, "0123456789abcdef"[family & 15]) + ")";
        return ProxyParse::Invalid;
    }
    if (length < addresses) {
        error = "PROXY v2 header too short for its addresses";
        return ProxyParse::Invalid;
    }
    const unsigned char* a = p + 16;
    if (addresses) {
        bool v6 = family == 0x21;
        size_t n = v6 ? 16 : 4;
        out.source = address(a, v6);
        out.destination = address(a + n, v6);
        out.source_port = uint16_t(a[2 * n] << 8 | a[2 * n + 1]);
        out.destination_port = uint16_t(a[2 * n + 2] << 8 | a[2 * n + 3]);
    }
    // TLVs: type, length (2 octets), value; each must fit in what the header declared.
    size_t pos = 16 + addresses, end = 16 + length;
    while (pos < end) {
        if (end - pos < 3) {
            error = "truncated TLV in the PROXY v2 header";
            return ProxyParse::Invalid;
        }
        uint8_t type = p[pos];
        size_t n = size_t(p[pos + 1]) << 8 | p[pos + 2];
        if (end - pos - 3 < n) {
            error = "TLV longer than the PROXY v2 header";
            return ProxyParse::Invalid;
        }
        out.tlvs.emplace_back(type, std::string(in.substr(pos + 3, n)));
        pos += 3 + n;
    }
    return ProxyParse::Done;
}

}  // namespace

ProxyParse parse_proxy_header(std::string_view in, ProxyHeader& out, std::string& error) {
    if (in.empty()) return ProxyParse::Incomplete;
    // Which version: as soon as the first octets allow telling.
    size_t v2 = std::min(in.size(), k_v2_signature_size);
    if (std::memcmp(in.data(), k_v2_signature, v2) == 0)
        return in.size() < k_v2_signature_size ? ProxyParse::Incomplete : parse_v2(in, out, error);
    size_t v1 = std::min(in.size(), size_t(6));
    if (std::memcmp(in.data(), "PROXY ", v1) == 0)
        return in.size() < 6 ? ProxyParse::Incomplete : parse_v1(in, out, error);
    error = "no PROXY protocol header";
    return ProxyParse::Invalid;
}

std::string proxy_v1_header(const conf::IpAddress& source, uint16_t source_port, const conf::IpAddress& destination,
                            uint16_t destination_port) {
    return std::string("PROXY ") + (source.v6 ? "TCP6 " : "TCP4 ") + source.to_string() + " " +
           destination.to_string() + " " + std::to_string(source_port) + " " + std::to_string(destination_port) +
           "\r\n";
}

}  // namespace gateway
