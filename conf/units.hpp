// Durations ("30s", "5m", "1h", "5d"; a bare number is seconds) and sizes ("512k", "25M",
// "1G"; binary multiples; a bare number is bytes).
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace conf {

std::optional<std::chrono::seconds> parse_duration(std::string_view text);
std::optional<uint64_t> parse_size(std::string_view text);

// "5d", "1h", "90s": the largest unit that divides the value.
std::string format_duration(std::chrono::seconds s);

}  // namespace conf
