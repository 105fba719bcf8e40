// Delivery status notifications (RFC 3464, RFC 6522): the bounce that tells a sender which
// recipients failed and why, and the delay warning. Built as a whole message, ready to be
// queued with the null sender.
#pragma once

#include "gateway/common/envelope.hpp"

#include <ctime>
#include <string>
#include <vector>

namespace gateway {

enum class NoticeKind { Failed, Delayed };

struct NoticeInput {
    NoticeKind kind = NoticeKind::Failed;
    const Envelope* original = nullptr;
    std::vector<size_t> recipients;  // indices into original->recipients: the ones to report
    std::string original_headers;    // the header section of the original message (CRLF lines)
    std::string hostname;
    std::time_t now = 0;
    std::time_t retry_until = 0;  // Delayed: when the gateway gives up
    std::string boundary;         // unique per notice
};

// The complete message: headers, the human-readable part, message/delivery-status, and
// text/rfc822-headers of the original.
std::string build_notice(const NoticeInput& in);
// Its Message-ID, as in its header and in its envelope.
std::string notice_message_id(const NoticeInput& in);

// What usually fixes a failure with this status and reason, in a sentence for the sender.
std::string advice_for(const std::string& dsn, const std::string& reason);

// The header section of a stored message (up to the empty line), without our Received: header.
std::string header_section(const std::string& content_start);

}  // namespace gateway
