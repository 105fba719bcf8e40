// Value checks shared by the loader, and the validation that spans sections.
#pragma once

#include "conf/config.hpp"
#include "conf/config_load.hpp"

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace conf {

// "IP:PORT" or "[IPv6]:PORT"; the host must be an address literal.
std::optional<HostPort> parse_listen_address(std::string_view text);
// "IP" or "IP:PORT" or "[IPv6]:PORT"; port 53 by default.
std::optional<HostPort> parse_dns_server(std::string_view text);

bool check_host(const std::string& host, std::string& why);               // a DNS name or an IP literal
bool check_domain_pattern(const std::string& pattern, std::string& why);  // "*", "a.example", "*.a.example"
bool check_sender_pattern(const std::string& pattern, std::string& why);  // address, glob, domain or /regex/
bool check_rewrite_target(const std::string& address, std::string& why);  // an address; $1.. allowed
bool check_upstream_name(const std::string& name, std::string& why);
bool check_readable(const std::string& path, std::string& why);
// A file or directory the gateway will create or write: false only when the place for it is on a
// read-only file system (as everything but its own paths is under the packaged systemd unit).
// Permissions are not judged: the gateway may start as root and hand the path to `user:`.
bool check_writable_place(const std::string& path, std::string& why);
bool is_client_mechanism(const std::string& mechanism);

// Why mail from `domain` cannot work on the Internet (.local, .test, a bare host name...), if so.
std::optional<std::string> not_public(const std::string& domain);

// Checks across sections: listeners against tls/sasl, routes against upstreams, duplicates;
// then warnings for what is valid but will not work as the admin hopes.
void validate(const Config& c, std::vector<Diagnostic>& diags);

}  // namespace conf
