// DKIM signing (RFC 6376) of what delivery sends, and the key handling around it.
//
// The canonicalization (relaxed/relaxed) and the signature field are written here; the
// cryptography is OpenSSL's libcrypto (RSA-SHA256, and Ed25519-SHA256 of RFC 8463, which
// mbedTLS 2.28 lacks). Debian 12's libopendkim, the reference implementation, was the first
// choice, but its 2.11.0~beta2 frees no Ed25519 key it loads (dkim_free has no case for it): a
// kilobyte lost with every signature in a process that runs for months. It stays in the tests as
// one of the two independent verifiers (opendkim-testmsg, with python3-dkim's dkimverify).
// This file is the only one that includes <openssl/...>.
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
    std::string domain, selector;
    KeyInfo info;
    std::shared_ptr<void> pkey;  // the EVP_PKEY, read once; signing with it from several threads is safe
};

// The dkim: entries with their keys read, as one configuration uses them.
class Keys {
public:
    // nullptr with `error` naming the entry when a key file cannot be used.
    static std::shared_ptr<const Keys> load(const conf::Config& config, std::string& error);
    Keys(const Keys&) = delete;
    Keys& operator=(const Keys&) = delete;

    // The keys of the most specific configured domain that is `domain` or a parent of it
    // (relaxed DMARC alignment): a domain listed twice, say with RSA and Ed25519, signs twice.
    std::vector<const Key*> for_domain(std::string_view domain) const;
    bool empty() const { return m_keys.empty(); }

private:
    Keys() = default;
    std::vector<Key> m_keys;
};

// Fields signed (RFC 6376 5.4.1's list and the MIME fields that give the body its meaning), each
// as often as it occurs; and those oversigned (8.15), once more than they occur, so that one
// added on the way (a second From: shown instead of the signed one) breaks the signature.
extern const std::vector<std::string> k_signed_fields;
extern const std::vector<std::string> k_oversigned_fields;

// One signature of one message: relaxed/relaxed, the whole body, t= now. feed() on the loop as
// the content goes by (hashing the body as it comes; the header section is held, bounded by the
// caller); finish() does the private-key operation and may run on another thread.
class Signer {
public:
    Signer(std::shared_ptr<const Keys> keys, const Key& key);
    ~Signer();
    Signer(const Signer&) = delete;
    Signer& operator=(const Signer&) = delete;

    void feed(std::string_view content);  // the message as sent (headers and body), without dot-stuffing
    // "DKIM-Signature: v=1; ...\r\n" (folded), or empty with `error`.
    std::string finish(std::string& error);
    const Key& key() const { return m_key; }

    // RFC 6376 3.4.2: one header field (name, colon, value with its folding, no final <CR><LF>)
    // as relaxed canonicalization makes it, with <CR><LF>.
    static std::string relaxed_header(std::string_view field);

private:
    void body(std::string_view data);
    void body_line(std::string_view line);
    void flush_body();

    std::shared_ptr<const Keys> m_keys;
    const Key& m_key;
    long long m_time;
    std::string m_head;  // the header section, until its empty line
    bool m_in_body = false;
    std::string m_line;     // a body line not yet ended
    size_t m_empty = 0;     // empty body lines held back: they count only if a line follows
    std::string m_canon;    // canonical body not yet hashed (hashed in blocks of 64 KiB)
    void* m_sha = nullptr;  // the body hash (EVP_MD_CTX)
};

}  // namespace gateway::dkim
