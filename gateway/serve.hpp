// `smtpgw serve`: builds the running gateway on one libuv loop (spool, DNS resolver, queue
// manager, listener, signals), runs it until SIGTERM/SIGINT, and takes it down in order.
#pragma once

#include <string>

namespace gateway {

// Returns the exit status. `config_file` empty: the embedded default configuration.
int serve(const std::string& config_file);

}  // namespace gateway
