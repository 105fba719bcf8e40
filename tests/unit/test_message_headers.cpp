#include "gateway/common/message_headers.hpp"

#include <catch2/catch.hpp>

using namespace gateway;

namespace {

const std::string k_mid = "Message-ID: <added@gw.example>\r\n";
const std::string k_date = "Date: Fri, 27 Nov 2026 18:00:00 +0000\r\n";

std::string run(const std::string& content, size_t step, std::string* message_id = nullptr, size_t limit = 1 << 16,
                const std::string& new_from = "", HeaderStage::FromOutcome* outcome = nullptr) {
    HeaderStage h(k_mid, k_date, limit);
    if (!new_from.empty()) h.rewrite_from(new_from);
    std::string out;
    for (size_t pos = 0; pos < content.size(); pos += step)
        h.feed(std::string_view(content).substr(pos, step), out);
    h.finish(out);
    if (message_id) *message_id = h.message_id();
    if (outcome) *outcome = h.from_outcome();
    return out;
}

}  // namespace

TEST_CASE("missing Message-ID and Date are added at the end of the headers", "[headers]") {
    struct Case {
        const char* name;
        std::string in, out, message_id;
    } cases[] = {
        {"both present", "Date: x\r\nMessage-ID: <a@b>\r\nSubject: s\r\n\r\nbody\r\n",
         "Date: x\r\nMessage-ID: <a@b>\r\nSubject: s\r\n\r\nbody\r\n", "<a@b>"},
        {"both missing", "Subject: s\r\n\r\nbody\r\n", "Subject: s\r\n" + k_mid + k_date + "\r\nbody\r\n",
         "<added@gw.example>"},
        {"case-insensitive names", "message-id: <c@d>\r\nDATE: y\r\n\r\n", "message-id: <c@d>\r\nDATE: y\r\n\r\n",
         "<c@d>"},
        {"folded Message-ID", "Message-ID:\r\n <f@g>\r\nDate: z\r\n\r\nb\r\n",
         "Message-ID:\r\n <f@g>\r\nDate: z\r\n\r\nb\r\n", "<f@g>"},
        {"headers only", "Subject: s\r\nDate: d\r\n", "Subject: s\r\nDate: d\r\n" + k_mid, "<added@gw.example>"},
        {"empty message", "", k_mid + k_date, "<added@gw.example>"},
        {"no headers at all: a separator is added", "just text\r\nmore\r\n",
         k_mid + k_date + "\r\njust text\r\nmore\r\n", "<added@gw.example>"},
        {"body starting without an empty line", "Subject: s\r\nnot a header\r\n",
         "Subject: s\r\n" + k_mid + k_date + "\r\nnot a header\r\n", "<added@gw.example>"},
        {"Message-ID-like text in the body is ignored", "Subject: s\r\n\r\nMessage-ID: <no@no>\r\n",
         "Subject: s\r\n" + k_mid + k_date + "\r\nMessage-ID: <no@no>\r\n", "<added@gw.example>"},
        {"Resent-Date is not Date", "Resent-Date: r\r\n\r\n", "Resent-Date: r\r\n" + k_mid + k_date + "\r\n",
         "<added@gw.example>"},
    };
    for (const auto& c : cases) {
        for (size_t step : {size_t(1), size_t(5), size_t(4096)}) {
            INFO(c.name << " step " << step);
            std::string mid;
            CHECK(run(c.in, step, &mid) == c.out);
            CHECK(mid == c.message_id);
        }
    }
}

TEST_CASE("an oversized header section passes unchanged", "[headers]") {
    std::string big = "X-Big: " + std::string(5000, 'a') + "\r\n\r\nbody\r\n";
    CHECK(run(big, 100, nullptr, 1024) == big);
}

TEST_CASE("Received header", "[headers]") {
    TraceInfo t{"printer.lan",   "unknown", "192.0.2.7", "relay.example.com", "ESMTP", "18F3A2B4C5D6E",
                "a@example.org", 0,         ""};
    auto h = received_header(t);
    CHECK(h.rfind("Received: from printer.lan (unknown [192.0.2.7])\r\n\tby relay.example.com (smtpgw) with ESMTP id "
                  "18F3A2B4C5D6E\r\n\tfor <a@example.org>; ",
                  0) == 0);
    CHECK(h.size() > 2);
    CHECK(h.substr(h.size() - 2) == "\r\n");
    t.single_recipient.clear();
    CHECK(received_header(t).find("for <") == std::string::npos);
    t.client_ip = "2001:db8::7";  // RFC 5321 4.1.3: an IPv6 address literal
    CHECK(received_header(t).rfind("Received: from printer.lan (unknown [IPv6:2001:db8::7])\r\n", 0) == 0);
    CHECK(rfc5322_date(0).find("1970") != std::string::npos);
}

TEST_CASE("header_from: rewrite puts the new sender in From: and the old one in Reply-To:", "[headers]") {
    using O = HeaderStage::FromOutcome;
    const std::string tail = k_mid + k_date;
    struct Case {
        const char* name;
        std::string in, out;
        O outcome;
    } cases[] = {
        {"display name kept", "From: \"Scanner 3rd floor\" <scan@scanner.local>\r\nSubject: s\r\n\r\nbody\r\n",
         "From: \"Scanner 3rd floor\" <scans@example.com>\r\nReply-To: \"Scanner 3rd floor\" <scan@scanner.local>\r\n"
         "Subject: s\r\n" +
             tail + "\r\nbody\r\n",
         O::Rewritten},
        {"bare address", "Subject: s\r\nfrom: scan@scanner.local\r\n\r\nb\r\n",
         "Subject: s\r\nFrom: <scans@example.com>\r\nReply-To: scan@scanner.local\r\n" + tail + "\r\nb\r\n",
         O::Rewritten},
        {"an existing Reply-To: stays", "Reply-To: desk@example.com\r\nFrom: Desk <a@scanner.local>\r\n\r\nb\r\n",
         "Reply-To: desk@example.com\r\nFrom: Desk <scans@example.com>\r\n" + tail + "\r\nb\r\n", O::Rewritten},
        {"folded From: keeps its folding in Reply-To:", "From: \"A, B\"\r\n <ab@scanner.local>\r\n\r\nb\r\n",
         "From: \"A, B\" <scans@example.com>\r\nReply-To: \"A, B\"\r\n <ab@scanner.local>\r\n" + tail + "\r\nb\r\n",
         O::Rewritten},
        {"angle brackets in a quoted name", "From: \"<odd>\" <o@scanner.local>\r\n\r\nb\r\n",
         "From: \"<odd>\" <scans@example.com>\r\nReply-To: \"<odd>\" <o@scanner.local>\r\n" + tail + "\r\nb\r\n",
         O::Rewritten},
        {"several mailboxes become one", "From: a@x.local, b@x.local\r\n\r\nb\r\n",
         "From: <scans@example.com>\r\nReply-To: a@x.local, b@x.local\r\n" + tail + "\r\nb\r\n", O::Rewritten},
        {"no From: at all", "Subject: s\r\n\r\nb\r\n",
         "Subject: s\r\n" + tail + "From: <scans@example.com>\r\n\r\nb\r\n", O::Added},
        {"only the first From: changes", "From: a@x.local\r\nFrom: b@x.local\r\n\r\nb\r\n",
         "From: <scans@example.com>\r\nReply-To: a@x.local\r\nFrom: b@x.local\r\n" + tail + "\r\nb\r\n", O::Rewritten},
        {"the obsolete From : form is From:", "From : a@x.local\r\nSubject : s\r\n\r\nb\r\n",
         "From: <scans@example.com>\r\nReply-To: a@x.local\r\nSubject : s\r\n" + tail + "\r\nb\r\n", O::Rewritten},
        {"the name in a comment is kept", "From: scan@scanner.local (Scanner 3rd floor)\r\n\r\nb\r\n",
         "From: <scans@example.com> (Scanner 3rd floor)\r\nReply-To: scan@scanner.local (Scanner 3rd floor)\r\n" +
             tail + "\r\nb\r\n",
         O::Rewritten},
        {"a long new From: is folded",
         "From: \"Multifunction printer on the third floor, east wing\"\r\n <printer-3rd-floor-east@scanner.local>\r\n"
         "\r\nb\r\n",
         "From: \"Multifunction printer on the third floor, east wing\"\r\n <scans@example.com>\r\n"
         "Reply-To: \"Multifunction printer on the third floor, east wing\"\r\n "
         "<printer-3rd-floor-east@scanner.local>\r\n" +
             tail + "\r\nb\r\n",
         O::Rewritten},
    };
    for (const auto& c : cases) {
        for (size_t step : {size_t(1), size_t(3), size_t(4096)}) {
            INFO(c.name << ", fed " << step << " bytes at a time");
            O outcome = O::Untouched;
            CHECK(run(c.in, step, nullptr, 1 << 16, "scans@example.com", &outcome) == c.out);
            CHECK(outcome == c.outcome);
        }
    }
    O outcome = O::Untouched;
    std::string big = "From: a@x.local\r\nX-Big: " + std::string(300, 'x') + "\r\n\r\nb\r\n";
    CHECK(run(big, 7, nullptr, 100, "scans@example.com", &outcome) == big);
    CHECK(outcome == O::HeadersTooLarge);
}
