// JSON output for the queue commands and the JSON log.
#pragma once

#include <string>
#include <string_view>

namespace gateway {

// A JSON string literal, quotes included, with the escapes RFC 8259 requires.
std::string json_string(std::string_view s);

}  // namespace gateway
