#include "gateway/common/queue_id.hpp"

#include <charconv>

namespace gateway {

std::string QueueIdGenerator::next(int64_t now_us) {
    uint64_t v = now_us > 0 ? uint64_t(now_us) : 0;
    if (v <= m_last) v = m_last + 1;
    m_last = v;
    char buf[24];
    auto r = std::to_chars(buf, buf + sizeof buf, v, 16);
    std::string id(buf, r.ptr);
    for (auto& c : id)
        if (c >= 'a' && c <= 'f') c = char(c - 'a' + 'A');
    return id;
}

void QueueIdGenerator::observe(std::string_view existing) {
    if (auto v = value_of(existing); v && *v > m_last) m_last = *v;
}

std::optional<uint64_t> QueueIdGenerator::value_of(std::string_view id) {
    if (id.empty() || id.size() > 16) return std::nullopt;
    for (char c : id)
        if (!((c >= '0' && c <= '9') || (c >= 'A' && c <= 'F'))) return std::nullopt;
    uint64_t v = 0;
    std::from_chars(id.data(), id.data() + id.size(), v, 16);
    return v;
}

}  // namespace gateway
