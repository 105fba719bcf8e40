// Configuration sections that carry policy: sender rewriting, routes, upstreams, DKIM keys.
#include "conf/config_checks.hpp"
#include "conf/config_walker.hpp"

#include <strings.h>

#include <cctype>

namespace conf {

void load_sender(Walker& w, const YAML::Node& n, Config& c) {
    auto f = w.mapping(n, "sender", {"rewrite", "header_from"});
    if (!f) return;
    w.choice(*f, "header_from", "sender", c.sender.header_from,
             {{"keep", HeaderFrom::Keep}, {"rewrite", HeaderFrom::Rewrite}});
    auto* rules = Walker::find(*f, "rewrite");
    if (!rules) return;
    if (!rules->IsSequence()) {
        w.error(*rules, "sender.rewrite", "expected a list of { from: PATTERN, to: ADDRESS }");
        return;
    }
    size_t index = 0;
    for (const auto& item : *rules) {
        std::string path = "sender.rewrite[" + std::to_string(index++) + "]";
        auto rf = w.mapping(item, path, {"from", "to"});
        if (!rf) continue;
        RewriteRule r;
        r.mark = w.mark(item);
        w.string(*rf, "from", path, r.from);
        w.string(*rf, "to", path, r.to);
        if (!rf->count("from") || !rf->count("to")) {
            w.error(item, path, "needs both from: and to:");
            continue;
        }
        std::string why;
        if (!check_sender_pattern(r.from, why)) w.error(rf->at("from").value, path + ".from", why);
        if (!check_rewrite_target(r.to, why)) w.error(rf->at("to").value, path + ".to", why);
        c.sender.rewrite.push_back(r);
    }
}

void load_routes(Walker& w, const YAML::Node& n, Config& c) {
    if (!n.IsSequence()) {
        w.error(n, "routes", "expected a list of { to: ..., from: ..., via: ... }");
        return;
    }
    size_t index = 0;
    for (const auto& item : n) {
        std::string path = "routes[" + std::to_string(index++) + "]";
        auto f = w.mapping(item, path, {"to", "from", "via"});
        if (!f) continue;
        Route r;
        r.mark = w.mark(item);
        if (auto* v = Walker::find(*f, "to")) w.strings(*v, path + ".to", r.to);
        if (auto* v = Walker::find(*f, "from")) w.strings(*v, path + ".from", r.from);
        if (auto* v = Walker::find(*f, "via")) w.strings(*v, path + ".via", r.via);
        if (r.via.empty()) {
            w.error(item, path + ".via", "missing; give direct or an upstream name (or a list of them)");
            continue;
        }
        std::string why;
        for (const auto& p : r.to)
            if (!check_domain_pattern(p, why)) w.error(f->at("to").value, path + ".to", why);
        for (const auto& p : r.from)
            if (!check_sender_pattern(p, why)) w.error(f->at("from").value, path + ".from", why);
        c.routes.push_back(r);
    }
}

namespace {

// "30/m": messages per second, minute, hour or day.
bool parse_rate(const std::string& text, unsigned& messages, unsigned& seconds) {
    auto slash = text.find('/');
    if (slash == std::string::npos || slash == 0 || slash > 6) return false;
    unsigned n = 0;
    for (size_t i = 0; i < slash; ++i) {
        if (text[i] < '0' || text[i] > '9') return false;
        n = n * 10 + unsigned(text[i] - '0');
    }
    std::string unit = text.substr(slash + 1);
    unsigned per = unit == "s" ? 1 : unit == "m" ? 60 : unit == "h" ? 3600 : unit == "d" ? 86400 : 0;
    if (n == 0 || per == 0) return false;
    messages = n;
    seconds = per;
    return true;
}

std::optional<OAuth2> load_oauth2(Walker& w, const YAML::Node& n, const std::string& path) {
    auto f = w.mapping(n, path,
                       {"tenant", "client_id", "client_secret_file", "certificate_file", "key_file", "scope",
                        "token_endpoint", "ca_file"});
    if (!f) return std::nullopt;
    OAuth2 o;
    w.string(*f, "tenant", path, o.tenant);
    w.string(*f, "client_id", path, o.client_id);
    w.string(*f, "client_secret_file", path, o.client_secret_file);
    w.string(*f, "certificate_file", path, o.certificate_file);
    w.string(*f, "key_file", path, o.key_file);
    w.string(*f, "scope", path, o.scope);
    w.string(*f, "token_endpoint", path, o.token_endpoint);
    w.string(*f, "ca_file", path, o.ca_file);
    if (o.client_id.empty())
        w.error(n, path + ".client_id", "missing; the application (client) ID of the app registration");
    if (o.tenant.empty() && o.token_endpoint.empty())
        w.error(n, path + ".tenant", "missing; the tenant ID or a domain such as contoso.onmicrosoft.com");
    for (char c : o.tenant) {
        if (!isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '-') {
            w.error(f->at("tenant").value, path + ".tenant", "\"" + o.tenant + "\" is not a tenant ID or domain name");
            break;
        }
    }
    if (o.token_endpoint.empty())
        o.token_endpoint = "https://login.microsoftonline.com/" + o.tenant + "/oauth2/v2.0/token";
    else if (o.token_endpoint.compare(0, 8, "https://") != 0)
        w.error(f->at("token_endpoint").value, path + ".token_endpoint", "must be an https:// URL");
    if (o.scope.empty()) w.error(f->at("scope").value, path + ".scope", "must not be empty");
    bool secret = !o.client_secret_file.empty(), certificate = !o.certificate_file.empty() || !o.key_file.empty();
    if (secret == certificate)
        w.error(n, path, "give client_secret_file, or certificate_file with key_file (a signed client assertion)");
    else if (certificate && (o.certificate_file.empty() || o.key_file.empty()))
        w.error(n, path, "certificate_file and key_file go together");
    std::string why;
    const char* until = "; mail for this upstream stays queued until it can be read";
    using File = std::pair<const char*, const std::string*>;
    for (auto [key, file] :
         {File{"client_secret_file", &o.client_secret_file}, File{"certificate_file", &o.certificate_file},
          File{"key_file", &o.key_file}, File{"ca_file", &o.ca_file}}) {
        if (!file->empty() && !check_readable(*file, why)) w.warning(f->at(key).value, path + "." + key, why + until);
    }
    return o;
}

void load_upstream_auth(Walker& w, const YAML::Node& n, const std::string& path, Upstream& u) {
    auto f = w.mapping(
        n, path,
        {"username", "password_file", "token_file", "token_command", "oauth2", "mechanisms", "allow_plaintext"});
    if (!f) return;
    UpstreamAuth a;
    if (auto* o = Walker::find(*f, "oauth2")) a.oauth2 = load_oauth2(w, *o, path + ".oauth2");
    w.string(*f, "username", path, a.username);
    w.string(*f, "password_file", path, a.password_file);
    w.string(*f, "token_file", path, a.token_file);
    w.string(*f, "token_command", path, a.token_command);
    w.boolean(*f, "allow_plaintext", path, a.allow_plaintext);
    if (auto* m = Walker::find(*f, "mechanisms")) {
        w.strings(*m, path + ".mechanisms", a.mechanisms);
        for (auto& mech : a.mechanisms) {
            for (auto& ch : mech)
                ch = char(toupper(static_cast<unsigned char>(ch)));
            if (!is_client_mechanism(mech))
                w.error(*m, path + ".mechanisms",
                        "\"" + mech +
                            "\" is not supported (PLAIN, LOGIN, CRAM-MD5, DIGEST-MD5, SCRAM-SHA-1, "
                            "SCRAM-SHA-256, XOAUTH2)");
        }
    }
    if (a.username.empty()) w.error(n, path + ".username", "missing; the account to authenticate as");
    std::string why;
    // The secret is read at each connection, so it may be put in place after the configuration;
    // until then deliveries through this upstream are deferred with the same reason.
    const char* until = "; mail for this upstream stays queued until it can be read";
    if (!a.password_file.empty() && !check_readable(a.password_file, why))
        w.warning(f->at("password_file").value, path + ".password_file", why + until);
    if (!a.token_file.empty() && !check_readable(a.token_file, why))
        w.warning(f->at("token_file").value, path + ".token_file", why + until);
    int secrets = !a.password_file.empty() + !a.token_file.empty() + !a.token_command.empty() +
                  (Walker::find(*f, "oauth2") != nullptr);
    if (secrets != 1)
        w.error(n, path,
                "give exactly one of password_file, oauth2 (XOAUTH2), token_file (XOAUTH2) or token_command (XOAUTH2)");
    u.auth = a;
}

}  // namespace

void load_rate(Walker& w, const Fields& f, const char* key, const std::string& path, Rate& out) {
    std::string text;
    w.string(f, key, path, text);
    if (text.empty()) return;
    if (!parse_rate(text, out.count, out.seconds))
        w.error(f.at(key).value, path + "." + key,
                "\"" + text + "\" is not a rate: a count per s, m, h or d, e.g. 60/m");
}

void load_policy(Walker& w, const YAML::Node& n, Config& c) {
    if (!n.IsSequence()) {
        w.error(n, "policy", "expected a list of rules: - { match: {...}, senders: [...], recipients: [...] }");
        return;
    }
    size_t index = 0;
    for (const auto& item : n) {
        std::string path = "policy[" + std::to_string(index++) + "]";
        auto f = w.mapping(item, path, {"match", "senders", "recipients", "message_size", "rate"});
        if (!f) continue;
        PolicyRule r;
        r.mark = w.mark(item);
        if (auto* m = Walker::find(*f, "match")) {
            if (auto mf = w.mapping(*m, path + ".match", {"user", "clients", "listener"})) {
                if (auto* u = Walker::find(*mf, "user")) w.strings(*u, path + ".match.user", r.users);
                if (auto* cl = Walker::find(*mf, "clients")) load_networks(w, *cl, path + ".match.clients", r.clients);
                if (auto* l = Walker::find(*mf, "listener")) {
                    w.strings(*l, path + ".match.listener", r.listeners);
                    for (const auto& name : r.listeners) {
                        bool known = std::any_of(c.listen.begin(), c.listen.end(),
                                                 [&](const Listen& x) { return x.address == name; });
                        if (!known)
                            w.error(*l, path + ".match.listener",
                                    "\"" + name + "\" is not the address of a listener in listen:");
                    }
                }
            }
        }
        std::string why;
        for (auto [key, list] : {std::pair{"senders", &r.senders}, {"recipients", &r.recipients}}) {
            auto* v = Walker::find(*f, key);
            if (!v) continue;
            w.strings(*v, path + "." + key, *list);
            for (const auto& p : *list)
                if (!check_sender_pattern(p, why)) w.error(*v, path + "." + key, why);
            if (list->empty()) w.error(*v, path + "." + key, "an empty list would refuse everything; leave it out");
        }
        w.size(*f, "message_size", path, r.message_size);
        if (auto* rate = Walker::find(*f, "rate")) {
            if (auto rf = w.mapping(*rate, path + ".rate", {"messages", "recipients"})) {
                load_rate(w, *rf, "messages", path + ".rate", r.messages);
                load_rate(w, *rf, "recipients", path + ".rate", r.recipient_rate);
            }
        }
        c.policy.push_back(r);
    }
}

void load_upstreams(Walker& w, const YAML::Node& n, Config& c) {
    if (!n.IsMap()) {
        w.error(n, "upstreams", "expected a mapping of NAME: { host: ..., port: ... }");
        return;
    }
    for (auto it = n.begin(); it != n.end(); ++it) {
        std::string name = it->first.IsScalar() ? it->first.Scalar() : "";
        std::string path = "upstreams." + name;
        std::string why;
        if (!check_upstream_name(name, why)) {
            w.error(it->first, path, why);
            continue;
        }
        bool repeated = false;
        for (const auto& u : c.upstreams)
            repeated = repeated || u.name == name;
        if (repeated) {
            w.error(it->first, path, "upstream defined more than once");
            continue;
        }
        auto f = w.mapping(it->second, path,
                           {"host", "port", "security", "verify", "ca_file", "auth", "source_address", "helo_name",
                            "concurrency", "rate", "recipients_per_message", "tls"});
        if (!f) continue;
        Upstream u;
        u.name = name;
        u.mark = w.mark(it->first);
        w.string(*f, "host", path, u.host);
        w.choice(*f, "security", path, u.security, k_security);
        if (u.security == Security::Implicit) u.port = 465;
        w.number(*f, "port", path, u.port, 1, 65535);
        w.boolean(*f, "verify", path, u.verify);
        w.string(*f, "ca_file", path, u.ca_file);
        if (!u.ca_file.empty() && !check_readable(u.ca_file, why))
            w.error(f->at("ca_file").value, path + ".ca_file", why);
        if (auto* a = Walker::find(*f, "auth")) load_upstream_auth(w, *a, path + ".auth", u);
        w.string(*f, "source_address", path, u.source_address);
        if (!u.source_address.empty() && !IpAddress::parse(u.source_address))
            w.error(f->at("source_address").value, path + ".source_address",
                    "\"" + u.source_address + "\" is not an IP address of this machine");
        w.string(*f, "helo_name", path, u.helo_name);
        w.number(*f, "concurrency", path, u.concurrency, 1, 10000);
        w.number(*f, "recipients_per_message", path, u.recipients_per_message, 1, 100000);
        if (auto* t = Walker::find(*f, "tls")) {
            if (auto tf = w.mapping(*t, path + ".tls", {"certificate", "key"})) {
                w.string(*tf, "certificate", path + ".tls", u.tls_certificate);
                w.string(*tf, "key", path + ".tls", u.tls_key);
                if (u.tls_certificate.empty())
                    w.error(*t, path + ".tls.certificate", "missing; the PEM certificate sent to the smarthost");
                else if (!check_readable(u.tls_certificate, why))
                    w.error(tf->at("certificate").value, path + ".tls.certificate", why);
                if (u.tls_key.empty())
                    w.error(*t, path + ".tls.key", "missing; the PEM private key of tls.certificate");
                else if (!check_readable(u.tls_key, why))
                    w.error(tf->at("key").value, path + ".tls.key", why);
            }
        }
        std::string rate;
        w.string(*f, "rate", path, rate);
        if (!rate.empty() && !parse_rate(rate, u.rate_messages, u.rate_seconds))
            w.error(f->at("rate").value, path + ".rate",
                    "\"" + rate + "\" is not a rate: messages per second, minute, hour or day, like 30/m");
        if (!u.helo_name.empty() && !check_host(u.helo_name, why))
            w.error(f->at("helo_name").value, path + ".helo_name", why);
        if (u.host.empty())
            w.error(it->second, path + ".host", "missing; the smarthost's name or address");
        else if (!check_host(u.host, why))
            w.error(f->at("host").value, path + ".host", why);
        c.upstreams.push_back(u);
    }
}

void load_dkim(Walker& w, const YAML::Node& n, Config& c) {
    if (!n.IsSequence()) {
        w.error(n, "dkim", "expected a list of { domain: DOMAIN, selector: NAME, key_file: PATH }");
        return;
    }
    size_t index = 0;
    for (const auto& item : n) {
        std::string path = "dkim[" + std::to_string(index++) + "]";
        auto f = w.mapping(item, path, {"domain", "selector", "key_file"});
        if (!f) continue;
        DkimKey k;
        k.mark = w.mark(item);
        w.string(*f, "domain", path, k.domain);
        w.string(*f, "selector", path, k.selector);
        w.string(*f, "key_file", path, k.key_file);
        if (k.domain.empty() || k.selector.empty() || k.key_file.empty()) {
            w.error(item, path,
                    "needs domain:, selector: and key_file: (smtpgw dkim keygen DOMAIN SELECTOR makes a key)");
            continue;
        }
        std::string why;
        if (!check_host(k.domain, why) || k.domain.find_first_not_of("0123456789.") == std::string::npos ||
            k.domain.find(':') != std::string::npos)
            w.error(f->at("domain").value, path + ".domain", "\"" + k.domain + "\" is not a domain name");
        // RFC 6376 3.1: the selector is one or more labels of a domain name.
        bool selector_ok =
            k.selector.front() != '.' && k.selector.back() != '.' && k.selector.find("..") == std::string::npos;
        for (char ch : k.selector)
            selector_ok =
                selector_ok && (std::isalnum(static_cast<unsigned char>(ch)) || ch == '-' || ch == '.' || ch == '_');
        if (!selector_ok)
            w.error(f->at("selector").value, path + ".selector",
                    "\"" + k.selector + "\" is not a selector (letters, digits, - and _, labels joined by dots)");
        if (!check_readable(k.key_file, why)) w.error(f->at("key_file").value, path + ".key_file", why);
        for (const auto& other : c.dkim)
            if (strcasecmp(other.domain.c_str(), k.domain.c_str()) == 0 && other.selector == k.selector)
                w.error(item, path, "a second key for " + k.selector + "._domainkey." + k.domain);
        c.dkim.push_back(k);
    }
}

}  // namespace conf
