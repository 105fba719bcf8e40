// Salted password hashes for the console's accounts: PBKDF2-HMAC-SHA256 (RFC 8018) with a
// random 16-octet salt, written as "pbkdf2-sha256$ITERATIONS$SALT$HASH" (base64). Checking one
// costs tens of milliseconds on purpose: call it off the loop.
#pragma once

#include <string>

namespace tls {

constexpr unsigned k_password_iterations = 200000;

// A new hash of `password`; empty when the random generator fails.
std::string hash_password(const std::string& password, unsigned iterations = k_password_iterations);

// Whether `password` matches `stored` (a hash_password() result), in constant time.
bool verify_password(const std::string& password, const std::string& stored);

// `n` random octets from the generator TLS uses (session IDs, CSRF tokens); empty on failure.
std::string random_bytes(size_t n);

}  // namespace tls
