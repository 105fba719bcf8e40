#include "tls/client_assertion.hpp"

#include "tls/mbed_types.hpp"

#include <mbedtls/base64.h>
#include <mbedtls/sha1.h>
#include <mbedtls/sha256.h>

#include <vector>

namespace tls {

std::string base64url(std::string_view data) {
    size_t size = 0;
    auto* in = reinterpret_cast<const unsigned char*>(data.data());
    mbedtls_base64_encode(nullptr, 0, &size, in, data.size());
    std::string out(size, '\0');
    if (mbedtls_base64_encode(reinterpret_cast<unsigned char*>(out.data()), out.size(), &size, in, data.size()) != 0)
        return {};
    out.resize(size);
    while (!out.empty() && out.back() == '=')
        out.pop_back();
    for (char& c : out) {
        if (c == '+') c = '-';
        if (c == '/') c = '_';
    }
    return out;
}

bool sign_client_assertion(const std::string& certificate_file, const std::string& key_file,
                           const std::string& claims_json, std::string& jwt, std::string& error) {
    Certificates cert;
    int r = mbedtls_x509_crt_parse_file(&cert.crt, certificate_file.c_str());
    if (r != 0) {
        error = "cannot load the certificate " + certificate_file + ": " + mbed_error(r);
        return false;
    }
    PrivateKey key;
    r = mbedtls_pk_parse_keyfile(&key.pk, key_file.c_str(), nullptr);
    if (r != 0) {
        error = "cannot load the key " + key_file + ": " + mbed_error(r);
        return false;
    }
    if (!mbedtls_pk_can_do(&key.pk, MBEDTLS_PK_RSA)) {
        error = "the key " + key_file + " is not an RSA key; the Microsoft identity platform takes RS256 assertions";
        return false;
    }
    if (mbedtls_pk_check_pair(&cert.crt.pk, &key.pk) != 0) {
        error = "the key " + key_file + " does not belong to the certificate " + certificate_file;
        return false;
    }
    unsigned char thumbprint[20];
    mbedtls_sha1_ret(cert.crt.raw.p, cert.crt.raw.len, thumbprint);
    std::string header = R"({"alg":"RS256","typ":"JWT","x5t":")" +
                         base64url({reinterpret_cast<const char*>(thumbprint), sizeof thumbprint}) + "\"}";
    std::string signing_input = base64url(header) + "." + base64url(claims_json);
    unsigned char hash[32];
    mbedtls_sha256_ret(reinterpret_cast<const unsigned char*>(signing_input.data()), signing_input.size(), hash, 0);
    Entropy entropy;
    Drbg drbg;
    static const char pers[] = "smtpgw-assertion";
    r = mbedtls_ctr_drbg_seed(&drbg.ctx, mbedtls_entropy_func, &entropy.ctx,
                              reinterpret_cast<const unsigned char*>(pers), sizeof pers - 1);
    std::vector<unsigned char> signature(MBEDTLS_PK_SIGNATURE_MAX_SIZE);
    size_t length = 0;
    if (r == 0)
        r = mbedtls_pk_sign(&key.pk, MBEDTLS_MD_SHA256, hash, sizeof hash, signature.data(), &length,
                            mbedtls_ctr_drbg_random, &drbg.ctx);
    if (r != 0) {
        error = "cannot sign with the key " + key_file + ": " + mbed_error(r);
        return false;
    }
    jwt = signing_input + "." + base64url({reinterpret_cast<const char*>(signature.data()), length});
    return true;
}

}  // namespace tls
