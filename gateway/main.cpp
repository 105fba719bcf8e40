// smtpgw: command-line entry point. Start-up errors are caught here, printed as one line,
// and end the program with exit status 1.
#include "auth/sasl_library.hpp"
#include "auth/sasl_server.hpp"
#include "auth/sasldb_users.hpp"
#include "conf/config_load.hpp"
#include "gateway/common/log.hpp"
#include "gateway/common/queue_id.hpp"
#include "gateway/dns/dns.hpp"
#include "gateway/ops/admin_accounts.hpp"
#include "gateway/ops/control.hpp"
#include "gateway/ops/doctor.hpp"
#include "gateway/ops/privileges.hpp"
#include "gateway/ops/probe.hpp"
#include "gateway/queue/queue_admin.hpp"
#include "gateway/queue/queue_view.hpp"
#include "gateway/queue/spool.hpp"
#include "gateway/serve.hpp"
#include "gateway/smtp/dkim.hpp"
#include "gateway/smtp/tls_contexts.hpp"
#include "gateway/smtpd/access_policy.hpp"
#include "tls/client_assertion.hpp"
#include "tls/password_hash.hpp"
#include "tls/tls_engine.hpp"
#include "tls/tls_library.hpp"

#include <spdlog/version.h>
#include <uv.h>

#include <fcntl.h>
#include <pwd.h>
#include <sys/stat.h>
#include <termios.h>
#include <unistd.h>
#include <algorithm>
#include <cctype>
#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace {

struct Arguments {
    std::vector<std::string> words;
    std::string config_file;
    bool json = false;
    std::map<std::string, std::string> options;  // --security LEVEL and the like
};

// Options that take a value, for `probe`.
const char* const k_value_options[] = {"--security", "--user", "--password-file", "--token-file", "--mechanisms",
                                       "--ca-file",  "--ip",   "--out",           "--type",       "--bits"};

void usage(std::ostream& out) {
    out << "usage: smtpgw COMMAND [-c FILE]\n"
           "  serve                 run the gateway in the foreground\n"
           "  check-config          validate the configuration\n"
           "  queue list [--json]   list queued messages\n"
           "  queue show ID         show one queued message\n"
           "  queue flush [ID]      try one message, or every message, now\n"
           "  queue delete ID|--all remove messages from the queue (no bounce)\n"
           "  queue hold ID|--all   keep messages from being tried until released\n"
           "  queue import DIR      move the messages of another instance's spool into this one\n"
           "                        (both gateways stopped; run again after a crash to finish)\n"
           "  queue release ID|--all  try held messages again\n"
           "  probe UPSTREAM        check an upstream from upstreams: as delivery would use it\n"
           "  probe HOST:PORT [--security none|opportunistic|mandatory|implicit] [--verify]\n"
           "        [--ca-file F] [--user U (--password-file F | --token-file F)] [--mechanisms M,...]\n"
           "  user add USER         set USER's password in sasl.sasldb (read from standard input,\n"
           "                        or asked for twice on a terminal)\n"
           "  user delete USER      remove USER from sasl.sasldb\n"
           "  user list             list the users in sasl.sasldb\n"
           "  reload                check the configuration, then have the running gateway apply it\n"
           "  admin add NAME        set NAME's console password in admin.accounts (read as for user add)\n"
           "  admin delete NAME     remove NAME from admin.accounts\n"
           "  admin list            list the console accounts\n"
           "  doctor [--ip ADDR] [--json]\n"
           "                        deliverability preflight: hostname, reverse DNS, SPF, blocklists,\n"
           "                        sender addresses, upstreams\n"
           "  dkim keygen DOMAIN SELECTOR [--type rsa|ed25519] [--bits N] [--out FILE]\n"
           "                        write a DKIM private key (0600) and print the TXT record to publish\n"
           "  version               print versions\n"
           "Without -c, the embedded default configuration is used.\n";
}

std::optional<Arguments> parse_arguments(int argc, char** argv) {
    Arguments a;
    for (int i = 1; i < argc; ++i) {
        std::string arg = argv[i];
        if (arg == "-c" || arg == "--config") {
            if (i + 1 >= argc) return std::nullopt;
            a.config_file = argv[++i];
        } else if (arg == "--json") {
            a.json = true;
        } else if (arg == "--verify") {
            a.options[arg] = "yes";
        } else if (arg == "--all") {
            a.words.push_back(arg);  // queue delete --all
        } else if (std::find(std::begin(k_value_options), std::end(k_value_options), arg) !=
                   std::end(k_value_options)) {
            if (i + 1 >= argc) return std::nullopt;
            a.options[arg] = argv[++i];
        } else if (!arg.empty() && arg[0] == '-') {
            return std::nullopt;
        } else {
            a.words.push_back(arg);
        }
    }
    if (a.words.empty()) return std::nullopt;
    return a;
}

// The shape of each command line: its words and the options it takes. Anything else is a usage
// error (exit 2) before any file is read. "ID" stands for a queue ID.
struct Shape {
    std::vector<const char*> words;
    std::vector<const char*> options;
};
const Shape k_shapes[] = {
    {{"serve"}, {}},
    {{"check-config"}, {}},
    {{"version"}, {}},
    {{"help"}, {}},
    {{"reload"}, {}},
    {{"doctor"}, {"--ip", "--json"}},
    {{"dkim", "keygen", "DOMAIN", "SELECTOR"}, {"--type", "--bits", "--out"}},
    {{"admin", "add", "USER"}, {}},
    {{"admin", "delete", "USER"}, {}},
    {{"admin", "list"}, {}},
    {{"probe", "TARGET"},
     {"--security", "--verify", "--ca-file", "--user", "--password-file", "--token-file", "--mechanisms"}},
    {{"user", "list"}, {}},
    {{"user", "add", "USER"}, {}},
    {{"user", "delete", "USER"}, {}},
    {{"queue", "list"}, {"--json"}},
    {{"queue", "show", "ID"}, {"--json"}},
    {{"queue", "flush"}, {}},
    {{"queue", "flush", "ID"}, {}},
    {{"queue", "delete", "ID"}, {}},
    {{"queue", "delete", "--all"}, {}},
    {{"queue", "import", "DIR"}, {}},
    {{"queue", "hold", "ID"}, {}},
    {{"queue", "hold", "--all"}, {}},
    {{"queue", "release", "ID"}, {}},
    {{"queue", "release", "--all"}, {}},
};

// Why the arguments fit no command, or empty when they fit one.
std::string shape_problem(const Arguments& a) {
    for (const auto& shape : k_shapes) {
        if (shape.words.size() != a.words.size()) continue;
        bool fits = true;
        for (size_t i = 0; i < a.words.size() && fits; ++i) {
            std::string_view want = shape.words[i];
            bool placeholder = std::isupper(static_cast<unsigned char>(want[0]));  // ID, USER, TARGET
            fits = placeholder ? a.words[i] != "--all" : a.words[i] == want;
        }
        if (!fits) continue;
        auto allowed = [&](const std::string& o) {
            return std::any_of(shape.options.begin(), shape.options.end(), [&](const char* x) { return o == x; });
        };
        for (const auto& [option, value] : a.options)
            if (!allowed(option)) return option + " is not an option of " + shape.words[0];
        if (a.json && !allowed("--json")) return std::string("--json is not an option of ") + shape.words[0];
        for (size_t i = 0; i < a.words.size(); ++i)
            if (std::string_view(shape.words[i]) == "ID" && !gateway::QueueIdGenerator::is_valid(a.words[i]))
                return "\"" + a.words[i] + "\" is not a queue ID (upper-case hexadecimal, as queue list shows)";
        return {};
    }
    std::string given;
    for (const auto& w : a.words)
        given += (given.empty() ? "" : " ") + w;
    return "no command matches: " + given;
}

conf::LoadResult load(const Arguments& a) {
    return a.config_file.empty() ? conf::load_default() : conf::load_file(a.config_file);
}

// Prints errors (warnings are for check-config and serve); returns the configuration, or
// nothing after printing why there is none.
std::optional<conf::Config> load_or_report(const Arguments& a) {
    auto r = load(a);
    for (const auto& d : r.diagnostics)
        if (d.error) std::cerr << d.format() << "\n";
    return r.config;
}

int cmd_check_config(const Arguments& a) {
    auto r = load(a);
    for (const auto& d : r.diagnostics)
        std::cout << d.format() << "\n";
    if (!r.ok()) return 1;
    // The packaged unit checks as root what it then starts as root.
    if (auto problem = gateway::root_problem(*r.config); !problem.empty()) {
        std::cout << conf::Diagnostic{r.config->source, 0, 0, true, problem}.format() << "\n";
        return 1;
    }
    // A client certificate is loaded as a delivery would load it: a key of another certificate
    // shows now, not at the first connection.
    bool ok = true;
    for (const auto& u : r.config->upstreams) {
        if (u.tls_certificate.empty()) continue;
        std::string error;
        if (tls::client_context(gateway::TlsContexts::options_for(u), error)) continue;
        std::cout << conf::Diagnostic{r.config->source, u.mark.line, u.mark.column, true,
                                      "upstreams." + u.name + ".tls: " + error}
                         .format()
                  << "\n";
        ok = false;
    }
    // An account that may authenticate and then send as anyone is worth a word.
    if (r.config->sasl && r.config->sasl->pwcheck == conf::ServerSasl::Check::Sasldb) {
        std::vector<auth::SasldbUser> users;
        std::string error;
        gateway::AccessPolicy policy(r.config->policy);
        if (auth::list_users(r.config->sasl->sasldb, users, error))
            for (const auto& u : users)
                if (policy.may_send_as_anyone(u.name))
                    std::cout << conf::Diagnostic{r.config->source, 0, 0, false,
                                                  "sasl user " + u.name +
                                                      " may send as any address: no policy rule with senders: "
                                                      "applies to it (policy: - { match: { user: " +
                                                      u.name + " }, senders: [...] })"}
                                     .format()
                              << "\n";
    }
    // A listener for old devices needs TLS 1.0/1.1 in this system's mbedTLS.
    for (size_t i = 0; i < r.config->listen.size(); ++i) {
        const auto& l = r.config->listen[i];
        if (l.tls_min == conf::TlsVersion::Tls12 || tls::legacy_protocols_available()) continue;
        std::cout << conf::Diagnostic{r.config->source, l.mark.line, l.mark.column, true,
                                      "listen[" + std::to_string(i) +
                                          "].tls_protocols: this system's mbedTLS was built without TLS 1.0 and "
                                          "1.1, so no listener can offer them; remove tls1.0 and tls1.1"}
                         .format()
                  << "\n";
        ok = false;
    }
    // So is the certificate that signs OAuth 2.0 client assertions.
    for (const auto& u : r.config->upstreams) {
        if (!u.auth || !u.auth->oauth2 || u.auth->oauth2->certificate_file.empty()) continue;
        const auto& o = *u.auth->oauth2;
        std::string jwt, error;
        if (tls::sign_client_assertion(o.certificate_file, o.key_file, "{}", jwt, error)) continue;
        std::cout << conf::Diagnostic{r.config->source, u.mark.line, u.mark.column, true,
                                      "upstreams." + u.name + ".auth.oauth2: " + error}
                         .format()
                  << "\n";
        ok = false;
    }
    // DKIM keys are read as the signer reads them.
    for (size_t i = 0; i < r.config->dkim.size(); ++i) {
        const auto& d = r.config->dkim[i];
        std::string pem, error;
        auto info = gateway::dkim::read_key_file(d.key_file, pem, error);
        std::string where = "dkim[" + std::to_string(i) + "].key_file: ";
        bool bad = !info || (info->algorithm == gateway::dkim::Algorithm::RsaSha256 &&
                             info->bits < gateway::dkim::k_min_rsa_bits);
        if (info && info->algorithm == gateway::dkim::Algorithm::RsaSha256 &&
            info->bits < gateway::dkim::k_recommended_rsa_bits)
            error = d.key_file + " is an RSA key of " + std::to_string(info->bits) + " bits; " +
                    (bad ? "verifiers ignore signatures with keys under 1024 bits (RFC 8301)"
                         : "RFC 8301 asks for 2048 bits or more, and some receivers treat shorter keys as weak") +
                    "; make a new one with smtpgw dkim keygen " + d.domain + " NEW-SELECTOR";
        if (error.empty()) continue;
        std::cout << conf::Diagnostic{r.config->source, d.mark.line, d.mark.column, bad, where + error}.format()
                  << "\n";
        ok = ok && !bad;
    }
    if (!ok) return 1;
    std::cout << r.config->source << ": configuration is valid\n";
    return 0;
}

// `smtpgw dkim keygen DOMAIN SELECTOR`: the key goes where dkim: will name it, readable by its
// owner only (the gateway's user: account when run as root with a configuration naming one).
int cmd_dkim(const Arguments& a) {
    namespace dkim = gateway::dkim;
    const std::string &domain = a.words[2], &selector = a.words[3];
    auto option = [&](const char* name, const std::string& fallback) {
        auto it = a.options.find(name);
        return it == a.options.end() ? fallback : it->second;
    };
    std::string type = option("--type", "rsa");
    if (type != "rsa" && type != "ed25519") {
        std::cerr << "smtpgw: --type is rsa or ed25519\n";
        return 2;
    }
    auto algorithm = type == "rsa" ? dkim::Algorithm::RsaSha256 : dkim::Algorithm::Ed25519Sha256;
    std::string bits_text = option("--bits", "2048");
    unsigned bits = 0;
    if (bits_text.empty() || bits_text.size() > 5 || bits_text.find_first_not_of("0123456789") != std::string::npos ||
        (bits = unsigned(std::stoul(bits_text))) < 2048 || bits > 4096) {
        std::cerr << "smtpgw: --bits is 2048 to 4096 (RFC 8301: at least 2048 for new keys)\n";
        return 2;
    }
    if (domain.find('/') != std::string::npos || selector.find('/') != std::string::npos || domain[0] == '.' ||
        selector[0] == '.') {
        std::cerr << "smtpgw: \"" << domain << "\" and \"" << selector << "\" must be a domain and a selector\n";
        return 2;
    }
    std::string out = option("--out", "/etc/smtpgw/dkim/" + domain + "." + selector + ".key");
    std::string dir = out.find('/') == std::string::npos ? "." : out.substr(0, out.rfind('/'));
    if (!dir.empty() && ::mkdir(dir.c_str(), 0750) != 0 && errno != EEXIST) {
        std::cerr << "smtpgw: cannot create " << dir << ": " << std::strerror(errno) << "\n";
        return 1;
    }
    std::string pem = dkim::generate_key(algorithm, bits);
    std::string error;
    auto info = dkim::inspect_key(pem, error);
    if (!info) throw std::runtime_error(error);
    // O_EXCL: an existing key (published, signing mail) is never replaced.
    int fd = ::open(out.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        std::cerr << "smtpgw: cannot create " << out << ": " << std::strerror(errno)
                  << (errno == EEXIST ? " (keys are not replaced: choose a new selector, or --out)" : "") << "\n";
        return 1;
    }
    bool written = ::write(fd, pem.data(), pem.size()) == ssize_t(pem.size()) && ::fsync(fd) == 0;
    int saved = errno;
    ::close(fd);
    if (!written) {
        ::unlink(out.c_str());
        std::cerr << "smtpgw: cannot write " << out << ": " << std::strerror(saved) << "\n";
        return 1;
    }
    if (::geteuid() == 0 && !a.config_file.empty()) {
        auto r = load(a);
        if (r.config && !r.config->user.empty())
            if (const passwd* pw = ::getpwnam(r.config->user.c_str()))
                if (::chown(out.c_str(), pw->pw_uid, pw->pw_gid) != 0)
                    std::cerr << "smtpgw: warning: cannot give " << out << " to " << r.config->user << ": "
                              << std::strerror(errno) << "\n";
    }
    std::string name = selector + "._domainkey." + domain;
    std::string record = dkim::txt_record(*info);
    // Zone files take TXT strings of at most 255 octets; a 2048-bit key's record is longer.
    std::string strings;
    for (size_t i = 0; i < record.size(); i += 250)
        strings += std::string(strings.empty() ? "" : "\n\t") + "\"" + record.substr(i, 250) + "\"";
    std::cout << "wrote " << out << " (" << dkim::to_string(info->algorithm) << ", " << info->bits << " bits)\n\n"
              << "Publish this TXT record:\n"
              << name << ". IN TXT ( " << strings << " )\n\n"
              << "(as one value, for a DNS provider's web form:)\n"
              << record << "\n\n"
              << "and add to the configuration:\n"
              << "dkim:\n"
              << "  - { domain: " << domain << ", selector: " << selector << ", key_file: " << out << " }\n";
    return 0;
}

int cmd_version() {
    std::cout << "smtpgw " << SMTPGW_VERSION << "\n"
              << "libuv " << uv_version_string() << "\n"
              << tls::library_version() << "\n"
              << auth::library_version() << "\n"
              << "c-ares " << gateway::dns::library_version() << "\n"
              << "spdlog " << SPDLOG_VER_MAJOR << "." << SPDLOG_VER_MINOR << "." << SPDLOG_VER_PATCH << "\n";
    return 0;
}

// The upstream to probe: a name from upstreams:, or HOST:PORT with options.
std::optional<gateway::ProbeTarget> probe_target(const conf::Config& c, const Arguments& a, std::string& error) {
    gateway::ProbeTarget t;
    const std::string& what = a.words[1];
    for (const auto& u : c.upstreams)
        if (u.name == what) {
            t.upstream = u;
            t.configured = true;
            return t;
        }
    auto colon = what.rfind(':');
    if (colon == std::string::npos || colon == 0) {
        error = "no upstream named \"" + what + "\" in " + c.source + ", and not HOST:PORT";
        return std::nullopt;
    }
    auto& u = t.upstream;
    u.name = "probe";
    u.host = what.substr(0, colon);
    if (u.host.size() > 2 && u.host.front() == '[') u.host = u.host.substr(1, u.host.size() - 2);
    u.port = uint16_t(std::atoi(what.c_str() + colon + 1));
    auto opt = [&](const char* k) { return a.options.count(k) ? a.options.at(k) : std::string(); };
    std::string level = opt("--security").empty() ? "opportunistic" : opt("--security");
    if (level == "none")
        u.security = conf::Security::None;
    else if (level == "opportunistic")
        u.security = conf::Security::Opportunistic;
    else if (level == "mandatory")
        u.security = conf::Security::Mandatory;
    else if (level == "implicit")
        u.security = conf::Security::Implicit;
    else {
        error = "--security " + level + ": expected none, opportunistic, mandatory or implicit";
        return std::nullopt;
    }
    u.verify = !opt("--verify").empty();
    u.ca_file = opt("--ca-file");
    if (!opt("--user").empty()) {
        conf::UpstreamAuth auth;
        auth.username = opt("--user");
        auth.password_file = opt("--password-file");
        auth.token_file = opt("--token-file");
        std::string list = opt("--mechanisms");
        for (size_t pos = 0; pos < list.size();) {
            size_t end = list.find(',', pos);
            if (end == std::string::npos) end = list.size();
            if (end > pos) auth.mechanisms.push_back(list.substr(pos, end - pos));
            pos = end + 1;
        }
        if (auth.password_file.empty() && auth.token_file.empty()) {
            error = "--user needs --password-file or --token-file";
            return std::nullopt;
        }
        u.auth = auth;
    }
    if (u.port == 0) {
        error = "\"" + what + "\" has no usable port";
        return std::nullopt;
    }
    return t;
}

int cmd_probe(const Arguments& a) {
    auto config = load_or_report(a);
    if (!config) return 1;
    std::string error;
    auto target = probe_target(*config, a, error);
    if (!target) {
        std::cerr << "smtpgw: " << error << "\n";
        return 2;
    }
    return gateway::run_probe(*config, *target, std::cout);
}

// A password from the terminal (twice, without echo) or from standard input.
std::optional<std::string> read_password(std::string& error) {
    auto read_line = [](std::string& out) { return static_cast<bool>(std::getline(std::cin, out)); };
    std::string first;
    if (!isatty(STDIN_FILENO)) {
        if (!read_line(first) || first.empty()) {
            error = "no password on standard input";
            return std::nullopt;
        }
        return first;
    }
    termios old{};
    tcgetattr(STDIN_FILENO, &old);
    termios quiet = old;
    quiet.c_lflag &= ~tcflag_t(ECHO);
    tcsetattr(STDIN_FILENO, TCSANOW, &quiet);
    std::string second;
    std::cerr << "Password: " << std::flush;
    bool ok = read_line(first);
    std::cerr << "\nAgain: " << std::flush;
    ok = ok && read_line(second);
    std::cerr << "\n";
    tcsetattr(STDIN_FILENO, TCSANOW, &old);
    if (!ok || first.empty())
        error = "no password given";
    else if (first != second)
        error = "the passwords do not match";
    else
        return first;
    return std::nullopt;
}

// The group of `user:` may read a file the gateway reads as that account.
void give_to_gateway(const conf::Config& config, const std::string& path) {
    if (geteuid() != 0 || config.user.empty() || config.user == "root") return;
    if (struct passwd* pw = getpwnam(config.user.c_str())) {
        if (chown(path.c_str(), 0, pw->pw_gid) != 0 || chmod(path.c_str(), 0640) != 0)
            std::cerr << "smtpgw: warning: cannot give " << path << " to the group of " << config.user << ": "
                      << std::strerror(errno) << "\n";
    }
}

int cmd_admin(const Arguments& a) {
    auto config = load_or_report(a);
    if (!config) return 1;
    const auto& w = a.words;
    const std::string& path = config->admin.accounts;
    std::map<std::string, std::string> accounts;
    std::string error;
    if (!gateway::read_admin_accounts(path, accounts, error)) {
        std::cerr << "smtpgw: " << error << "\n";
        return 1;
    }
    if (w.size() == 2 && w[1] == "list") {
        for (const auto& [name, hash] : accounts)
            std::cout << name << "\n";
        return 0;
    }
    if (w.size() == 3 && !gateway::valid_admin_name(w[2])) {
        std::cerr << "smtpgw: \"" << w[2] << "\" is not an account name (letters, digits, . _ @ -)\n";
        return 2;
    }
    if (w.size() == 3 && w[1] == "add") {
        auto password = read_password(error);
        if (password && password->size() < 10) error = "the password is too short: 10 characters at least";
        std::string hash = password && password->size() >= 10 ? tls::hash_password(*password) : "";
        if (hash.empty()) {
            std::cerr << "smtpgw: " << (error.empty() ? "cannot hash the password" : error) << "\n";
            return 1;
        }
        accounts[w[2]] = hash;
        if (!gateway::write_admin_accounts(path, accounts, error)) {
            std::cerr << "smtpgw: " << error << "\n";
            return 1;
        }
        give_to_gateway(*config, path);
        std::cout << "admin " << w[2] << " set in " << path << "\n";
        return 0;
    }
    if (w.size() == 3 && w[1] == "delete") {
        if (!accounts.erase(w[2])) {
            std::cerr << "smtpgw: no admin " << w[2] << " in " << path << "\n";
            return 1;
        }
        if (!gateway::write_admin_accounts(path, accounts, error)) {
            std::cerr << "smtpgw: " << error << "\n";
            return 1;
        }
        std::cout << "admin " << w[2] << " deleted from " << path << "\n";
        return 0;
    }
    usage(std::cerr);
    return 2;
}

int cmd_user(const Arguments& a) {
    auto config = load_or_report(a);
    if (!config) return 1;
    const auto& w = a.words;
    if (!config->sasl) {
        std::cerr << "smtpgw: " << config->source << " has no sasl: section (sasldb: PATH)\n";
        return 1;
    }
    if (config->sasl->pwcheck == conf::ServerSasl::Check::Saslauthd) {
        std::cerr << "smtpgw: " << config->source
                  << " checks passwords with saslauthd (sasl.pwcheck): its accounts are in the directory or system "
                     "saslauthd uses, not in a sasldb\n";
        return 1;
    }
    const std::string& db = config->sasl->sasldb;
    std::string error;
    if (w.size() == 2 && w[1] == "list") {
        std::vector<auth::SasldbUser> users;
        if (!auth::list_users(db, users, error)) {
            std::cerr << "smtpgw: " << error << "\n";
            return 1;
        }
        for (const auto& u : users)
            std::cout << u.name << (u.realm == config->hostname ? "" : "@" + u.realm) << "\n";
        return 0;
    }
    if (w.size() == 3 && w[1] == "add") {
        auto password = read_password(error);
        if (!password || !auth::set_password(db, config->hostname, w[2], *password, error)) {
            std::cerr << "smtpgw: " << error << "\n";
            return 1;
        }
        // The gateway reads the sasldb at each AUTH as the account it runs as.
        give_to_gateway(*config, db);
        std::cout << "user " << w[2] << " set in " << db << "\n";
        return 0;
    }
    if (w.size() == 3 && w[1] == "delete") {
        if (!auth::delete_user(db, config->hostname, w[2], error)) {
            std::cerr << "smtpgw: cannot delete " << w[2] << ": " << error << "\n";
            return 1;
        }
        std::cout << "user " << w[2] << " deleted from " << db << "\n";
        return 0;
    }
    usage(std::cerr);
    return 2;
}

int cmd_doctor(const Arguments& a) {
    auto config = load_or_report(a);
    if (!config) return 1;
    std::optional<conf::IpAddress> ip;
    if (auto it = a.options.find("--ip"); it != a.options.end()) {
        ip = conf::IpAddress::parse(it->second);
        if (!ip) {
            std::cerr << "smtpgw: --ip " << it->second << ": not an IP address\n";
            return 2;
        }
    }
    return gateway::run_doctor(*config, ip, std::cout, a.json);
}

// Checks the file, then has the running gateway read it again, through its control socket:
// the lock file names a process, but the service account may write anything into it.
int cmd_reload(const Arguments& a) {
    auto r = load(a);
    for (const auto& d : r.diagnostics)
        std::cerr << d.format() << "\n";
    if (!r.ok()) {
        std::cerr << "smtpgw: not reloaded: the running gateway keeps its configuration\n";
        return 1;
    }
    if (gateway::running_gateway(gateway::SpoolLayout{r.config->queue.dir}) <= 0) {
        std::cerr << "smtpgw: no gateway is running on the spool " << r.config->queue.dir << "\n";
        return 1;
    }
    std::string answer, error;
    if (!gateway::control_request(r.config->control_socket(), "reload", answer, error)) {
        std::cerr << "smtpgw: a gateway runs on " << r.config->queue.dir << ", but " << error << "\n";
        return 1;
    }
    std::cout << "smtpgw: " << answer;
    return answer.rfind("ok", 0) == 0 ? 0 : 1;
}

int cmd_queue(const Arguments& a) {
    auto config = load_or_report(a);
    if (!config) return 1;
    gateway::SpoolLayout layout{config->queue.dir};
    const auto& w = a.words;
    if (w.size() == 2 && w[1] == "list") return gateway::queue_list(layout, a.json, std::cout);
    if (w.size() == 3 && w[1] == "show") return gateway::queue_show(layout, w[2], a.json, std::cout, std::cerr);
    const std::string& verb = w[1];
    if (verb == "import") return gateway::offline_import(layout, w[2], std::cout, std::cerr);
    if (verb == "flush" || verb == "delete" || verb == "hold" || verb == "release") {
        std::string id = w.size() == 3 ? w[2] : "";
        if (gateway::running_gateway(layout) == 0) {
            if (verb == "flush") return gateway::offline_flush(layout, id, std::cout, std::cerr);
            if (verb == "delete") return gateway::offline_delete(layout, id, std::cout, std::cerr);
            return gateway::offline_hold(layout, id, verb == "hold", std::cout, std::cerr);
        }
        std::string answer, error;
        if (!gateway::control_request(config->control_socket(), verb + (id.empty() ? "" : " " + id), answer, error)) {
            std::cerr << "smtpgw: a gateway runs on " << layout.root << ", but " << error << "\n";
            return 1;
        }
        // The last line says how it went: "ok: ..." or "error: ...".
        std::cout << answer;
        auto last = answer.rfind('\n', answer.size() >= 2 ? answer.size() - 2 : 0);
        std::string tail = answer.substr(last == std::string::npos ? 0 : last + 1);
        return tail.rfind("ok", 0) == 0 ? 0 : 1;
    }
    usage(std::cerr);
    return 2;
}

}  // namespace

int main(int argc, char** argv) {
    auto args = parse_arguments(argc, argv);
    if (!args) {
        usage(std::cerr);
        return 2;
    }
    if (auto problem = shape_problem(*args); !problem.empty()) {
        std::cerr << "smtpgw: " << problem << "\n";
        usage(std::cerr);
        return 2;
    }
    const std::string& command = args->words.front();
    try {
        if (command == "serve") return gateway::serve(args->config_file);
        if (command == "check-config") return cmd_check_config(*args);
        if (command == "version") return cmd_version();
        if (command == "queue") return cmd_queue(*args);
        if (command == "reload") return cmd_reload(*args);
        if (command == "doctor") return cmd_doctor(*args);
        if (command == "dkim") return cmd_dkim(*args);
        if (command == "admin") return cmd_admin(*args);
        if (command == "probe") return cmd_probe(*args);
        if (command == "user") return cmd_user(*args);
        if (command == "help") {
            usage(std::cout);
            return 0;
        }
    } catch (const std::exception& e) {
        std::cerr << "smtpgw: error: " << e.what() << "\n";
        return 1;
    }
    usage(std::cerr);
    return 2;
}
