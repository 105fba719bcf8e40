// RAII holders for the mbedTLS structures this folder uses: init in the constructor, free in
// the destructor. Internal to tls/.
#pragma once

#include <mbedtls/ctr_drbg.h>
#include <mbedtls/entropy.h>
#include <mbedtls/error.h>
#include <mbedtls/md.h>
#include <mbedtls/pk.h>
#include <mbedtls/x509_crt.h>

#include <string>

namespace tls {

inline std::string mbed_error(int code) {
    char buf[200];
    mbedtls_strerror(code, buf, sizeof buf);
    return buf;
}

struct Entropy {
    mbedtls_entropy_context ctx;
    Entropy() { mbedtls_entropy_init(&ctx); }
    ~Entropy() { mbedtls_entropy_free(&ctx); }
    Entropy(const Entropy&) = delete;
    Entropy& operator=(const Entropy&) = delete;
};
struct Drbg {
    mbedtls_ctr_drbg_context ctx;
    Drbg() { mbedtls_ctr_drbg_init(&ctx); }
    ~Drbg() { mbedtls_ctr_drbg_free(&ctx); }
    Drbg(const Drbg&) = delete;
    Drbg& operator=(const Drbg&) = delete;
};
struct Certificates {
    mbedtls_x509_crt crt;
    Certificates() { mbedtls_x509_crt_init(&crt); }
    ~Certificates() { mbedtls_x509_crt_free(&crt); }
    Certificates(const Certificates&) = delete;
    Certificates& operator=(const Certificates&) = delete;
};
struct MdContext {
    mbedtls_md_context_t ctx;
    MdContext() { mbedtls_md_init(&ctx); }
    ~MdContext() { mbedtls_md_free(&ctx); }
    MdContext(const MdContext&) = delete;
    MdContext& operator=(const MdContext&) = delete;
};
struct PrivateKey {
    mbedtls_pk_context pk;
    PrivateKey() { mbedtls_pk_init(&pk); }
    ~PrivateKey() { mbedtls_pk_free(&pk); }
    PrivateKey(const PrivateKey&) = delete;
    PrivateKey& operator=(const PrivateKey&) = delete;
};

}  // namespace tls
