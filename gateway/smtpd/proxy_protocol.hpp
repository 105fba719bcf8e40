// The PROXY protocol (HAProxy's proxy-protocol.txt, versions 1 and 2): the header a load
// balancer sends before the client's first byte, naming the client it speaks for. Read on
// listeners with `proxy_protocol: true`, from the addresses in `proxies` only.
#pragma once

#include "conf/cidr.hpp"

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace gateway {

struct ProxyHeader {
    int version = 0;
    // LOCAL (v2) or UNKNOWN (v1): the balancer speaks for itself (its health checks); the
    // connection's own address stands.
    bool local = false;
    std::optional<conf::IpAddress> source, destination;
    uint16_t source_port = 0, destination_port = 0;
    std::vector<std::pair<uint8_t, std::string>> tlvs;  // v2: type and value, as sent
    size_t length = 0;                                  // octets of the header: the client's own bytes follow
};

enum class ProxyParse { Incomplete, Done, Invalid };

// A v2 header (16 octets and its addresses and TLVs) longer than this is refused.
constexpr size_t k_max_proxy_v2_length = 16 + 4096;
constexpr size_t k_max_proxy_v1_length = 107;  // the specification's bound, CRLF included

// `in` holds what arrived so far. Incomplete: more is needed (never beyond the bounds above);
// Invalid: `error` says why, in a few words for the log.
ProxyParse parse_proxy_header(std::string_view in, ProxyHeader& out, std::string& error);

// A header for `source` to `destination` (tests and tools).
std::string proxy_v1_header(const conf::IpAddress& source, uint16_t source_port, const conf::IpAddress& destination,
                            uint16_t destination_port);

}  // namespace gateway
