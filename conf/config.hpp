// The whole configuration schema as plain structs with their defaults.
//
// conf/ fills these from YAML once (config_load.hpp) and validates them; the rest of the
// program reads them and never sees YAML. Every key of ../CONTRACT.md has a member here,
// including sections that only later parts of the gateway act on.
#pragma once

#include "conf/cidr.hpp"

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace conf {

using Seconds = std::chrono::seconds;

// Where in the file a value came from, for messages that name it.
struct Mark {
    int line = 0;  // 1-based; 0 when the value is a default
    int column = 0;
};

enum class ListenTls { None, StartTls, Implicit };
enum class ListenAuth { None, Optional, Required };
enum class TlsVersion { Tls10, Tls11, Tls12 };
enum class TlsCiphers { Modern, Legacy };
enum class BareNewline { Accept, Reject };
enum class Security { None, Opportunistic, Mandatory, Implicit };
enum class HeaderFrom { Keep, Rewrite };
enum class LogFormat { Syslog, Json };
enum class LogLevel { Debug, Info, Warning, Error };

struct HostPort {
    std::string host;  // literal address or name, without brackets
    uint16_t port = 0;
};

struct Listen {
    std::string address;  // as written, e.g. "[::]:25"
    HostPort endpoint;
    ListenTls tls = ListenTls::None;
    ListenAuth auth = ListenAuth::None;
    BareNewline bare_newline = BareNewline::Accept;
    std::optional<std::vector<Cidr>> clients;  // who may relay through this listener; none: the global list
    // Opt-in for devices that speak nothing newer: TLS 1.0/1.1 (RFC 8996 deprecates them) and CBC suites.
    TlsVersion tls_min = TlsVersion::Tls12;
    TlsVersion tls_max = TlsVersion::Tls12;
    TlsCiphers tls_ciphers = TlsCiphers::Modern;
    // A load balancer in front (HAProxy's send-proxy / send-proxy-v2): every connection starts
    // with a PROXY protocol header naming the client, accepted from `proxies` only.
    bool proxy_protocol = false;
    std::vector<Cidr> proxies;
    bool legacy_tls() const { return tls_min != TlsVersion::Tls12 || tls_ciphers != TlsCiphers::Modern; }
    Mark mark;
};

// At most `count` events per `seconds`; count 0: no limit.
struct Rate {
    unsigned count = 0;
    unsigned seconds = 0;
};

// One rule of `policy:`. The first rule whose `match` holds for a session decides what it may
// send; every condition given must hold, and a rule without conditions matches every session.
struct PolicyRule {
    std::vector<std::string> users;       // AUTH user names, globs; a session without AUTH matches none
    std::vector<Cidr> clients;            // client networks
    std::vector<std::string> listeners;   // listen addresses as written in listen:
    std::vector<std::string> senders;     // envelope senders allowed (before rewriting); empty: any
    std::vector<std::string> recipients;  // recipients allowed; empty: any
    uint64_t message_size = 0;            // 0: limits.message_size
    Rate messages;                        // per AUTH user, or per client address without AUTH
    Rate recipient_rate;
    Mark mark;
};

struct ServerTls {
    std::string certificate;
    std::string key;
};

struct ServerSasl {
    // Where passwords are checked: the sasldb, or Cyrus's saslauthd (PAM, LDAP, ...: whatever
    // backend it runs with), which takes PLAIN and LOGIN only.
    enum class Check { Sasldb, Saslauthd } pwcheck = Check::Sasldb;
    std::string saslauthd_socket = "/var/run/saslauthd/mux";
    std::string sasldb;
    std::vector<std::string> mechanisms{"PLAIN", "LOGIN"};
    bool plaintext_without_tls = false;
};

struct RewriteRule {
    std::string from;  // exact address, glob, domain, or /regex/
    std::string to;
    Mark mark;
};

struct SenderPolicy {
    std::vector<RewriteRule> rewrite;
    HeaderFrom header_from = HeaderFrom::Keep;
};

struct Route {
    std::vector<std::string> to;    // recipient domain patterns; empty means any
    std::vector<std::string> from;  // sender patterns; empty means any
    std::vector<std::string> via;   // "direct" or upstream names, tried in order
    Mark mark;
};

// OAuth 2.0 client credentials: the gateway gets its XOAUTH2 tokens itself from the token
// endpoint (the Microsoft identity platform by default), with a client secret or a certificate.
struct OAuth2 {
    std::string tenant;     // a tenant ID or a domain such as contoso.onmicrosoft.com
    std::string client_id;  // the application (client) ID
    std::string client_secret_file;
    std::string certificate_file;  // with key_file: a signed client assertion instead of a secret
    std::string key_file;
    std::string scope = "https://outlook.office365.com/.default";
    std::string token_endpoint;  // https://login.microsoftonline.com/TENANT/oauth2/v2.0/token unless given
    std::string ca_file;         // trust for the token endpoint; empty: the system's bundle
};

struct UpstreamAuth {
    std::string username;
    std::string password_file;
    std::string token_file;
    std::string token_command;
    std::optional<OAuth2> oauth2;
    std::vector<std::string> mechanisms;  // allowed, in order of preference; empty means any
    bool allow_plaintext = false;
};

struct Upstream {
    std::string name;
    std::string host;
    uint16_t port = 25;
    Security security = Security::Opportunistic;
    bool verify = false;
    std::string ca_file;
    std::optional<UpstreamAuth> auth;
    std::string source_address;  // the local address connections come from (smtp_bind_address); empty: any
    std::string helo_name;       // the name sent in EHLO; empty: hostname (smtp_helo_name)
    unsigned concurrency = 0;    // connections at most; 0: delivery.destination_concurrency
    // Messages per period at most ("30/m"); 0: no limit. Exchange Online allows a mailbox about
    // 30 a minute over SMTP AUTH.
    unsigned rate_messages = 0;
    unsigned rate_seconds = 0;
    unsigned recipients_per_message = 0;  // per transaction; 0: delivery.recipient_limit
    // A certificate sent in the TLS handshake (tls: { certificate, key }), for connectors that
    // know their senders by certificate (Exchange Online's TlsSenderCertificateName).
    std::string tls_certificate;
    std::string tls_key;
    Mark mark;
};

struct Limits {
    uint64_t message_size = 25ull * 1024 * 1024;
    unsigned recipients = 100;
    unsigned connections = 1000;
    unsigned connections_per_client = 50;
    Seconds command_timeout{300};        // RFC 5321 4.5.3.2.7
    Seconds data_timeout{300};           // per read while receiving message content
    Seconds handshake_timeout{10};       // a client's whole TLS handshake (implicit or STARTTLS)
    unsigned errors = 20;                // error replies before 421 and close
    uint64_t line_length = 1024 * 1024;  // hard bound for one line of message content
    bool address_literals = false;       // recipients like x@[192.0.2.1]: refused unless allowed
    Rate connection_rate;                // connections per client address (Postfix's anvil); none by default
};

// The SMTP client: connections, reuse, and Postfix's default timeouts (smtp_*_timeout).
struct ClientTimeouts {
    Seconds connect{30};
    Seconds helo{300};  // greeting and EHLO
    Seconds mail{300};
    Seconds rcpt{300};
    Seconds data_init{120};  // DATA and its 354
    Seconds data_xfer{180};  // no progress while sending content
    Seconds data_done{600};  // the final dot and its reply
    Seconds rset{20};
    Seconds quit{300};
};

// The address family tried first among equal addresses (Postfix's smtp_address_preference).
enum class AddressPreference { Any, Ipv4, Ipv6 };

struct Delivery {
    unsigned concurrency = 100;             // connections in total
    unsigned destination_concurrency = 20;  // connections per destination, at most
    unsigned initial_concurrency = 5;       // to begin with; grows with each connection that delivers
    unsigned recipient_limit = 50;          // recipients per transaction (Postfix's smtp_destination_recipient_limit)
    AddressPreference address_preference = AddressPreference::Any;
    Seconds connection_reuse{2};    // an idle connection waits this long for more mail
    unsigned reuse_messages = 100;  // a connection carries at most this many messages, then QUIT
    Seconds reuse_time{300};        // and lives at most this long (Postfix's smtp_connection_reuse_*_limit)
    unsigned line_length = 998;     // longer lines are broken with <CR><LF><SPACE>
    ClientTimeouts timeouts;
};

struct Direct {
    Security security = Security::Opportunistic;
    uint16_t port = 25;
    std::string source_address;  // the local address of connections to MX hosts; empty: any
};

struct Dns {
    std::vector<HostPort> servers;  // empty: /etc/resolv.conf
    Seconds timeout{3};             // per try
    unsigned attempts = 3;
    // Look up each client's name (PTR, confirmed by a forward lookup) before the greeting, as
    // Postfix does; off by default because a slow DNS then delays every greeting.
    bool client_names = false;
};

struct Queue {
    std::string dir = "./smtpgw-spool";
    std::vector<Seconds> retry{Seconds{60}, Seconds{300}, Seconds{900}, Seconds{1800}, Seconds{3600}};
    Seconds lifetime{5 * 86400};
    Seconds delay_warning{0};  // 0: no delay warnings
    // Messages taken up for delivery at once (Postfix's qmgr_message_active_limit); the others
    // wait their turn, new arrivals and retries alternately.
    unsigned active_limit = 20000;
};

struct Log {
    std::string file;  // empty: standard error
    LogLevel level = LogLevel::Info;
    LogFormat format = LogFormat::Syslog;
    bool syslog = false;  // also to the local syslog daemon, facility mail
    std::string syslog_socket = "/dev/log";
};

struct Metrics {
    std::string listen;  // empty: no metrics endpoint
    HostPort endpoint;
};

struct Control {
    std::string socket;  // empty: <queue.dir>/control.sock
};

// Copies and alerts for the administrator (Postfix's notify_classes).
struct Notify {
    std::string postmaster;  // where they go
    bool bounce = true;      // a copy of each non-delivery notice; and bounces nobody else would get
    bool delay = false;      // a copy of each delay warning
    bool resource = true;    // the spool's file system nearly full; the oldest message older than queue_age
    Seconds queue_age{4 * 3600};
    Mark mark;
};

// The browser console (off without listen) and its accounts (smtpgw admin add|delete|list).
struct Admin {
    std::string listen;  // IP:PORT as written; empty: no console
    HostPort endpoint;
    std::string accounts = "/etc/smtpgw/admins";
    // HTTPS with the tls: certificate; on by default when listen is beyond loopback, where plain
    // HTTP is refused.
    bool https = false;
};

// A DKIM signing key: mail whose From: is in `domain` (or below it) is signed with it.
struct DkimKey {
    std::string domain;
    std::string selector;  // the TXT record is at SELECTOR._domainkey.DOMAIN
    std::string key_file;  // PEM private key, RSA (2048 bits and up) or Ed25519
    Mark mark;
};

struct Doctor {
    std::vector<std::string> dnsbl;
};

struct Config {
    std::string source;  // file name, or "(default)" for the embedded configuration
    std::string user;    // started as root: the account to run as once the ports are bound
    std::string hostname;
    std::vector<Listen> listen = default_listen();  // 127.0.0.1:2525
    std::vector<Cidr> clients = default_clients();  // 127.0.0.0/8 and ::1
    std::vector<PolicyRule> policy;
    std::optional<Notify> notify;
    Admin admin;

    std::optional<ServerTls> tls;
    std::optional<ServerSasl> sasl;
    SenderPolicy sender;
    std::vector<Route> routes;
    std::vector<Upstream> upstreams;
    Limits limits;
    Direct direct;
    Delivery delivery;
    Dns dns;
    Queue queue;
    Log log;
    Control control;
    Metrics metrics;
    Doctor doctor;
    std::vector<DkimKey> dkim;

    // The control socket path with its default applied.
    std::string control_socket() const;

    static std::vector<Listen> default_listen();
    static std::vector<Cidr> default_clients();
};

const char* to_string(Security s);
const char* to_string(ListenTls t);
const char* to_string(ListenAuth a);

}  // namespace conf
