#include "tls/password_hash.hpp"

#include "tls/mbed_types.hpp"

#include <mbedtls/base64.h>
#include <mbedtls/md.h>
#include <mbedtls/pkcs5.h>

#include <vector>

namespace tls {

namespace {

constexpr size_t k_salt = 16, k_hash = 32;

std::string b64(const std::string& data) {
    size_t n = 0;
    auto* in = reinterpret_cast<const unsigned char*>(data.data());
    mbedtls_base64_encode(nullptr, 0, &n, in, data.size());
    std::string out(n, '\0');
    if (mbedtls_base64_encode(reinterpret_cast<unsigned char*>(out.data()), out.size(), &n, in, data.size()) != 0)
        return {};
    out.resize(n);
    return out;
}

bool unb64(const std::string& text, std::string& out) {
    size_t n = 0;
    auto* in = reinterpret_cast<const unsigned char*>(text.data());
    mbedtls_base64_decode(nullptr, 0, &n, in, text.size());
    out.assign(n, '\0');
    if (mbedtls_base64_decode(reinterpret_cast<unsigned char*>(out.data()), out.size(), &n, in, text.size()) != 0)
        return false;
    out.resize(n);
    return true;
}

bool pbkdf2(const std::string& password, const std::string& salt, unsigned iterations, std::string& out) {
    MdContext md;
    if (mbedtls_md_setup(&md.ctx, mbedtls_md_info_from_type(MBEDTLS_MD_SHA256), 1) != 0) return false;
    out.assign(k_hash, '\0');
    return mbedtls_pkcs5_pbkdf2_hmac(&md.ctx, reinterpret_cast<const unsigned char*>(password.data()), password.size(),
                                     reinterpret_cast<const unsigned char*>(salt.data()), salt.size(), iterations,
                                     uint32_t(k_hash), reinterpret_cast<unsigned char*>(out.data())) == 0;
}

}  // namespace

std::string random_bytes(size_t n) {
    Entropy entropy;
    Drbg drbg;
    static const char pers[] = "smtpgw-random";
    std::string out(n, '\0');
    if (mbedtls_ctr_drbg_seed(&drbg.ctx, mbedtls_entropy_func, &entropy.ctx,
                              reinterpret_cast<const unsigned char*>(pers), sizeof pers - 1) != 0 ||
        mbedtls_ctr_drbg_random(&drbg.ctx, reinterpret_cast<unsigned char*>(out.data()), n) != 0)
        return {};
    return out;
}

std::string hash_password(const std::string& password, unsigned iterations) {
    std::string salt = random_bytes(k_salt), hash;
    if (salt.empty() || !pbkdf2(password, salt, iterations, hash)) return {};
    return "pbkdf2-sha256$" + std::to_string(iterations) + "$" + b64(salt) + "$" + b64(hash);
}

bool verify_password(const std::string& password, const std::string& stored) {
    const std::string prefix = "pbkdf2-sha256$";
    if (stored.compare(0, prefix.size(), prefix) != 0) return false;
    auto d1 = stored.find('$', prefix.size()), d2 = stored.find('$', d1 == std::string::npos ? d1 : d1 + 1);
    if (d1 == std::string::npos || d2 == std::string::npos) return false;
    std::string count = stored.substr(prefix.size(), d1 - prefix.size());
    if (count.empty() || count.size() > 7 || count.find_first_not_of("0123456789") != std::string::npos) return false;
    unsigned iterations = unsigned(std::stoul(count));
    std::string salt, want, got;
    if (iterations == 0 || !unb64(stored.substr(d1 + 1, d2 - d1 - 1), salt) || !unb64(stored.substr(d2 + 1), want) ||
        want.size() != k_hash || !pbkdf2(password, salt, iterations, got))
        return false;
    unsigned char diff = 0;
    for (size_t i = 0; i < k_hash; i++)
        diff |= static_cast<unsigned char>(got[i] ^ want[i]);
    return diff == 0;
}

}  // namespace tls
