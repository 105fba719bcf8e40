#include "gateway/common/message_headers.hpp"

#include "gateway/common/text.hpp"

#include <strings.h>
#include <algorithm>
#include <cstring>

namespace gateway {

namespace {

// RFC 5322 2.2: field-name = 1*ftext (printable US-ASCII except ':'), then ':'; the obsolete
// syntax (4.5) allows white space before the colon ("From :"). The name's length, or 0.
size_t field_name_length(std::string_view line) {
    size_t i = 0;
    while (i < line.size() && line[i] > 32 && line[i] < 127 && line[i] != ':')
        ++i;
    size_t colon = i;
    while (colon < line.size() && (line[colon] == ' ' || line[colon] == '\t'))
        ++colon;
    return i > 0 && colon < line.size() && line[colon] == ':' ? i : 0;
}

// The value of a field line: what follows its colon.
std::string_view field_value(std::string_view line) { return line.substr(line.find(':') + 1); }

// RFC 5322 2.2.3: a line longer than 78 characters is folded at white space where it can be.
std::string folded(const std::string& line) {
    constexpr size_t k_width = 78;
    std::string out;
    size_t start = 0;
    while (line.size() - start > k_width) {
        size_t space = line.rfind(' ', start + k_width);
        if (space == std::string::npos || space <= start + 1) space = line.find(' ', start + k_width);
        if (space == std::string::npos) break;
        out.append(line, start, space - start).append("\r\n");
        start = space;  // the space begins the continuation line
    }
    return out + line.substr(start);
}

bool name_is(std::string_view line, size_t len, const char* name) {
    return len == std::strlen(name) && strncasecmp(line.data(), name, len) == 0;
}

std::string trim(std::string_view s) {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t'))
        s.remove_prefix(1);
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r' || s.back() == '\n'))
        s.remove_suffix(1);
    return std::string(s);
}

}  // namespace

void HeaderStage::feed(std::string_view content, std::string& out) {
    if (m_passing) {
        out.append(content);
        return;
    }
    m_buffer.append(content);
    scan_lines(false);
    if (!m_passing && m_buffer.size() > m_max) {  // too large to parse: stored as it came
        m_passing = true;
        if (!m_new_from.empty()) m_from_outcome = FromOutcome::HeadersTooLarge;
    }
    if (m_passing) {
        out.append(m_buffer);
        std::string().swap(m_buffer);
    }
}

void HeaderStage::finish(std::string& out) {
    if (!m_passing) {
        scan_lines(true);
        if (!m_passing) end_of_headers(m_buffer.size(), false);  // headers only, no body
    }
    out.append(m_buffer);
    std::string().swap(m_buffer);
}

void HeaderStage::scan_lines(bool at_end) {
    while (!m_passing) {
        size_t eol = m_buffer.find("\r\n", m_scanned);
        if (eol == std::string::npos) {
            if (!at_end || m_scanned == m_buffer.size()) return;
            eol = m_buffer.size();
        }
        std::string_view line(m_buffer.data() + m_scanned, eol - m_scanned);
        if (line.empty()) {
            end_of_headers(m_scanned, false);
            return;
        }
        bool continuation = line[0] == ' ' || line[0] == '\t';
        size_t name = field_name_length(line);
        m_eight_bit = m_eight_bit || std::any_of(line.begin(), line.end(), [](char c) { return c & 0x80; });
        if ((!continuation && name == 0) || (continuation && m_scanned == 0)) {
            end_of_headers(m_scanned, true);  // the body starts without the empty line
            return;
        }
        if (continuation) {
            if (m_in_message_id && m_message_id.size() <= k_max_message_id) m_message_id += trim(line);
            if (m_in_from) m_from_end = std::min(eol + 2, m_buffer.size());
        } else {
            m_in_from = name_is(line, name, "From") && m_from_start == std::string::npos;
            if (m_in_from) {
                m_from_start = m_scanned;
                m_from_end = std::min(eol + 2, m_buffer.size());
            }
            m_have_reply_to = m_have_reply_to || name_is(line, name, "Reply-To");
            m_in_message_id = name_is(line, name, "Message-ID") && !m_have_message_id;
            if (m_in_message_id) m_message_id = trim(field_value(line));
            m_have_message_id = m_have_message_id || name_is(line, name, "Message-ID");
            m_have_date = m_have_date || name_is(line, name, "Date");
            m_received += name_is(line, name, "Received");
        }
        m_scanned = std::min(eol + 2, m_buffer.size());
    }
}

std::string HeaderStage::message_id() const { return printable(m_message_id, k_max_message_id); }

// Inserts the missing headers at the end of the header lines and switches to pass-through.
void HeaderStage::end_of_headers(size_t body_start, bool add_separator) {
    std::string added;
    if (!m_have_message_id) {
        added += m_add_message_id;
        auto colon = m_add_message_id.find(':');
        m_message_id = trim(std::string_view(m_add_message_id).substr(colon + 1));
    }
    if (!m_have_date) added += m_add_date;
    if (!m_new_from.empty() && m_from_start == std::string::npos) {
        added += "From: <" + m_new_from + ">\r\n";
        m_from_outcome = FromOutcome::Added;
    }
    if (add_separator) added += "\r\n";
    m_buffer.insert(body_start, added);
    if (!m_new_from.empty() && m_from_start != std::string::npos) {
        // The span ends before body_start, so the insertion above did not move it.
        std::string_view field(m_buffer.data() + m_from_start, m_from_end - m_from_start);
        std::string_view raw_value = field_value(field);  // folding kept, CRLF included
        std::string unfolded;
        for (char c : raw_value)
            if (c != '\r' && c != '\n') unfolded += c;
        std::string replacement = folded("From: " + replace_mailbox(trim(unfolded), m_new_from)) + "\r\n";
        if (!m_have_reply_to) {
            replacement += "Reply-To:" + std::string(raw_value);
            if (replacement.size() < 2 || replacement.compare(replacement.size() - 2, 2, "\r\n") != 0)
                replacement += "\r\n";
        }
        m_buffer.replace(m_from_start, m_from_end - m_from_start, replacement);
        m_from_outcome = FromOutcome::Rewritten;
    }
    m_passing = true;
}

std::string replace_mailbox(std::string_view value, const std::string& address) {
    // Find the angle brackets outside quoted strings and comments (RFC 5322 3.4); a comma there
    // means several mailboxes, a colon a group.
    size_t open = std::string_view::npos, close = std::string_view::npos;
    int opens = 0, depth = 0;
    bool quoted = false, several = false;
    for (size_t i = 0; i < value.size(); ++i) {
        char c = value[i];
        if (c == '\\') {
            ++i;
        } else if (quoted) {
            quoted = c != '"';
        } else if (depth > 0) {
            depth += c == '(' ? 1 : c == ')' ? -1 : 0;
        } else if (c == '"') {
            quoted = true;
        } else if (c == '(') {
            depth = 1;
        } else if (c == '<') {
            open = i;
            ++opens;
        } else if (c == '>' && open != std::string_view::npos && close == std::string_view::npos) {
            close = i;
        } else if (c == ',' || c == ':' || c == ';') {
            several = true;
        }
    }
    if (several || opens > 1 || (opens == 1 && (close == std::string_view::npos || close < open)))
        return "<" + address + ">";
    if (opens == 1) return std::string(value.substr(0, open + 1)) + address + std::string(value.substr(close));
    // "scan@x.local (Scanner)": the address replaced, the comments (the old name) kept after it
    // (RFC 5322 3.4: angle-addr = [CFWS] "<" addr-spec ">" [CFWS]).
    std::string comments;
    depth = 0;
    quoted = false;
    size_t from = 0;
    for (size_t i = 0; i < value.size(); ++i) {
        char c = value[i];
        if (c == '\\') {
            ++i;
        } else if (quoted) {
            quoted = c != '"';
        } else if (c == '"' && depth == 0) {
            quoted = true;
        } else if (c == '(') {
            if (depth++ == 0) from = i;
        } else if (c == ')' && depth > 0 && --depth == 0) {
            comments += " " + std::string(value.substr(from, i + 1 - from));
        }
    }
    return "<" + address + ">" + comments;
}

std::string rfc5322_date(std::time_t t) {
    struct tm tm {};
    localtime_r(&t, &tm);
    char buf[64];
    std::strftime(buf, sizeof buf, "%a, %d %b %Y %H:%M:%S %z", &tm);
    std::string s = buf;
    if (tm.tm_zone) s += std::string(" (") + tm.tm_zone + ")";
    return s;
}

std::string received_header(const TraceInfo& t) {
    // RFC 5321 4.4 TCP-info: an address literal, "[IPv6:...]" for IPv6 (RFC 5321 4.1.3).
    bool v6 = t.client_ip.find(':') != std::string::npos;
    std::string h =
        "Received: from " + t.helo + " (" + t.client_name + " [" + (v6 ? "IPv6:" : "") + t.client_ip + "])\r\n";
    if (!t.tls.empty()) h += "\t(using " + t.tls + ")\r\n";
    h += "\tby " + t.hostname + " (smtpgw) with " + t.protocol + " id " + t.queue_id;
    if (!t.single_recipient.empty()) h += "\r\n\tfor <" + t.single_recipient + ">";
    h += "; " + rfc5322_date(t.when) + "\r\n";
    return h;
}

}  // namespace gateway
