#include "gateway/smtp/dkim.hpp"

// dkim.h is C99: its _Bool is C++'s bool.
#define _Bool bool  // NOLINT(bugprone-reserved-identifier): the C99 name the header uses
#include <opendkim/dkim.h>
#undef _Bool
#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <stdexcept>

namespace gateway::dkim {

namespace {

// RFC 6376 5.4.1's list, with the MIME fields that give the body its meaning. Each is signed as
// often as it occurs.
const char* k_sign_headers[] = {"from",
                                "reply-to",
                                "subject",
                                "date",
                                "to",
                                "cc",
                                "message-id",
                                "in-reply-to",
                                "references",
                                "sender",
                                "resent-date",
                                "resent-from",
                                "resent-to",
                                "resent-cc",
                                "resent-sender",
                                "list-id",
                                "list-help",
                                "list-unsubscribe",
                                "list-subscribe",
                                "list-post",
                                "list-owner",
                                "list-archive",
                                "mime-version",
                                "content-type",
                                "content-transfer-encoding",
                                "content-id",
                                "content-description",
                                nullptr};
// Oversigned (RFC 6376 8.15): signed once more than they occur, so a field of these added on the
// way (a second From: shown instead of the signed one) breaks the signature.
const char* k_oversign_headers[] = {"from", "reply-to",     "subject",      "date", "to",
                                    "cc",   "mime-version", "content-type", nullptr};

struct PkeyFree {
    void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};
using Pkey = std::unique_ptr<EVP_PKEY, PkeyFree>;
struct BioFree {
    void operator()(BIO* b) const { BIO_free(b); }
};
using Bio = std::unique_ptr<BIO, BioFree>;

// An encrypted key would make OpenSSL ask on the terminal: refuse it instead.
int no_passphrase(char*, int, int, void*) { return -1; }

std::string base64(const unsigned char* data, size_t len) {
    std::string out(4 * ((len + 2) / 3) + 1, '\0');
    int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()), data, int(len));
    out.resize(n < 0 ? 0 : size_t(n));
    return out;
}

std::optional<std::string> unbase64(std::string_view text) {
    std::string clean;
    for (char c : text)
        if (!std::isspace(static_cast<unsigned char>(c))) clean += c;
    if (clean.empty() || clean.size() % 4 != 0) return std::nullopt;
    std::string out(clean.size() / 4 * 3, '\0');
    int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                            reinterpret_cast<const unsigned char*>(clean.data()), int(clean.size()));
    if (n < 0) return std::nullopt;
    size_t pad = clean.size() - clean.find_last_not_of('=') - 1;  // EVP_DecodeBlock keeps the padding's zeros
    out.resize(size_t(n) - std::min(pad, size_t(n)));
    return out;
}

std::string lower(std::string_view s) {
    std::string out(s);
    for (auto& c : out)
        c = char(std::tolower(static_cast<unsigned char>(c)));
    return out;
}

std::string trim(std::string_view s) {
    size_t b = s.find_first_not_of(" \t\r\n"), e = s.find_last_not_of(" \t\r\n");
    return b == std::string_view::npos ? std::string() : std::string(s.substr(b, e - b + 1));
}

// RFC 6376 3.2 tag=value list.
std::vector<std::pair<std::string, std::string>> tags(std::string_view record) {
    std::vector<std::pair<std::string, std::string>> out;
    size_t pos = 0;
    while (pos <= record.size()) {
        size_t end = record.find(';', pos);
        if (end == std::string_view::npos) end = record.size();
        std::string_view item = record.substr(pos, end - pos);
        if (auto eq = item.find('='); eq != std::string_view::npos)
            out.emplace_back(lower(trim(item.substr(0, eq))), trim(item.substr(eq + 1)));
        pos = end + 1;
    }
    return out;
}

}  // namespace

const char* to_string(Algorithm a) { return a == Algorithm::Ed25519Sha256 ? "ed25519-sha256" : "rsa-sha256"; }

std::optional<KeyInfo> inspect_key(const std::string& pem, std::string& error) {
    Bio bio(BIO_new_mem_buf(pem.data(), int(pem.size())));
    Pkey key(bio ? PEM_read_bio_PrivateKey(bio.get(), nullptr, no_passphrase, nullptr) : nullptr);
    if (!key) {
        error = pem.find("ENCRYPTED") != std::string::npos
                    ? "the key is encrypted; the gateway needs it without a passphrase (openssl pkey -in FILE -out NEW)"
                    : "not a PEM private key (smtpgw dkim keygen writes one)";
        return std::nullopt;
    }
    KeyInfo info;
    int type = EVP_PKEY_get_base_id(key.get());
    if (type == EVP_PKEY_RSA) {
        info.algorithm = Algorithm::RsaSha256;
        info.bits = unsigned(EVP_PKEY_get_bits(key.get()));
        unsigned char* der = nullptr;
        int len = i2d_PUBKEY(key.get(), &der);
        if (len <= 0) {
            error = "cannot derive the public key";
            return std::nullopt;
        }
        info.public_key = base64(der, size_t(len));
        OPENSSL_free(der);
    } else if (type == EVP_PKEY_ED25519) {
        info.algorithm = Algorithm::Ed25519Sha256;
        info.bits = 256;
        unsigned char raw[32];
        size_t len = sizeof raw;
        if (EVP_PKEY_get_raw_public_key(key.get(), raw, &len) != 1 || len != sizeof raw) {
            error = "cannot derive the public key";
            return std::nullopt;
        }
        info.public_key = base64(raw, len);
    } else {
        error = "the key is neither RSA nor Ed25519, the two DKIM algorithms (RFC 8301, RFC 8463)";
        return std::nullopt;
    }
    return info;
}

std::optional<KeyInfo> read_key_file(const std::string& path, std::string& pem, std::string& error) {
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) {
        error = "cannot read " + path + ": " + std::strerror(errno);
        return std::nullopt;
    }
    if (!S_ISREG(st.st_mode) || st.st_size > 64 * 1024) {
        error = path + " is not a key file (not a regular file of at most 64 KiB)";
        return std::nullopt;
    }
    std::ifstream in(path, std::ios::binary);
    if (!in) {
        error = "cannot read " + path + ": " + std::strerror(errno);
        return std::nullopt;
    }
    pem.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    auto info = inspect_key(pem, error);
    if (!info) error = path + ": " + error;
    return info;
}

std::string txt_record(const KeyInfo& key) {
    return std::string("v=DKIM1; k=") + (key.algorithm == Algorithm::Ed25519Sha256 ? "ed25519" : "rsa") +
           "; p=" + key.public_key;
}

bool record_matches(std::string_view record, const KeyInfo& key, std::string& why) {
    std::string k = "rsa", p;
    bool have_p = false;
    for (const auto& [tag, value] : tags(record)) {
        if (tag == "v" && value != "DKIM1") {
            why = "v=" + value + " is not DKIM1";
            return false;
        }
        if (tag == "k") k = lower(value);
        if (tag == "p") p = value, have_p = true;
    }
    if (!have_p) {
        why = "the record has no p= (public key)";
        return false;
    }
    if (trim(p).empty()) {
        why = "the record has an empty p=: the key is revoked (RFC 6376 3.6.1)";
        return false;
    }
    std::string want = key.algorithm == Algorithm::Ed25519Sha256 ? "ed25519" : "rsa";
    if (k != want) {
        why = "the record says k=" + k + ", the key file holds an " + want + " key";
        return false;
    }
    auto published = unbase64(p);
    auto ours = unbase64(key.public_key);
    if (!published || !ours) {
        why = "p= is not base64";
        return false;
    }
    // RSA: the SubjectPublicKeyInfo, or (as some tools publish it) the bare RSAPublicKey that
    // ends it.
    bool same = *published == *ours ||
                (key.algorithm == Algorithm::RsaSha256 && published->size() >= 64 && ours->size() > published->size() &&
                 ours->compare(ours->size() - published->size(), std::string::npos, *published) == 0);
    if (!same) why = "the record publishes another public key than the key file's";
    return same;
}

std::string generate_key(Algorithm algorithm, unsigned bits) {
    Pkey key(algorithm == Algorithm::Ed25519Sha256 ? EVP_PKEY_Q_keygen(nullptr, nullptr, "ED25519")
                                                   : EVP_PKEY_Q_keygen(nullptr, nullptr, "RSA", size_t(bits)));
    if (!key) throw std::runtime_error("key generation failed");
    Bio bio(BIO_new(BIO_s_mem()));
    if (!bio || PEM_write_bio_PrivateKey(bio.get(), key.get(), nullptr, nullptr, 0, nullptr, nullptr) != 1)
        throw std::runtime_error("cannot write the key");
    char* data = nullptr;
    long len = BIO_get_mem_data(bio.get(), &data);
    return std::string(data, size_t(len));
}

std::string from_domain(std::string_view headers) {
    // The first From: field, its folded lines joined.
    size_t pos = 0;
    std::string value;
    while (pos < headers.size()) {
        size_t eol = headers.find('\n', pos);
        size_t next = eol == std::string_view::npos ? headers.size() : eol + 1;
        std::string_view line = headers.substr(pos, next - pos);
        if (line == "\r\n" || line == "\n") break;  // end of the header section
        if (line.size() >= 5 && strncasecmp(line.data(), "from", 4) == 0) {
            size_t colon = 4;
            while (colon < line.size() && (line[colon] == ' ' || line[colon] == '\t'))
                colon++;
            if (colon < line.size() && line[colon] == ':') {
                value = std::string(line.substr(colon + 1));
                while (next < headers.size() && (headers[next] == ' ' || headers[next] == '\t')) {
                    size_t e = headers.find('\n', next);
                    size_t n = e == std::string_view::npos ? headers.size() : e + 1;
                    value += headers.substr(next, n - next);
                    next = n;
                }
                break;
            }
        }
        pos = next;
    }
    if (value.empty()) return {};
    // Comments and quoted strings (a display name may hold '@' or '<') go first.
    std::string plain;
    int depth = 0;
    bool quoted = false;
    for (size_t i = 0; i < value.size(); ++i) {
        char c = value[i];
        if (c == '\\' && i + 1 < value.size()) {
            ++i;
            continue;
        }
        if (quoted) {
            if (c == '"') quoted = false;
            continue;
        }
        if (depth > 0) {
            depth += c == '(' ? 1 : c == ')' ? -1 : 0;
            continue;
        }
        if (c == '"')
            quoted = true;
        else if (c == '(')
            depth = 1;
        else
            plain += c;
    }
    std::string_view mailbox = plain;
    if (auto lt = mailbox.find('<'); lt != std::string_view::npos) {
        mailbox = mailbox.substr(lt + 1);
        mailbox = mailbox.substr(0, mailbox.find('>'));
    } else {
        mailbox = mailbox.substr(0, mailbox.find(','));  // the first of a list
    }
    auto at = mailbox.rfind('@');
    if (at == std::string_view::npos) return {};
    std::string domain = lower(trim(mailbox.substr(at + 1)));
    while (!domain.empty() && domain.back() == '.')
        domain.pop_back();
    if (domain.find_first_of(" \t\r\n<>,;:") != std::string::npos) return {};
    return domain;
}

Keys::Keys() = default;

Keys::~Keys() {
    if (m_lib) dkim_close(static_cast<DKIM_LIB*>(m_lib));
}

std::shared_ptr<const Keys> Keys::load(const conf::Config& config, std::string& error) {
    std::shared_ptr<Keys> keys(new Keys());
    for (size_t i = 0; i < config.dkim.size(); ++i) {
        const auto& d = config.dkim[i];
        Key k;
        k.domain = lower(d.domain);
        k.selector = d.selector;
        std::string why;
        auto info = read_key_file(d.key_file, k.pem, why);
        if (!info) {
            error = "dkim[" + std::to_string(i) + "] (" + d.domain + "): " + why;
            return nullptr;
        }
        if (info->algorithm == Algorithm::RsaSha256 && info->bits < k_min_rsa_bits) {
            error = "dkim[" + std::to_string(i) + "] (" + d.domain + "): " + d.key_file + " is an RSA key of " +
                    std::to_string(info->bits) + " bits; verifiers ignore signatures with keys under " +
                    std::to_string(k_min_rsa_bits) + " bits (RFC 8301)";
            return nullptr;
        }
        k.info = *info;
        keys->m_keys.push_back(std::move(k));
    }
    if (keys->m_keys.empty()) return keys;
    DKIM_LIB* lib = dkim_init(nullptr, nullptr);
    if (!lib) {
        error = "cannot start libopendkim";
        return nullptr;
    }
    keys->m_lib = lib;
    const char** sign = k_sign_headers;
    const char** over = k_oversign_headers;
    if (dkim_options(lib, DKIM_OP_SETOPT, DKIM_OPTS_SIGNHDRS, sign, sizeof sign) != DKIM_STAT_OK ||
        dkim_options(lib, DKIM_OP_SETOPT, DKIM_OPTS_OVERSIGNHDRS, over, sizeof over) != DKIM_STAT_OK) {
        error = "libopendkim refused the header lists";
        return nullptr;
    }
    return keys;
}

std::vector<const Key*> Keys::for_domain(std::string_view domain) const {
    std::string d = lower(domain);
    while (!d.empty()) {
        std::vector<const Key*> out;
        for (const auto& k : m_keys)
            if (k.domain == d) out.push_back(&k);
        if (!out.empty()) return out;
        auto dot = d.find('.');
        if (dot == std::string::npos) break;
        d.erase(0, dot + 1);
    }
    return {};
}

Signer::Signer(std::shared_ptr<const Keys> keys, const Key& key, const std::string& message_id)
    : m_keys(std::move(keys)), m_key(key) {
    DKIM_STAT status = DKIM_STAT_OK;
    DKIM* d = dkim_sign(static_cast<DKIM_LIB*>(m_keys->library()), reinterpret_cast<const u_char*>(message_id.c_str()),
                        nullptr, reinterpret_cast<u_char*>(const_cast<char*>(key.pem.c_str())),
                        reinterpret_cast<const u_char*>(key.selector.c_str()),
                        reinterpret_cast<const u_char*>(key.domain.c_str()), DKIM_CANON_RELAXED, DKIM_CANON_RELAXED,
                        key.info.algorithm == Algorithm::Ed25519Sha256 ? DKIM_SIGN_ED25519SHA256 : DKIM_SIGN_RSASHA256,
                        -1, &status);
    if (!d) throw std::runtime_error(std::string("libopendkim: ") + dkim_getresultstr(status));
    m_dkim = d;
}

Signer::~Signer() {
    if (m_dkim) dkim_free(static_cast<DKIM*>(m_dkim));
}

void Signer::feed(std::string_view content) {
    if (!m_error.empty() || content.empty()) return;
    auto* d = static_cast<DKIM*>(m_dkim);
    DKIM_STAT s = dkim_chunk(d, reinterpret_cast<u_char*>(const_cast<char*>(content.data())), content.size());
    if (s != DKIM_STAT_OK) {
        const char* e = dkim_geterror(d);
        m_error = std::string(dkim_getresultstr(s)) + (e && *e ? std::string(": ") + e : "");
    }
}

std::string Signer::finish(std::string& error) {
    auto* d = static_cast<DKIM*>(m_dkim);
    auto failed = [&](DKIM_STAT s) {
        const char* e = dkim_geterror(d);
        error = std::string(dkim_getresultstr(s)) + (e && *e ? std::string(": ") + e : "");
        return std::string();
    };
    if (!m_error.empty()) {
        error = m_error;
        return {};
    }
    if (DKIM_STAT s = dkim_chunk(d, nullptr, 0); s != DKIM_STAT_OK) return failed(s);
    if (DKIM_STAT s = dkim_eom(d, nullptr); s != DKIM_STAT_OK) return failed(s);
    static const char k_name[] = "DKIM-Signature: ";
    u_char* value = nullptr;
    size_t len = 0;
    if (DKIM_STAT s = dkim_getsighdr_d(d, sizeof k_name - 1, &value, &len); s != DKIM_STAT_OK) return failed(s);
    // Folded with bare <LF>: on the wire every line ends in <CR><LF>.
    std::string out = k_name;
    for (size_t i = 0; i < len; ++i) {
        if (value[i] == '\r') continue;
        if (value[i] == '\n') out += '\r';
        out += char(value[i]);
    }
    return out + "\r\n";
}

}  // namespace gateway::dkim
