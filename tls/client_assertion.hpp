// The client assertion of OAuth 2.0 client credentials with a certificate (RFC 7523, as the
// Microsoft identity platform takes it): a JWT whose header names the certificate by its SHA-1
// thumbprint (x5t) and whose signature is RS256 by the certificate's key. mbedTLS signs it, as
// it already verifies every TLS peer; no second crypto library.
#pragma once

#include <string>
#include <string_view>

namespace tls {

// RFC 4648 section 5, without padding.
std::string base64url(std::string_view data);

// header.payload.signature for `claims_json` (the payload, already JSON); false with `error`
// naming the file when the certificate or key cannot be read, is not RSA, or they do not match.
// Reads both files: call it off the loop.
bool sign_client_assertion(const std::string& certificate_file, const std::string& key_file,
                           const std::string& claims_json, std::string& jwt, std::string& error);

}  // namespace tls
