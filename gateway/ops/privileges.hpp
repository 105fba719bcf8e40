// Started as root (to bind ports 25, 465 and 587), the gateway runs on as the `user:` account:
// it hands that account the spool, the control socket and the log file, then gives up root for
// good. Root after start-up only when the configuration says `user: root`.
#pragma once

#include "conf/config.hpp"

#include <string>

namespace gateway {

// Why this configuration must not start as the current user; empty when it may.
std::string root_problem(const conf::Config& config);

// After the ports are bound; an error text, empty on success.
std::string drop_privileges(const conf::Config& config);

}  // namespace gateway
