// YAML -> Config. The walker (config_walker.hpp) checks shapes and types section by section and
// records each problem with the position of the offending node; validate() in config_checks.cpp
// then checks what spans sections (routes naming upstreams, listeners needing certificates).
#include "conf/config_load.hpp"

#include "conf/config_checks.hpp"
#include "conf/config_walker.hpp"

#include <pwd.h>
#include <unistd.h>
#include <algorithm>
#include <fstream>
#include <map>
#include <sstream>

namespace conf {

const std::initializer_list<std::pair<const char*, Security>> k_security = {{"none", Security::None},
                                                                            {"opportunistic", Security::Opportunistic},
                                                                            {"mandatory", Security::Mandatory},
                                                                            {"implicit", Security::Implicit}};

namespace {

// tls_protocols: [tls1.0, tls1.1, tls1.2] (a range without gaps) and tls_ciphers: modern | legacy.
void load_tls_protocols(Walker& w, const Fields& f, const std::string& path, Listen& l) {
    w.choice(f, "tls_ciphers", path, l.tls_ciphers, {{"modern", TlsCiphers::Modern}, {"legacy", TlsCiphers::Legacy}});
    auto* n = Walker::find(f, "tls_protocols");
    if (!n) return;
    std::vector<std::string> names;
    if (!w.strings(*n, path + ".tls_protocols", names)) return;
    bool seen[3] = {false, false, false};
    for (const auto& name : names) {
        int v = name == "tls1.0" ? 0 : name == "tls1.1" ? 1 : name == "tls1.2" ? 2 : -1;
        if (v < 0) {
            w.error(*n, path + ".tls_protocols", "\"" + name + "\" is not one of tls1.0, tls1.1, tls1.2");
            return;
        }
        seen[v] = true;
    }
    int low = 0, high = 2;
    while (low < 3 && !seen[low])
        low++;
    while (high >= 0 && !seen[high])
        high--;
    if (low > high) return w.error(*n, path + ".tls_protocols", "needs at least one protocol");
    for (int v = low; v <= high; v++)
        if (!seen[v])
            return w.error(*n, path + ".tls_protocols", "must be a range without gaps, e.g. [tls1.0, tls1.1, tls1.2]");
    l.tls_min = TlsVersion(low);
    l.tls_max = TlsVersion(high);
}

void load_listen(Walker& w, const YAML::Node& n, Config& c) {
    if (!n.IsSequence()) {
        w.error(n, "listen", "expected a list of listeners");
        return;
    }
    c.listen.clear();
    size_t index = 0;
    for (const auto& item : n) {
        std::string path = "listen[" + std::to_string(index++) + "]";
        auto f = w.mapping(item, path,
                           {"address", "tls", "auth", "bare_newline", "clients", "tls_protocols", "tls_ciphers",
                            "proxy_protocol", "proxies"});
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
        if (auto* clients = Walker::find(*f, "clients")) {
            l.clients.emplace();
            load_networks(w, *clients, path + ".clients", *l.clients);
        }
        load_tls_protocols(w, *f, path, l);
        w.boolean(*f, "proxy_protocol", path, l.proxy_protocol);
        if (auto* proxies = Walker::find(*f, "proxies")) load_networks(w, *proxies, path + ".proxies", l.proxies);
        if (l.proxy_protocol && l.proxies.empty())
            w.error(item, path + ".proxies",
                    "missing: with proxy_protocol: true, give the load balancers' addresses (only they may send the "
                    "PROXY header, or anyone could claim any client address), e.g. proxies: [10.0.0.5/32]");
        else if (!l.proxy_protocol && f->count("proxies"))
            w.error(f->at("proxies").value, path + ".proxies", "has no effect without proxy_protocol: true");
        c.listen.push_back(l);
    }
}

}  // namespace

void load_networks(Walker& w, const YAML::Node& n, const std::string& path, std::vector<Cidr>& out) {
    std::vector<std::string> items;
    if (!w.strings(n, path, items)) return;
    out.clear();
    size_t i = 0;
    for (const auto& text : items) {
        std::string why;
        auto cidr = Cidr::parse(text, &why);
        const YAML::Node at = n.IsSequence() ? n[i] : n;
        if (!cidr)
            w.error(at, path, "\"" + text + "\" is not a network (" + why + "), e.g. 10.20.0.0/16");
        else
            out.push_back(*cidr);
        ++i;
    }
}

namespace {

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
    auto f = w.mapping(n, "sasl", {"sasldb", "pwcheck", "saslauthd_socket", "mechanisms", "plaintext_without_tls"});
    if (!f) return;
    ServerSasl s;
    w.choice(*f, "pwcheck", "sasl", s.pwcheck,
             {{"sasldb", ServerSasl::Check::Sasldb}, {"saslauthd", ServerSasl::Check::Saslauthd}});
    w.string(*f, "sasldb", "sasl", s.sasldb);
    w.string(*f, "saslauthd_socket", "sasl", s.saslauthd_socket);
    const YAML::Node* mechanisms = Walker::find(*f, "mechanisms");
    if (mechanisms) w.strings(*mechanisms, "sasl.mechanisms", s.mechanisms);
    w.boolean(*f, "plaintext_without_tls", "sasl", s.plaintext_without_tls);
    if (s.pwcheck == ServerSasl::Check::Sasldb && s.sasldb.empty())
        w.error(n, "sasl.sasldb", "missing; the Cyrus sasldb file with the users (or pwcheck: saslauthd)");
    if (s.pwcheck == ServerSasl::Check::Saslauthd) {
        for (const auto& m : s.mechanisms)
            if (m != "PLAIN" && m != "LOGIN")
                w.error(mechanisms ? *mechanisms : n, "sasl.mechanisms",
                        m + " cannot work with pwcheck: saslauthd, which checks plain passwords: use PLAIN and LOGIN");
        if (s.saslauthd_socket.empty() || s.saslauthd_socket.front() != '/')
            w.error(n, "sasl.saslauthd_socket", "must be an absolute path, e.g. /var/run/saslauthd/mux");
    }
    c.sasl = s;
}

void load_limits(Walker& w, const YAML::Node& n, Config& c) {
    auto f = w.mapping(
        n, "limits",
        {"message_size", "recipients", "connections", "connections_per_client", "command_timeout", "data_timeout",
         "handshake_timeout", "errors", "line_length", "address_literals", "connection_rate"});
    if (!f) return;
    auto& l = c.limits;
    w.size(*f, "message_size", "limits", l.message_size);
    w.number(*f, "recipients", "limits", l.recipients, 1, 100000);
    w.number(*f, "connections", "limits", l.connections, 1, 1000000);
    w.number(*f, "connections_per_client", "limits", l.connections_per_client, 1, 1000000);
    w.duration(*f, "command_timeout", "limits", l.command_timeout);
    w.duration(*f, "data_timeout", "limits", l.data_timeout);
    w.duration(*f, "handshake_timeout", "limits", l.handshake_timeout);
    w.number(*f, "errors", "limits", l.errors, 1, 1000);
    w.size(*f, "line_length", "limits", l.line_length);
    w.choice(*f, "address_literals", "limits", l.address_literals, {{"reject", false}, {"allow", true}});
    load_rate(w, *f, "connection_rate", "limits", l.connection_rate);
    if (l.message_size < 1024) w.error(f->at("message_size").value, "limits.message_size", "must be at least 1k");
    if (l.line_length < 998) w.error(f->at("line_length").value, "limits.line_length", "must be at least 998");
    if (l.command_timeout.count() == 0) w.error(n, "limits.command_timeout", "must be more than 0s");
    if (l.data_timeout.count() == 0) w.error(n, "limits.data_timeout", "must be more than 0s");
    if (l.handshake_timeout.count() == 0) w.error(n, "limits.handshake_timeout", "must be more than 0s");
}

void load_delivery(Walker& w, const YAML::Node& n, Config& c) {
    auto f = w.mapping(
        n, "delivery",
        {"concurrency", "destination_concurrency", "initial_concurrency", "recipient_limit", "address_preference",
         "connection_reuse", "reuse_messages", "reuse_time", "line_length", "timeouts"});
    if (!f) return;
    auto& d = c.delivery;
    w.number(*f, "concurrency", "delivery", d.concurrency, 1, 100000);
    w.number(*f, "destination_concurrency", "delivery", d.destination_concurrency, 1, 10000);
    w.number(*f, "initial_concurrency", "delivery", d.initial_concurrency, 1, 10000);
    w.number(*f, "recipient_limit", "delivery", d.recipient_limit, 1, 100000);
    w.choice(*f, "address_preference", "delivery", d.address_preference,
             {{"any", AddressPreference::Any}, {"ipv4", AddressPreference::Ipv4}, {"ipv6", AddressPreference::Ipv6}});
    w.duration(*f, "connection_reuse", "delivery", d.connection_reuse);
    w.number(*f, "reuse_messages", "delivery", d.reuse_messages, 1, 1000000);
    w.duration(*f, "reuse_time", "delivery", d.reuse_time);
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
        if (auto f = w.mapping(*n, "direct", {"security", "port", "source_address"})) {
            w.choice(*f, "security", "direct", c.direct.security, k_security);
            w.number(*f, "port", "direct", c.direct.port, 1, 65535);
            w.string(*f, "source_address", "direct", c.direct.source_address);
            if (!c.direct.source_address.empty() && !IpAddress::parse(c.direct.source_address))
                w.error(f->at("source_address").value, "direct.source_address",
                        "\"" + c.direct.source_address + "\" is not an IP address of this machine");
        }
    }
    if (auto* n = Walker::find(top, "dns")) {
        if (auto f = w.mapping(*n, "dns", {"servers", "timeout", "attempts", "client_names"})) {
            w.duration(*f, "timeout", "dns", c.dns.timeout);
            w.boolean(*f, "client_names", "dns", c.dns.client_names);
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
        if (auto f = w.mapping(*n, "queue", {"dir", "retry", "lifetime", "delay_warning", "active_limit"})) {
            w.string(*f, "dir", "queue", c.queue.dir);
            w.number(*f, "active_limit", "queue", c.queue.active_limit, 1, 1000000);
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
            std::string why;
            if (f->count("dir") && !c.queue.dir.empty() && !check_writable_place(c.queue.dir, why))
                w.error(f->at("dir").value, "queue.dir", why);
        }
    }
    if (auto* n = Walker::find(top, "log")) {
        if (auto f = w.mapping(*n, "log", {"file", "level", "format", "syslog", "syslog_socket"})) {
            w.string(*f, "file", "log", c.log.file);
            std::string why;
            if (!c.log.file.empty() && !check_writable_place(c.log.file, why))
                w.error(f->at("file").value, "log.file", why);
            w.boolean(*f, "syslog", "log", c.log.syslog);
            w.string(*f, "syslog_socket", "log", c.log.syslog_socket);
            w.choice(*f, "level", "log", c.log.level,
                     {{"debug", LogLevel::Debug},
                      {"info", LogLevel::Info},
                      {"warning", LogLevel::Warning},
                      {"error", LogLevel::Error}});
            w.choice(*f, "format", "log", c.log.format, {{"syslog", LogFormat::Syslog}, {"json", LogFormat::Json}});
        }
    }
    if (auto* n = Walker::find(top, "metrics")) {
        if (auto f = w.mapping(*n, "metrics", {"listen"})) {
            w.string(*f, "listen", "metrics", c.metrics.listen);
            if (!c.metrics.listen.empty()) {
                if (auto hp = parse_listen_address(c.metrics.listen))
                    c.metrics.endpoint = *hp;
                else
                    w.error(f->at("listen").value, "metrics.listen",
                            "\"" + c.metrics.listen + "\" is not IP:PORT, e.g. 127.0.0.1:9465");
            }
        }
    }
    if (auto* n = Walker::find(top, "control")) {
        if (auto f = w.mapping(*n, "control", {"socket"})) {
            w.string(*f, "socket", "control", c.control.socket);
            std::string why;
            if (!c.control.socket.empty() && !check_writable_place(c.control.socket, why))
                w.error(f->at("socket").value, "control.socket", why);
        }
    }
    if (auto* n = Walker::find(top, "admin")) {
        if (auto f = w.mapping(*n, "admin", {"listen", "accounts", "https"})) {
            w.string(*f, "accounts", "admin", c.admin.accounts);
            if (c.admin.accounts.empty()) w.error(*n, "admin.accounts", "must not be empty");
            w.string(*f, "listen", "admin", c.admin.listen);
            std::optional<bool> https;
            if (f->count("https")) {
                bool b = false;
                w.boolean(*f, "https", "admin", b);
                https = b;
            }
            if (!c.admin.listen.empty()) {
                auto hp = parse_listen_address(c.admin.listen);
                auto ip = hp ? IpAddress::parse(hp->host) : std::nullopt;
                bool loopback = ip && (ip->v6 ? *ip == *IpAddress::parse("::1") : ip->bytes[0] == 127);
                c.admin.https = https.value_or(!loopback);
                auto& at = f->at(f->count("https") ? "https" : "listen").value;
                if (!hp) {
                    w.error(f->at("listen").value, "admin.listen",
                            "\"" + c.admin.listen + "\" is not IP:PORT, e.g. 127.0.0.1:8025");
                } else if (!loopback && !c.admin.https) {
                    w.error(at, "admin.https",
                            c.admin.listen +
                                " can be reached from other hosts: the console does not speak plain "
                                "HTTP there (passwords and session cookies would cross the network in "
                                "clear); remove https: false to serve HTTPS with the tls: certificate");
                } else if (c.admin.https && !c.tls) {
                    w.error(at, "admin.listen",
                            c.admin.listen + (loopback ? " with https: true" : " can be reached from other hosts, so") +
                                " the console speaks HTTPS with the tls: certificate: give tls: { certificate, key }, "
                                "or listen on 127.0.0.1 and reach it through an SSH tunnel "
                                "(ssh -L 8025:127.0.0.1:8025 HOST)");
                } else {
                    c.admin.endpoint = *hp;
                }
            }
        }
    }
    if (auto* n = Walker::find(top, "notify")) {
        if (auto f = w.mapping(*n, "notify", {"postmaster", "classes", "queue_age"})) {
            Notify no;
            no.mark = w.mark(*n);
            w.string(*f, "postmaster", "notify", no.postmaster);
            w.duration(*f, "queue_age", "notify", no.queue_age);
            if (auto* cl = Walker::find(*f, "classes")) {
                std::vector<std::string> classes;
                w.strings(*cl, "notify.classes", classes);
                no.bounce = no.delay = no.resource = false;
                for (const auto& k : classes) {
                    if (k == "bounce")
                        no.bounce = true;
                    else if (k == "delay")
                        no.delay = true;
                    else if (k == "resource")
                        no.resource = true;
                    else
                        w.error(*cl, "notify.classes", "\"" + k + "\" is not one of bounce, delay, resource");
                }
            }
            if (no.postmaster.empty() || no.postmaster.find('@') == std::string::npos)
                w.error(*n, "notify.postmaster", "missing; the address that gets the copies and alerts");
            if (no.queue_age.count() == 0) w.error(*n, "notify.queue_age", "must be more than 0s");
            c.notify = no;
        }
    }
    if (auto* n = Walker::find(top, "doctor")) {
        if (auto f = w.mapping(*n, "doctor", {"dnsbl"})) {
            if (auto* d = Walker::find(*f, "dnsbl")) w.strings(*d, "doctor.dnsbl", c.doctor.dnsbl);
        }
    }
}

void load_document(Walker& w, const YAML::Node& root, Config& c) {
    if (root.IsNull()) return;  // an empty file: all defaults
    auto top = w.mapping(root, "", {"hostname",  "listen", "clients", "policy",   "tls",   "sasl",  "sender", "routes",
                                    "upstreams", "limits", "direct",  "delivery", "dns",   "queue", "log",    "control",
                                    "metrics",   "doctor", "user",    "notify",   "admin", "dkim"});
    if (!top) return;
    if (auto* n = Walker::find(*top, "hostname")) {
        std::string why;
        if (w.scalar(*n, "hostname", c.hostname) && !check_host(c.hostname, why)) w.error(*n, "hostname", why);
    }
    if (auto* n = Walker::find(*top, "user")) {
        if (w.scalar(*n, "user", c.user) && !c.user.empty() && !getpwnam(c.user.c_str()))
            w.warning(*n, "user",
                      "no account named \"" + c.user +
                          "\" on this machine: smtpgw serve will not start "
                          "as root until there is one");
    }
    if (auto* n = Walker::find(*top, "listen")) load_listen(w, *n, c);
    if (auto* n = Walker::find(*top, "clients")) load_networks(w, *n, "clients", c.clients);
    if (auto* n = Walker::find(*top, "policy")) load_policy(w, *n, c);
    if (auto* n = Walker::find(*top, "tls")) load_tls(w, *n, c);
    if (auto* n = Walker::find(*top, "sasl")) load_sasl(w, *n, c);
    if (auto* n = Walker::find(*top, "sender")) load_sender(w, *n, c);
    if (auto* n = Walker::find(*top, "routes")) load_routes(w, *n, c);
    if (auto* n = Walker::find(*top, "upstreams")) load_upstreams(w, *n, c);
    if (auto* n = Walker::find(*top, "limits")) load_limits(w, *n, c);
    if (auto* n = Walker::find(*top, "delivery")) load_delivery(w, *n, c);
    if (auto* n = Walker::find(*top, "dkim")) load_dkim(w, *n, c);
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
    out << file;
    if (line > 0) out << ':' << line << ':' << column;  // 0: not tied to a place in the file
    out << ": " << (error ? "error" : "warning") << ": " << text;
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
