// Values that came from the network (client input, headers, server replies, DNS names), made
// safe to print where they leave the gateway: the log, queue show, JSON, Received:.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace gateway {

// The length of the UTF-8 character at s[i] when it is a well-formed one and no control
// character (C0, DEL, C1); otherwise 0.
size_t printable_char(std::string_view s, size_t i);

// `s` with every octet that printable_char() refuses replaced by '?', at most `max` octets (a
// character is never cut in two), "..." marking a cut.
std::string printable(std::string_view s, size_t max = 256);

// ASCII letters in lower case, other octets as they are: DNS names, header field names, tags.
std::string ascii_lower(std::string_view s);

// A search box's test: does a text contain the needle, ASCII letters of either case matching
// each other. Made once per search, it scans a text at about a byte a step (a queue of 100,000
// messages is searched while the loop waits).
class CaseFreeSearch {
public:
    explicit CaseFreeSearch(std::string_view needle) : m_needle(ascii_lower(needle)) {}
    bool in(std::string_view text) const;
    bool empty() const { return m_needle.empty(); }

private:
    std::string m_needle;  // in lower case
};

// Without the spaces, tabs, CRs and LFs at either end.
std::string_view trim_space(std::string_view s);

}  // namespace gateway
