// The SASL client for AUTH towards upstreams (RFC 4954): Cyrus SASL's client plug-ins for PLAIN,
// LOGIN, CRAM-MD5, DIGEST-MD5, SCRAM-SHA-1 and SCRAM-SHA-256, and XOAUTH2 done here (Cyrus has no
// plug-in for it). No SASL security layer is negotiated: protection comes from TLS.
//
// Call order: start() once per attempt, then step() for every 334 challenge until the server
// answers 235 or refuses. Challenges and responses are raw bytes; base64 is for the caller.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace auth {

struct Credentials {
    std::string username;
    std::string secret;  // the password, or the bearer token for XOAUTH2
};

class SaslClient {
public:
    // Starts `mechanism`. On failure returns nullptr and sets `error` (for example when Cyrus
    // has no plug-in for it). `initial` receives the initial response when there is one.
    static std::unique_ptr<SaslClient> start(const std::string& mechanism, const std::string& server_host,
                                             const Credentials& credentials, std::string& initial, bool& has_initial,
                                             std::string& error);
    virtual ~SaslClient() = default;
    // Answers a server challenge; false with `error` when the exchange cannot go on.
    virtual bool step(std::string_view challenge, std::string& response, std::string& error) = 0;
};

// Mechanisms this build can use as a client: Cyrus's plug-ins and XOAUTH2.
std::vector<std::string> client_mechanisms();
// PLAIN, LOGIN and XOAUTH2 send the secret itself (base64 is not protection).
bool sends_secret_in_clear(const std::string& mechanism);

std::string base64_encode(std::string_view data);
bool base64_decode(std::string_view text, std::string& out);

}  // namespace auth
