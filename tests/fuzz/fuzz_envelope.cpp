// The envelope file parser: whatever is on disk, a damaged file is refused with a reason, and
// what it accepts serializes back to a text it accepts again.
#include "fuzz.hpp"
#include "gateway/common/envelope.hpp"

#include <cstdlib>

using namespace gateway;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    auto parsed = parse_envelope(fuzz::bytes(data, size));
    if (!parsed.envelope) {
        if (parsed.error.empty()) std::abort();
        return 0;
    }
    auto again = parse_envelope(serialize(*parsed.envelope));
    if (!again.envelope || serialize(*again.envelope) != serialize(*parsed.envelope)) std::abort();
    return 0;
}
