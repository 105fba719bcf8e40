#include "conf/units.hpp"

#include <limits>

namespace conf {

namespace {

// Splits "123x" into 123 and the suffix; nullopt unless digits come first and fit.
std::optional<std::pair<uint64_t, std::string_view>> split_number(std::string_view text) {
    size_t i = 0;
    uint64_t value = 0;
    while (i < text.size() && text[i] >= '0' && text[i] <= '9') {
        uint64_t digit = uint64_t(text[i] - '0');
        if (value > (std::numeric_limits<uint64_t>::max() - digit) / 10) return std::nullopt;
        value = value * 10 + digit;
        ++i;
    }
    if (i == 0) return std::nullopt;
    return std::make_pair(value, text.substr(i));
}

std::optional<uint64_t> scale(uint64_t value, uint64_t unit) {
    if (unit != 0 && value > std::numeric_limits<uint64_t>::max() / unit) return std::nullopt;
    return value * unit;
}

}  // namespace

std::optional<std::chrono::seconds> parse_duration(std::string_view text) {
    auto parts = split_number(text);
    if (!parts) return std::nullopt;
    auto [value, suffix] = *parts;
    uint64_t unit = 0;
    if (suffix.empty() || suffix == "s")
        unit = 1;
    else if (suffix == "m")
        unit = 60;
    else if (suffix == "h")
        unit = 3600;
    else if (suffix == "d")
        unit = 86400;
    else if (suffix == "w")
        unit = 7 * 86400;
    else
        return std::nullopt;
    auto secs = scale(value, unit);
    if (!secs || *secs > uint64_t(std::numeric_limits<int32_t>::max())) return std::nullopt;
    return std::chrono::seconds(*secs);
}

std::optional<uint64_t> parse_size(std::string_view text) {
    auto parts = split_number(text);
    if (!parts) return std::nullopt;
    auto [value, suffix] = *parts;
    if (suffix.empty()) return value;
    if (suffix == "k" || suffix == "K") return scale(value, 1024);
    if (suffix == "M") return scale(value, 1024 * 1024);
    if (suffix == "G") return scale(value, 1024ull * 1024 * 1024);
    return std::nullopt;
}

std::string format_duration(std::chrono::seconds s) {
    auto v = s.count();
    if (v != 0 && v % 86400 == 0) return std::to_string(v / 86400) + "d";
    if (v != 0 && v % 3600 == 0) return std::to_string(v / 3600) + "h";
    if (v != 0 && v % 60 == 0) return std::to_string(v / 60) + "m";
    return std::to_string(v) + "s";
}

}  // namespace conf
