// Upstream credentials, fetched fresh for every connection that needs them, without blocking
// the loop: a password or token file is read on libuv's thread pool; a token command runs as a
// child process (its standard output is the token). Secrets are never logged; errors name the
// file or the command, not its contents.
#pragma once

#include "conf/config.hpp"

#include <uv.h>

#include <functional>
#include <string>

namespace gateway {

// ok, the secret (trailing white space removed), or why there is none
using SecretDone = std::function<void(bool ok, const std::string& secret, const std::string& error)>;

void fetch_secret(uv_loop_t* loop, const conf::UpstreamAuth& auth, SecretDone done);

// The gateway is stopping: token commands still running are killed (with what they started),
// and their callers are told.
void stop_secret_commands();

}  // namespace gateway
