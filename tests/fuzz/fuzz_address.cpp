// The path parser of MAIL FROM and RCPT TO, and the domain checks after it.
#include "fuzz.hpp"
#include "gateway/common/address.hpp"

#include <cstdlib>

using namespace gateway;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    if (size == 0) return 0;
    std::string_view text = fuzz::bytes(data + 1, size - 1);
    auto r = parse_path(text, data[0] & 1, data[0] & 2);
    if (r.error == AddressError::None && !r.null) {
        if (r.address.size() > 256) std::abort();  // RFC 5321 4.5.3.1.3
        std::string domain = domain_of(r.address);
        (void)is_valid_domain(domain, data[0] & 2);
    }
    (void)domain_of(text);
    (void)is_valid_domain(text, data[0] & 4);
    return 0;
}
