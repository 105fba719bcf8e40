// The envelope of a queued message and its on-disk text form.
//
// The form is line-based ("key value", values percent-escaped) and ends with a checksum line,
// so a truncated or damaged file is recognised and never mistaken for a valid one. New keys
// can be added freely; unknown keys are an error only for a newer format version.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace gateway {

// What became of a request to store a message durably.
enum class CommitResult { Stored, NoSpace, Failed };

enum class RcptStatus { Pending, Deferred, Sent, Bounced };

const char* to_string(RcptStatus s);

struct Recipient {
    Recipient() = default;
    explicit Recipient(std::string a) : address(std::move(a)) {}

    std::string address;
    RcptStatus status = RcptStatus::Pending;
    std::string dsn;     // last enhanced status, "4.4.1"
    std::string reason;  // last reason, as logged
    std::string relay;   // last relay, "host[ip]:port" or "none"
    int64_t last_attempt_us = 0;
};

struct Envelope {
    std::string id;
    int64_t arrival_us = 0;   // microseconds since the epoch
    uint64_t size = 0;        // octets of the stored content
    std::string sender;       // empty: the null sender <>
    std::string orig_sender;  // before rewriting; empty when not rewritten
    std::string client_name;
    std::string client_ip;
    std::string helo;
    std::string protocol;  // as in Received: ESMTP, ESMTPS, ...
    std::string sasl_username;
    std::string body;  // "" (not given), "7BIT" or "8BITMIME"
    bool smtputf8 = false;
    bool utf8_headers = false;  // the header section holds octets above 127
    bool eight_bit = false;     // the content holds octets above 127 (declared BODY=8BITMIME or not)
    std::string message_id;
    unsigned attempts = 0;
    int64_t next_attempt_us = 0;
    bool delay_warned = false;  // the sender has been told the message is delayed
    bool held = false;          // `queue hold`: never tried until released
    std::vector<Recipient> recipients;
};

std::string serialize(const Envelope& e);

struct EnvelopeParse {
    std::optional<Envelope> envelope;
    std::string error;  // why the text is not a valid envelope
};

EnvelopeParse parse_envelope(std::string_view text);

}  // namespace gateway
