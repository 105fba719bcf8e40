// Server replies as the SMTP client reads them (RFC 5321 4.2), kept whole for logs and bounces.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace gateway {

struct ServerReply {
    int code = 0;
    std::vector<std::string> lines;  // as received, with the code: "250-PIPELINING"

    // All lines joined by spaces, as Postfix quotes a reply: "550-5.1.1 The account ... 550 5.1.1 ...",
    // for the log, the envelope and bounces: printable() (control characters and what is not
    // UTF-8 replaced), at most k_max_reply_text octets (Postfix's line_length_limit).
    std::string text() const;
    static constexpr size_t k_max_reply_text = 2048;
    // The enhanced status of the reply when it carries one of the reply's class; otherwise
    // "X.0.0" with X the first digit of the code (Postfix's smtp_chat rule).
    std::string status() const;
    // The text after the code of each line (EHLO keywords).
    std::vector<std::string> texts() const;

    bool ok() const { return code >= 200 && code < 400; }
    bool transient() const { return code >= 400 && code < 500; }
};

// Splits the server's byte stream into replies. A line that is not "NNN " / "NNN-", a line
// longer than k_max_line, or a reply of more than k_max_lines lines or k_max_octets octets is a
// protocol error: failed() then says why, and nothing more is read.
class ReplyParser {
public:
    void feed(std::string_view bytes, std::vector<ServerReply>& out);
    bool failed() const { return !m_error.empty(); }
    const std::string& error() const { return m_error; }
    uint64_t replies() const { return m_replies; }  // complete replies so far

    static constexpr size_t k_max_line = 64 * 1024;
    static constexpr size_t k_max_lines = 1000;
    static constexpr size_t k_max_octets = 64 * 1024;

private:
    std::string m_buffer;
    ServerReply m_current;
    size_t m_current_octets = 0;
    uint64_t m_replies = 0;
    std::string m_error;
};

// RFC 3463: "4.2.0" -> true; the class must be 2, 4 or 5.
bool is_enhanced_status(std::string_view s);

}  // namespace gateway
