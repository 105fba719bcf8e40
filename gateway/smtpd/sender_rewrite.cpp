#include "gateway/smtpd/sender_rewrite.hpp"

#include "gateway/common/address.hpp"

#include <strings.h>

namespace gateway {

SenderRewriter::SenderRewriter(const conf::SenderPolicy& policy)
    : m_header_from(policy.header_from == conf::HeaderFrom::Rewrite) {
    for (const auto& r : policy.rewrite)
        m_rules.push_back(Rule{SenderPattern(r.from), r.to});
}

std::string substitute(std::string_view replacement, const std::vector<std::string>& captures) {
    std::string out;
    for (size_t i = 0; i < replacement.size(); ++i) {
        char c = replacement[i];
        if (c == '$' && i + 1 < replacement.size()) {
            char n = replacement[i + 1];
            if (n >= '0' && n <= '9') {
                size_t k = size_t(n - '0');
                if (k < captures.size()) out += captures[k];
                ++i;
                continue;
            }
            if (n == '$') {
                out += '$';
                ++i;
                continue;
            }
        }
        out += c;
    }
    return out;
}

std::optional<Rewritten> SenderRewriter::rewrite(std::string_view sender,
                                                 std::optional<RewriteProblem>* problem) const {
    if (sender.empty()) return std::nullopt;  // <> stays <>: bounces must never bounce
    std::vector<std::string> captures;
    for (size_t i = 0; i < m_rules.size(); ++i) {
        captures.clear();
        if (!m_rules[i].pattern.matches(sender, &captures)) continue;
        std::string result = substitute(m_rules[i].to, captures);
        auto parsed = parse_path("<" + result + ">", false, true);
        if (parsed.error != AddressError::None || parsed.address != result) {
            if (problem) *problem = RewriteProblem{i, result};
            return std::nullopt;
        }
        if (result.size() == sender.size() && strncasecmp(result.data(), sender.data(), result.size()) == 0)
            return std::nullopt;
        return Rewritten{result, i};
    }
    return std::nullopt;
}

}  // namespace gateway
