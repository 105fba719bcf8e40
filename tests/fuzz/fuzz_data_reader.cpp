// The DATA reader: arbitrary content bytes, in pieces; it must end where RFC 5321 says and
// never emit a line without <CR><LF>. Read in one piece (whole lines take the fast path) and one
// octet at a time (the byte-wise rules only), it must give the same content, size and verdict.
#include "fuzz.hpp"
#include "gateway/smtpd/data_reader.hpp"

#include <cstdlib>
#include <string>

using namespace gateway;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    if (size == 0) return 0;
    DataLimits limits{8192, 512, bool(data[0] & 1)};
    DataReader reader(limits);
    std::string_view in = fuzz::bytes(data + 1, size - 1);
    std::string out;
    size_t chunk = 1 + data[0] % 37, pos = 0;
    while (pos < in.size() && !reader.done()) {
        std::string_view piece = in.substr(pos, chunk);
        size_t used = reader.feed(piece, out);
        if (used > piece.size() || (used < piece.size() && !reader.done())) std::abort();  // all of it, until the end
        pos += used;
    }
    // A message that ended well is whole lines, each with <CR><LF>, and no bare <CR> or <LF>.
    if (reader.done() && reader.error() == DataError::None) {
        if (!out.empty() && (out.size() < 2 || out.compare(out.size() - 2, 2, "\r\n") != 0)) std::abort();
        for (size_t i = 0; i < out.size(); ++i) {
            if (out[i] == '\n' && (i == 0 || out[i - 1] != '\r')) std::abort();
            if (out[i] == '\r' && (i + 1 >= out.size() || out[i + 1] != '\n')) std::abort();
        }
    }
    // The same input in one piece and octet by octet: the same result (the content only when it
    // is accepted: after an error, what was kept does not matter).
    DataReader whole(limits), bytewise(limits);
    std::string a, b;
    size_t used_a = whole.feed(in, a), used_b = 0;
    while (used_b < in.size() && !bytewise.done())
        used_b += bytewise.feed(in.substr(used_b, 1), b);
    if (used_a != used_b || (whole.error() == DataError::None && a != b) || whole.done() != bytewise.done() ||
        whole.error() != bytewise.error() || whole.size() != bytewise.size())
        std::abort();
    return 0;
}
