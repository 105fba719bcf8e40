#include "gateway/common/envelope.hpp"
#include "gateway/common/queue_id.hpp"

#include <catch2/catch.hpp>

using namespace gateway;

namespace {

Envelope sample() {
    Envelope e;
    e.id = "18F3A2B4C5D6E";
    e.arrival_us = 1795803759003547;
    e.size = 401;
    e.sender = "scanner@corp.example";
    e.orig_sender = "scanner@scanner.local";
    e.client_name = "unknown";
    e.client_ip = "10.20.0.5";
    e.helo = "printer 5%\x01";
    e.protocol = "ESMTP";
    e.body = "8BITMIME";
    e.smtputf8 = true;
    e.message_id = "<x@y>";
    e.attempts = 2;
    e.next_attempt_us = 1795803760000000;
    e.delay_warned = true;
    Recipient a("a@example.org");
    Recipient b("\"b c\"@example.org");
    b.status = RcptStatus::Deferred;
    b.dsn = "4.4.1";
    b.reason = "connect to mx.example.org[192.0.2.1]:25: Connection refused\nsecond line";
    b.relay = "none";
    b.last_attempt_us = 5;
    e.recipients = {a, b};
    return e;
}

}  // namespace

TEST_CASE("envelopes survive a round trip", "[envelope]") {
    auto e = sample();
    auto text = serialize(e);
    auto p = parse_envelope(text);
    INFO(p.error);
    REQUIRE(p.envelope);
    const auto& r = *p.envelope;
    CHECK(r.id == e.id);
    CHECK(r.arrival_us == e.arrival_us);
    CHECK(r.size == e.size);
    CHECK(r.sender == e.sender);
    CHECK(r.orig_sender == e.orig_sender);
    CHECK(r.helo == e.helo);
    CHECK(r.smtputf8);
    CHECK(r.body == "8BITMIME");
    CHECK(r.attempts == 2);
    CHECK(r.delay_warned);
    REQUIRE(r.recipients.size() == 2);
    CHECK(r.recipients[1].address == "\"b c\"@example.org");
    CHECK(r.recipients[1].status == RcptStatus::Deferred);
    CHECK(r.recipients[1].reason == e.recipients[1].reason);
    CHECK(r.recipients[1].last_attempt_us == 5);
    CHECK(serialize(r) == text);
}

TEST_CASE("damaged envelopes are recognised", "[envelope]") {
    auto text = serialize(sample());
    CHECK_FALSE(parse_envelope(text.substr(0, text.size() / 2)).envelope);
    CHECK_FALSE(parse_envelope(text.substr(0, text.size() - 1)).envelope);
    auto flipped = text;
    flipped[text.find("scanner@corp")] = 'S';
    CHECK(parse_envelope(flipped).error == "checksum mismatch");
    CHECK(parse_envelope("").error == "not an smtpgw envelope");
    CHECK(parse_envelope("hello\n").error == "not an smtpgw envelope");
}

TEST_CASE("the null sender is kept as empty", "[envelope]") {
    auto e = sample();
    e.sender.clear();
    auto p = parse_envelope(serialize(e));
    REQUIRE(p.envelope);
    CHECK(p.envelope->sender.empty());
}

TEST_CASE("queue IDs increase and never repeat", "[queue_id]") {
    QueueIdGenerator g;
    auto a = g.next(1000);
    auto b = g.next(1000);
    auto c = g.next(999);  // the clock stepped back
    CHECK(a == "3E8");
    CHECK(b == "3E9");
    CHECK(c == "3EA");
    g.observe("FFFFF");
    CHECK(g.next(5) == "100000");
    CHECK(QueueIdGenerator::is_valid("18F3A2B4C5D6E"));
    CHECK_FALSE(QueueIdGenerator::is_valid("18f3"));
    CHECK_FALSE(QueueIdGenerator::is_valid("../x"));
    CHECK_FALSE(QueueIdGenerator::is_valid(""));
}
