// Queue IDs: the arrival time in microseconds as upper-case hex ("18F3A2B4C5D6E"), strictly
// increasing within a spool. The form matches what Postfix log tools expect of a queue ID,
// sorts by arrival, and cannot repeat: the generator never issues a value at or below the
// largest one already in the spool, even if the clock steps back.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace gateway {

class QueueIdGenerator {
public:
    std::string next(int64_t now_us);
    void observe(std::string_view existing);  // an ID found in the spool

    static std::optional<uint64_t> value_of(std::string_view id);
    static bool is_valid(std::string_view id) { return value_of(id).has_value(); }

private:
    uint64_t m_last = 0;
};

}  // namespace gateway
