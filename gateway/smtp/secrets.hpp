// Upstream credentials, fetched fresh for every connection that needs them, without blocking
// the loop: a password or token file is read on libuv's thread pool; a token command runs as a
// child process (its standard output is the token); an OAuth 2.0 token comes from oauth2.hpp,
// which keeps it until shortly before it expires. Secrets are never logged; errors name the
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

// The server refused `secret` (535): a token kept in memory is not offered again.
void secret_refused(const conf::UpstreamAuth& auth, const std::string& secret);

// Reads a secret file now (at most 64 KiB, trailing white space removed): for worker threads.
// False with `error` naming the file when it cannot be read or holds nothing.
bool read_secret_file(const std::string& path, std::string& secret, std::string& error);

// The gateway is stopping: token commands still running are killed (with what they started),
// token requests are dropped, and their callers are told.
void stop_secret_commands();

}  // namespace gateway
