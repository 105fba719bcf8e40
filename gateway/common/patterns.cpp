#include "gateway/common/patterns.hpp"

namespace gateway {

namespace {

char lower(char c) { return c >= 'A' && c <= 'Z' ? char(c - 'A' + 'a') : c; }

}  // namespace

bool glob_match(std::string_view p, std::string_view t) {
    // Iterative matcher with one backtrack point: linear in practice, no recursion.
    size_t pi = 0, ti = 0, star = std::string_view::npos, mark = 0;
    while (ti < t.size()) {
        if (pi < p.size() && p[pi] == '*') {
            star = pi++;
            mark = ti;
        } else if (pi < p.size() && lower(p[pi]) == lower(t[ti])) {
            ++pi;
            ++ti;
        } else if (star != std::string_view::npos) {
            pi = star + 1;
            ti = ++mark;
        } else {
            return false;
        }
    }
    while (pi < p.size() && p[pi] == '*')
        ++pi;
    return pi == p.size();
}

SenderPattern::SenderPattern(const std::string& pattern) : m_pattern(pattern) {
    if (pattern == "<>") {
        m_kind = Kind::Null;
    } else if (pattern.size() >= 2 && pattern.front() == '/' && pattern.back() == '/') {
        m_kind = Kind::Regex;
        m_regex = std::make_shared<std::regex>(pattern.substr(1, pattern.size() - 2),
                                               std::regex::ECMAScript | std::regex::icase);
    } else {
        m_kind = pattern.find('@') == std::string::npos ? Kind::Domain : Kind::Address;
    }
}

bool SenderPattern::matches(std::string_view address, std::vector<std::string>* captures) const {
    switch (m_kind) {
    case Kind::Null: return address.empty();
    case Kind::Regex: {
        if (address.empty()) return false;
        std::match_results<std::string_view::const_iterator> m;
        if (!std::regex_search(address.begin(), address.end(), m, *m_regex)) return false;
        if (captures) {
            captures->clear();
            for (const auto& sub : m)
                captures->push_back(sub.str());
        }
        return true;
    }
    case Kind::Address: return !address.empty() && glob_match(m_pattern, address);
    case Kind::Domain: {
        auto at = address.rfind('@');
        return at != std::string_view::npos && glob_match(m_pattern, address.substr(at + 1));
    }
    }
    return false;
}

}  // namespace gateway
