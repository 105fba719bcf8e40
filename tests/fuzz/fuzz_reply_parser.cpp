// The SMTP client's side: server bytes into the reply parser and the client state machine,
// which must stay within their bounds whatever a server says.
#include "fuzz.hpp"
#include "gateway/smtp/smtp_client.hpp"
#include "gateway/smtp/smtp_reply.hpp"

#include <cstdlib>
#include <string>
#include <vector>

using namespace gateway;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    std::string_view in = fuzz::bytes(data, size);
    ReplyParser parser;
    std::vector<ServerReply> replies;
    for (size_t pos = 0; pos < in.size(); pos += 7)
        parser.feed(in.substr(pos, 7), replies);
    for (const auto& r : replies) {
        if (r.lines.size() > ReplyParser::k_max_lines) std::abort();
        if (r.text().size() > ServerReply::k_max_reply_text + 3) std::abort();
        (void)r.status();
        (void)r.texts();
    }
    // The same bytes as a server's side of a dialog.
    SmtpClient client(ClientSettings{"gw.fuzz", 998, "gw.fuzz"});
    OutgoingMessage m;
    m.sender = "a@example.com";
    m.recipients = {"b@example.org", "c@example.org"};
    m.size = 10;
    bool sent = false;
    for (size_t pos = 0; pos < in.size() && !client.failed(); pos += 13) {
        client.feed(in.substr(pos, 13));
        for (const auto& ev : client.take_events()) {
            if (ev.kind == ClientEvent::Kind::Ready && !sent) {
                client.send_message(m);
                sent = true;
            } else if (ev.kind == ClientEvent::Kind::NeedContent) {
                client.send_content("Subject: x\r\n\r\nbody\r\n");
                client.end_content();
            }
        }
        client.take_output();
    }
    return 0;
}
