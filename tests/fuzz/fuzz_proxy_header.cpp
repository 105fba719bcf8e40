// The PROXY protocol header (v1 text, v2 binary with TLVs) a balancer sends first: read whole and
// octet by octet, which must agree.
#include "fuzz.hpp"
#include "gateway/smtpd/proxy_protocol.hpp"

#include <cstdlib>

using namespace gateway;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    std::string_view in = fuzz::bytes(data, size);
    ProxyHeader whole, part;
    std::string error;
    auto r = parse_proxy_header(in, whole, error);
    if (r == ProxyParse::Done && (whole.length > in.size() || whole.length > k_max_proxy_v2_length)) std::abort();
    // The first prefix that is not Incomplete decides, as the gateway reads it.
    for (size_t n = 0; n <= size; ++n) {
        auto p = parse_proxy_header(in.substr(0, n), part, error);
        if (p == ProxyParse::Incomplete) continue;
        if (p == ProxyParse::Done && r == ProxyParse::Done && part.length != whole.length) std::abort();
        break;
    }
    return 0;
}
