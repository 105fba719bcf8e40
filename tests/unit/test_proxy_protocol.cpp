// The PROXY protocol header a load balancer sends first (versions 1 and 2), as HAProxy writes it.
#include "gateway/smtpd/proxy_protocol.hpp"

#include <catch2/catch.hpp>

#include <string>

using namespace gateway;

namespace {

const std::string k_sig("\r\n\r\n\0\r\nQUIT\n", 12);

std::string v2(unsigned char command, unsigned char family, const std::string& body) {
    std::string h = k_sig;
    h += char(0x20 | command);
    h += char(family);
    h += char(body.size() >> 8);
    h += char(body.size() & 0xff);
    return h + body;
}

std::string tlv(unsigned char type, const std::string& value) {
    return std::string(1, char(type)) + char(value.size() >> 8) + char(value.size() & 0xff) + value;
}

ProxyParse parse(const std::string& in, ProxyHeader& h, std::string& error) { return parse_proxy_header(in, h, error); }

}  // namespace

TEST_CASE("PROXY v1: TCP4, TCP6, UNKNOWN, and the client's bytes after it", "[proxy]") {
    ProxyHeader h;
    std::string error;
    std::string in = "PROXY TCP4 192.0.2.7 10.0.0.1 56324 25\r\nEHLO x\r\n";
    REQUIRE(parse(in, h, error) == ProxyParse::Done);
    CHECK(h.version == 1);
    CHECK(h.source->to_string() == "192.0.2.7");
    CHECK(h.source_port == 56324);
    CHECK(h.destination->to_string() == "10.0.0.1");
    CHECK(in.substr(h.length) == "EHLO x\r\n");
    REQUIRE(parse("PROXY TCP6 2001:db8::7 2001:db8::1 1 587\r\n", h, error) == ProxyParse::Done);
    CHECK(h.source->to_string() == "2001:db8::7");
    REQUIRE(parse("PROXY UNKNOWN\r\n", h, error) == ProxyParse::Done);
    CHECK(h.local);
    // Every prefix of a valid header asks for more; none is taken for a whole one.
    std::string whole = "PROXY TCP4 192.0.2.7 10.0.0.1 56324 25\r\n";
    for (size_t n = 0; n < whole.size(); ++n)
        CHECK(parse(whole.substr(0, n), h, error) == ProxyParse::Incomplete);
    for (const char* bad : {"PROXY TCP4 192.0.2.7 10.0.0.1 56324\r\n", "PROXY TCP4 2001:db8::7 10.0.0.1 1 2\r\n",
                            "PROXY TCP4 192.0.2.7 10.0.0.1 65536 25\r\n", "PROXY TCP4 192.0.2.300 10.0.0.1 1 25\r\n",
                            "PROXY UDP4 192.0.2.7 10.0.0.1 1 25\r\n", "PROXY TCP4 192.0.2.7 10.0.0.1 01 25\r\n",
                            "PROXY TCP4 192.0.2.7 10.0.0.1 1 25\n", "EHLO client.example\r\n", "GET / HTTP/1.0\r\n"}) {
        INFO(bad);
        CHECK(parse(bad, h, error) == ProxyParse::Invalid);
        CHECK_FALSE(error.empty());
    }
    CHECK(parse("PROXY TCP4 " + std::string(120, '1'), h, error) == ProxyParse::Invalid);
    CHECK(error == "PROXY v1 header without CRLF in 107 octets");
}

TEST_CASE("PROXY v2: IPv4 and IPv6 with TLVs, LOCAL, and what is refused", "[proxy]") {
    ProxyHeader h;
    std::string error;
    std::string v4 = std::string("\xc0\x00\x02\x07\x0a\x00\x00\x01\xdc\x04\x00\x19", 12);
    std::string in = v2(1, 0x11, v4 + tlv(0x05, "unique-id-1") + tlv(0x20, std::string("\x01\0\0\0\0", 5))) + "x";
    REQUIRE(parse(in, h, error) == ProxyParse::Done);
    CHECK(h.version == 2);
    CHECK_FALSE(h.local);
    CHECK(h.source->to_string() == "192.0.2.7");
    CHECK(h.source_port == 56324);
    CHECK(h.destination_port == 25);
    REQUIRE(h.tlvs.size() == 2);
    CHECK((h.tlvs[0].first == 0x05 && h.tlvs[0].second == "unique-id-1"));
    CHECK(in.substr(h.length) == "x");
    for (size_t n = 0; n + 1 < in.size(); ++n)
        CHECK(parse(in.substr(0, n), h, error) == ProxyParse::Incomplete);

    std::string v6(36, '\0');
    v6[0] = char(0x20), v6[1] = char(0x01), v6[2] = char(0x0d), v6[3] = char(0xb8), v6[15] = 7;
    v6[16] = char(0x20), v6[17] = char(0x01), v6[18] = char(0x0d), v6[19] = char(0xb8), v6[31] = 1;
    v6[33] = 9, v6[35] = 25;
    REQUIRE(parse(v2(1, 0x21, v6), h, error) == ProxyParse::Done);
    CHECK(h.source->to_string() == "2001:db8::7");
    CHECK(h.source_port == 9);

    REQUIRE(parse(v2(0, 0x00, ""), h, error) == ProxyParse::Done);  // a health check
    CHECK(h.local);
    REQUIRE(parse(v2(0, 0x11, v4), h, error) == ProxyParse::Done);  // LOCAL: the addresses are ignored
    CHECK(h.local);

    CHECK(parse(v2(1, 0x12, v4), h, error) == ProxyParse::Invalid);  // UDP
    CHECK(parse(v2(2, 0x11, v4), h, error) == ProxyParse::Invalid);  // no such command
    CHECK(parse(v2(1, 0x11, v4.substr(0, 8)), h, error) == ProxyParse::Invalid);
    CHECK(error == "PROXY v2 header too short for its addresses");
    CHECK(parse(v2(1, 0x11, v4 + tlv(0x05, "abc").substr(0, 4)), h, error) == ProxyParse::Invalid);
    CHECK(parse(v2(1, 0x11, v4 + std::string("\x05\x00\x09xy", 5)), h, error) == ProxyParse::Invalid);
    std::string version1 = v2(1, 0x11, v4);
    version1[12] = char(0x11);
    CHECK(parse(version1, h, error) == ProxyParse::Invalid);
    // Longer than 4 KiB of addresses and TLVs: refused from its first 16 octets, before the rest comes.
    std::string big = v2(1, 0x11, v4 + tlv(0xe0, std::string(5000, 'a')));
    CHECK(parse(big.substr(0, 16), h, error) == ProxyParse::Invalid);
    CHECK(error == "PROXY v2 header of 5031 octets (at most 4112)");
}

TEST_CASE("a v1 header as the tools write it reads back", "[proxy]") {
    ProxyHeader h;
    std::string error;
    auto text = proxy_v1_header(*conf::IpAddress::parse("127.0.0.50"), 40000, *conf::IpAddress::parse("127.0.0.1"), 25);
    CHECK(text == "PROXY TCP4 127.0.0.50 127.0.0.1 40000 25\r\n");
    REQUIRE(parse(text, h, error) == ProxyParse::Done);
    CHECK(h.source->to_string() == "127.0.0.50");
}
