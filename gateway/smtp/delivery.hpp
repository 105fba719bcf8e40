// What the queue manager and the delivery sessions pass each other: jobs, results, and the
// classification of every outcome in Postfix's terms (smtp_trouble.c: the class comes from the
// first digit of the status; soft errors move on to the next address, hard ones do not).
#pragma once

#include "conf/config.hpp"
#include "gateway/common/envelope.hpp"
#include "gateway/smtp/smtp_reply.hpp"

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace gateway {

// Where a job goes: the recipient domain's MX hosts, or one configured upstream.
struct Destination {
    enum class Kind { Direct, Upstream } kind = Kind::Direct;
    std::string domain;       // Direct
    conf::Upstream upstream;  // Upstream
    uint16_t port = 25;

    std::string key() const { return kind == Kind::Direct ? "direct:" + domain : "upstream:" + upstream.name; }
};

// Some recipients of one message, to one destination.
struct DeliveryJob {
    std::string message_id;
    std::vector<size_t> recipients;  // indices into the envelope's recipients
    std::vector<std::string> via;    // the route's list; via[via_index] is this destination
    size_t via_index = 0;
    int64_t activated_us = 0;  // the queue manager took the message up
    int64_t queued_us = 0;     // the job entered its destination's queue
};

struct RecipientResult {
    size_t index = 0;
    RcptStatus status = RcptStatus::Deferred;  // Sent, Deferred or Bounced
    std::string dsn;
    std::string reason;
    std::string relay = "none";
    bool site_failure = false;  // deferred because the destination was unusable: may fail over
    // The server took some recipients of the transaction and refused this one for their number
    // (452 4.5.3, RFC 5321 4.5.3.1.10): it goes again at once, in a transaction of its own.
    bool again = false;
};

struct Delays {
    double before_active = 0;  // a: arrival to the queue manager taking it up
    double in_queue = 0;       // b: waiting for a connection
    double setup = 0;          // c: DNS, connect, greeting, EHLO
    double transfer = 0;       // d: the transaction
};

struct JobResult {
    DeliveryJob job;
    std::vector<RecipientResult> results;
    Delays delays;
};

// A failure that concerns the whole destination (no usable connection at all).
struct DestinationFailure {
    enum class Outcome { Defer, Bounce } outcome = Outcome::Defer;
    std::string dsn;
    std::string reason;
    std::string relay = "none";
    bool site_failure = true;  // the next `via` may be tried
    bool throttled = false;    // the account's connection limit, not the destination's health
};

// "432 4.3.2 STOREDRV.ClientSubmit; sender thread limit exceeded": the server takes no more
// connections for this account now. Not a failure of the message or of the destination: fewer
// connections, and the same mail again soon.
bool thread_limit(const ServerReply& reply);

// "554 5.2.0 STOREDRV.Submission.Exception:SubmissionQuotaExceededException": the account's
// sending quota is used up for now. The message waits rather than bounces.
bool submission_quota(const ServerReply& reply);

// "host mx.example.org[192.0.2.1] said: 550 5.1.1 ... (in reply to RCPT TO command)"
std::string said_reason(const std::string& host_label, const ServerReply& reply, const char* in_reply_to);

// The status to record for a server reply: the reply's own DSN, or X.0.0 (smtp_chat.c).
std::string reply_dsn(const ServerReply& reply);

// Postfix's delay format: "0.07", "1.3", "75", "191726".
std::string format_delay(double seconds);

}  // namespace gateway
