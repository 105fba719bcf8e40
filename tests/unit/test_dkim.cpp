#include "conf/config_load.hpp"
#include "gateway/smtp/dkim.hpp"
#include "gateway/smtp/smtp_client.hpp"

#include <catch2/catch.hpp>

#include <sys/stat.h>
#include <unistd.h>
#include <cstdio>
#include <cstring>
#include <fstream>

using namespace gateway;

namespace {

struct KeyFile {
    std::string path;
    explicit KeyFile(const std::string& pem) {
        char name[] = "/tmp/smtpgw-dkim-XXXXXX";
        int fd = mkstemp(name);
        path = name;
        REQUIRE(::write(fd, pem.data(), pem.size()) == ssize_t(pem.size()));
        ::close(fd);
    }
    ~KeyFile() { std::remove(path.c_str()); }
};

const char k_b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

std::string decode64(const std::string& in) {
    std::string out;
    unsigned buf = 0;
    int bits = 0;
    for (char c : in) {
        const char* p = std::strchr(k_b64, c);
        if (!p || c == 0) continue;
        buf = (buf << 6) | unsigned(p - k_b64);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out += char((buf >> bits) & 0xff);
        }
    }
    return out;
}

std::string encode64(const std::string& in) {
    std::string out;
    size_t i = 0;
    for (; i + 2 < in.size(); i += 3) {
        unsigned v = (uint8_t(in[i]) << 16) | (uint8_t(in[i + 1]) << 8) | uint8_t(in[i + 2]);
        for (int s = 18; s >= 0; s -= 6)
            out += k_b64[(v >> s) & 63];
    }
    if (i + 1 == in.size()) {
        unsigned v = uint8_t(in[i]) << 16;
        out += std::string{k_b64[(v >> 18) & 63], k_b64[(v >> 12) & 63], '=', '='};
    } else if (i + 2 == in.size()) {
        unsigned v = (uint8_t(in[i]) << 16) | (uint8_t(in[i + 1]) << 8);
        out += std::string{k_b64[(v >> 18) & 63], k_b64[(v >> 12) & 63], k_b64[(v >> 6) & 63], '='};
    }
    return out;
}

}  // namespace

TEST_CASE("the From: domain that picks the DKIM key", "[dkim]") {
    CHECK(dkim::from_domain("From: a@Example.COM\r\n\r\n") == "example.com");
    CHECK(dkim::from_domain("Subject: x\r\nfrom : \"Scan <ner>@x\" <scan@scan.example.org>\r\n\r\n") ==
          "scan.example.org");
    CHECK(dkim::from_domain("From: Office (a@comment.example)\r\n <office@real.example>\r\n") == "real.example");
    CHECK(dkim::from_domain("From: first@one.example, second@two.example\r\n") == "one.example");
    CHECK(dkim::from_domain("From: a@dot.example.\r\n") == "dot.example");
    // Only the header section counts, and only From: (not From-X: or a body line).
    CHECK(dkim::from_domain("Subject: x\r\n\r\nFrom: a@body.example\r\n").empty());
    CHECK(dkim::from_domain("From-Alias: a@alias.example\r\n\r\n").empty());
    CHECK(dkim::from_domain("From: undisclosed\r\n").empty());
    CHECK(dkim::from_domain("").empty());
}

TEST_CASE("DKIM keys: generated, described, matched against published records", "[dkim]") {
    std::string error;
    auto rsa = dkim::inspect_key(dkim::generate_key(dkim::Algorithm::RsaSha256, 2048), error);
    REQUIRE(rsa);
    CHECK(rsa->algorithm == dkim::Algorithm::RsaSha256);
    CHECK(rsa->bits == 2048);
    auto ed = dkim::inspect_key(dkim::generate_key(dkim::Algorithm::Ed25519Sha256, 0), error);
    REQUIRE(ed);
    CHECK(ed->bits == 256);
    CHECK(decode64(ed->public_key).size() == 32);
    CHECK(dkim::txt_record(*ed) == "v=DKIM1; k=ed25519; p=" + ed->public_key);

    std::string why;
    std::string record = dkim::txt_record(*rsa);
    CHECK(record.rfind("v=DKIM1; k=rsa; p=MIIBIjAN", 0) == 0);
    CHECK(dkim::record_matches(record, *rsa, why));
    // Split the way DNS strings come joined, with spaces and tags in another order.
    CHECK(dkim::record_matches("k=rsa ; t=s; p=" + rsa->public_key.substr(0, 100) + " " + rsa->public_key.substr(100),
                               *rsa, why));
    // No k=: RSA by default.
    CHECK(dkim::record_matches("v=DKIM1; p=" + rsa->public_key, *rsa, why));
    // The bare RSAPublicKey, as some tools publish it, is the end of the SubjectPublicKeyInfo.
    std::string spki = decode64(rsa->public_key);
    CHECK(dkim::record_matches("v=DKIM1; k=rsa; p=" + encode64(spki.substr(24)), *rsa, why));

    auto other = dkim::inspect_key(dkim::generate_key(dkim::Algorithm::RsaSha256, 2048), error);
    REQUIRE(other);
    CHECK_FALSE(dkim::record_matches(dkim::txt_record(*other), *rsa, why));
    CHECK(why == "the record publishes another public key than the key file's");
    CHECK_FALSE(dkim::record_matches("v=DKIM1; k=rsa; p=", *rsa, why));
    CHECK(why.find("revoked") != std::string::npos);
    CHECK_FALSE(dkim::record_matches("v=DKIM1; k=ed25519; p=" + rsa->public_key, *rsa, why));
    CHECK(why == "the record says k=ed25519, the key file holds an rsa key");
    CHECK_FALSE(dkim::record_matches("v=spf1 -all", *rsa, why));

    CHECK_FALSE(dkim::inspect_key("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", error));
    CHECK(error.find("not a PEM private key") != std::string::npos);
}

TEST_CASE("DKIM keys by domain: the most specific configured domain signs", "[dkim]") {
    KeyFile parent_rsa(dkim::generate_key(dkim::Algorithm::RsaSha256, 2048));
    KeyFile parent_ed(dkim::generate_key(dkim::Algorithm::Ed25519Sha256, 0));
    KeyFile child(dkim::generate_key(dkim::Algorithm::Ed25519Sha256, 0));
    auto r = conf::load_string(
        "dkim:\n"
        "  - { domain: Example.com, selector: a, key_file: " +
            parent_rsa.path +
            " }\n"
            "  - { domain: example.com, selector: b, key_file: " +
            parent_ed.path +
            " }\n"
            "  - { domain: eu.example.com, selector: c, key_file: " +
            child.path + " }\n",
        "t.yaml");
    REQUIRE(r.ok());
    std::string error;
    auto keys = dkim::Keys::load(*r.config, error);
    REQUIRE(keys);
    auto two = keys->for_domain("mail.example.com");
    REQUIRE(two.size() == 2);
    CHECK(two[0]->selector == "a");
    CHECK(two[1]->selector == "b");
    auto one = keys->for_domain("Dept.EU.example.com");
    REQUIRE(one.size() == 1);
    CHECK(one[0]->selector == "c");
    CHECK(keys->for_domain("example.org").empty());
    CHECK(keys->for_domain("").empty());
    CHECK(keys->for_domain("com").empty());

    // A signature from a loaded key: the field as it goes on the wire.
    dkim::Signer signer(keys, *two[0]);
    signer.feed("From: a@mail.example.com\r\nSubject: x\r\n\r\nbody\r\n");
    std::string sig = signer.finish(error);
    INFO(error);
    REQUIRE(sig.rfind("DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=example.com; s=a;", 0) == 0);
    CHECK(sig.size() >= 2);
    CHECK(sig.compare(sig.size() - 2, 2, "\r\n") == 0);
    for (size_t pos = sig.find('\n'); pos + 1 < sig.size(); pos = sig.find('\n', pos + 1)) {
        CHECK(sig[pos - 1] == '\r');
        CHECK(sig[pos + 1] == '\t');  // folded
    }
}

TEST_CASE("relaxed canonicalization (RFC 6376 3.4.2, 3.4.4 and the example of 3.4.5)", "[dkim]") {
    CHECK(dkim::Signer::relaxed_header("A: X") == "a:X\r\n");
    CHECK(dkim::Signer::relaxed_header("B : Y\t\r\n\tZ  ") == "b:Y Z\r\n");
    // Only the colon after the name loses its white space.
    CHECK(dkim::Signer::relaxed_header("Subject:  Re:  a\t: b ") == "subject:Re: a : b\r\n");

    KeyFile key(dkim::generate_key(dkim::Algorithm::Ed25519Sha256, 0));
    auto r = conf::load_string("dkim:\n  - { domain: example.com, selector: s, key_file: " + key.path + " }\n", "t");
    REQUIRE(r.ok());
    std::string error;
    auto keys = dkim::Keys::load(*r.config, error);
    REQUIRE(keys);
    auto body_hash = [&](const std::vector<std::string>& pieces) {
        dkim::Signer s(keys, *keys->for_domain("example.com").at(0));
        for (const auto& p : pieces)
            s.feed(p);
        std::string sig = s.finish(error);
        auto at = sig.find("bh=");
        REQUIRE(at != std::string::npos);
        return sig.substr(at, sig.find(';', at) - at);
    };
    std::string head = "From: a@example.com\r\n\r\n";
    CHECK(body_hash({head + " C \r\nD \t E\r\n\r\n\r\n"}) == body_hash({head + " C\r\nD E\r\n"}));
    // In pieces cut anywhere, the empty line that ends the header section included.
    CHECK(body_hash({"From: a@example.com\r", "\n\r", "\n C \r", "\nD \t", " E\r\n\r", "\n"}) ==
          body_hash({head + " C\r\nD E\r\n"}));
    // An empty body, empty lines only, and no body at all hash alike (the empty string).
    CHECK(body_hash({head}) == "bh=47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=");
    CHECK(body_hash({head + "\r\n\r\n"}) == body_hash({head}));
    CHECK(body_hash({"From: a@example.com\r\n"}) == body_hash({head}));
    // Empty lines inside the body count.
    CHECK(body_hash({head + "a\r\n\r\nb\r\n"}) != body_hash({head + "a\r\nb\r\n"}));
}

TEST_CASE("DKIM configuration: what check-config refuses", "[dkim][config]") {
    KeyFile key(dkim::generate_key(dkim::Algorithm::Ed25519Sha256, 0));
    auto errors = [](const std::string& yaml) {
        auto r = conf::load_string(yaml, "t.yaml");
        std::string out;
        for (const auto& d : r.diagnostics)
            if (d.error) out += d.text + "\n";
        return out;
    };
    CHECK(errors("dkim:\n  - { domain: example.com, selector: s1 }\n").find("needs domain:, selector: and key_file:") !=
          std::string::npos);
    CHECK(errors("dkim:\n  - { domain: 192.0.2.1, selector: s1, key_file: " + key.path + " }\n")
              .find("is not a domain name") != std::string::npos);
    CHECK(errors("dkim:\n  - { domain: example.com, selector: a..b, key_file: " + key.path + " }\n")
              .find("is not a selector") != std::string::npos);
    CHECK(errors("dkim:\n  - { domain: example.com, selector: s1, key_file: " + key.path +
                 " }\n  - { domain: Example.com, selector: s1, key_file: " + key.path + " }\n")
              .find("a second key for s1._domainkey.Example.com") != std::string::npos);
    CHECK(errors("dkim: { domain: example.com }\n").find("expected a list") != std::string::npos);
    CHECK(errors("dkim:\n  - { domain: example.com, selector: s2026.eu, key_file: " + key.path + " }\n").empty());

    // A key too short to sign with is refused when the keys are loaded (serve, reload).
    KeyFile weak(dkim::generate_key(dkim::Algorithm::RsaSha256, 512));
    auto r = conf::load_string("dkim:\n  - { domain: example.com, selector: s1, key_file: " + weak.path + " }\n", "t");
    REQUIRE(r.ok());
    std::string error;
    CHECK_FALSE(dkim::Keys::load(*r.config, error));
    CHECK(error.find("is an RSA key of 512 bits") != std::string::npos);
}

TEST_CASE("content lines as sent: long lines broken, dots doubled only for DATA", "[dkim][smtp]") {
    std::string out;
    WireLines data(10, true);
    data.append(".dot\r\n0123456789ABCDE\r\nend", out);
    data.finish(out);
    CHECK(out == "..dot\r\n0123456789\r\n ABCDE\r\nend\r\n");

    std::string signed_view;
    WireLines sign(10, false);
    // In pieces that cut lines and the CR LF apart: the same lines.
    for (std::string_view piece : {".do", "t\r", "\n01234", "56789ABCDE\r\nend"})
        sign.append(piece, signed_view);
    sign.finish(signed_view);
    CHECK(signed_view == ".dot\r\n0123456789\r\n ABCDE\r\nend\r\n");

    // A line exactly at the limit, cut between its <CR> and <LF>: not broken.
    std::string at_limit;
    WireLines cut(10, true);
    cut.append("0123456789\r", at_limit);
    cut.append("\n.x\r", at_limit);
    cut.append("\n", at_limit);
    cut.finish(at_limit);
    CHECK(at_limit == "0123456789\r\n..x\r\n");

    std::string ended;
    WireLines whole(998, false);
    whole.append("a\r\n", ended);
    whole.finish(ended);
    CHECK(ended == "a\r\n");
}
