// JSON output for the queue commands and the JSON log; JSON input from token endpoints.
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace gateway {

// A JSON string literal, quotes included, with the escapes RFC 8259 requires. The result is
// valid UTF-8 and prints nothing a terminal acts on, whatever `s` holds: control characters are
// escaped, octets that are not UTF-8 become U+FFFD.
std::string json_string(std::string_view s);

// A parsed JSON value, for the few documents the gateway reads from the network (an OAuth 2.0
// token endpoint's answer, the claims of a token). Objects keep their members in order; a
// repeated name keeps the first.
struct JsonValue {
    enum class Type { Null, Boolean, Number, String, Array, Object } type = Type::Null;
    bool boolean = false;
    double number = 0;
    std::string string;
    std::vector<JsonValue> items;                            // Array
    std::vector<std::pair<std::string, JsonValue>> members;  // Object

    const JsonValue* get(std::string_view name) const;  // an object's member, or null
    // A member as text: a string as is, a number in its shortest integer form; empty otherwise.
    std::string text(std::string_view name) const;
};

// Parses `text` (at most 1 MiB, nested at most 32 deep); false with `error` otherwise.
bool json_parse(std::string_view text, JsonValue& out, std::string& error);

}  // namespace gateway
