#include "conf/cidr.hpp"
#include "conf/units.hpp"

#include <catch2/catch.hpp>

using namespace conf;

TEST_CASE("durations", "[units]") {
    struct Case {
        const char* text;
        long seconds;  // -1: invalid
    } cases[] = {
        {"30s", 30}, {"5m", 300}, {"1h", 3600}, {"5d", 432000}, {"2w", 1209600}, {"45", 45},  {"0s", 0},
        {"", -1},    {"m", -1},   {"5x", -1},   {"-1s", -1},    {"1.5h", -1},    {"5 m", -1}, {"99999999999d", -1},
    };
    for (const auto& c : cases) {
        INFO(c.text);
        auto d = parse_duration(c.text);
        if (c.seconds < 0)
            CHECK_FALSE(d);
        else
            REQUIRE((d && d->count() == c.seconds));
    }
    CHECK(format_duration(std::chrono::seconds(432000)) == "5d");
    CHECK(format_duration(std::chrono::seconds(90)) == "90s");
    CHECK(format_duration(std::chrono::seconds(300)) == "5m");
}

TEST_CASE("sizes", "[units]") {
    struct Case {
        const char* text;
        long long bytes;  // -1: invalid
    } cases[] = {
        {"25M", 25LL << 20}, {"512k", 512 << 10}, {"512K", 512 << 10}, {"1G", 1LL << 30}, {"1000", 1000},
        {"25MB", -1},        {"M", -1},           {"1.5M", -1},        {"-5", -1},        {"99999999999999999G", -1},
    };
    for (const auto& c : cases) {
        INFO(c.text);
        auto s = parse_size(c.text);
        if (c.bytes < 0)
            CHECK_FALSE(s);
        else
            REQUIRE((s && *s == uint64_t(c.bytes)));
    }
}

TEST_CASE("CIDR parsing and matching", "[cidr]") {
    auto net = [](const char* t) { return Cidr::parse(t).value(); };
    auto ip = [](const char* t) { return IpAddress::parse(t).value(); };

    CHECK(net("127.0.0.0/8").contains(ip("127.0.0.1")));
    CHECK(net("127.0.0.0/8").contains(ip("127.255.255.255")));
    CHECK_FALSE(net("127.0.0.0/8").contains(ip("128.0.0.1")));
    CHECK(net("10.20.0.0/16").contains(ip("10.20.3.4")));
    CHECK_FALSE(net("10.20.0.0/16").contains(ip("10.21.0.1")));
    CHECK(net("192.0.2.7").contains(ip("192.0.2.7")));
    CHECK_FALSE(net("192.0.2.7").contains(ip("192.0.2.8")));
    CHECK(net("::1/128").contains(ip("::1")));
    CHECK_FALSE(net("::1/128").contains(ip("::2")));
    CHECK(net("2001:db8::/32").contains(ip("2001:db8:1::5")));
    CHECK(net("0.0.0.0/0").contains(ip("203.0.113.9")));
    CHECK_FALSE(net("0.0.0.0/0").contains(ip("::1")));
    CHECK(net("10.0.0.0/9").contains(ip("10.127.0.1")));
    CHECK_FALSE(net("10.0.0.0/9").contains(ip("10.128.0.1")));

    // A v4-mapped client address (dual-stack socket) is matched as IPv4, both ways.
    CHECK(net("127.0.0.0/8").contains(ip("::ffff:127.0.0.1")));
    CHECK(net("::ffff:10.0.0.0/104").contains(ip("10.1.2.3")));
    CHECK(ip("::ffff:127.0.0.1").to_string() == "127.0.0.1");

    std::string why;
    CHECK_FALSE(Cidr::parse("10.0.0.1/8", &why));
    CHECK(why == "host bits set after the prefix length");
    CHECK_FALSE(Cidr::parse("10.0.0.0/33", &why));
    CHECK_FALSE(Cidr::parse("10.0.0.0/", &why));
    CHECK_FALSE(Cidr::parse("example.com/8", &why));
    CHECK(why == "not an IP address");
    CHECK_FALSE(Cidr::parse("::1/129", &why));
    CHECK(net("10.20.0.0/16").to_string() == "10.20.0.0/16");
}
