#include "gateway/dns/spf.hpp"

#include "gateway/common/text.hpp"

#include <strings.h>
#include <algorithm>
#include <cctype>
#include <ctime>
#include <optional>

namespace gateway::spf {

namespace {

constexpr unsigned k_max_lookups = 10;  // RFC 7208 4.6.4
constexpr unsigned k_max_void = 2;
constexpr size_t k_max_names = 10;  // MX hosts, PTR names

std::string strip_dot(std::string s) {
    if (!s.empty() && s.back() == '.') s.pop_back();
    return s;
}

// "a.example.com" is "example.com" or below it.
bool within(const std::string& name, const std::string& domain) {
    std::string n = ascii_lower(strip_dot(name)), d = ascii_lower(strip_dot(domain));
    return n == d || (n.size() > d.size() && n.compare(n.size() - d.size(), d.size(), d) == 0 &&
                      n[n.size() - d.size() - 1] == '.');
}

// RFC 7208 4.3: a multi-label name with labels of 1 to 63 octets (a trailing dot allowed).
bool valid_domain(const std::string& domain) {
    std::string d = strip_dot(domain);
    if (d.empty() || d.size() > 253 || d.find('.') == std::string::npos) return false;
    size_t start = 0;
    while (start <= d.size()) {
        size_t dot = d.find('.', start);
        if (dot == std::string::npos) dot = d.size();
        size_t len = dot - start;
        if (len == 0 || len > 63) return false;
        start = dot + 1;
    }
    return d.front() != '[';
}

struct PermError {
    std::string why;
};
struct TempError {
    std::string why;
};

enum class Kind { All, Include, A, Mx, Ptr, Ip4, Ip6, Exists };

struct Directive {
    char qualifier = '+';
    Kind kind = Kind::All;
    std::string text;    // as written, for reports
    std::string domain;  // domain-spec (macro string), empty when none
    int cidr4 = 32, cidr6 = 128;
    conf::IpAddress network;
};

struct Record {
    std::vector<Directive> directives;
    std::optional<std::string> redirect, exp;
};

bool is_delimiter(char c) { return std::string_view(".-+,/_=").find(c) != std::string_view::npos; }

// Checks a macro-string (RFC 7208 7.1); `exp` allows the c, r and t letters.
void check_macro_string(const std::string& s, bool exp) {
    for (size_t i = 0; i < s.size(); ++i) {
        unsigned char c = static_cast<unsigned char>(s[i]);
        if (c != '%') {
            if (c < 0x21 || c > 0x7e) {
                if (!(exp && c == ' ')) throw PermError{"invalid character in \"" + s + "\""};
            }
            continue;
        }
        if (i + 1 >= s.size()) throw PermError{"a lone % in \"" + s + "\""};
        char n = s[++i];
        if (n == '%' || n == '_' || n == '-') continue;
        if (n != '{') throw PermError{"invalid macro in \"" + s + "\""};
        size_t close = s.find('}', i);
        if (close == std::string::npos || close == i + 1) throw PermError{"unclosed macro in \"" + s + "\""};
        char letter = char(std::tolower(static_cast<unsigned char>(s[i + 1])));
        if (std::string_view("slodiphv").find(letter) == std::string_view::npos &&
            !(exp && std::string_view("crt").find(letter) != std::string_view::npos))
            throw PermError{"unknown macro letter in \"" + s + "\""};
        size_t j = i + 2;
        while (j < close && std::isdigit(static_cast<unsigned char>(s[j])))
            ++j;
        if (j < close && (s[j] == 'r' || s[j] == 'R')) ++j;
        while (j < close && is_delimiter(s[j]))
            ++j;
        if (j != close) throw PermError{"invalid macro in \"" + s + "\""};
        i = close;
    }
}

// domain-spec = macro-string domain-end (RFC 7208 12)
void check_domain_spec(const std::string& s) {
    check_macro_string(s, false);
    if (s.empty()) throw PermError{"empty domain"};
    if (s.back() == '}') return;  // ends in a macro
    std::string d = strip_dot(s);
    auto dot = d.rfind('.');
    if (dot == std::string::npos) throw PermError{"\"" + s + "\" does not end in a top-level label"};
    std::string top = d.substr(dot + 1);
    bool alpha = std::any_of(top.begin(), top.end(), [](unsigned char c) { return std::isalpha(c); });
    bool chars = !top.empty() &&
                 std::all_of(top.begin(), top.end(), [](unsigned char c) { return std::isalnum(c) || c == '-'; });
    bool dashed = top.find('-') != std::string::npos && top.front() != '-' && top.back() != '-';
    if (!chars || (!alpha && !dashed) || top.front() == '-' || top.back() == '-')
        throw PermError{"\"" + s + "\" does not end in a valid top-level label"};
}

int parse_cidr(const std::string& s, int max) {
    if (s.empty() || s.size() > 3 || !std::all_of(s.begin(), s.end(), ::isdigit) || (s.size() > 1 && s[0] == '0'))
        throw PermError{"invalid prefix length /" + s};
    int v = std::stoi(s);
    if (v > max) throw PermError{"prefix length /" + s + " is too long"};
    return v;
}

// "[/cidr4][//cidr6]" at the end of a or mx; a slash followed by anything but digits belongs to
// the domain-spec ("a:foo/bar.example.com" is a domain).
void parse_dual_cidr(std::string& rest, Directive& d) {
    auto digits_after = [&](size_t pos) {
        return pos < rest.size() && std::all_of(rest.begin() + long(pos), rest.end(), ::isdigit);
    };
    auto dd = rest.rfind("//");
    if (dd != std::string::npos && (digits_after(dd + 2) || dd + 2 == rest.size())) {
        d.cidr6 = parse_cidr(rest.substr(dd + 2), 128);
        rest.erase(dd);
    }
    auto slash = rest.rfind('/');
    if (slash != std::string::npos && (digits_after(slash + 1) || slash + 1 == rest.size())) {
        d.cidr4 = parse_cidr(rest.substr(slash + 1), 32);
        rest.erase(slash);
    }
}

bool strict_ip4(const std::string& s) {
    int parts = 0;
    size_t i = 0;
    while (i <= s.size()) {
        size_t dot = s.find('.', i);
        if (dot == std::string::npos) dot = s.size();
        std::string q = s.substr(i, dot - i);
        if (q.empty() || q.size() > 3 || !std::all_of(q.begin(), q.end(), ::isdigit) || (q.size() > 1 && q[0] == '0') ||
            std::stoi(q) > 255)
            return false;
        ++parts;
        i = dot + 1;
        if (dot == s.size()) break;
    }
    return parts == 4;
}

Record parse_record(const std::string& text) {
    Record r;
    size_t pos = 6;  // after "v=spf1"
    while (pos < text.size()) {
        if (text[pos] == ' ') {
            ++pos;
            continue;
        }
        size_t end = text.find(' ', pos);
        if (end == std::string::npos) end = text.size();
        std::string term = text.substr(pos, end - pos);
        pos = end;
        size_t sep = term.find_first_of(":/=");
        // A modifier: name "=" macro-string
        if (sep != std::string::npos && term[sep] == '=') {
            std::string name = ascii_lower(term.substr(0, sep)), value = term.substr(sep + 1);
            if (name.empty() || !std::isalpha(static_cast<unsigned char>(name[0])) ||
                !std::all_of(name.begin(), name.end(),
                             [](unsigned char c) { return std::isalnum(c) || c == '-' || c == '_' || c == '.'; }))
                throw PermError{"invalid term \"" + term + "\""};
            if (name == "redirect" || name == "exp") {
                auto& slot = name == "redirect" ? r.redirect : r.exp;
                if (slot) throw PermError{name + "= given twice"};
                check_domain_spec(value);
                slot = value;
            } else {
                check_macro_string(value, false);
            }
            continue;
        }
        Directive d;
        d.text = term;
        if (!term.empty() && std::string_view("+-~?").find(term[0]) != std::string_view::npos) {
            d.qualifier = term[0];
            term.erase(0, 1);
        }
        sep = term.find_first_of(":/");
        std::string name = ascii_lower(term.substr(0, sep));
        std::string rest = sep == std::string::npos ? "" : term.substr(sep);
        if (name == "all") {
            if (!rest.empty()) throw PermError{"invalid term \"" + d.text + "\""};
            d.kind = Kind::All;
        } else if (name == "include" || name == "exists") {
            d.kind = name == "include" ? Kind::Include : Kind::Exists;
            if (rest.size() < 2 || rest[0] != ':') throw PermError{name + " needs a domain"};
            d.domain = rest.substr(1);
            check_domain_spec(d.domain);
        } else if (name == "a" || name == "mx") {
            d.kind = name == "a" ? Kind::A : Kind::Mx;
            parse_dual_cidr(rest, d);
            if (!rest.empty()) {
                if (rest[0] != ':' || rest.size() < 2) throw PermError{"invalid term \"" + d.text + "\""};
                d.domain = rest.substr(1);
                check_domain_spec(d.domain);
            }
        } else if (name == "ptr") {
            d.kind = Kind::Ptr;
            if (!rest.empty()) {
                if (rest[0] != ':' || rest.size() < 2) throw PermError{"invalid term \"" + d.text + "\""};
                d.domain = rest.substr(1);
                check_domain_spec(d.domain);
            }
        } else if (name == "ip4" || name == "ip6") {
            bool v4 = name == "ip4";
            d.kind = v4 ? Kind::Ip4 : Kind::Ip6;
            if (rest.size() < 2 || rest[0] != ':') throw PermError{name + " needs an address"};
            std::string net = rest.substr(1);
            auto slash = net.find('/');
            if (slash != std::string::npos) {
                int len = parse_cidr(net.substr(slash + 1), v4 ? 32 : 128);
                (v4 ? d.cidr4 : d.cidr6) = len;
                net.erase(slash);
            }
            auto ip = conf::IpAddress::parse(net);
            bool ok = ip && (v4 ? strict_ip4(net) : net.find(':') != std::string::npos);
            if (!ok) throw PermError{"\"" + net + "\" is not an " + (v4 ? "IPv4" : "IPv6") + " address"};
            d.network = *ip;
        } else {
            throw PermError{"unknown mechanism \"" + d.text + "\""};
        }
        r.directives.push_back(std::move(d));
    }
    return r;
}

bool in_network(const conf::IpAddress& ip, const conf::IpAddress& net, int prefix) {
    if (ip.v6 != net.v6) return false;
    int bytes = prefix / 8, bits = prefix % 8;
    for (int i = 0; i < bytes; ++i)
        if (ip.bytes[size_t(i)] != net.bytes[size_t(i)]) return false;
    if (bits == 0) return true;
    uint8_t mask = uint8_t(0xff << (8 - bits));
    return (ip.bytes[size_t(bytes)] & mask) == (net.bytes[size_t(bytes)] & mask);
}

std::string url_escape(const std::string& s) {
    std::string out;
    for (unsigned char c : s) {
        if (std::isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~') {
            out += char(c);
        } else {
            char buf[4];
            std::snprintf(buf, sizeof buf, "%%%02X", c);
            out += buf;
        }
    }
    return out;
}

class Evaluator {
public:
    Evaluator(Dns& dns, const conf::IpAddress& ip, const std::string& sender, const std::string& helo)
        : m_dns(dns), m_ip(ip), m_helo(helo) {
        m_sender = sender.empty() ? "postmaster@" + helo : sender;
        auto at = m_sender.rfind('@');
        m_local = at == std::string::npos ? "" : m_sender.substr(0, at);
        m_domain = at == std::string::npos ? m_sender : m_sender.substr(at + 1);
        if (m_local.empty()) {
            m_local = "postmaster";
            m_sender = "postmaster@" + m_domain;
        }
    }

    Outcome run() {
        Outcome out;
        try {
            out.result = check_host(m_domain, 0, &out);
        } catch (const PermError& e) {
            out.result = Result::PermError;
            out.problem = e.why;
        } catch (const TempError& e) {
            out.result = Result::TempError;
            out.problem = e.why;
        }
        out.lookups = m_lookups;
        return out;
    }

private:
    // The record of `domain`: nothing for "none"; throws for the errors.
    std::optional<std::string> fetch(const std::string& domain) {
        Answer a = m_dns.txt(domain);
        if (a.status == Answer::Status::TempFail) throw TempError{"DNS error looking up the TXT record of " + domain};
        std::vector<std::string> spf;
        for (const auto& r : a.records)
            if (r.size() >= 6 && strncasecmp(r.c_str(), "v=spf1", 6) == 0 && (r.size() == 6 || r[6] == ' '))
                spf.push_back(r);
        if (spf.empty()) return std::nullopt;
        if (spf.size() > 1) throw PermError{domain + " has more than one SPF record"};
        return spf.front();
    }

    Result check_host(const std::string& domain, int depth, Outcome* top) {
        if (!valid_domain(domain)) return Result::None;
        auto text = fetch(domain);
        if (!text) return Result::None;
        if (top) top->record = *text;
        Record record = parse_record(*text);
        for (const auto& d : record.directives) {
            auto matched = match(d, domain, depth);
            if (!matched) continue;
            Result r = qualified(d.qualifier);
            if (top) {
                top->mechanism = d.text;
                if (r == Result::Fail && record.exp) top->explanation = explain(*record.exp, domain);
            }
            return r;
        }
        if (record.redirect) {
            count_lookup();
            std::string target = expand(*record.redirect, domain, false, true);
            Outcome inner;
            Result r = check_host(target, depth + 1, top ? &inner : nullptr);
            if (r == Result::None) throw PermError{"redirect to " + target + ", which has no SPF record"};
            if (top) {
                top->mechanism = "redirect=" + target + (inner.mechanism.empty() ? "" : " (" + inner.mechanism + ")");
                top->explanation = inner.explanation;
            }
            return r;
        }
        if (top) top->mechanism = "default";
        return Result::Neutral;
    }

    static Result qualified(char q) {
        switch (q) {
        case '-': return Result::Fail;
        case '~': return Result::SoftFail;
        case '?': return Result::Neutral;
        default: return Result::Pass;
        }
    }

    void count_lookup() {
        if (++m_lookups > k_max_lookups) throw PermError{"more than 10 DNS lookups (RFC 7208 4.6.4)"};
    }

    void count_void(const Answer& a) {
        if ((a.status == Answer::Status::NoData || a.status == Answer::Status::NotFound || a.records.empty()) &&
            ++m_void > k_max_void)
            throw PermError{"more than two DNS lookups found nothing (RFC 7208 4.6.4)"};
    }

    std::vector<conf::IpAddress> addresses(const std::string& name, bool v6, bool count_voids) {
        Answer a = v6 ? m_dns.aaaa(name) : m_dns.a(name);
        if (a.status == Answer::Status::TempFail) throw TempError{"DNS error looking up the address of " + name};
        if (count_voids) count_void(a);
        std::vector<conf::IpAddress> out;
        for (const auto& r : a.records)
            if (auto ip = conf::IpAddress::parse(r)) out.push_back(*ip);
        return out;
    }

    bool matches_any(const std::vector<conf::IpAddress>& list, const Directive& d) {
        for (const auto& ip : list)
            if (in_network(m_ip, ip, m_ip.v6 ? d.cidr6 : d.cidr4)) return true;
        return false;
    }

    std::string target(const Directive& d, const std::string& domain) {
        return d.domain.empty() ? domain : expand(d.domain, domain, false, true);
    }

    bool match(const Directive& d, const std::string& domain, int depth) {
        switch (d.kind) {
        case Kind::All: return true;
        case Kind::Ip4:
        case Kind::Ip6: return in_network(m_ip, d.network, d.kind == Kind::Ip4 ? d.cidr4 : d.cidr6);
        case Kind::Include: {
            count_lookup();
            std::string t = target(d, domain);
            Result r = check_host(t, depth + 1, nullptr);
            switch (r) {
            case Result::Pass: return true;
            case Result::Fail:
            case Result::SoftFail:
            case Result::Neutral: return false;
            case Result::TempError: throw TempError{"include:" + t};
            default: throw PermError{"include:" + t + " has no usable SPF record"};
            }
        }
        case Kind::A: {
            count_lookup();
            std::string t = target(d, domain);
            if (!valid_domain(t)) return false;
            return matches_any(addresses(t, m_ip.v6, true), d);
        }
        case Kind::Mx: {
            count_lookup();
            std::string t = target(d, domain);
            if (!valid_domain(t)) return false;
            Answer mx = m_dns.mx(t);
            if (mx.status == Answer::Status::TempFail) throw TempError{"DNS error looking up the MX of " + t};
            count_void(mx);
            if (mx.records.size() > k_max_names) throw PermError{t + " has more than 10 MX records (RFC 7208 4.6.4)"};
            for (const auto& host : mx.records) {
                if (strip_dot(host).empty()) continue;
                if (matches_any(addresses(host, m_ip.v6, false), d)) return true;
            }
            return false;
        }
        case Kind::Ptr: {
            count_lookup();
            std::string t = target(d, domain);
            for (const auto& name : validated_names(t))
                if (within(name, t)) return true;
            return false;
        }
        case Kind::Exists: {
            count_lookup();
            std::string t = target(d, domain);
            if (!valid_domain(t)) return false;
            return !addresses(t, false, true).empty();  // always A, whatever the client's family
        }
        }
        return false;
    }

    // RFC 7208 5.5: the names of the address that resolve back to it; those within `domain` first.
    std::vector<std::string> validated_names(const std::string& domain) {
        Answer p = m_dns.ptr(reverse_name(m_ip));
        if (p.status == Answer::Status::TempFail) return {};
        if (p.records.empty()) count_void(p);
        std::vector<std::string> ok;
        size_t n = 0;
        for (const auto& name : p.records) {
            if (n++ >= k_max_names) break;
            try {
                for (const auto& ip : addresses(strip_dot(name), m_ip.v6, false))
                    if (ip == m_ip) {
                        ok.push_back(strip_dot(name));
                        break;
                    }
            } catch (const TempError&) {
                // a name that cannot be checked is not validated
            }
        }
        std::stable_partition(ok.begin(), ok.end(), [&](const std::string& s) { return within(s, domain); });
        return ok;
    }

    std::string macro_value(char letter, const std::string& domain) {
        switch (letter) {
        case 's': return m_sender;
        case 'l': return m_local;
        case 'o': return m_domain;
        case 'd': return domain;
        case 'h': return m_helo;
        case 'v': return m_ip.v6 ? "ip6" : "in-addr";
        case 'i': {
            if (!m_ip.v6) return m_ip.to_string();
            std::string s;
            for (size_t i = 0; i < 16; ++i) {
                static const char hex[] = "0123456789abcdef";
                s += hex[m_ip.bytes[i] >> 4];
                s += '.';
                s += hex[m_ip.bytes[i] & 15];
                if (i < 15) s += '.';
            }
            return s;
        }
        case 'c': return m_ip.to_string();
        case 'p': {
            auto names = validated_names(domain);
            return names.empty() ? "unknown" : names.front();
        }
        case 'r': return "unknown";
        case 't': return std::to_string(std::time(nullptr));
        }
        return "";
    }

    // RFC 7208 7.3
    std::string expand(const std::string& spec, const std::string& domain, bool exp, bool is_domain) {
        std::string out;
        for (size_t i = 0; i < spec.size(); ++i) {
            if (spec[i] != '%') {
                out += spec[i];
                continue;
            }
            char n = spec[++i];
            if (n == '%') {
                out += '%';
                continue;
            }
            if (n == '_') {
                out += ' ';
                continue;
            }
            if (n == '-') {
                out += "%20";
                continue;
            }
            size_t close = spec.find('}', i);
            char raw = spec[i + 1];
            char letter = char(std::tolower(static_cast<unsigned char>(raw)));
            if (!exp && std::string_view("crt").find(letter) != std::string_view::npos)
                throw PermError{"%{" + std::string(1, raw) + "} is for exp= text only"};
            size_t j = i + 2;
            size_t digits = 0;
            bool has_digits = false;
            while (j < close && std::isdigit(static_cast<unsigned char>(spec[j]))) {
                has_digits = true;
                digits = digits * 10 + size_t(spec[j] - '0');
                if (digits > 1000) digits = 1000;
                ++j;
            }
            if (has_digits && digits == 0) throw PermError{"a macro keeps zero labels"};
            bool reverse = j < close && (spec[j] == 'r' || spec[j] == 'R');
            if (reverse) ++j;
            std::string delimiters = spec.substr(j, close - j);
            if (delimiters.empty()) delimiters = ".";
            std::string value = macro_value(letter, domain);
            std::vector<std::string> parts;
            size_t start = 0;
            for (size_t k = 0; k <= value.size(); ++k) {
                if (k == value.size() || delimiters.find(value[k]) != std::string::npos) {
                    parts.push_back(value.substr(start, k - start));
                    start = k + 1;
                }
            }
            if (reverse) std::reverse(parts.begin(), parts.end());
            if (has_digits && digits < parts.size()) parts.erase(parts.begin(), parts.end() - long(digits));
            std::string joined;
            for (size_t k = 0; k < parts.size(); ++k)
                joined += (k ? "." : "") + parts[k];
            out += std::isupper(static_cast<unsigned char>(raw)) ? url_escape(joined) : joined;
            i = close;
        }
        if (is_domain) {
            // RFC 7208 7.3: longer than 253 octets: drop labels from the left.
            while (out.size() > 253) {
                auto dot = out.find('.');
                if (dot == std::string::npos) break;
                out.erase(0, dot + 1);
            }
        }
        return out;
    }

    std::string explain(const std::string& exp_spec, const std::string& domain) {
        try {
            std::string target = expand(exp_spec, domain, false, true);
            if (!valid_domain(target)) return {};
            Answer a = m_dns.txt(target);
            if (a.status != Answer::Status::Ok || a.records.size() != 1) return {};
            check_macro_string(a.records.front(), true);
            return expand(a.records.front(), domain, true, false);
        } catch (const PermError&) {
            return {};
        } catch (const TempError&) {
            return {};
        }
    }

    Dns& m_dns;
    conf::IpAddress m_ip;
    std::string m_sender, m_local, m_domain, m_helo;
    unsigned m_lookups = 0, m_void = 0;
};

}  // namespace

const char* to_string(Result r) {
    switch (r) {
    case Result::None: return "none";
    case Result::Neutral: return "neutral";
    case Result::Pass: return "pass";
    case Result::Fail: return "fail";
    case Result::SoftFail: return "softfail";
    case Result::TempError: return "temperror";
    case Result::PermError: return "permerror";
    }
    return "none";
}

std::string reverse_name(const conf::IpAddress& ip) {
    std::string s;
    if (!ip.v6) {
        for (int i = 3; i >= 0; --i)
            s += std::to_string(ip.bytes[size_t(i)]) + ".";
        return s + "in-addr.arpa";
    }
    static const char hex[] = "0123456789abcdef";
    for (int i = 15; i >= 0; --i) {
        s += hex[ip.bytes[size_t(i)] & 15];
        s += '.';
        s += hex[ip.bytes[size_t(i)] >> 4];
        s += '.';
    }
    return s + "ip6.arpa";
}

Outcome check_host(Dns& dns, const conf::IpAddress& ip, const std::string& sender, const std::string& helo) {
    return Evaluator(dns, ip, sender, helo).run();
}

}  // namespace gateway::spf
