#include "gateway/common/address.hpp"

#include "conf/cidr.hpp"

#include <strings.h>
#include <cstring>

namespace gateway {

namespace {

bool is_atext(unsigned char c, bool utf8) {
    if (c >= 0x80) return utf8;  // RFC 6531 3.3: UTF8-non-ascii extends atext
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) return true;
    return std::strchr("!#$%&'*+-/=?^_`{|}~", c) != nullptr && c != 0;
}

// RFC 5321 4.1.2: Dot-string = Atom *("." Atom)
bool is_dot_string(std::string_view s, bool utf8) {
    if (s.empty() || s.front() == '.' || s.back() == '.') return false;
    for (size_t i = 0; i < s.size(); ++i) {
        unsigned char c = static_cast<unsigned char>(s[i]);
        if (c == '.') {
            if (s[i - 1] == '.') return false;
        } else if (!is_atext(c, utf8)) {
            return false;
        }
    }
    return true;
}

// RFC 5321 4.1.2: Quoted-string = DQUOTE *QcontentSMTP DQUOTE
bool is_quoted_string(std::string_view s, bool utf8) {
    if (s.size() < 2 || s.front() != '"' || s.back() != '"') return false;
    for (size_t i = 1; i + 1 < s.size(); ++i) {
        unsigned char c = static_cast<unsigned char>(s[i]);
        if (c == '\\') {
            if (++i + 1 >= s.size()) return false;
            unsigned char q = static_cast<unsigned char>(s[i]);
            if (q < 32 || q > 126) return false;  // quoted-pairSMTP
        } else if (c >= 0x80) {
            if (!utf8) return false;
        } else if (c < 32 || c == 127 || c == '"') {
            return false;
        }
    }
    return true;
}

bool is_address_literal(std::string_view d) {
    if (d.size() < 3 || d.front() != '[' || d.back() != ']') return false;
    auto inner = d.substr(1, d.size() - 2);
    if (inner.size() > 5 && strncasecmp(inner.data(), "IPv6:", 5) == 0) {
        auto a = conf::IpAddress::parse(inner.substr(5));
        return a && inner.find(':', 5) != std::string_view::npos;
    }
    auto a = conf::IpAddress::parse(inner);
    return a && !a->v6 && inner.find(':') == std::string_view::npos;
}

// Finds the end of an angle-bracketed path, skipping quoted strings; npos if unterminated.
size_t find_path_end(std::string_view s) {
    bool quoted = false;
    for (size_t i = 1; i < s.size(); ++i) {
        char c = s[i];
        if (quoted) {
            if (c == '\\')
                ++i;
            else if (c == '"')
                quoted = false;
        } else if (c == '"') {
            quoted = true;
        } else if (c == '>') {
            return i;
        }
    }
    return std::string_view::npos;
}

PathResult failed(AddressError e) {
    PathResult r;
    r.error = e;
    return r;
}

}  // namespace

bool is_valid_domain(std::string_view d, bool allow_utf8) {
    if (!d.empty() && d.front() == '[') return is_address_literal(d);
    if (d.empty() || d.size() > 255) return false;
    size_t label = 0;
    for (size_t i = 0; i < d.size(); ++i) {
        unsigned char c = static_cast<unsigned char>(d[i]);
        if (c == '.') {
            if (label == 0 || d[i - 1] == '-') return false;
            label = 0;
            continue;
        }
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  (c == '-' && label > 0) || c == '_' || (c >= 0x80 && allow_utf8);
        if (!ok || ++label > 63) return false;
    }
    return label > 0 && d.back() != '-';
}

PathResult parse_path(std::string_view text, bool allow_null, bool smtputf8) {
    PathResult r;
    while (!text.empty() && text.front() == ' ')
        text.remove_prefix(1);
    std::string_view path;
    if (!text.empty() && text.front() == '<') {
        auto end = find_path_end(text);
        if (end == std::string_view::npos) return failed(AddressError::Syntax);
        path = text.substr(1, end - 1);
        r.rest = text.substr(end + 1);
        if (!r.rest.empty() && r.rest.front() != ' ') return failed(AddressError::Syntax);
    } else {
        auto space = text.find(' ');
        path = text.substr(0, space);
        r.rest = space == std::string_view::npos ? std::string_view() : text.substr(space);
        if (path.empty()) return failed(AddressError::Syntax);
    }
    while (!r.rest.empty() && r.rest.front() == ' ')
        r.rest.remove_prefix(1);
    if (path.empty()) {
        if (!allow_null) return failed(AddressError::Syntax);
        r.null = true;
        return r;
    }
    // RFC 5321 4.1.2 / C: a source route "@a,@b:" is accepted and ignored.
    if (path.front() == '@') {
        auto colon = path.find(':');
        if (colon == std::string_view::npos) return failed(AddressError::Syntax);
        path.remove_prefix(colon + 1);
    }
    if (path.size() > 254) return failed(AddressError::TooLong);  // 256 with the angle brackets
    for (unsigned char c : path)
        r.utf8 = r.utf8 || c >= 0x80;
    if (r.utf8 && !smtputf8) return failed(AddressError::NeedsUtf8);
    auto at = path.rfind('@');
    if (at == std::string_view::npos || at + 1 == path.size()) return failed(AddressError::NoDomain);
    auto local = path.substr(0, at);
    auto domain = path.substr(at + 1);
    if (!is_dot_string(local, r.utf8) && !is_quoted_string(local, r.utf8)) return failed(AddressError::BadLocal);
    if (!is_valid_domain(domain, r.utf8)) return failed(AddressError::BadDomain);
    r.address = std::string(path);
    return r;
}

std::string domain_of(std::string_view address) {
    auto at = address.rfind('@');
    if (at == std::string_view::npos) return {};
    std::string d(address.substr(at + 1));
    for (auto& c : d)
        if (c >= 'A' && c <= 'Z') c = char(c - 'A' + 'a');
    return d;
}

}  // namespace gateway
