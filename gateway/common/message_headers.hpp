// The header section of an accepted message: what the gateway adds, and where.
//
// HeaderStage sits after the DATA reader. It holds back the header section (up to a bound)
// until it has seen all of it, then passes it on followed by any Message-ID: or Date: that was
// missing (RFC 5322 3.6), and from then on passes content straight through. The Received:
// trace header (RFC 5321 4.4) goes in front of everything and is built by received_header().
#pragma once

#include <ctime>
#include <string>
#include <string_view>

namespace gateway {

class HeaderStage {
public:
    // `message_id` and `date` are complete header lines (with <CR><LF>), added when missing.
    HeaderStage(std::string message_id, std::string date, size_t max_header_bytes)
        : m_add_message_id(std::move(message_id)), m_add_date(std::move(date)), m_max(max_header_bytes) {}

    void feed(std::string_view content, std::string& out);
    void finish(std::string& out);  // at the end of data

    // The Message-ID the message carries (its own, or the one added); empty before the end of headers.
    // As the client wrote it (folding removed), printable() and at most k_max_message_id octets.
    std::string message_id() const;
    static constexpr size_t k_max_message_id = 256;

    // `header_from: rewrite`: From: gets `address` (a display name is kept) and, unless the
    // message has a Reply-To:, the old From: value moves there so that replies still reach the
    // person. A message without From: gets one. Call before the first feed().
    void rewrite_from(std::string address) { m_new_from = std::move(address); }
    enum class FromOutcome { Untouched, Rewritten, Added, HeadersTooLarge };
    unsigned received() const { return m_received; }  // Received: fields in the header section: hops so far
    bool eight_bit() const { return m_eight_bit; }
    // Past the header section (or given up on it): feed() only appends from here on.
    bool passing() const { return m_passing; }  // octets above 127 in the header section (UTF-8 headers)
    FromOutcome from_outcome() const { return m_from_outcome; }

private:
    void scan_lines(bool at_end);
    void end_of_headers(size_t body_start, bool add_separator);

    std::string m_add_message_id, m_add_date;
    size_t m_max;
    std::string m_buffer;  // header section held back
    size_t m_scanned = 0;  // complete header lines examined so far
    bool m_passing = false;
    bool m_have_message_id = false, m_have_date = false;
    bool m_in_message_id = false;
    std::string m_message_id;
    unsigned m_received = 0;
    bool m_eight_bit = false;
    std::string m_new_from;
    FromOutcome m_from_outcome = FromOutcome::Untouched;
    size_t m_from_start = std::string::npos, m_from_end = 0;  // the first From: field, folded lines included
    bool m_in_from = false, m_have_reply_to = false;
};

// The From: value with its address replaced: `"Scanner" <scan@x.local>` becomes
// `"Scanner" <new@example.com>`; anything that is not a single mailbox becomes the bare address.
std::string replace_mailbox(std::string_view value, const std::string& address);

// "Fri, 27 Nov 2026 18:11:30 +0000 (UTC)"
std::string rfc5322_date(std::time_t t);

struct TraceInfo {
    std::string helo;         // as the client gave it
    std::string client_name;  // "unknown" when the address has no verified name
    std::string client_ip;
    std::string hostname;
    std::string protocol;  // ESMTP, ESMTPS, ESMTPA, ESMTPSA, SMTP, UTF8SMTP...
    std::string queue_id;
    std::string single_recipient;  // "for <x>" only when there is exactly one
    std::time_t when = 0;
    std::string tls;  // "TLSv1.2 with cipher ..." when the client used TLS
};

std::string received_header(const TraceInfo& t);

}  // namespace gateway
