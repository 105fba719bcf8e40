#include "gateway/smtp/smtp_reply.hpp"

#include "gateway/common/text.hpp"

#include <string>

namespace gateway {

namespace {

bool digits(std::string_view s, size_t min, size_t max) {
    if (s.size() < min || s.size() > max) return false;
    for (char c : s)
        if (c < '0' || c > '9') return false;
    return true;
}

}  // namespace

bool is_enhanced_status(std::string_view s) {
    // status-code = class "." subject "." detail; class 2, 4, 5; subject 1-3 digits; detail 1-3 digits
    if (s.size() < 5 || (s[0] != '2' && s[0] != '4' && s[0] != '5') || s[1] != '.') return false;
    auto dot = s.find('.', 2);
    if (dot == std::string_view::npos) return false;
    return digits(s.substr(2, dot - 2), 1, 3) && digits(s.substr(dot + 1), 1, 3);
}

std::string ServerReply::text() const {
    std::string joined;
    for (const auto& l : lines) {
        if (joined.size() > k_max_reply_text) break;
        if (!joined.empty()) joined += ' ';
        joined += l;
    }
    return printable(joined, k_max_reply_text);
}

std::string ServerReply::status() const {
    char cls = char('0' + code / 100);
    if (!lines.empty() && lines.front().size() > 4) {
        std::string_view t = std::string_view(lines.front()).substr(4);
        auto word = t.substr(0, t.find(' '));
        if (is_enhanced_status(word) && word[0] == cls) return std::string(word);
    }
    return std::string(1, cls) + ".0.0";
}

std::vector<std::string> ServerReply::texts() const {
    std::vector<std::string> out;
    for (const auto& l : lines)
        out.push_back(l.size() > 4 ? l.substr(4) : std::string());
    return out;
}

void ReplyParser::feed(std::string_view bytes, std::vector<ServerReply>& out) {
    if (failed()) return;
    m_buffer.append(bytes);
    size_t pos = 0;
    for (;;) {
        size_t nl = m_buffer.find('\n', pos);
        if (nl == std::string::npos) break;
        std::string line = m_buffer.substr(pos, nl - pos);
        pos = nl + 1;
        if (!line.empty() && line.back() == '\r') line.pop_back();
        bool last = line.size() == 3 || (line.size() > 3 && line[3] == ' ');
        bool more = line.size() > 3 && line[3] == '-';
        if (!digits(std::string_view(line).substr(0, 3), 3, 3) || (!last && !more) || line[0] < '2' || line[0] > '5') {
            m_error = "malformed reply line: " + line.substr(0, 80);
            return;
        }
        int code = (line[0] - '0') * 100 + (line[1] - '0') * 10 + (line[2] - '0');
        if (!m_current.lines.empty() && code != m_current.code) {
            m_error = "inconsistent codes in a multi-line reply";
            return;
        }
        // A server that never ends its reply: memory and time are bounded here, not by it.
        m_current_octets += line.size();
        if (m_current.lines.size() >= k_max_lines || m_current_octets > k_max_octets) {
            m_error = "reply longer than " + std::to_string(k_max_lines) + " lines or " +
                      std::to_string(k_max_octets / 1024) + " KiB";
            return;
        }
        m_current.code = code;
        m_current.lines.push_back(std::move(line));
        if (last) {
            out.push_back(std::move(m_current));
            m_current = ServerReply();
            m_current_octets = 0;
            m_replies++;
        }
    }
    m_buffer.erase(0, pos);
    if (m_buffer.size() > k_max_line) m_error = "reply line longer than " + std::to_string(k_max_line / 1024) + " KiB";
}

}  // namespace gateway
