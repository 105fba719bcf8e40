#include "conf/config_checks.hpp"

#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>
#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <regex>

namespace conf {

namespace {

bool parse_port(std::string_view text, uint16_t& port, bool allow_zero = false) {
    if (text.empty() || text.size() > 5) return false;
    unsigned v = 0;
    for (char c : text) {
        if (c < '0' || c > '9') return false;
        v = v * 10 + unsigned(c - '0');
    }
    if ((v == 0 && !allow_zero) || v > 65535) return false;
    port = uint16_t(v);
    return true;
}

// Splits "host:port" / "[v6]:port" / "host"; `port_required` decides whether a port must be there.
// `port_required` is set for listen addresses, which may also give port 0 (any free port).
std::optional<HostPort> split_host_port(std::string_view text, bool port_required, uint16_t default_port) {
    HostPort hp;
    hp.port = default_port;
    std::string_view host = text, port;
    if (!text.empty() && text.front() == '[') {
        auto close = text.find(']');
        if (close == std::string_view::npos) return std::nullopt;
        host = text.substr(1, close - 1);
        auto rest = text.substr(close + 1);
        if (!rest.empty()) {
            if (rest.front() != ':') return std::nullopt;
            port = rest.substr(1);
            if (!parse_port(port, hp.port, port_required)) return std::nullopt;
        } else if (port_required) {
            return std::nullopt;
        }
        if (!IpAddress::parse(host) || host.find(':') == std::string_view::npos) return std::nullopt;
    } else {
        // Without brackets only IPv4 can carry a port: an IPv6 literal has more than one colon.
        auto colon = text.find(':');
        bool one_colon = colon != std::string_view::npos && text.find(':', colon + 1) == std::string_view::npos;
        if (one_colon) {
            host = text.substr(0, colon);
            if (!parse_port(text.substr(colon + 1), hp.port, port_required)) return std::nullopt;
        } else if (port_required) {
            return std::nullopt;
        }
        if (!IpAddress::parse(host)) return std::nullopt;
    }
    hp.host = std::string(host);
    return hp;
}

bool is_label_char(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_';
}

// RFC 1035 2.3.1 (with '_' tolerated): dot-separated labels of up to 63 characters.
bool is_domain(std::string_view d) {
    if (d.empty() || d.size() > 253) return false;
    if (d.back() == '.') d.remove_suffix(1);
    size_t label = 0;
    for (size_t i = 0; i < d.size(); ++i) {
        char c = d[i];
        if (c == '.') {
            if (label == 0 || d[i - 1] == '-') return false;
            label = 0;
            continue;
        }
        if (!is_label_char(c)) return false;
        if (label == 0 && c == '-') return false;
        if (++label > 63) return false;
    }
    return label > 0 && d.back() != '-';
}

bool is_glob_domain(std::string_view d) {
    if (d == "*") return true;
    std::string s(d);
    std::replace(s.begin(), s.end(), '*', 'x');
    return is_domain(s);
}

bool is_local_part_char(char c) { return c > 32 && c < 127 && !std::strchr("<>()[]\\,;:@\"", c); }

bool is_glob_local(std::string_view l) {
    if (l.empty()) return false;
    for (char c : l)
        if (!is_local_part_char(c) && c != '*') return false;
    return true;
}

}  // namespace

std::optional<HostPort> parse_listen_address(std::string_view text) { return split_host_port(text, true, 0); }

std::optional<HostPort> parse_dns_server(std::string_view text) { return split_host_port(text, false, 53); }

bool check_host(const std::string& host, std::string& why) {
    if (IpAddress::parse(host) || is_domain(host)) return true;
    why = "\"" + host + "\" is not a host name or IP address";
    return false;
}

bool check_domain_pattern(const std::string& pattern, std::string& why) {
    if (is_glob_domain(pattern)) return true;
    why = "\"" + pattern + "\" is not a domain pattern (example.com, *.example.com or *)";
    return false;
}

bool check_sender_pattern(const std::string& pattern, std::string& why) {
    if (pattern == "<>") return true;  // the null sender
    if (pattern.size() >= 2 && pattern.front() == '/' && pattern.back() == '/') {
        try {
            std::regex re(pattern.substr(1, pattern.size() - 2), std::regex::ECMAScript);
            return true;
        } catch (const std::regex_error& e) {
            why = "\"" + pattern + "\" is not a valid regular expression: " + e.what();
            return false;
        }
    }
    auto at = pattern.rfind('@');
    if (at == std::string::npos) {
        if (is_glob_domain(pattern)) return true;
    } else if (is_glob_local(pattern.substr(0, at)) && is_glob_domain(pattern.substr(at + 1))) {
        return true;
    }
    why = "\"" + pattern + "\" is not a sender pattern (user@example.com, *@example.com, example.com or /regex/)";
    return false;
}

bool check_rewrite_target(const std::string& address, std::string& why) {
    // Captures ($1..$9) stand for text taken from the sender; check the shape around them.
    std::string s = std::regex_replace(address, std::regex("\\$[0-9]"), "x");
    auto at = s.rfind('@');
    if (at != std::string::npos && at > 0) {
        bool local_ok = true;
        for (char c : s.substr(0, at))
            local_ok = local_ok && is_local_part_char(c);
        if (local_ok && is_domain(s.substr(at + 1))) return true;
    }
    why = "\"" + address + "\" is not an email address (user@example.com; $1 for a capture)";
    return false;
}

bool check_upstream_name(const std::string& name, std::string& why) {
    bool ok = !name.empty() && name != "direct";
    for (char c : name)
        ok = ok && is_label_char(c);
    if (!ok) why = "\"" + name + "\" is not a usable upstream name (letters, digits, - and _; not \"direct\")";
    return ok;
}

bool check_readable(const std::string& path, std::string& why) {
    if (access(path.c_str(), R_OK) == 0) return true;
    why = "cannot read " + path + ": " + std::strerror(errno);
    return false;
}

bool check_writable_place(const std::string& path, std::string& why) {
    // The path itself, or the nearest folder above it that exists, is where a write would go.
    std::string place = path;
    struct stat st {};
    while (!place.empty() && ::stat(place.c_str(), &st) != 0) {
        if (place == "." || place == "/") return true;  // nothing above to ask
        auto slash = place.find_last_of('/');
        place = slash == std::string::npos ? "." : slash == 0 ? "/" : place.substr(0, slash);
    }
    if (place.empty() || access(place.c_str(), W_OK) == 0 || errno != EROFS) return true;
    why = "cannot write " + path + ": " + place +
          " is on a read-only file system (the packaged systemd unit lets smtpgw write only under "
          "/var/spool/smtpgw, /var/log/smtpgw and /run/smtpgw)";
    return false;
}

bool is_client_mechanism(const std::string& m) {
    static const char* const known[] = {"PLAIN",       "LOGIN",         "CRAM-MD5", "DIGEST-MD5",
                                        "SCRAM-SHA-1", "SCRAM-SHA-256", "XOAUTH2"};
    return std::any_of(std::begin(known), std::end(known), [&](const char* k) { return m == k; });
}

std::optional<std::string> not_public(const std::string& domain) {
    std::string d;
    for (char ch : domain)
        d += char(ch >= 'A' && ch <= 'Z' ? ch - 'A' + 'a' : ch);
    while (!d.empty() && d.back() == '.')
        d.pop_back();
    if (d.empty() || d.front() == '[') return std::nullopt;  // an address literal is its own matter
    auto dot = d.rfind('.');
    if (dot == std::string::npos) return "\"" + d + "\" is a bare host name, not an Internet domain";
    static const char* const reserved[] = {"local",   "localdomain", "lan",       "internal", "invalid",
                                           "example", "test",        "localhost", "home",     "corp"};
    std::string tld = d.substr(dot + 1);
    for (const char* r : reserved)
        if (tld == r) return "." + tld + " is not a public domain";
    return std::nullopt;
}

namespace {

// Why an address in `domain` cannot be a sender on the Internet, in the words an admin needs.
std::string undeliverable(const std::string& what, const std::string& address, const std::string& reason) {
    return what + ": " + address + " cannot be a sender on the Internet (" + reason +
           "): receiving servers refuse mail from a domain that does not resolve (450 4.1.8 Sender address "
           "rejected: Domain not found) and replies cannot reach it; use an address in a domain you own";
}

void advise(const Config& c, std::vector<Diagnostic>& diags) {
    auto warn = [&](const Mark& m, const std::string& text) {
        diags.push_back({c.source, m.line, m.column, false, text});
    };
    for (size_t i = 0; i < c.sender.rewrite.size(); ++i) {
        const auto& r = c.sender.rewrite[i];
        auto at = r.to.rfind('@');
        std::string domain = at == std::string::npos ? "" : r.to.substr(at + 1);
        if (domain.find('$') != std::string::npos) continue;  // taken from the sender: unknown here
        if (auto why = not_public(domain))
            warn(r.mark, undeliverable("sender.rewrite[" + std::to_string(i) + "].to", r.to, *why));
    }
    if (auto why = not_public(c.hostname))
        warn({},
             undeliverable("hostname", "the bounce address MAILER-DAEMON@" + c.hostname, *why) + " (set hostname:)");
    auto world_readable = [&](const Mark& m, const std::string& key, const std::string& path) {
        struct stat st {};
        if (path.empty() || ::stat(path.c_str(), &st) != 0 || !(st.st_mode & S_IROTH)) return;
        char mode[8];
        std::snprintf(mode, sizeof mode, "%04o", unsigned(st.st_mode & 07777));
        warn(m, key + ": " + path + " can be read by every user on this machine (mode " + mode + "); chmod 600 " +
                    path + ", or 640 with the gateway's group");
    };
    if (c.sasl) world_readable({}, "sasl.sasldb", c.sasl->sasldb);
    // Keys are read again at each reload, by then as `user:`.
    const passwd* account = c.user.empty() || c.user == "root" ? nullptr : getpwnam(c.user.c_str());
    for (size_t i = 0; i < c.dkim.size(); ++i) {
        const auto& k = c.dkim[i];
        std::string key = "dkim[" + std::to_string(i) + "].key_file";
        world_readable(k.mark, key, k.key_file);
        struct stat st {};
        if (!account || ::stat(k.key_file.c_str(), &st) != 0) continue;
        bool readable = (st.st_uid == account->pw_uid && (st.st_mode & S_IRUSR)) ||
                        (st.st_gid == account->pw_gid && (st.st_mode & S_IRGRP)) || (st.st_mode & S_IROTH);
        if (!readable)
            warn(k.mark, key + ": " + k.key_file + " cannot be read by " + c.user +
                             ", the account the gateway runs as: it starts, but every reload is refused; chown " +
                             c.user + " " + k.key_file + " (smtpgw dkim keygen -c FILE does this as root)");
    }
    for (size_t i = 0; i < c.listen.size(); ++i) {
        const auto& l = c.listen[i];
        if (!l.legacy_tls() || l.tls == ListenTls::None) continue;
        std::string what = l.tls_min == TlsVersion::Tls10   ? "TLS 1.0 and 1.1 (deprecated by RFC 8996)"
                           : l.tls_min == TlsVersion::Tls11 ? "TLS 1.1 (deprecated by RFC 8996)"
                                                            : "CBC cipher suites";
        warn(l.mark, "listen[" + std::to_string(i) + "] (" + l.address + ") accepts " + what +
                         ": only for devices that speak nothing newer; keep it on its own port, and watch "
                         "smtpgw_tls_legacy_sessions_total in /metrics for the clients that still need it");
    }
    if (!c.metrics.listen.empty()) {
        auto ip = IpAddress::parse(c.metrics.endpoint.host);
        bool loopback = ip && (ip->v6 ? *ip == *IpAddress::parse("::1") : ip->bytes[0] == 127);
        if (!loopback)
            warn({}, "metrics.listen: " + c.metrics.listen +
                         " can be reached from other hosts, and /metrics asks no one for credentials: it tells "
                         "them how much mail flows where; listen on 127.0.0.1 and let Prometheus reach it through "
                         "a firewall rule, a proxy or a tunnel");
    }
    for (const auto& u : c.upstreams) {
        std::string key = "upstreams." + u.name;
        if (u.auth) {
            world_readable(u.mark, key + ".auth.password_file", u.auth->password_file);
            world_readable(u.mark, key + ".auth.token_file", u.auth->token_file);
            if (u.auth->oauth2) {
                world_readable(u.mark, key + ".auth.oauth2.client_secret_file", u.auth->oauth2->client_secret_file);
                world_readable(u.mark, key + ".auth.oauth2.key_file", u.auth->oauth2->key_file);
            }
        }
        if (u.security == Security::Mandatory && !u.verify)
            warn(u.mark, key +
                             ": security: mandatory without verify: true encrypts but does not check who "
                             "answers, so a machine in the middle can read the password and the mail; set "
                             "verify: true (with ca_file: for a private CA)");
        if (u.port == 465 && u.security != Security::Implicit)
            warn(u.mark, key + ": port 465 speaks TLS from the first byte (RFC 8314), so with security: " +
                             to_string(u.security) +
                             " the gateway waits for a greeting that never comes; set "
                             "security: implicit");
        if ((u.port == 587 || u.port == 25 || u.port == 2525) && u.security == Security::Implicit)
            warn(u.mark, key + ": port " + std::to_string(u.port) +
                             " starts in plaintext and offers STARTTLS, so security: implicit fails at the TLS "
                             "handshake; set security: mandatory");
    }
}

}  // namespace

void validate(const Config& c, std::vector<Diagnostic>& diags) {
    auto error = [&](const Mark& m, const std::string& text) {
        diags.push_back({c.source, m.line, m.column, true, text});
    };
    if (c.listen.empty()) error({}, "listen: at least one listener is needed, e.g. - address: 0.0.0.0:25");
    for (size_t i = 0; i < c.listen.size(); ++i) {
        const auto& l = c.listen[i];
        std::string path = "listen[" + std::to_string(i) + "]";
        // Port 0 lets the kernel choose a free port for each listener, so it may repeat.
        for (size_t j = 0; j < i && l.endpoint.port != 0; ++j) {
            const auto& o = c.listen[j];
            if (o.endpoint.host == l.endpoint.host && o.endpoint.port == l.endpoint.port) {
                error(l.mark, path + ".address: " + l.address + " is already listed");
                break;
            }
        }
        if (l.tls != ListenTls::None && !c.tls)
            error(l.mark, path + ".tls: " + to_string(l.tls) + " needs the tls: section (certificate and key)");
        if (l.auth != ListenAuth::None && !c.sasl)
            error(l.mark, path + ".auth: " + to_string(l.auth) + " needs the sasl: section (sasldb)");
        if (l.legacy_tls() && l.tls == ListenTls::None)
            error(l.mark, path + ": tls_protocols and tls_ciphers need tls: starttls or implicit");
    }
    for (size_t i = 0; i < c.routes.size(); ++i) {
        for (const auto& via : c.routes[i].via) {
            if (via == "direct") continue;
            bool known = std::any_of(c.upstreams.begin(), c.upstreams.end(), [&](auto& u) { return u.name == via; });
            if (!known)
                error(c.routes[i].mark, "routes[" + std::to_string(i) + "].via: no upstream named \"" + via +
                                            "\" (define it under upstreams:, or use direct)");
        }
    }
    advise(c, diags);
}

}  // namespace conf
