// OAuth 2.0 client credentials for XOAUTH2 (upstreams.NAME.auth.oauth2): the gateway asks the
// token endpoint itself, with a client secret or a client assertion signed by a certificate,
// and keeps each token in memory until shortly before it expires. The next token is fetched
// ahead of time, when the current one has less than half its life (at most 5 minutes) left;
// a token the server refuses (535 5.7.3) is dropped so the next use fetches a new one. Requests
// for the same application share one fetch. Nothing here blocks the loop: the secret is read
// and the assertion signed on libuv's thread pool, the request goes through https_post.
//
// Errors name the endpoint, the AADSTS code and the fix; the token itself is never logged,
// printed or put in an error.
#pragma once

#include "conf/config.hpp"

#include <uv.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace gateway::oauth2 {

struct Token {
    bool ok = false;
    std::string access_token;
    std::string error;  // why there is no token, with what to change
    std::string endpoint;
    int64_t expires_at = 0;  // seconds since the epoch
    // Decoded from the token when it is a JWT (the Microsoft identity platform's are).
    std::string audience;
    std::string tenant_id;
    std::vector<std::string> roles;
    bool fetched = false;  // fetched for this request rather than taken from memory
};

using TokenDone = std::function<void(const Token&)>;

// A usable token for `config`: from memory, or fetched. `done` runs later on the loop.
void get_token(uv_loop_t* loop, const conf::OAuth2& config, TokenDone done);

// The server refused `token` (535): the next get_token fetches a new one.
void token_refused(const conf::OAuth2& config, const std::string& token);

// The gateway is stopping: waiting callers are told, and tokens in memory are forgotten.
void stop();

// --- the pieces, for tests ---

// Why the endpoint refused (an HTTP status other than 200), with the fix: from the OAuth 2.0
// error and the AADSTS code in the answer.
std::string endpoint_error(const conf::OAuth2& config, long status, const std::string& body);

// Reads a token answer (status 200) into `token`; false with token.error when it has no
// access_token, or when its claims show it cannot work for SMTP (another audience, no
// SMTP.SendAsApp role).
bool read_token_answer(const conf::OAuth2& config, const std::string& body, int64_t now, Token& token);

}  // namespace gateway::oauth2
