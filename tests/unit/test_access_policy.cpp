// policy: rules and the rate limiter behind their rates.
#include "gateway/smtpd/access_policy.hpp"
#include "gateway/smtpd/rate_limiter.hpp"

#include <catch2/catch.hpp>

using namespace gateway;

namespace {

conf::PolicyRule rule(std::vector<std::string> users, std::vector<std::string> clients,
                      std::vector<std::string> senders) {
    conf::PolicyRule r;
    r.users = std::move(users);
    for (const auto& c : clients)
        r.clients.push_back(*conf::Cidr::parse(c));
    r.senders = std::move(senders);
    return r;
}

}  // namespace

TEST_CASE("the first rule that matches decides", "[policy]") {
    auto listener = rule({}, {}, {"x@example.com"});
    listener.listeners = {"0.0.0.0:587"};
    AccessPolicy p({rule({"scanner*"}, {}, {"scans@example.com"}), listener,
                    rule({}, {"10.1.0.0/16"}, {"*@example.com"}), rule({}, {}, {})});
    CHECK(p.find("0.0.0.0:25", "10.1.2.3", "scanner7")->index == 0);
    CHECK(p.find("0.0.0.0:587", "10.1.2.3", "")->index == 1);
    CHECK(p.find("0.0.0.0:25", "10.1.2.3", "")->index == 2);
    CHECK(p.find("0.0.0.0:25", "10.1.2.3", "helpdesk")->index == 2);
    CHECK(p.find("0.0.0.0:25", "192.0.2.1", "")->index == 3);
    CHECK(AccessPolicy({}).find("l", "10.1.2.3", "u") == nullptr);

    const AccessRule* r = p.find("0.0.0.0:25", "10.1.2.3", "");
    CHECK(r->sender_allowed("anyone@example.com"));
    CHECK_FALSE(r->sender_allowed("anyone@example.org"));
    CHECK_FALSE(r->sender_allowed(""));  // the null sender, unless "<>" is listed
    CHECK(r->recipient_allowed("anyone@anywhere.test"));

    CHECK_FALSE(p.may_send_as_anyone("scanner1"));
    CHECK(p.may_send_as_anyone("helpdesk"));  // rules with clients or a listener may not apply
}

TEST_CASE("rates count in a window that starts with the first event", "[policy]") {
    RateLimiter r;
    const int64_t s = 1000000;
    for (int i = 0; i < 3; i++)
        CHECK(r.take("a", 1, 3, 60, 10 * s + i));
    CHECK_FALSE(r.take("a", 1, 3, 60, 20 * s));
    CHECK(r.take("b", 1, 3, 60, 20 * s));  // another key, another count
    CHECK_FALSE(r.take("a", 1, 3, 60, 69 * s));
    CHECK(r.take("a", 1, 3, 60, 70 * s));        // the next window
    CHECK_FALSE(r.take("c", 5, 3, 60, 70 * s));  // more than the limit at once
}

TEST_CASE("the rate table is bounded", "[policy]") {
    RateLimiter r(100);
    const int64_t s = 1000000;
    for (int i = 0; i < 100; i++)
        CHECK(r.take("k" + std::to_string(i), 1, 1, 60, s));
    CHECK(r.size() == 100);
    CHECK(r.take("new", 1, 1, 60, 2 * s));  // full, every window running: not tracked
    CHECK(r.untracked() == 1);
    CHECK(r.size() == 100);
    CHECK(r.take("new", 1, 1, 60, 62 * s));  // the old windows have ended: room again
    CHECK(r.size() == 1);
    CHECK_FALSE(r.take("new", 1, 1, 60, 63 * s));
}

TEST_CASE("a period in words", "[policy]") {
    CHECK(period_words(60) == "minute");
    CHECK(period_words(3600) == "hour");
    CHECK(period_words(120) == "2 minutes");
    CHECK(period_words(1) == "second");
    CHECK(period_words(86400 * 2) == "2 days");
}
