// Server replies as the SMTP client reads them (RFC 5321 4.2), kept whole for logs and bounces.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace gateway {

struct ServerReply {
    int code = 0;
    std::vector<std::string> lines;  // as received, with the code: "250-PIPELINING"

    // All lines joined by spaces, as Postfix quotes a reply: "550-5.1.1 The account ... 550 5.1.1 ...".
    std::string text() const;
    // The enhanced status of the reply when it carries one of the reply's class; otherwise
    // "X.0.0" with X the first digit of the code (Postfix's smtp_chat rule).
    std::string status() const;
    // The text after the code of each line (EHLO keywords).
    std::vector<std::string> texts() const;

    bool ok() const { return code >= 200 && code < 400; }
    bool transient() const { return code >= 400 && code < 500; }
};

// Splits the server's byte stream into replies. A line longer than 64 KiB or a line that is not
// "NNN " / "NNN-" is a protocol error: failed() then says why.
class ReplyParser {
public:
    void feed(std::string_view bytes, std::vector<ServerReply>& out);
    bool failed() const { return !m_error.empty(); }
    const std::string& error() const { return m_error; }

private:
    std::string m_buffer;
    ServerReply m_current;
    std::string m_error;
};

// RFC 3463: "4.2.0" -> true; the class must be 2, 4 or 5.
bool is_enhanced_status(std::string_view s);

}  // namespace gateway
