// Envelope sender rewriting (`sender.rewrite` in the configuration): the first rule whose
// pattern matches the sender gives the new address; "$0".."$9" in it stand for the captures of a
// /regex/ pattern. The null sender is never rewritten. Rules are compiled once per configuration.
#pragma once

#include "conf/config.hpp"
#include "gateway/common/patterns.hpp"

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace gateway {

struct Rewritten {
    std::string address;  // the new sender
    size_t rule = 0;      // index into sender.rewrite
};

struct RewriteProblem {
    size_t rule = 0;
    std::string result;  // what the substitution produced, not a usable address
};

class SenderRewriter {
public:
    explicit SenderRewriter(const conf::SenderPolicy& policy);

    // The new sender, or nothing when no rule matches (or the match leaves it unchanged). A rule
    // whose substitution does not give a valid address leaves the sender as it is and reports
    // itself in `problem`.
    std::optional<Rewritten> rewrite(std::string_view sender, std::optional<RewriteProblem>* problem = nullptr) const;
    bool header_from() const { return m_header_from; }
    bool empty() const { return m_rules.empty(); }

private:
    struct Rule {
        SenderPattern pattern;
        std::string to;
    };
    std::vector<Rule> m_rules;
    bool m_header_from = false;
};

// "$1@example.com" with captures {"whole", "jo"} gives "jo@example.com"; "$$" is a dollar sign.
std::string substitute(std::string_view replacement, const std::vector<std::string>& captures);

}  // namespace gateway
