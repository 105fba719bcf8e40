// TLS as an engine over byte buffers (mbedTLS 2.28; TLS 1.2). Nothing here touches a socket:
// ciphertext from the peer goes in with receive(), ciphertext for the peer comes out of
// take_output(), so a client and a server engine can be tested face to face in memory.
//
// Call order: receive() whatever arrived, then handshake() until Ok; then read()/write();
// after each call send take_output(). close() queues a close_notify.
//
// Everything specific to the mbedTLS version stays in this folder (the .cpp files): moving to
// mbedTLS 3 and TLS 1.3 changes tls/ only.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace tls {

// Certificates, trust and the random generator, shared by the engines made from it.
class Context;

struct ClientOptions {
    bool verify = false;  // check chain and host name (the result is reported either way)
    std::string ca_file;  // empty: the system bundle
    // A certificate to send when the server asks for one; both or neither.
    std::string certificate_file;
    std::string key_file;
};

// What a server accepts. The default: TLS 1.2, forward secrecy and AEAD only. For devices that
// speak nothing newer, a listener may opt in to TLS 1.0 and 1.1 (minor versions 1 and 2 of
// protocol 3) and to CBC suites.
struct ServerProfile {
    int min_minor = 3;  // 1: TLS 1.0, 2: TLS 1.1, 3: TLS 1.2
    int max_minor = 3;
    bool legacy_ciphers = false;
};

// Whether this mbedTLS was built with TLS 1.0 and 1.1 (MBEDTLS_SSL_PROTO_TLS1, _TLS1_1).
bool legacy_protocols_available();

// nullptr with `error` set when a file cannot be loaded.
std::shared_ptr<Context> client_context(const ClientOptions& options, std::string& error);
std::shared_ptr<Context> server_context(const std::string& certificate_file, const std::string& key_file,
                                        std::string& error, const ServerProfile& profile = {});

struct PeerCertificate {
    std::string subject;
    std::string issuer;
    std::string not_before;  // "2026-11-27 18:00:00 UTC"
    std::string not_after;
    std::vector<std::string> names;  // DNS subjectAltNames, else the CN
};

struct SessionInfo {
    std::string version;  // "TLSv1.2"
    std::string cipher;   // "TLS-ECDHE-RSA-WITH-AES-256-GCM-SHA384"
    bool has_certificate = false;
    PeerCertificate certificate;
    bool verified = false;       // chain and name both check out
    std::string verify_problem;  // why not: "certificate has expired", "unknown issuer ...", "name mismatch ..."
    bool name_mismatch = false;
};

enum class Result { Ok, WantIo, Closed, Failed };

class Engine {
public:
    enum class Role { Client, Server };

    // `server_name`: for a client, the name sent in SNI and checked against the certificate.
    Engine(std::shared_ptr<Context> context, Role role, const std::string& server_name);
    ~Engine();
    Engine(const Engine&) = delete;
    Engine& operator=(const Engine&) = delete;

    void receive(std::string_view ciphertext);
    Result handshake();
    Result read(std::string& plaintext);  // appends what could be decrypted
    Result write(std::string_view plaintext);
    void close();
    std::string take_output();
    bool has_output() const;

    const std::string& error() const { return m_error; }
    SessionInfo info() const;
    // The peer's first bytes were a plaintext SMTP greeting ("220 "): it does not speak TLS
    // from the first byte.
    bool peer_spoke_plaintext() const { return m_plaintext_peer; }

private:
    struct Impl;
    std::unique_ptr<Impl> m_impl;
    std::string m_error;
    bool m_plaintext_peer = false;
    bool m_first_bytes_seen = false;
};

}  // namespace tls
