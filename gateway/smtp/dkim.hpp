// DKIM signing (RFC 6376) of what delivery sends, and the key handling around it.
//
// The signature itself comes from Debian's libopendkim, the reference implementation that
// OpenDKIM's milter runs beside Postfix: canonicalization, header selection, oversigning and the
// folding of the DKIM-Signature field are its well-tried code, not a second implementation of
// ours. It signs with OpenSSL's libcrypto, so keys are read with libcrypto here too (check-config,
// `dkim keygen`, the doctor): a key that passes those checks is one the signer loads. (mbedTLS
// 2.28, used for TLS, has RSA but not Ed25519.) This file is the only one that includes
// <opendkim/...> or <openssl/...>.
//
// Signing happens in the delivery session, on the content after every change the gateway makes
// (From: rewriting and the added Message-ID:/Date: at acceptance; the 8BITMIME downgrade and the
// breaking of long lines at delivery): feed() sees the lines as the server will get them, without
// the dot-stuffing of DATA.
#pragma once

#include "conf/config.hpp"

#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace gateway::dkim {

enum class Algorithm { RsaSha256, Ed25519Sha256 };
const char* to_string(Algorithm a);  // "rsa-sha256", "ed25519-sha256"

// RFC 8301 3.2: RSA keys below 1024 bits are not to be used; below 2048 some verifiers already
// treat the signature as weak.
constexpr unsigned k_min_rsa_bits = 1024;
constexpr unsigned k_recommended_rsa_bits = 2048;

struct KeyInfo {
    Algorithm algorithm = Algorithm::RsaSha256;
    unsigned bits = 0;       // the RSA modulus; 256 for Ed25519
    std::string public_key;  // the p= value: base64 of the SubjectPublicKeyInfo (RSA), of the 32-octet key (Ed25519)
};

// A private key in PEM (PKCS#8, or PKCS#1 for RSA). nullopt with `error` when it is not one.
std::optional<KeyInfo> inspect_key(const std::string& pem, std::string& error);
// The file's PEM in `pem`; `error` says what is wrong with the file or the key.
std::optional<KeyInfo> read_key_file(const std::string& path, std::string& pem, std::string& error);

// The TXT record to publish at SELECTOR._domainkey.DOMAIN: "v=DKIM1; k=rsa; p=...".
std::string txt_record(const KeyInfo& key);
// Whether a published record carries this key; `why` says how it does not (no p=, revoked, another key).
bool record_matches(std::string_view record, const KeyInfo& key, std::string& why);

// A new private key in PKCS#8 PEM: RSA of `bits` bits, or Ed25519 (bits ignored).
std::string generate_key(Algorithm algorithm, unsigned bits);

// The domain of the first mailbox of the first From: field in a header section (lower case,
// A-labels as written); empty when there is none.
std::string from_domain(std::string_view header_section);

struct Key {
    std::string domain, selector, pem;
    KeyInfo info;
};

// The dkim: entries with their keys read, as one configuration uses them.
class Keys {
public:
    // nullptr with `error` naming the entry when a key file cannot be used.
    static std::shared_ptr<const Keys> load(const conf::Config& config, std::string& error);
    ~Keys();
    Keys(const Keys&) = delete;
    Keys& operator=(const Keys&) = delete;

    // The keys of the most specific configured domain that is `domain` or a parent of it
    // (relaxed DMARC alignment): a domain listed twice, say with RSA and Ed25519, signs twice.
    std::vector<const Key*> for_domain(std::string_view domain) const;
    bool empty() const { return m_keys.empty(); }
    void* library() const { return m_lib; }  // the DKIM_LIB

private:
    Keys();
    std::vector<Key> m_keys;
    void* m_lib = nullptr;
};

// One signature of one message. feed() on the loop as the content goes by (cheap: hashing);
// finish() does the private-key operation and may run on another thread.
class Signer {
public:
    // Throws std::runtime_error when libopendkim refuses the key.
    Signer(std::shared_ptr<const Keys> keys, const Key& key, const std::string& message_id);
    ~Signer();
    Signer(const Signer&) = delete;
    Signer& operator=(const Signer&) = delete;

    void feed(std::string_view content);  // the message as sent (headers and body), without dot-stuffing
    // "DKIM-Signature: v=1; ...\r\n" (folded), or empty with `error`.
    std::string finish(std::string& error);
    const Key& key() const { return m_key; }

private:
    std::shared_ptr<const Keys> m_keys;
    const Key& m_key;
    void* m_dkim = nullptr;  // the DKIM handle
    std::string m_error;     // the first failure of feed(), reported by finish()
};

}  // namespace gateway::dkim
