#include "gateway/smtpd/smtp_syntax.hpp"

#include "gateway/common/text.hpp"

#include <strings.h>

namespace gateway {

CommandParts split_command(std::string_view line) {
    auto space = line.find(' ');
    if (space == std::string_view::npos) return {line, {}};
    return {line.substr(0, space), line.substr(space + 1)};
}

bool strip_keyword(std::string_view args, std::string_view keyword, std::string_view& rest) {
    args = trim_spaces(args);
    if (args.size() < keyword.size() || strncasecmp(args.data(), keyword.data(), keyword.size()) != 0) return false;
    rest = args.substr(keyword.size());
    return true;
}

std::vector<Parameter> split_parameters(std::string_view text) {
    std::vector<Parameter> out;
    size_t pos = 0;
    while (pos < text.size()) {
        while (pos < text.size() && text[pos] == ' ')
            ++pos;
        if (pos >= text.size()) break;
        size_t end = text.find(' ', pos);
        if (end == std::string_view::npos) end = text.size();
        std::string_view token = text.substr(pos, end - pos);
        Parameter p;
        p.text = std::string(token);
        auto eq = token.find('=');
        std::string_view key = token.substr(0, eq);
        for (char c : key)
            p.keyword += char(c >= 'a' && c <= 'z' ? c - 'a' + 'A' : c);
        if (eq != std::string_view::npos) {
            p.has_value = true;
            p.value = std::string(token.substr(eq + 1));
        }
        out.push_back(std::move(p));
        pos = end;
    }
    return out;
}

bool has_parameter(std::string_view text, std::string_view keyword) {
    // The address may itself contain spaces only inside quotes; parameters follow the path.
    auto close = text.rfind('>');
    std::string_view params = close == std::string_view::npos ? text : text.substr(close + 1);
    for (const auto& p : split_parameters(params))
        if (p.keyword == keyword) return true;
    return false;
}

std::string_view trim_spaces(std::string_view s) {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t'))
        s.remove_prefix(1);
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t'))
        s.remove_suffix(1);
    return s;
}

std::string_view trim_brackets(std::string_view s) {
    s = trim_spaces(s);
    if (!s.empty() && s.front() == '<') {
        auto close = s.find('>');
        return s.substr(1, close == std::string_view::npos ? std::string_view::npos : close - 1);
    }
    return s.substr(0, s.find(' '));
}

std::optional<uint64_t> parse_decimal(std::string_view s) {
    if (s.empty() || s.size() > 19) return std::nullopt;
    uint64_t v = 0;
    for (char c : s) {
        if (c < '0' || c > '9') return std::nullopt;
        v = v * 10 + uint64_t(c - '0');
    }
    return v;
}

std::string loggable(const CommandParts& cmd, std::string_view line) {
    if (cmd.verb.size() == 4 && strncasecmp(cmd.verb.data(), "AUTH", 4) == 0) {
        std::string_view args = trim_spaces(cmd.args);
        size_t space = args.find(' ');
        if (space != std::string_view::npos)
            return printable(line.substr(0, cmd.verb.size() + 1)) + printable(args.substr(0, space)) + " ***";
    }
    return printable(line);
}

bool is_http_verb(std::string_view verb) {
    static const char* const verbs[] = {"GET", "POST", "HEAD", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"};
    for (const char* v : verbs)
        if (verb == v) return true;
    return false;
}

}  // namespace gateway
