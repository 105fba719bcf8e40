// AUTH attempts per address: the limit, attempts in progress, waiting, IPv6 by /64, expiry and
// the bound on the table.
#include "gateway/smtpd/auth_limits.hpp"

#include <catch2/catch.hpp>

#include <string>
#include <vector>

using namespace gateway;

namespace {

conf::IpAddress ip(const std::string& text) { return *conf::IpAddress::parse(text); }

constexpr int64_t k_second = 1000000;

}  // namespace

TEST_CASE("five failures block an address for ten minutes", "[auth][limits]") {
    AuthLimits l;
    auto a = ip("192.0.2.1");
    for (int i = 0; i < 5; ++i) {
        CHECK_FALSE(l.blocked(a, i * k_second));
        REQUIRE(l.begin(a, i * k_second, [] { return true; }));
        l.end(a, true, i * k_second);
    }
    CHECK(l.blocked(a, 5 * k_second));
    CHECK_FALSE(l.blocked(ip("192.0.2.2"), 5 * k_second));
    // The oldest failure leaves the window ten minutes after it happened.
    CHECK(l.blocked(a, AuthLimits::k_window_us - 1));
    CHECK_FALSE(l.blocked(a, AuthLimits::k_window_us + 1));
    // Success and temporary trouble do not count.
    auto b = ip("192.0.2.3");
    for (int i = 0; i < 10; ++i) {
        REQUIRE(l.begin(b, 0, [] { return true; }));
        l.end(b, false, 0);
    }
    CHECK_FALSE(l.blocked(b, 0));
}

TEST_CASE("parallel attempts get no more tries than one connection", "[auth][limits]") {
    AuthLimits l;
    auto a = ip("192.0.2.1");
    std::vector<int> resumed;
    int started = 0;
    for (int i = 0; i < 30; ++i) {
        if (l.begin(a, 0, [&resumed, i] {
                resumed.push_back(i);
                return true;
            }))
            started++;
    }
    CHECK(started == 5);  // the rest wait for these
    // Each that fails lets one waiting attempt go; after the fifth failure all go, to be refused.
    for (int i = 0; i < 4; ++i)
        l.end(a, true, 0);
    CHECK(resumed == std::vector<int>{5, 6, 7, 8});
    l.end(a, true, 0);
    CHECK(l.blocked(a, 0));
    CHECK(resumed.size() == 25);  // every one that waited: 5 to 29
    CHECK(resumed.back() == 29);
}

TEST_CASE("a waiting attempt whose connection went is skipped", "[auth][limits]") {
    AuthLimits l;
    auto a = ip("192.0.2.1");
    for (int i = 0; i < 5; ++i)
        REQUIRE(l.begin(a, 0, [] { return true; }));
    bool second = false;
    CHECK_FALSE(l.begin(a, 0, [] { return false; }));  // gone by the time its turn comes
    CHECK_FALSE(l.begin(a, 0, [&] { return second = true; }));
    l.end(a, false, 0);
    CHECK(second);
}

TEST_CASE("IPv6 clients count by their /64", "[auth][limits]") {
    AuthLimits l;
    for (int i = 0; i < 5; ++i) {
        auto a = ip("2001:db8:1:2::" + std::to_string(i + 1));
        REQUIRE(l.begin(a, 0, [] { return true; }));
        l.end(a, true, 0);
    }
    CHECK(l.blocked(ip("2001:db8:1:2:ffff::9"), 0));
    CHECK_FALSE(l.blocked(ip("2001:db8:1:3::1"), 0));
    CHECK(l.addresses() == 1);
}

TEST_CASE("the table stays bounded", "[auth][limits]") {
    AuthLimits l;
    auto address = [](size_t i) {
        return ip("10." + std::to_string(i >> 16 & 255) + "." + std::to_string(i >> 8 & 255) + "." +
                  std::to_string(i & 255));
    };
    for (size_t i = 0; i < AuthLimits::k_max_addresses + 5000; ++i) {
        auto a = address(i);
        REQUIRE(l.begin(a, int64_t(i), [] { return true; }));
        l.end(a, true, int64_t(i));
    }
    CHECK(l.addresses() <= AuthLimits::k_max_addresses);
    // The most recent are kept.
    auto last = address(AuthLimits::k_max_addresses + 4999);
    for (int i = 0; i < 4; ++i) {
        REQUIRE(l.begin(last, 0, [] { return true; }));
        l.end(last, true, int64_t(AuthLimits::k_max_addresses + 5000));
    }
    CHECK(l.blocked(last, int64_t(AuthLimits::k_max_addresses + 5000)));
}
