// header_from: rewrite: the header section of any message through the header stage with a new
// From:, and the mailbox replacement in any From: value.
#include "fuzz.hpp"
#include "gateway/common/message_headers.hpp"

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
    return 0;
}
