#include "tls/tls_engine.hpp"

#include "tls/mbed_types.hpp"

#include <mbedtls/ctr_drbg.h>
#include <mbedtls/entropy.h>
#include <mbedtls/error.h>
#include <mbedtls/oid.h>
#include <mbedtls/pk.h>
#include <mbedtls/ssl.h>
#include <mbedtls/x509_crt.h>

#include <algorithm>
#include <cstdio>
#include <cstring>

namespace tls {

namespace {

const char* const k_system_bundle = "/etc/ssl/certs/ca-certificates.crt";

std::string format_time(const mbedtls_x509_time& t) {
    char buf[40];
    std::snprintf(buf, sizeof buf, "%04d-%02d-%02d %02d:%02d:%02d UTC", t.year, t.mon, t.day, t.hour, t.min, t.sec);
    return buf;
}

struct SslConfig {
    mbedtls_ssl_config conf;
    SslConfig() { mbedtls_ssl_config_init(&conf); }
    ~SslConfig() { mbedtls_ssl_config_free(&conf); }
    SslConfig(const SslConfig&) = delete;
    SslConfig& operator=(const SslConfig&) = delete;
};
struct Ssl {
    mbedtls_ssl_context ssl;
    Ssl() { mbedtls_ssl_init(&ssl); }
    ~Ssl() { mbedtls_ssl_free(&ssl); }
    Ssl(const Ssl&) = delete;
    Ssl& operator=(const Ssl&) = delete;
};

std::vector<std::string> certificate_names(const mbedtls_x509_crt& crt) {
    std::vector<std::string> names;
    for (const mbedtls_x509_sequence* san = &crt.subject_alt_names; san && san->buf.p; san = san->next) {
        if (san->buf.tag == (MBEDTLS_ASN1_CONTEXT_SPECIFIC | MBEDTLS_X509_SAN_DNS_NAME))
            names.emplace_back(reinterpret_cast<const char*>(san->buf.p), san->buf.len);
    }
    if (!names.empty()) return names;
    for (const mbedtls_x509_name* n = &crt.subject; n; n = n->next) {
        if (MBEDTLS_OID_CMP(MBEDTLS_OID_AT_CN, &n->oid) == 0)
            names.emplace_back(reinterpret_cast<const char*>(n->val.p), n->val.len);
    }
    return names;
}

std::string distinguished_name(const mbedtls_x509_name& dn) {
    char buf[512];
    int n = mbedtls_x509_dn_gets(buf, sizeof buf, &dn);
    return n < 0 ? std::string("?") : std::string(buf, size_t(n));
}

}  // namespace

class Context {
public:
    Entropy entropy;
    Drbg drbg;
    Certificates trust;
    Certificates own;
    PrivateKey key;
    SslConfig config;
    bool verify = false;
    bool have_trust = false;
    std::string trust_source;

    bool init(bool server, std::string& error) {
        static const char pers[] = "smtpgw";
        int r = mbedtls_ctr_drbg_seed(&drbg.ctx, mbedtls_entropy_func, &entropy.ctx,
                                      reinterpret_cast<const unsigned char*>(pers), sizeof pers - 1);
        if (r == 0)
            r = mbedtls_ssl_config_defaults(&config.conf, server ? MBEDTLS_SSL_IS_SERVER : MBEDTLS_SSL_IS_CLIENT,
                                            MBEDTLS_SSL_TRANSPORT_STREAM, MBEDTLS_SSL_PRESET_DEFAULT);
        if (r != 0) {
            error = "TLS set-up failed: " + mbed_error(r);
            return false;
        }
        mbedtls_ssl_conf_rng(&config.conf, mbedtls_ctr_drbg_random, &drbg.ctx);
        mbedtls_ssl_conf_min_version(&config.conf, MBEDTLS_SSL_MAJOR_VERSION_3, MBEDTLS_SSL_MINOR_VERSION_3);
        mbedtls_ssl_conf_renegotiation(&config.conf, MBEDTLS_SSL_RENEGOTIATION_DISABLED);
        return true;
    }
};

// The certificate (a chain file works) and key this side presents, checked to belong together.
static bool load_own(Context& c, const std::string& certificate_file, const std::string& key_file, std::string& error) {
    int r = mbedtls_x509_crt_parse_file(&c.own.crt, certificate_file.c_str());
    if (r != 0) {
        error = "cannot load the certificate " + certificate_file + ": " + mbed_error(r);
        return false;
    }
    r = mbedtls_pk_parse_keyfile(&c.key.pk, key_file.c_str(), nullptr);
    if (r != 0) {
        error = "cannot load the key " + key_file + ": " + mbed_error(r);
        return false;
    }
    if (mbedtls_pk_check_pair(&c.own.crt.pk, &c.key.pk) != 0) {
        error = "the key " + key_file + " does not belong to the certificate " + certificate_file;
        return false;
    }
    r = mbedtls_ssl_conf_own_cert(&c.config.conf, &c.own.crt, &c.key.pk);
    if (r != 0) {
        error = "cannot use the certificate " + certificate_file + ": " + mbed_error(r);
        return false;
    }
    return true;
}

std::shared_ptr<Context> client_context(const ClientOptions& options, std::string& error) {
    auto c = std::make_shared<Context>();
    if (!c->init(false, error)) return nullptr;
    c->verify = options.verify;
    c->trust_source = options.ca_file.empty() ? k_system_bundle : options.ca_file;
    int r = mbedtls_x509_crt_parse_file(&c->trust.crt, c->trust_source.c_str());
    c->have_trust = r >= 0 && c->trust.crt.raw.p != nullptr;
    if (!c->have_trust && (options.verify || !options.ca_file.empty())) {
        error = "cannot load the trusted certificates in " + c->trust_source + ": " + mbed_error(r);
        return nullptr;
    }
    // The chain is always checked when there is something to check it against, so that the
    // outcome can be reported; whether a failure stops delivery is the caller's decision.
    if (c->have_trust) mbedtls_ssl_conf_ca_chain(&c->config.conf, &c->trust.crt, nullptr);
    mbedtls_ssl_conf_authmode(&c->config.conf, c->have_trust ? MBEDTLS_SSL_VERIFY_OPTIONAL : MBEDTLS_SSL_VERIFY_NONE);
    if (!options.certificate_file.empty() && !load_own(*c, options.certificate_file, options.key_file, error))
        return nullptr;
    return c;
}

bool legacy_protocols_available() {
#if defined(MBEDTLS_SSL_PROTO_TLS1) && defined(MBEDTLS_SSL_PROTO_TLS1_1)
    return true;
#else
    return false;
#endif
}

std::shared_ptr<Context> server_context(const std::string& certificate_file, const std::string& key_file,
                                        std::string& error, const ServerProfile& profile) {
    auto c = std::make_shared<Context>();
    if (!c->init(true, error)) return nullptr;
    if (!load_own(*c, certificate_file, key_file, error)) return nullptr;
    mbedtls_ssl_conf_authmode(&c->config.conf, MBEDTLS_SSL_VERIFY_NONE);
    // Forward secrecy and AEAD only (the TLS 1.2 part of Mozilla's "intermediate" profile); the
    // server's order wins. mbedTLS keeps the pointer, so the lists are static.
    static const int k_suites[] = {MBEDTLS_TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
                                   MBEDTLS_TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
                                   MBEDTLS_TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
                                   MBEDTLS_TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
                                   MBEDTLS_TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
                                   MBEDTLS_TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
                                   0};
    // For old devices, after those: CBC with forward secrecy, then with RSA key exchange (what
    // printers of the TLS 1.0 era often have alone). No 3DES, no RC4.
    static const int k_legacy_suites[] = {MBEDTLS_TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
                                          MBEDTLS_TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
                                          MBEDTLS_TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
                                          MBEDTLS_TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
                                          MBEDTLS_TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
                                          MBEDTLS_TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
                                          MBEDTLS_TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256,
                                          MBEDTLS_TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256,
                                          MBEDTLS_TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA384,
                                          MBEDTLS_TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA384,
                                          MBEDTLS_TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA,
                                          MBEDTLS_TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA,
                                          MBEDTLS_TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA,
                                          MBEDTLS_TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA,
                                          MBEDTLS_TLS_RSA_WITH_AES_128_GCM_SHA256,
                                          MBEDTLS_TLS_RSA_WITH_AES_256_GCM_SHA384,
                                          MBEDTLS_TLS_RSA_WITH_AES_128_CBC_SHA256,
                                          MBEDTLS_TLS_RSA_WITH_AES_256_CBC_SHA256,
                                          MBEDTLS_TLS_RSA_WITH_AES_128_CBC_SHA,
                                          MBEDTLS_TLS_RSA_WITH_AES_256_CBC_SHA,
                                          0};
    mbedtls_ssl_conf_ciphersuites(&c->config.conf, profile.legacy_ciphers ? k_legacy_suites : k_suites);
    if (profile.min_minor < 3 && !legacy_protocols_available()) {
        error = "this mbedTLS was built without TLS 1.0 and 1.1 (MBEDTLS_SSL_PROTO_TLS1, MBEDTLS_SSL_PROTO_TLS1_1)";
        return nullptr;
    }
    mbedtls_ssl_conf_min_version(&c->config.conf, MBEDTLS_SSL_MAJOR_VERSION_3, profile.min_minor);
    mbedtls_ssl_conf_max_version(&c->config.conf, MBEDTLS_SSL_MAJOR_VERSION_3, profile.max_minor);
    return c;
}

struct Engine::Impl {
    std::shared_ptr<Context> context;
    Ssl ssl;
    std::string in;   // ciphertext received, not yet consumed
    std::string out;  // ciphertext to send
    std::string server_name;

    static int send(void* p, const unsigned char* buf, size_t len) {
        static_cast<Impl*>(p)->out.append(reinterpret_cast<const char*>(buf), len);
        return int(len);
    }
    static int recv(void* p, unsigned char* buf, size_t len) {
        auto* self = static_cast<Impl*>(p);
        if (self->in.empty()) return MBEDTLS_ERR_SSL_WANT_READ;
        size_t n = std::min(len, self->in.size());
        std::copy(self->in.data(), self->in.data() + n, buf);
        self->in.erase(0, n);
        return int(n);
    }
};

Engine::Engine(std::shared_ptr<Context> context, Role role, const std::string& server_name)
    : m_impl(std::make_unique<Impl>()) {
    m_impl->context = std::move(context);
    m_impl->server_name = server_name;
    mbedtls_ssl_setup(&m_impl->ssl.ssl, &m_impl->context->config.conf);
    if (role == Role::Client && !server_name.empty()) mbedtls_ssl_set_hostname(&m_impl->ssl.ssl, server_name.c_str());
    mbedtls_ssl_set_bio(&m_impl->ssl.ssl, m_impl.get(), &Impl::send, &Impl::recv, nullptr);
}

Engine::~Engine() = default;

void Engine::receive(std::string_view ciphertext) {
    if (!m_first_bytes_seen && !ciphertext.empty()) {
        m_first_bytes_seen = true;
        // A TLS record starts with a content type byte (20-23); an SMTP greeting with "220".
        m_plaintext_peer = ciphertext.size() >= 3 && ciphertext.substr(0, 3) == "220";
    }
    m_impl->in.append(ciphertext);
}

Result Engine::handshake() {
    int r = mbedtls_ssl_handshake(&m_impl->ssl.ssl);
    if (r == 0) return Result::Ok;
    if (r == MBEDTLS_ERR_SSL_WANT_READ || r == MBEDTLS_ERR_SSL_WANT_WRITE) return Result::WantIo;
    m_error = mbed_error(r);
    return Result::Failed;
}

Result Engine::read(std::string& plaintext) {
    unsigned char buf[16 * 1024];
    for (;;) {
        int r = mbedtls_ssl_read(&m_impl->ssl.ssl, buf, sizeof buf);
        if (r > 0) {
            plaintext.append(reinterpret_cast<const char*>(buf), size_t(r));
            continue;
        }
        if (r == MBEDTLS_ERR_SSL_WANT_READ || r == MBEDTLS_ERR_SSL_WANT_WRITE) return Result::WantIo;
        if (r == 0 || r == MBEDTLS_ERR_SSL_PEER_CLOSE_NOTIFY) return Result::Closed;
        m_error = mbed_error(r);
        return Result::Failed;
    }
}

Result Engine::write(std::string_view plaintext) {
    size_t done = 0;
    while (done < plaintext.size()) {
        int r = mbedtls_ssl_write(&m_impl->ssl.ssl, reinterpret_cast<const unsigned char*>(plaintext.data() + done),
                                  plaintext.size() - done);
        if (r > 0) {
            done += size_t(r);
            continue;
        }
        if (r == MBEDTLS_ERR_SSL_WANT_WRITE || r == MBEDTLS_ERR_SSL_WANT_READ) continue;  // our bio never blocks
        m_error = mbed_error(r);
        return Result::Failed;
    }
    return Result::Ok;
}

void Engine::close() { mbedtls_ssl_close_notify(&m_impl->ssl.ssl); }

std::string Engine::take_output() { return std::move(m_impl->out); }

bool Engine::has_output() const { return !m_impl->out.empty(); }

SessionInfo Engine::info() const {
    SessionInfo i;
    const mbedtls_ssl_context* ssl = &m_impl->ssl.ssl;
    i.version = mbedtls_ssl_get_version(ssl);
    i.cipher = mbedtls_ssl_get_ciphersuite(ssl) ? mbedtls_ssl_get_ciphersuite(ssl) : "";
    const mbedtls_x509_crt* crt = mbedtls_ssl_get_peer_cert(ssl);
    if (crt) {
        i.has_certificate = true;
        i.certificate.subject = distinguished_name(crt->subject);
        i.certificate.issuer = distinguished_name(crt->issuer);
        i.certificate.not_before = format_time(crt->valid_from);
        i.certificate.not_after = format_time(crt->valid_to);
        i.certificate.names = certificate_names(*crt);
    }
    const Context& c = *m_impl->context;
    if (!c.have_trust) {
        i.verify_problem = "no trusted certificates to verify against";
        return i;
    }
    uint32_t flags = mbedtls_ssl_get_verify_result(ssl);
    if (flags == 0 && crt) {
        i.verified = true;
        return i;
    }
    // The reasons an admin acts on, most useful first.
    std::string why;
    auto add = [&](const std::string& s) { why += why.empty() ? s : "; " + s; };
    if (!crt) add("the server sent no certificate");
    if (flags & MBEDTLS_X509_BADCERT_EXPIRED)
        add("certificate has expired (not after " + i.certificate.not_after + ")");
    if (flags & MBEDTLS_X509_BADCERT_FUTURE)
        add("certificate is not valid yet (not before " + i.certificate.not_before + ")");
    if (flags & MBEDTLS_X509_BADCERT_NOT_TRUSTED)
        add("unknown issuer: \"" + i.certificate.issuer + "\" is not a CA in " + c.trust_source);
    if (flags & MBEDTLS_X509_BADCERT_CN_MISMATCH) {
        i.name_mismatch = true;
        std::string names;
        for (const auto& n : i.certificate.names)
            names += names.empty() ? n : ", " + n;
        add("name mismatch: expected " + m_impl->server_name + ", the certificate names " +
            (names.empty() ? std::string("nothing") : names));
    }
    uint32_t known = MBEDTLS_X509_BADCERT_EXPIRED | MBEDTLS_X509_BADCERT_FUTURE | MBEDTLS_X509_BADCERT_NOT_TRUSTED |
                     MBEDTLS_X509_BADCERT_CN_MISMATCH;
    if (flags & ~known) {
        char buf[512];
        int n = mbedtls_x509_crt_verify_info(buf, sizeof buf, "", flags & ~known);
        std::string other = n > 0 ? std::string(buf, size_t(n)) : "verification failed";
        while (!other.empty() && (other.back() == '\n' || other.back() == ' '))
            other.pop_back();
        for (auto& ch : other)
            if (ch == '\n') ch = ';';
        add(other);
    }
    i.verify_problem = why;
    return i;
}

}  // namespace tls
