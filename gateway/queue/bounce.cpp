#include "gateway/queue/bounce.hpp"

#include "gateway/common/message_headers.hpp"

namespace gateway {

namespace {

// "host mx.example.org[192.0.2.1] said: 550 5.1.1 ... (in reply to RCPT TO command)":
// the server's reply, for Diagnostic-Code: smtp; (RFC 3464 2.3.6).
std::string server_reply_in(const std::string& reason) {
    auto said = reason.find(" said: ");
    if (said == std::string::npos) said = reason.find(" refused to talk to me: ");
    if (said == std::string::npos) return {};
    auto start = reason.find(": ", said + 1) + 2;
    auto end = reason.rfind(" (in reply to ");
    return reason.substr(start, end == std::string::npos || end < start ? std::string::npos : end - start);
}

// "mx.example.org" from the relay "mx.example.org[192.0.2.1]:25", for Remote-MTA.
std::string remote_mta(const std::string& relay) {
    if (relay.empty() || relay == "none") return {};
    return relay.substr(0, relay.find('['));
}

// RFC 3464 requires lines of at most 998 octets and no bare line breaks inside a field.
std::string one_line(std::string s) {
    for (auto& c : s)
        if (c == '\r' || c == '\n') c = ' ';
    if (s.size() > 900) s = s.substr(0, 900) + "...";
    return s;
}

}  // namespace

std::string advice_for(const std::string& dsn, const std::string& reason) {
    if (dsn.rfind("5.1.1", 0) == 0 || dsn.rfind("5.1.10", 0) == 0)
        return "The recipient's mail server says this address does not exist. Check the address for typing "
               "mistakes.";
    if (dsn == "5.1.0" && reason.find("nullMX") != std::string::npos)
        return "The recipient's domain has published that it accepts no email at all.";
    if (dsn == "5.4.4" || dsn == "4.4.3")
        return "The recipient's domain could not be found in DNS. Check the part of the address after the @.";
    if (dsn == "5.4.6") return "The recipient's mail server is this relay itself; the mail routing is misconfigured.";
    if (dsn.rfind("4.4.", 0) == 0)
        return "The recipient's mail server could not be reached for the whole time the message was kept; it may be "
               "down or blocked by a firewall.";
    if (dsn.rfind("5.7.", 0) == 0 || dsn.rfind("4.7.", 0) == 0)
        return "The receiving server refused the message for policy reasons (for example the sender address is not "
               "allowed to send through it, or the relay is not authorised). Ask the mail administrator to check "
               "the sender address and the relay's permissions.";
    if (dsn.rfind("5.2.2", 0) == 0 || dsn.rfind("4.2.2", 0) == 0)
        return "The recipient's mailbox is full. Try again later or reach the recipient another way.";
    if (dsn.rfind("5.3.4", 0) == 0 || dsn.rfind("5.2.3", 0) == 0)
        return "The message is larger than the receiving server accepts. Send smaller attachments.";
    return "The receiving server gave the reason above. If it is unclear, forward this report to your mail "
           "administrator.";
}

std::string header_section(const std::string& content) {
    size_t start = 0;
    if (content.rfind("Received: ", 0) == 0) {
        // Skip our own trace header and its continuation lines.
        size_t pos = content.find("\r\n");
        while (pos != std::string::npos && pos + 2 < content.size() &&
               (content[pos + 2] == ' ' || content[pos + 2] == '\t'))
            pos = content.find("\r\n", pos + 2);
        start = pos == std::string::npos ? content.size() : pos + 2;
    }
    auto end = content.find("\r\n\r\n", start);
    if (start < content.size() && content.compare(start, 2, "\r\n") == 0) return {};
    return content.substr(start, end == std::string::npos ? std::string::npos : end + 2 - start);
}

std::string notice_message_id(const NoticeInput& in) {
    return "<" + in.original->id + "." + in.boundary + "@" + in.hostname + ">";
}

std::string build_notice(const NoticeInput& in) {
    const Envelope& e = *in.original;
    bool failed = in.kind == NoticeKind::Failed;
    std::string date = rfc5322_date(in.now);
    std::string b = in.boundary;
    std::string m;
    m += "From: MAILER-DAEMON@" + in.hostname + " (Mail Delivery System)\r\n";
    m += "To: <" + e.sender + ">\r\n";
    m += std::string("Subject: ") +
         (failed ? "Undelivered Mail Returned to Sender" : "Delayed Mail (still being retried)") + "\r\n";
    m += "Date: " + date + "\r\n";
    m += "Message-ID: " + notice_message_id(in) + "\r\n";
    m += "Auto-Submitted: auto-replied\r\n";  // RFC 3834
    m += "MIME-Version: 1.0\r\n";
    m += "Content-Type: multipart/report; report-type=delivery-status;\r\n\tboundary=\"" + b + "\"\r\n";
    m += "Content-Transfer-Encoding: 8bit\r\n\r\n";
    m += "This is a MIME-encapsulated message.\r\n\r\n";

    // The part for the person who sent it.
    m += "--" + b + "\r\nContent-Description: Notification\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n";
    m += "This is the mail relay at " + in.hostname + ".\r\n\r\n";
    if (failed)
        m += "Your message could not be delivered to one or more recipients. It is attached below (headers only).\r\n";
    else
        m += "Your message has not been delivered yet to one or more recipients. Delivery is still being tried;\r\n"
             "you do not need to send it again.\r\n";
    m += "\r\nMessage-ID: " + (e.message_id.empty() ? std::string("(none)") : e.message_id) + "\r\n";
    for (size_t i : in.recipients) {
        const auto& r = e.recipients[i];
        m += "\r\n<" + r.address + ">:\r\n    " + one_line(r.reason) + "\r\n";
        m += "    What usually fixes it: " + advice_for(r.dsn, r.reason) + "\r\n";
    }

    // RFC 3464 2.1: per-message fields, then per-recipient fields.
    m += "\r\n--" + b + "\r\nContent-Description: Delivery report\r\nContent-Type: message/delivery-status\r\n\r\n";
    m += "Reporting-MTA: dns; " + in.hostname + "\r\n";
    m += "X-Smtpgw-Queue-ID: " + e.id + "\r\n";
    m += "X-Smtpgw-Sender: rfc822; " + e.sender + "\r\n";
    m += "Arrival-Date: " + rfc5322_date(std::time_t(e.arrival_us / 1000000)) + "\r\n";
    for (size_t i : in.recipients) {
        const auto& r = e.recipients[i];
        m += "\r\nFinal-Recipient: rfc822; " + r.address + "\r\n";
        m += std::string("Action: ") + (failed ? "failed" : "delayed") + "\r\n";
        m += "Status: " + (r.dsn.empty() ? std::string(failed ? "5.0.0" : "4.0.0") : r.dsn) + "\r\n";
        if (auto mta = remote_mta(r.relay); !mta.empty()) m += "Remote-MTA: dns; " + mta + "\r\n";
        auto reply = server_reply_in(r.reason);
        m += reply.empty() ? "Diagnostic-Code: X-Smtpgw; " + one_line(r.reason) + "\r\n"
                           : "Diagnostic-Code: smtp; " + one_line(reply) + "\r\n";
        if (r.last_attempt_us)
            m += "Last-Attempt-Date: " + rfc5322_date(std::time_t(r.last_attempt_us / 1000000)) + "\r\n";
        if (!failed) m += "Will-Retry-Until: " + rfc5322_date(in.retry_until) + "\r\n";
    }

    m += "\r\n--" + b +
         "\r\nContent-Description: Undelivered Message Headers\r\nContent-Type: text/rfc822-headers\r\n\r\n";
    m += in.original_headers;
    m += "\r\n--" + b + "--\r\n";
    return m;
}

}  // namespace gateway
