// Address and domain patterns of the configuration (routes, sender rewriting):
//   "*"                    anything
//   "example.com"          that domain (for a sender: any address at it)
//   "*.example.com"        globs: '*' stands for any run of characters
//   "user@example.com"     that address; globs work on either side: "*@scanner.local"
//   "/regex/"              an ECMAScript regular expression (senders only), case-insensitive
//   "<>"                   the null sender (senders only)
// Matching is case-insensitive. Patterns are compiled once, when the configuration is loaded.
#pragma once

#include <memory>
#include <regex>
#include <string>
#include <string_view>
#include <vector>

namespace gateway {

bool glob_match(std::string_view pattern, std::string_view text);  // case-insensitive, '*' only

class DomainPattern {
public:
    explicit DomainPattern(std::string pattern) : m_pattern(std::move(pattern)) {}
    bool matches(std::string_view domain) const { return glob_match(m_pattern, domain); }

private:
    std::string m_pattern;
};

class SenderPattern {
public:
    explicit SenderPattern(const std::string& pattern);
    // On a match, `captures` (when given) receives $0..$9 of a regular expression.
    bool matches(std::string_view address, std::vector<std::string>* captures = nullptr) const;

private:
    enum class Kind { Null, Regex, Address, Domain } m_kind;
    std::string m_pattern;
    std::shared_ptr<std::regex> m_regex;
};

}  // namespace gateway
