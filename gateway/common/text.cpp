#include "gateway/common/text.hpp"

namespace gateway {

size_t printable_char(std::string_view s, size_t i) {
    auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x80) return c >= 0x20 && c != 0x7f ? 1 : 0;
    // RFC 3629 4: the shortest form only, no surrogates, nothing above U+10FFFF.
    size_t n = c >= 0xc2 && c <= 0xdf ? 2 : c >= 0xe0 && c <= 0xef ? 3 : c >= 0xf0 && c <= 0xf4 ? 4 : 0;
    if (n == 0 || i + n > s.size()) return 0;
    for (size_t k = 1; k < n; ++k)
        if ((static_cast<unsigned char>(s[i + k]) & 0xc0) != 0x80) return 0;
    auto c1 = static_cast<unsigned char>(s[i + 1]);
    if (c == 0xc2 && c1 < 0xa0) return 0;  // U+0080..U+009F: C1 controls (0x9b is CSI)
    if ((c == 0xe0 && c1 < 0xa0) || (c == 0xed && c1 > 0x9f) || (c == 0xf0 && c1 < 0x90) || (c == 0xf4 && c1 > 0x8f))
        return 0;
    return n;
}

std::string printable(std::string_view s, size_t max) {
    std::string out;
    out.reserve(std::min(s.size(), max) + 3);
    size_t i = 0;
    while (i < s.size()) {
        size_t n = printable_char(s, i);
        if (out.size() + (n ? n : 1) > max) return out + "...";
        if (n) {
            out.append(s.substr(i, n));
            i += n;
        } else {
            out += '?';
            i++;
        }
    }
    return out;
}

std::string ascii_lower(std::string_view s) {
    std::string out(s);
    for (char& c : out)
        if (c >= 'A' && c <= 'Z') c = char(c - 'A' + 'a');
    return out;
}

bool CaseFreeSearch::in(std::string_view text) const {
    size_t n = m_needle.size();
    if (n == 0) return true;
    if (text.size() < n) return false;
    auto lower = [](char c) { return c >= 'A' && c <= 'Z' ? char(c - 'A' + 'a') : c; };
    char first = m_needle[0];
    char first_upper = first >= 'a' && first <= 'z' ? char(first - 'a' + 'A') : first;
    for (size_t i = 0, last = text.size() - n; i <= last; ++i) {
        if (text[i] != first && text[i] != first_upper) continue;
        size_t k = 1;
        while (k < n && lower(text[i + k]) == m_needle[k])
            ++k;
        if (k == n) return true;
    }
    return false;
}

std::string_view trim_space(std::string_view s) {
    auto blank = [](char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; };
    while (!s.empty() && blank(s.front()))
        s.remove_prefix(1);
    while (!s.empty() && blank(s.back()))
        s.remove_suffix(1);
    return s;
}

}  // namespace gateway
