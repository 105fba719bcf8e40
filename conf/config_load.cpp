// YAML -> Config. The walker below checks shapes and types section by section and records
// each problem with the position of the offending node; config_validate.cpp then checks what
// spans sections (routes naming upstreams, listeners needing certificates, files).
#include "conf/config_load.hpp"

#include "conf/config_checks.hpp"
#include "conf/units.hpp"

#include <yaml-cpp/yaml.h>

#include <unistd.h>
#include <algorithm>
#include <fstream>
#include <map>
#include <sstream>

namespace conf {

namespace {

struct Field {
    YAML::Node key;
    YAML::Node value;
};
using Fields = std::map<std::string, Field>;

class Walker {
public:
    Walker(std::string file, std::vector<Diagnostic>& diags) : m_file(std::move(file)), m_diags(diags) {}

    Mark mark(const YAML::Node& n) const {
        auto m = n.Mark();
        if (m.is_null()) return {};
        return {m.line + 1, m.column + 1};
    }

    void error(const YAML::Node& n, const std::string& path, const std::string& text) {
        auto m = mark(n);
        m_diags.push_back({m_file, m.line, m.column, true, path + ": " + text});
    }

    // A mapping whose keys must all be in `allowed`; unknown and repeated keys are errors.
    std::optional<Fields> mapping(const YAML::Node& n, const std::string& path,
                                  std::initializer_list<const char*> allowed) {
        if (!n.IsMap()) {
            error(n, path, "expected a mapping of keys");
            return std::nullopt;
        }
        Fields fields;
        for (auto it = n.begin(); it != n.end(); ++it) {
            if (!it->first.IsScalar()) {
                error(it->first, path, "keys must be plain names");
                continue;
            }
            auto key = it->first.Scalar();
            std::string where = path.empty() ? key : path + "." + key;
            bool known = false;
            for (const char* a : allowed)
                known = known || key == a;
            if (!known) {
                error(it->first, where, "unknown key" + suggestion(key, allowed));
                continue;
            }
            if (fields.count(key)) {
                error(it->first, where, "key given more than once");
                continue;
            }
            fields[key] = {it->first, it->second};
        }
        return fields;
    }

    bool scalar(const YAML::Node& n, const std::string& path, std::string& out) {
        if (!n.IsScalar()) {
            error(n, path, n.IsNull() ? "expected a value" : "expected a single value, not a list or mapping");
            return false;
        }
        out = n.Scalar();
        return true;
    }

    void string(const Fields& f, const char* key, const std::string& path, std::string& out) {
        if (auto* n = find(f, key)) scalar(*n, join(path, key), out);
    }

    void boolean(const Fields& f, const char* key, const std::string& path, bool& out) {
        auto* n = find(f, key);
        std::string s;
        if (!n || !scalar(*n, join(path, key), s)) return;
        if (s == "true" || s == "yes" || s == "on")
            out = true;
        else if (s == "false" || s == "no" || s == "off")
            out = false;
        else
            error(*n, join(path, key), "\"" + s + "\" is not true or false");
    }

    template <typename T>
    void number(const Fields& f, const char* key, const std::string& path, T& out, uint64_t min, uint64_t max) {
        auto* n = find(f, key);
        std::string s;
        if (!n || !scalar(*n, join(path, key), s)) return;
        uint64_t v = 0;
        bool ok = !s.empty() && s.size() <= 19;
        for (char c : s) {
            ok = ok && c >= '0' && c <= '9';
            v = v * 10 + uint64_t(c - '0');
        }
        if (!ok || v < min || v > max) {
            error(*n, join(path, key),
                  "\"" + s + "\" is not a whole number from " + std::to_string(min) + " to " + std::to_string(max));
            return;
        }
        out = T(v);
    }

    void duration(const Fields& f, const char* key, const std::string& path, Seconds& out) {
        auto* n = find(f, key);
        std::string s;
        if (!n || !scalar(*n, join(path, key), s)) return;
        if (auto d = parse_duration(s))
            out = *d;
        else
            error(*n, join(path, key), "\"" + s + "\" is not a duration (a number with s, m, h or d)");
    }

    void size(const Fields& f, const char* key, const std::string& path, uint64_t& out) {
        auto* n = find(f, key);
        std::string s;
        if (!n || !scalar(*n, join(path, key), s)) return;
        if (auto v = parse_size(s))
            out = *v;
        else
            error(*n, join(path, key), "\"" + s + "\" is not a size (a number of bytes, or with k, M or G)");
    }

    template <typename E>
    void choice(const Fields& f, const char* key, const std::string& path, E& out,
                std::initializer_list<std::pair<const char*, E>> options) {
        auto* n = find(f, key);
        std::string s;
        if (!n || !scalar(*n, join(path, key), s)) return;
        std::string names;
        for (auto& [name, value] : options) {
            if (s == name) {
                out = value;
                return;
            }
            names += names.empty() ? name : std::string(" | ") + name;
        }
        error(*n, join(path, key), "\"" + s + "\" is not one of " + names);
    }

    // A list of strings; a single string is taken as a list of one.
    bool strings(const YAML::Node& n, const std::string& path, std::vector<std::string>& out) {
        out.clear();
        if (n.IsScalar()) {
            out.push_back(n.Scalar());
            return true;
        }
        if (!n.IsSequence()) {
            error(n, path, "expected a list of values");
            return false;
        }
        bool ok = true;
        for (const auto& item : n) {
            std::string s;
            if (scalar(item, path, s))
                out.push_back(s);
            else
                ok = false;
        }
        return ok;
    }

    static const YAML::Node* find(const Fields& f, const char* key) {
        auto it = f.find(key);
        return it == f.end() ? nullptr : &it->second.value;
    }
    static std::string join(const std::string& path, const char* key) { return path.empty() ? key : path + "." + key; }

    const std::string& file() const { return m_file; }

private:
    static size_t distance(const std::string& a, const std::string& b) {
        std::vector<size_t> row(b.size() + 1);
        for (size_t j = 0; j <= b.size(); ++j)
            row[j] = j;
        for (size_t i = 1; i <= a.size(); ++i) {
            size_t diagonal = row[0];
            row[0] = i;
            for (size_t j = 1; j <= b.size(); ++j) {
                size_t up = row[j];
                row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] == b[j - 1] ? 0 : 1)});
                diagonal = up;
            }
        }
        return row[b.size()];
    }

    static std::string suggestion(const std::string& key, std::initializer_list<const char*> allowed) {
        for (const char* a : allowed)
            if (distance(key, a) <= 2) return " (did you mean " + std::string(a) + "?)";
        std::string list;
        for (const char* a : allowed)
            list += list.empty() ? a : std::string(", ") + a;
        return " (expected one of: " + list + ")";
    }

    std::string m_file;
    std::vector<Diagnostic>& m_diags;
};

const std::initializer_list<std::pair<const char*, Security>> k_security = {{"none", Security::None},
                                                                            {"opportunistic", Security::Opportunistic},
                                                                            {"mandatory", Security::Mandatory},
                                                                            {"implicit", Security::Implicit}};

void load_listen(Walker& w, const YAML::Node& n, Config& c) {
    if (!n.IsSequence()) {
        w.error(n, "listen", "expected a list of listeners");
        return;
    }
    c.listen.clear();
    size_t index = 0;
    for (const auto& item : n) {
        std::string path = "listen[" + std::to_string(index++) + "]";
        auto f = w.mapping(item, path, {"address", "tls", "auth", "bare_newline"});
        if (!f) continue;
        Listen l;
        l.mark = w.mark(item);
        if (!f->count("address")) {
            w.error(item, path + ".address", "missing; give host:port, e.g. 0.0.0.0:25 or [::]:25");
            continue;
        }
        w.string(*f, "address", path, l.address);
        auto hp = parse_listen_address(l.address);
        if (!hp)
            w.error(f->at("address").value, path + ".address",
                    "\"" + l.address + "\" is not IP:PORT (use [::]:25 for IPv6)");
        else
            l.endpoint = *hp;
        w.choice(*f, "tls", path, l.tls,
                 {{"none", ListenTls::None}, {"starttls", ListenTls::StartTls}, {"implicit", ListenTls::Implicit}});
        w.choice(*f, "auth", path, l.auth,
                 {{"none", ListenAuth::None}, {"optional", ListenAuth::Optional}, {"required", ListenAuth::Required}});
        w.choice(*f, "bare_newline", path, l.bare_newline,
                 {{"accept", BareNewline::Accept}, {"reject", BareNewline::Reject}});
        c.listen.push_back(l);
    }
}

void load_clients(Walker& w, const YAML::Node& n, Config& c) {
    std::vector<std::string> items;
    if (!w.strings(n, "clients", items)) return;
    c.clients.clear();
    size_t i = 0;
    for (const auto& text : items) {
        std::string why;
        auto cidr = Cidr::parse(text, &why);
        const YAML::Node at = n.IsSequence() ? n[i] : n;
        if (!cidr)
            w.error(at, "clients", "\"" + text + "\" is not a network (" + why + "), e.g. 10.20.0.0/16");
        else
            c.clients.push_back(*cidr);
        ++i;
    }
}

void load_tls(Walker& w, const YAML::Node& n, Config& c) {
    auto f = w.mapping(n, "tls", {"certificate", "key"});
    if (!f) return;
    ServerTls t;
    w.string(*f, "certificate", "tls", t.certificate);
    w.string(*f, "key", "tls", t.key);
    std::string why;
    if (t.certificate.empty())
        w.error(n, "tls.certificate", "missing; the PEM file offered to clients");
    else if (!check_readable(t.certificate, why))
        w.error(f->at("certificate").value, "tls.certificate", why);
    if (t.key.empty())
        w.error(n, "tls.key", "missing; the PEM private key of tls.certificate");
    else if (!check_readable(t.key, why))
        w.error(f->at("key").value, "tls.key", why);
    c.tls = t;
}

void load_sasl(Walker& w, const YAML::Node& n, Config& c) {
    auto f = w.mapping(n, "sasl", {"sasldb", "mechanisms", "plaintext_without_tls"});
    if (!f) return;
    ServerSasl s;
    w.string(*f, "sasldb", "sasl", s.sasldb);
    if (auto* m = Walker::find(*f, "mechanisms")) w.strings(*m, "sasl.mechanisms", s.mechanisms);
    w.boolean(*f, "plaintext_without_tls", "sasl", s.plaintext_without_tls);
    if (s.sasldb.empty()) w.error(n, "sasl.sasldb", "missing; the Cyrus sasldb file with the users");
    c.sasl = s;
}

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

void load_upstream_auth(Walker& w, const YAML::Node& n, const std::string& path, Upstream& u) {
    auto f = w.mapping(n, path,
                       {"username", "password_file", "token_file", "token_command", "mechanisms", "allow_plaintext"});
    if (!f) return;
    UpstreamAuth a;
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
    if (!a.password_file.empty() && !check_readable(a.password_file, why))
        w.error(f->at("password_file").value, path + ".password_file", why);
    if (!a.token_file.empty() && !check_readable(a.token_file, why))
        w.error(f->at("token_file").value, path + ".token_file", why);
    int secrets = !a.password_file.empty() + !a.token_file.empty() + !a.token_command.empty();
    if (secrets != 1)
        w.error(n, path, "give exactly one of password_file, token_file (XOAUTH2) or token_command (XOAUTH2)");
    u.auth = a;
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
        auto f = w.mapping(it->second, path, {"host", "port", "security", "verify", "ca_file", "auth"});
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
        if (u.host.empty())
            w.error(it->second, path + ".host", "missing; the smarthost's name or address");
        else if (!check_host(u.host, why))
            w.error(f->at("host").value, path + ".host", why);
        c.upstreams.push_back(u);
    }
}

void load_limits(Walker& w, const YAML::Node& n, Config& c) {
    auto f = w.mapping(n, "limits",
                       {"message_size", "recipients", "connections", "connections_per_client", "command_timeout",
                        "data_timeout", "errors", "line_length"});
    if (!f) return;
    auto& l = c.limits;
    w.size(*f, "message_size", "limits", l.message_size);
    w.number(*f, "recipients", "limits", l.recipients, 1, 100000);
    w.number(*f, "connections", "limits", l.connections, 1, 1000000);
    w.number(*f, "connections_per_client", "limits", l.connections_per_client, 1, 1000000);
    w.duration(*f, "command_timeout", "limits", l.command_timeout);
    w.duration(*f, "data_timeout", "limits", l.data_timeout);
    w.number(*f, "errors", "limits", l.errors, 1, 1000);
    w.size(*f, "line_length", "limits", l.line_length);
    if (l.message_size < 1024) w.error(f->at("message_size").value, "limits.message_size", "must be at least 1k");
    if (l.line_length < 998) w.error(f->at("line_length").value, "limits.line_length", "must be at least 998");
    if (l.command_timeout.count() == 0) w.error(n, "limits.command_timeout", "must be more than 0s");
    if (l.data_timeout.count() == 0) w.error(n, "limits.data_timeout", "must be more than 0s");
}

void load_delivery(Walker& w, const YAML::Node& n, Config& c) {
    auto f = w.mapping(n, "delivery",
                       {"concurrency", "destination_concurrency", "connection_reuse", "line_length", "timeouts"});
    if (!f) return;
    auto& d = c.delivery;
    w.number(*f, "concurrency", "delivery", d.concurrency, 1, 100000);
    w.number(*f, "destination_concurrency", "delivery", d.destination_concurrency, 1, 10000);
    w.duration(*f, "connection_reuse", "delivery", d.connection_reuse);
    w.number(*f, "line_length", "delivery", d.line_length, 78, 100000);
    auto* t = Walker::find(*f, "timeouts");
    if (!t) return;
    auto tf = w.mapping(*t, "delivery.timeouts",
                        {"connect", "helo", "mail", "rcpt", "data_init", "data_xfer", "data_done", "rset", "quit"});
    if (!tf) return;
    auto& to = d.timeouts;
    const std::string path = "delivery.timeouts";
    for (auto [key, value] : {std::pair{"connect", &to.connect},
                              {"helo", &to.helo},
                              {"mail", &to.mail},
                              {"rcpt", &to.rcpt},
                              {"data_init", &to.data_init},
                              {"data_xfer", &to.data_xfer},
                              {"data_done", &to.data_done},
                              {"rset", &to.rset},
                              {"quit", &to.quit}}) {
        w.duration(*tf, key, path, *value);
        if (value->count() == 0 && tf->count(key)) w.error(tf->at(key).value, path + "." + key, "must be more than 0s");
    }
}

void load_small_sections(Walker& w, const Fields& top, Config& c) {
    if (auto* n = Walker::find(top, "direct")) {
        if (auto f = w.mapping(*n, "direct", {"security", "port"})) {
            w.choice(*f, "security", "direct", c.direct.security, k_security);
            w.number(*f, "port", "direct", c.direct.port, 1, 65535);
        }
    }
    if (auto* n = Walker::find(top, "dns")) {
        if (auto f = w.mapping(*n, "dns", {"servers", "timeout", "attempts"})) {
            w.duration(*f, "timeout", "dns", c.dns.timeout);
            w.number(*f, "attempts", "dns", c.dns.attempts, 1, 10);
            if (c.dns.timeout.count() == 0) w.error(f->at("timeout").value, "dns.timeout", "must be more than 0s");
            std::vector<std::string> servers;
            if (auto* s = Walker::find(*f, "servers"); s && w.strings(*s, "dns.servers", servers)) {
                for (const auto& text : servers) {
                    if (auto hp = parse_dns_server(text))
                        c.dns.servers.push_back(*hp);
                    else
                        w.error(*s, "dns.servers", "\"" + text + "\" is not IP or IP:PORT");
                }
            }
        }
    }
    if (auto* n = Walker::find(top, "queue")) {
        if (auto f = w.mapping(*n, "queue", {"dir", "retry", "lifetime", "delay_warning"})) {
            w.string(*f, "dir", "queue", c.queue.dir);
            w.duration(*f, "lifetime", "queue", c.queue.lifetime);
            w.duration(*f, "delay_warning", "queue", c.queue.delay_warning);
            std::vector<std::string> retry;
            if (auto* r = Walker::find(*f, "retry"); r && w.strings(*r, "queue.retry", retry)) {
                c.queue.retry.clear();
                for (const auto& text : retry) {
                    auto d = parse_duration(text);
                    if (!d || d->count() == 0)
                        w.error(*r, "queue.retry", "\"" + text + "\" is not a duration above 0");
                    else
                        c.queue.retry.push_back(*d);
                }
                if (retry.empty()) w.error(*r, "queue.retry", "needs at least one interval");
            }
            if (c.queue.dir.empty()) w.error(*n, "queue.dir", "must not be empty");
        }
    }
    if (auto* n = Walker::find(top, "log")) {
        if (auto f = w.mapping(*n, "log", {"file", "level", "format"})) {
            w.string(*f, "file", "log", c.log.file);
            w.choice(*f, "level", "log", c.log.level,
                     {{"debug", LogLevel::Debug},
                      {"info", LogLevel::Info},
                      {"warning", LogLevel::Warning},
                      {"error", LogLevel::Error}});
            w.choice(*f, "format", "log", c.log.format, {{"syslog", LogFormat::Syslog}, {"json", LogFormat::Json}});
        }
    }
    if (auto* n = Walker::find(top, "control")) {
        if (auto f = w.mapping(*n, "control", {"socket"})) w.string(*f, "socket", "control", c.control.socket);
    }
    if (auto* n = Walker::find(top, "doctor")) {
        if (auto f = w.mapping(*n, "doctor", {"dnsbl"})) {
            if (auto* d = Walker::find(*f, "dnsbl")) w.strings(*d, "doctor.dnsbl", c.doctor.dnsbl);
        }
    }
}

void load_document(Walker& w, const YAML::Node& root, Config& c) {
    if (root.IsNull()) return;  // an empty file: all defaults
    auto top = w.mapping(root, "",
                         {"hostname", "listen", "clients", "tls", "sasl", "sender", "routes", "upstreams", "limits",
                          "direct", "delivery", "dns", "queue", "log", "control", "doctor"});
    if (!top) return;
    if (auto* n = Walker::find(*top, "hostname")) {
        std::string why;
        if (w.scalar(*n, "hostname", c.hostname) && !check_host(c.hostname, why)) w.error(*n, "hostname", why);
    }
    if (auto* n = Walker::find(*top, "listen")) load_listen(w, *n, c);
    if (auto* n = Walker::find(*top, "clients")) load_clients(w, *n, c);
    if (auto* n = Walker::find(*top, "tls")) load_tls(w, *n, c);
    if (auto* n = Walker::find(*top, "sasl")) load_sasl(w, *n, c);
    if (auto* n = Walker::find(*top, "sender")) load_sender(w, *n, c);
    if (auto* n = Walker::find(*top, "routes")) load_routes(w, *n, c);
    if (auto* n = Walker::find(*top, "upstreams")) load_upstreams(w, *n, c);
    if (auto* n = Walker::find(*top, "limits")) load_limits(w, *n, c);
    if (auto* n = Walker::find(*top, "delivery")) load_delivery(w, *n, c);
    load_small_sections(w, *top, c);
}

bool has_error(const std::vector<Diagnostic>& diags) {
    for (const auto& d : diags)
        if (d.error) return true;
    return false;
}

}  // namespace

std::string Diagnostic::format() const {
    std::ostringstream out;
    out << file << ':' << line << ':' << column << ": " << (error ? "error" : "warning") << ": " << text;
    return out.str();
}

std::string LoadResult::first_error() const {
    for (const auto& d : diagnostics)
        if (d.error) return d.format();
    return {};
}

LoadResult load_string(const std::string& yaml, const std::string& source) {
    LoadResult result;
    Config c;
    c.source = source;
    Walker w(source, result.diagnostics);
    try {
        YAML::Node root = YAML::Load(yaml);
        load_document(w, root, c);
    } catch (const YAML::Exception& e) {
        result.diagnostics.push_back({source, e.mark.line + 1, e.mark.column + 1, true, "YAML syntax: " + e.msg});
        return result;
    }
    if (c.hostname.empty()) c.hostname = system_hostname();
    if (c.routes.empty()) c.routes.push_back(Route{{}, {}, {"direct"}, {}});
    validate(c, result.diagnostics);
    if (!has_error(result.diagnostics)) result.config = std::move(c);
    return result;
}

LoadResult load_file(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) {
        LoadResult r;
        r.diagnostics.push_back({path, 0, 0, true, "cannot read the configuration file"});
        return r;
    }
    std::ostringstream text;
    text << in.rdbuf();
    return load_string(text.str(), path);
}

std::string system_hostname() {
    char buf[256] = {};
    if (gethostname(buf, sizeof buf - 1) != 0 || buf[0] == 0) return "localhost";
    return buf;
}

std::vector<Listen> Config::default_listen() {
    Listen l;
    l.address = "127.0.0.1:2525";
    l.endpoint = {"127.0.0.1", 2525};
    return {l};
}

std::vector<Cidr> Config::default_clients() { return {*Cidr::parse("127.0.0.0/8"), *Cidr::parse("::1/128")}; }

std::string Config::control_socket() const {
    return control.socket.empty() ? queue.dir + "/control.sock" : control.socket;
}

const char* to_string(Security s) {
    switch (s) {
    case Security::None: return "none";
    case Security::Opportunistic: return "opportunistic";
    case Security::Mandatory: return "mandatory";
    case Security::Implicit: return "implicit";
    }
    return "?";
}

const char* to_string(ListenTls t) {
    switch (t) {
    case ListenTls::None: return "none";
    case ListenTls::StartTls: return "starttls";
    case ListenTls::Implicit: return "implicit";
    }
    return "?";
}

const char* to_string(ListenAuth a) {
    switch (a) {
    case ListenAuth::None: return "none";
    case ListenAuth::Optional: return "optional";
    case ListenAuth::Required: return "required";
    }
    return "?";
}

}  // namespace conf
