// `smtpgw doctor`: the deliverability preflight. Each check prints PASS, WARN or FAIL with what
// it found and, when it is not PASS, what to change:
//   hostname        resolves (bounces come from MAILER-DAEMON@hostname)
//   reverse DNS     the PTR of the sending address names the hostname, which resolves back (FCrDNS)
//   SPF             every sender domain of the rewrite policy, and the HELO name, authorize the address
//   blocklists      doctor.dnsbl zones do not list the address
//   senders         rewrite targets are deliverable addresses (a public domain with MX or A)
//   DKIM            each dkim: key's TXT record at SELECTOR._domainkey.DOMAIN holds its public key
//   DMARC           for each sending domain, its policy and whether DKIM or SPF will align
//   upstreams       each is reachable and compatible (the verdict of `smtpgw probe`)
// The address checks concern mail the gateway delivers itself (`direct`); when every route goes
// through upstreams, their findings are warnings.
#pragma once

#include "conf/cidr.hpp"
#include "conf/config.hpp"

#include <optional>
#include <ostream>

namespace gateway {

// `ip`: the public address the gateway sends from; without it, the machine's own outgoing
// address. Returns 0 when nothing FAILed, 1 otherwise.
// `json`: one JSON object instead of lines (the console and monitoring read it).
int run_doctor(const conf::Config& config, std::optional<conf::IpAddress> ip, std::ostream& out, bool json = false);

}  // namespace gateway
