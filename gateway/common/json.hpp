// JSON output for the queue commands and the JSON log.
#pragma once

#include <string>
#include <string_view>

namespace gateway {

// A JSON string literal, quotes included, with the escapes RFC 8259 requires. The result is
// valid UTF-8 and prints nothing a terminal acts on, whatever `s` holds: control characters are
// escaped, octets that are not UTF-8 become U+FFFD.
std::string json_string(std::string_view s);

}  // namespace gateway
