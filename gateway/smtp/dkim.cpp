#include "gateway/smtp/dkim.hpp"

#include "gateway/common/text.hpp"

#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <strings.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <fstream>
#include <stdexcept>

namespace gateway::dkim {

namespace {

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

// RFC 6376 3.2 tag=value list.
std::vector<std::pair<std::string, std::string>> tags(std::string_view record) {
    std::vector<std::pair<std::string, std::string>> out;
    size_t pos = 0;
    while (pos <= record.size()) {
        size_t end = record.find(';', pos);
        if (end == std::string_view::npos) end = record.size();
        std::string_view item = record.substr(pos, end - pos);
        if (auto eq = item.find('='); eq != std::string_view::npos)
            out.emplace_back(ascii_lower(trim_space(item.substr(0, eq))), trim_space(item.substr(eq + 1)));
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
        if (tag == "k") k = ascii_lower(value);
        if (tag == "p") p = value, have_p = true;
    }
    if (!have_p) {
        why = "the record has no p= (public key)";
        return false;
    }
    if (trim_space(p).empty()) {
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
    std::string domain = ascii_lower(trim_space(mailbox.substr(at + 1)));
    while (!domain.empty() && domain.back() == '.')
        domain.pop_back();
    if (domain.find_first_of(" \t\r\n<>,;:") != std::string::npos) return {};
    return domain;
}

const std::vector<std::string> k_signed_fields = {
    "From",        "Reply-To",           "Subject",          "Date",           "To",
    "Cc",          "Message-ID",         "In-Reply-To",      "References",     "Sender",
    "Resent-Date", "Resent-From",        "Resent-To",        "Resent-Cc",      "Resent-Sender",
    "List-Id",     "List-Help",          "List-Unsubscribe", "List-Subscribe", "List-Post",
    "List-Owner",  "List-Archive",       "MIME-Version",     "Content-Type",   "Content-Transfer-Encoding",
    "Content-ID",  "Content-Description"};
const std::vector<std::string> k_oversigned_fields = {"From", "Reply-To", "Subject",      "Date",
                                                      "To",   "Cc",       "MIME-Version", "Content-Type"};

std::shared_ptr<const Keys> Keys::load(const conf::Config& config, std::string& error) {
    std::shared_ptr<Keys> keys(new Keys());
    for (size_t i = 0; i < config.dkim.size(); ++i) {
        const auto& d = config.dkim[i];
        Key k;
        k.domain = ascii_lower(d.domain);
        k.selector = d.selector;
        std::string pem, why;
        auto info = read_key_file(d.key_file, pem, why);
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
        Bio bio(BIO_new_mem_buf(pem.data(), int(pem.size())));
        EVP_PKEY* pkey = bio ? PEM_read_bio_PrivateKey(bio.get(), nullptr, no_passphrase, nullptr) : nullptr;
        OPENSSL_cleanse(pem.data(), pem.size());
        if (!pkey) {
            error = "dkim[" + std::to_string(i) + "] (" + d.domain + "): cannot load " + d.key_file;
            return nullptr;
        }
        k.pkey = std::shared_ptr<void>(pkey, [](void* p) { EVP_PKEY_free(static_cast<EVP_PKEY*>(p)); });
        k.info = *info;
        keys->m_keys.push_back(std::move(k));
    }
    return keys;
}

std::vector<const Key*> Keys::for_domain(std::string_view domain) const {
    std::string d = ascii_lower(domain);
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

namespace {

bool is_wsp(char c) { return c == ' ' || c == '\t'; }

// The header section as fields: each with its continuation lines, without the final <CR><LF>.
std::vector<std::string_view> fields_of(std::string_view head) {
    std::vector<std::string_view> out;
    size_t pos = 0;
    while (pos < head.size()) {
        size_t eol = head.find('\n', pos);
        size_t next = eol == std::string_view::npos ? head.size() : eol + 1;
        std::string_view line = head.substr(pos, next - pos);
        if (line == "\r\n" || line == "\n") break;  // the empty line
        if (is_wsp(line[0]) && !out.empty()) {
            // A continuation: the field runs on to the end of this line.
            const char* start = out.back().data();
            out.back() = std::string_view(start, size_t(head.data() + next - start));
        } else {
            out.push_back(line);
        }
        pos = next;
    }
    for (auto& f : out) {
        while (!f.empty() && (f.back() == '\n' || f.back() == '\r'))
            f.remove_suffix(1);
    }
    return out;
}

std::string_view field_name(std::string_view field) {
    size_t colon = field.find(':');
    std::string_view name = field.substr(0, colon == std::string_view::npos ? 0 : colon);
    while (!name.empty() && is_wsp(name.back()))
        name.remove_suffix(1);
    return name;
}

struct MdFree {
    void operator()(EVP_MD_CTX* c) const { EVP_MD_CTX_free(c); }
};
using MdCtx = std::unique_ptr<EVP_MD_CTX, MdFree>;

}  // namespace

std::string Signer::relaxed_header(std::string_view field) {
    std::string out;
    size_t colon = field.find(':');
    if (colon == std::string_view::npos) return out;
    out = ascii_lower(field.substr(0, colon));
    while (!out.empty() && is_wsp(out.back()))
        out.pop_back();
    out += ':';
    // The value unfolded, runs of white space made one space, none at its start or end.
    bool space = false, start = true;
    for (size_t i = colon + 1; i < field.size(); ++i) {
        char c = field[i];
        if (c == '\r' || c == '\n') continue;
        if (is_wsp(c)) {
            space = true;
            continue;
        }
        if (space && !start) out += ' ';
        space = start = false;
        out += c;
    }
    return out + "\r\n";
}

Signer::Signer(std::shared_ptr<const Keys> keys, const Key& key)
    : m_keys(std::move(keys)), m_key(key), m_time(static_cast<long long>(std::time(nullptr))) {
    auto* ctx = EVP_MD_CTX_new();
    if (!ctx || EVP_DigestInit_ex(ctx, EVP_sha256(), nullptr) != 1) {
        EVP_MD_CTX_free(ctx);
        throw std::runtime_error("cannot start SHA-256");
    }
    m_sha = ctx;
}

Signer::~Signer() { EVP_MD_CTX_free(static_cast<EVP_MD_CTX*>(m_sha)); }

void Signer::feed(std::string_view content) {
    if (m_in_body) return body(content);
    // The header section is held until its empty line (the caller bounds it).
    size_t before = m_head.size();
    m_head.append(content);
    size_t from = before >= 3 ? before - 3 : 0;
    size_t end = m_head.rfind("\r\n", 0) == 0 ? 0 : m_head.find("\r\n\r\n", from);
    if (end == std::string::npos) return;
    size_t body_start = end == 0 ? 2 : end + 4;
    std::string rest = m_head.substr(body_start);
    m_head.resize(body_start);
    m_in_body = true;
    body(rest);
}

// RFC 6376 3.4.4 relaxed: white space runs in a line made one space, none at its end, empty lines
// at the end of the body ignored; a non-empty body ends in <CR><LF>. Lines are at most
// delivery.line_length long here (the content comes broken to it), so holding one is bounded.
void Signer::body(std::string_view data) {
    size_t pos = 0;
    while (pos < data.size()) {
        size_t nl = data.find('\n', pos);
        if (nl == std::string_view::npos) {
            m_line.append(data.substr(pos));
            return;
        }
        std::string_view line = data.substr(pos, nl - pos);
        if (!m_line.empty()) {  // begun in an earlier piece
            m_line.append(line);
            line = m_line;
        }
        if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
        body_line(line);
        m_line.clear();
        pos = nl + 1;
    }
}

void Signer::body_line(std::string_view line) {
    // Runs of white space become one space, and none ends the line.
    size_t mark = m_canon.size();
    bool space = false;
    for (char c : line) {
        if (is_wsp(c)) {
            space = true;
            continue;
        }
        if (space) m_canon += ' ';
        space = false;
        m_canon += c;
    }
    if (m_canon.size() == mark) {
        m_empty++;
        return;
    }
    if (m_empty > 0) {  // the empty lines before this one count after all
        std::string line_text = m_canon.substr(mark);
        m_canon.resize(mark);
        for (; m_empty > 0; --m_empty)
            m_canon += "\r\n";
        m_canon += line_text;
    }
    m_canon += "\r\n";
    if (m_canon.size() >= 64 * 1024) flush_body();
}

void Signer::flush_body() {
    if (!m_canon.empty()) EVP_DigestUpdate(static_cast<EVP_MD_CTX*>(m_sha), m_canon.data(), m_canon.size());
    m_canon.clear();
}

std::string Signer::finish(std::string& error) {
    if (!m_in_body) {  // a header section without an empty line: the body is empty
        m_in_body = true;
        if (!m_head.empty() && m_head.back() != '\n') m_head += "\r\n";
    }
    if (!m_line.empty()) {
        if (m_line.back() == '\r') m_line.pop_back();
        body_line(m_line);
        m_line.clear();
    }
    flush_body();
    unsigned char bh[EVP_MAX_MD_SIZE];
    unsigned bh_len = 0;
    if (EVP_DigestFinal_ex(static_cast<EVP_MD_CTX*>(m_sha), bh, &bh_len) != 1) {
        error = "SHA-256 failed";
        return {};
    }

    // The fields to sign, each instance taken from the bottom up (RFC 6376 5.4.2).
    auto fields = fields_of(m_head);
    std::vector<std::string> names;  // h=, in order
    std::string hashed;
    std::vector<bool> used(fields.size(), false);
    auto take = [&](const std::string& name) {
        for (size_t i = fields.size(); i-- > 0;) {
            if (used[i] || strncasecmp(std::string(field_name(fields[i])).c_str(), name.c_str(), name.size() + 1) != 0)
                continue;
            used[i] = true;
            hashed += relaxed_header(fields[i]);
            return true;
        }
        return false;
    };
    for (const auto& name : k_signed_fields)
        while (take(name))
            names.push_back(name);
    for (const auto& name : k_oversigned_fields)
        names.push_back(name);  // no instance left: it stands for none

    // The field, folded before 78 columns; the hash covers it with an empty b= (3.7).
    std::vector<std::string> tags = {"v=1",
                                     std::string("a=") + to_string(m_key.info.algorithm),
                                     "c=relaxed/relaxed",
                                     "d=" + m_key.domain,
                                     "s=" + m_key.selector,
                                     "t=" + std::to_string(m_time),
                                     "bh=" + base64(bh, bh_len)};
    std::string h = "h=";
    for (size_t i = 0; i < names.size(); ++i)
        h += (i ? ":" : "") + names[i];
    std::string field = "DKIM-Signature:";
    size_t column = field.size();
    auto add = [&](const std::string& text, bool last) {
        std::string piece = text + (last ? "" : ";");
        if (column + 1 + piece.size() > 76) {
            field += "\r\n\t";
            column = 8;
        } else {
            field += ' ';
            column++;
        }
        field += piece;
        column += piece.size();
    };
    for (const auto& t : tags)
        add(t, false);
    // h= folds after its colons.
    for (size_t pos = 0; pos < h.size();) {
        size_t end = pos + 60 >= h.size() ? h.size() : h.rfind(':', pos + 60);
        if (end == std::string::npos || end <= pos) end = h.find(':', pos + 1);
        if (end == std::string::npos) end = h.size();
        std::string part = h.substr(pos, end - pos + (end < h.size() ? 1 : 0));
        if (end >= h.size()) part += ";";
        if (pos == 0 || column + part.size() > 76) {
            field += "\r\n\t";
            column = 8;
        }
        field += part;
        column += part.size();
        pos = end + 1;
    }
    field += "\r\n\tb=";
    hashed += relaxed_header(field);
    hashed.resize(hashed.size() - 2);  // the signature field goes without its <CR><LF>

    // rsa-sha256: RSASSA-PKCS1-v1_5 with SHA-256; ed25519-sha256 (RFC 8463): PureEdDSA over the
    // SHA-256 hash of the same data.
    auto* pkey = static_cast<EVP_PKEY*>(m_key.pkey.get());
    MdCtx ctx(EVP_MD_CTX_new());
    std::string data = hashed;
    if (m_key.info.algorithm == Algorithm::Ed25519Sha256) {
        unsigned char digest[EVP_MAX_MD_SIZE];
        unsigned len = 0;
        if (EVP_Digest(hashed.data(), hashed.size(), digest, &len, EVP_sha256(), nullptr) != 1) {
            error = "SHA-256 failed";
            return {};
        }
        data.assign(reinterpret_cast<const char*>(digest), len);
    }
    const EVP_MD* md = m_key.info.algorithm == Algorithm::Ed25519Sha256 ? nullptr : EVP_sha256();
    size_t sig_len = 0;
    auto* in = reinterpret_cast<const unsigned char*>(data.data());
    if (!ctx || EVP_DigestSignInit(ctx.get(), nullptr, md, nullptr, pkey) != 1 ||
        EVP_DigestSign(ctx.get(), nullptr, &sig_len, in, data.size()) != 1) {
        error = "the private-key operation failed";
        return {};
    }
    std::string sig(sig_len, '\0');
    if (EVP_DigestSign(ctx.get(), reinterpret_cast<unsigned char*>(sig.data()), &sig_len, in, data.size()) != 1) {
        error = "the private-key operation failed";
        return {};
    }
    sig.resize(sig_len);
    std::string b = base64(reinterpret_cast<const unsigned char*>(sig.data()), sig.size());
    for (size_t pos = 0; pos < b.size(); pos += 64)
        field += (pos ? "\r\n\t " : "") + b.substr(pos, 64);
    return field + "\r\n";
}

}  // namespace gateway::dkim
