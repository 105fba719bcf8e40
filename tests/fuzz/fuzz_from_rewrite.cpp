// header_from: rewrite: the header section of any message through the header stage with a new
// From:, and the mailbox replacement in any From: value. Then what DKIM signing reads of the
// result: the From: domain that picks the key, and the lines as sent, which must not depend on
// the pieces the content comes in (the signing pass and the transfer may read it differently).
#include "fuzz.hpp"
#include "gateway/common/message_headers.hpp"
#include "gateway/smtp/dkim.hpp"
#include "gateway/smtp/smtp_client.hpp"

#include <cstdlib>

#include <string>

using namespace gateway;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    std::string_view in = fuzz::bytes(data, size);
    (void)replace_mailbox(in, "noreply@example.com");
    HeaderStage stage("Message-ID: <added@gw.fuzz>\r\n", "Date: Thu, 1 Jan 2026 00:00:00 +0000\r\n", 4096);
    stage.rewrite_from("noreply@example.com");
    std::string out;
    for (size_t pos = 0; pos < in.size(); pos += 11)
        stage.feed(in.substr(pos, 11), out);
    stage.finish(out);
    (void)stage.message_id();
    (void)dkim::from_domain(out);
    std::string whole, pieces;
    WireLines a(40, false), b(40, false);
    a.append(out, whole);
    a.finish(whole);
    for (size_t pos = 0; pos < out.size(); pos += 7)
        b.append(std::string_view(out).substr(pos, 7), pieces);
    b.finish(pieces);
    if (whole != pieces) std::abort();
    return 0;
}
