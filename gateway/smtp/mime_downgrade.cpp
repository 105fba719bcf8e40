#include "gateway/smtp/mime_downgrade.hpp"

#include "gateway/common/text.hpp"

#include <algorithm>
#include <cctype>

namespace gateway {

namespace {

// A header field's name (lower-cased) and value, or nothing for a line that is no field.
bool split_field(std::string_view field, std::string& name, std::string_view& value) {
    auto colon = field.find(':');
    if (colon == std::string_view::npos || colon == 0) return false;
    name = ascii_lower(trim_space(field.substr(0, colon)));
    value = field.substr(colon + 1);
    return true;
}

// RFC 2045 5.1: "type/subtype; name=value; name="quoted value"": the media type, lower-cased,
// and the boundary parameter.
void parse_content_type(std::string_view value, std::string& type, std::string& boundary) {
    std::vector<std::string> parts;
    std::string cur;
    bool quoted = false;
    for (size_t i = 0; i < value.size(); ++i) {
        char c = value[i];
        if (quoted && c == '\\' && i + 1 < value.size()) {
            cur += value[++i];
        } else if (c == '"') {
            quoted = !quoted;
        } else if (c == ';' && !quoted) {
            parts.push_back(cur);
            cur.clear();
        } else if (c != '\r' && c != '\n') {
            cur += c;
        }
    }
    parts.push_back(cur);
    type = ascii_lower(trim_space(parts.front()));
    for (size_t i = 1; i < parts.size(); ++i) {
        auto eq = parts[i].find('=');
        if (eq == std::string::npos) continue;
        if (ascii_lower(trim_space(std::string_view(parts[i]).substr(0, eq))) == "boundary")
            boundary = std::string(trim_space(std::string_view(parts[i]).substr(eq + 1)));
    }
}

const char* const k_qp = "Content-Transfer-Encoding: quoted-printable";

}  // namespace

std::string quoted_printable_line(std::string_view line) {
    static const char* const hex = "0123456789ABCDEF";
    std::string out;
    size_t column = 0;
    for (size_t i = 0; i < line.size(); ++i) {
        auto c = static_cast<unsigned char>(line[i]);
        bool last = i + 1 == line.size();
        // RFC 2045 6.7: 8-bit octets, '=', controls, and white space at the end of a line are encoded.
        bool encode = c >= 127 || c == '=' || (c < 32 && c != '\t') || (last && (c == ' ' || c == '\t'));
        size_t width = encode ? 3 : 1;
        if (column + width > 75) {  // rule 5: at most 76 characters, the soft break's "=" included
            out += "=\r\n";
            column = 0;
        }
        if (encode) {
            out += '=';
            out += hex[c >> 4];
            out += hex[c & 15];
        } else {
            out += char(c);
        }
        column += width;
    }
    return out + "\r\n";
}

void MimeDowngrade::feed(std::string_view content, std::string& out) {
    size_t pos = 0;
    while (pos < content.size()) {
        size_t nl = content.find('\n', pos);
        if (nl == std::string_view::npos) {
            m_partial.append(content.substr(pos));
            if (m_partial.size() > k_max_line) piece(out);
            return;
        }
        m_partial.append(content.substr(pos, nl - pos));
        pos = nl + 1;
        if (!m_partial.empty() && m_partial.back() == '\r') m_partial.pop_back();
        if (m_continued) {  // the end of a long line: no delimiter, no header field
            Entity& e = m_stack.back();
            out += e.convert ? quoted_printable_line(m_partial) : m_partial + "\r\n";
            m_continued = false;
        } else {
            line(m_partial, out);
        }
        m_partial.clear();
    }
}

void MimeDowngrade::finish(std::string& out) {
    if (m_continued) {
        if (!m_partial.empty() && m_partial.back() == '\r') m_partial.pop_back();
        out += m_stack.back().convert ? quoted_printable_line(m_partial) : m_partial + "\r\n";
        m_continued = false;
    } else if (!m_partial.empty()) {
        line(m_partial, out);
    }
    m_partial.clear();
    if (m_stack.back().in_headers) flush_headers(out);
}

// A line longer than k_max_line, passed on as far as it has come. In a header section the
// section goes as it came, and so does its body (as past k_max_header_section).
void MimeDowngrade::piece(std::string& out) {
    Entity& e = m_stack.back();
    if (e.in_headers) {
        flush_headers(out);
        e.in_headers = false;
    }
    // A carriage return at the end may be the first half of the line's end: it waits.
    bool cr = m_partial.back() == '\r';
    std::string_view p(m_partial.data(), m_partial.size() - (cr ? 1 : 0));
    if (e.convert) {
        std::string qp = quoted_printable_line(p);  // ends in <CR><LF>: a soft line break instead
        qp.insert(qp.size() - 2, "=");
        out += qp;
    } else {
        out.append(p);
    }
    m_partial.assign(cr ? "\r" : "");
    m_continued = true;
}

void MimeDowngrade::line(std::string_view l, std::string& out) {
    if (l.size() >= 2 && l[0] == '-' && l[1] == '-' && delimiter(l, out)) return;
    Entity& e = m_stack.back();
    if (!e.in_headers) {
        if (e.convert)
            out += quoted_printable_line(l);
        else
            out.append(l).append("\r\n");
        return;
    }
    if (l.empty()) return end_headers(out);
    if ((l[0] == ' ' || l[0] == '\t') && !m_fields.empty())
        m_fields.back().append("\r\n").append(l);
    else
        m_fields.emplace_back(l);
    m_section += l.size() + 2;
    if (m_section > k_max_header_section) {  // not parsed: it goes as it came, and so does its body
        flush_headers(out);
        m_stack.back().in_headers = false;
    }
}

// A delimiter of one of the multiparts open (RFC 2046 5.1.1): what was above that multipart ends.
bool MimeDowngrade::delimiter(std::string_view l, std::string& out) {
    std::string_view rest = trim_space(l.substr(2));
    for (size_t k = m_stack.size(); k-- > 0;) {
        const Entity& m = m_stack[k];
        if (!m.multipart || m.in_headers || m.boundary.empty()) continue;
        bool close = rest.size() == m.boundary.size() + 2 && rest.compare(m.boundary.size(), 2, "--") == 0;
        if (rest.compare(0, m.boundary.size(), m.boundary) != 0 || (rest.size() != m.boundary.size() && !close))
            continue;
        if (m_stack.back().in_headers) flush_headers(out);
        m_stack.resize(k + 1);
        out.append(l).append("\r\n");
        if (close) {
            m_stack.back().closed = true;  // the epilogue follows
        } else {
            m_stack.back().closed = false;
            push(m_stack.back().digest);
        }
        return true;
    }
    return false;
}

void MimeDowngrade::push(bool message_default) {
    Entity child;
    child.message = message_default;  // its type unless its headers say otherwise
    m_stack.push_back(child);
    m_fields.clear();
    m_section = 0;
}

void MimeDowngrade::flush_headers(std::string& out) {
    for (const auto& f : m_fields)
        out.append(f).append("\r\n");
    m_fields.clear();
    m_section = 0;
}

void MimeDowngrade::end_headers(std::string& out) {
    Entity& e = m_stack.back();
    std::string type, boundary, encoding;
    bool mime = !e.top, have_type = false, have_cte = false;
    for (const auto& f : m_fields) {
        std::string name;
        std::string_view value;
        if (!split_field(f, name, value)) continue;
        if (name == "content-type") {
            parse_content_type(value, type, boundary);
            have_type = true;
        } else if (name == "content-transfer-encoding") {
            encoding = ascii_lower(trim_space(value));
            have_cte = true;
        } else if (name == "mime-version") {
            mime = true;
        }
    }
    if (!have_type) type = e.message ? "message/rfc822" : "text/plain";
    bool nest = m_stack.size() < k_max_depth;
    e.multipart = nest && mime && type.rfind("multipart/", 0) == 0 && !boundary.empty();
    e.digest = e.multipart && type == "multipart/digest";
    e.message = nest && mime && (type == "message/rfc822" || type == "message/global");
    e.boundary = boundary;
    bool leaf = !e.multipart && !e.message;
    e.convert = leaf && encoding != "base64" && encoding != "quoted-printable" && (mime || type == "text/plain") &&
                (!nest || type.rfind("message/", 0) != 0);
    bool composite_8bit = !leaf && (encoding == "8bit" || encoding == "binary");
    for (const auto& f : m_fields) {
        std::string name;
        std::string_view value;
        if (split_field(f, name, value) && name == "content-transfer-encoding" && (e.convert || composite_8bit))
            out.append(e.convert ? k_qp : "Content-Transfer-Encoding: 7bit").append("\r\n");
        else
            out.append(f).append("\r\n");
    }
    if (!mime && e.convert) {  // no MIME headers at all: it becomes a MIME text/plain message
        out += "MIME-Version: 1.0\r\n";
        if (!have_type) out += "Content-Type: text/plain; charset=unknown-8bit\r\n";
    }
    if (e.convert && !have_cte) out.append(k_qp).append("\r\n");
    out += "\r\n";
    m_fields.clear();
    m_section = 0;
    e.in_headers = false;
    if (e.message) push(false);  // the encapsulated message's own header section follows
}

}  // namespace gateway
