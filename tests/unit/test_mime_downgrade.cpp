// The 8BITMIME downgrade: structure kept, 8-bit leaf parts in quoted-printable, whatever the
// pieces the content arrives in.
#include "gateway/smtp/mime_downgrade.hpp"

#include <catch2/catch.hpp>

#include <algorithm>
#include <string>

using namespace gateway;

namespace {

std::string convert(const std::string& in, size_t step) {
    MimeDowngrade d;
    std::string out;
    for (size_t pos = 0; pos < in.size(); pos += step)
        d.feed(std::string_view(in).substr(pos, step), out);
    d.finish(out);
    return out;
}

}  // namespace

TEST_CASE("quoted-printable lines (RFC 2045 6.7)", "[mime]") {
    CHECK(quoted_printable_line("Gr\xc3\xbc\xc3\x9f"
                                "e = 100%") == "Gr=C3=BC=C3=9Fe =3D 100%\r\n");
    CHECK(quoted_printable_line("trailing space ") == "trailing space=20\r\n");
    CHECK(quoted_printable_line("tab\tinside\t") == "tab\tinside=09\r\n");
    std::string long_line(200, 'x');
    std::string qp = quoted_printable_line(long_line);
    size_t start = 0;
    while (start < qp.size()) {
        size_t end = qp.find("\r\n", start);
        CHECK(end - start <= 76);  // rule 5
        start = end + 2;
    }
    CHECK(qp.find("=\r\n") != std::string::npos);
}

TEST_CASE("the downgrade keeps the structure and converts 8-bit leaf parts", "[mime]") {
    struct Case {
        const char* name;
        std::string in, out;
    } cases[] = {
        {"a message without MIME headers becomes text/plain",
         "Subject: s\r\n\r\nGr\xc3\xbc\xc3\x9f"
         "e\r\n",
         "Subject: s\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=unknown-8bit\r\n"
         "Content-Transfer-Encoding: quoted-printable\r\n\r\nGr=C3=BC=C3=9Fe\r\n"},
        {"one 8bit part",
         "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
         "\xc3\xa9t\xc3\xa9\r\n",
         "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
         "Content-Transfer-Encoding: quoted-printable\r\n\r\n=C3=A9t=C3=A9\r\n"},
        {"multipart: the text part converted, the base64 part and the delimiters kept",
         "MIME-Version: 1.0\r\nContent-Type: multipart/mixed;\r\n boundary=\"b1\"\r\nContent-Transfer-Encoding: "
         "8bit\r\n"
         "\r\npreamble\r\n--b1\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n\xc3\xa9\r\n--b1\r\n"
         "Content-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n\r\nJVBERi0=\r\n--b1--\r\nepilogue\r\n",
         "MIME-Version: 1.0\r\nContent-Type: multipart/mixed;\r\n boundary=\"b1\"\r\nContent-Transfer-Encoding: "
         "7bit\r\n"
         "\r\npreamble\r\n--b1\r\nContent-Type: text/plain; charset=utf-8\r\n"
         "Content-Transfer-Encoding: quoted-printable\r\n\r\n=C3=A9\r\n--b1\r\n"
         "Content-Type: application/pdf\r\nContent-Transfer-Encoding: "
         "base64\r\n\r\nJVBERi0=\r\n--b1--\r\nepilogue\r\n"},
        {"a forwarded message is converted inside",
         "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\nContent-Type: message/rfc822\r\n"
         "\r\nSubject: inner\r\nContent-Transfer-Encoding: 8bit\r\n\r\n\xc3\xbc\r\n--x--\r\n",
         "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\nContent-Type: message/rfc822\r\n"
         "\r\nSubject: inner\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n=C3=BC\r\n--x--\r\n"},
        {"a part already in quoted-printable is kept",
         "MIME-Version: 1.0\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n=C3=A9\r\n",
         "MIME-Version: 1.0\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n=C3=A9\r\n"},
    };
    for (const auto& c : cases) {
        for (size_t step : {size_t(1), size_t(7), size_t(1 << 16)}) {
            INFO(c.name << ", fed " << step << " octets at a time");
            CHECK(convert(c.in, step) == c.out);
        }
    }
}

TEST_CASE("nothing 8-bit leaves the downgrade of a MIME leaf", "[mime]") {
    std::string in = "MIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\n";
    for (int i = 0; i < 256; ++i)
        if (i != '\r' && i != '\n') in += char(i);
    in += "\r\n";
    std::string out = convert(in, 13);
    for (char c : out)
        CHECK((static_cast<unsigned char>(c) < 128));
}

TEST_CASE("a message nested past the limit is converted as one leaf", "[mime]") {
    // 10,000 levels: forwarded messages inside multiparts inside forwarded messages.
    const int levels = 10000;
    std::string in = "MIME-Version: 1.0\r\n";
    for (int i = 0; i < levels; ++i) {
        in += "Content-Type: multipart/mixed; boundary=b" + std::to_string(i) + "\r\n\r\n";
        in += "--b" + std::to_string(i) + "\r\nContent-Type: message/rfc822\r\n\r\nMIME-Version: 1.0\r\n";
    }
    in += "Content-Type: text/plain\r\n\r\n\xc3\xa9t\xc3\xa9\r\n";
    for (int i = levels; i-- > 0;)
        in += "--b" + std::to_string(i) + "--\r\n";
    std::string out = convert(in, 4096);
    CHECK(std::count_if(out.begin(), out.end(), [](char c) { return static_cast<unsigned char>(c) >= 128; }) == 0);
    // The outer levels keep their shape, down to the limit.
    CHECK(out.find("--b0\r\nContent-Type: message/rfc822\r\n\r\n") != std::string::npos);
    CHECK(out.find("--b3\r\nContent-Type: message/rfc822\r\n\r\n") != std::string::npos);
    // Below it, the body is quoted-printable as a whole: its "=" signs are encoded, so is the text.
    CHECK(out.find("boundary=3Db9000") != std::string::npos);
    CHECK(out.find("=C3=A9t=C3=A9\r\n") != std::string::npos);
    // Every close delimiter is still there.
    CHECK(out.find("--b0--\r\n") != std::string::npos);
    CHECK(out.find("--b9999--") != std::string::npos);
}

TEST_CASE("a line longer than the limit goes in pieces, and decodes to itself", "[mime]") {
    // 3 MB of 8-bit text in one line: the downgrade holds at most k_max_line of it at a time.
    std::string text;
    for (int i = 0; i < 300000; ++i)
        text += "caf\xc3\xa9 = ok";
    std::string in = "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n" + text + "\r\nend\r\n";
    for (size_t step : {size_t(4096), size_t(256 * 1024)}) {
        INFO("fed " << step << " octets at a time");
        MimeDowngrade d;
        std::string out, all;
        size_t largest = 0;
        for (size_t pos = 0; pos < in.size(); pos += step) {
            out.clear();
            d.feed(std::string_view(in).substr(pos, step), out);
            largest = std::max(largest, out.size());
            all += out;
        }
        out.clear();
        d.finish(out);
        all += out;
        CHECK(largest <= 4 * (step + MimeDowngrade::k_max_line));  // never the whole line at once
        auto body = all.substr(all.find("\r\n\r\n") + 4);
        // Quoted-printable decoding: soft line breaks go, =XX become octets.
        std::string decoded;
        for (size_t i = 0; i < body.size(); ++i) {
            if (body.compare(i, 3, "=\r\n") == 0) {
                i += 2;
            } else if (body[i] == '=') {
                decoded += char(std::stoi(body.substr(i + 1, 2), nullptr, 16));
                i += 2;
            } else {
                decoded += body[i];
            }
        }
        CHECK(decoded == text + "\r\nend\r\n");
        size_t longest = 0, start = 0;
        for (size_t nl; (nl = all.find("\r\n", start)) != std::string::npos; start = nl + 2)
            longest = std::max(longest, nl - start);
        CHECK(longest <= 76);  // RFC 2045 6.7 rule 5
        CHECK(all.find("Content-Transfer-Encoding: quoted-printable\r\n") != std::string::npos);
    }
}
