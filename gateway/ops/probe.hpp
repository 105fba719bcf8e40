// `smtpgw probe`: connect to an upstream the way delivery would, and report everything an admin
// needs before pointing production at it: the greeting, the EHLO capabilities before and after
// TLS, the TLS version, cipher and certificate with its verification, the AUTH mechanisms on
// each side of TLS, the mechanism that would be chosen, optionally a real AUTH, and one verdict
// line with the exact incompatibility. It follows the same decisions as delivery
// (client_security.hpp), so its verdict is what delivery would meet.
#pragma once

#include "conf/config.hpp"

#include <optional>
#include <ostream>
#include <string>

namespace gateway {

struct ProbeTarget {
    conf::Upstream upstream;  // host, port, security, verify, ca_file, auth (password_file or token)
    bool configured = false;  // from `upstreams:` rather than HOST:PORT on the command line
};

// Returns 0 when the upstream is compatible as configured, 1 when it is not.
int run_probe(const conf::Config& config, const ProbeTarget& target, std::ostream& out);

}  // namespace gateway
