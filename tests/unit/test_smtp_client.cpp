// The SMTP client state machine against scripted server replies: dialogs as strings.
#include "gateway/smtp/smtp_client.hpp"

#include <catch2/catch.hpp>

using namespace gateway;
using Kind = ClientEvent::Kind;

namespace {

struct Dialog {
    SmtpClient client{ClientSettings{"gw.example", 998, "gw.example"}};
    std::vector<ClientEvent> events;

    // Feeds server bytes; returns what the client sent in response.
    std::string server(const std::string& bytes) {
        client.feed(bytes);
        auto ev = client.take_events();
        events.insert(events.end(), ev.begin(), ev.end());
        return client.take_output();
    }
    std::vector<Kind> kinds() {
        std::vector<Kind> k;
        for (auto& e : events)
            k.push_back(e.kind);
        events.clear();
        return k;
    }
};

const char* k_ehlo_full =
    "250-mx.example\r\n250-PIPELINING\r\n250-SIZE 1000\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250-STARTTLS\r\n"
    "250-AUTH PLAIN LOGIN\r\n250 ENHANCEDSTATUSCODES\r\n";

OutgoingMessage message(std::vector<std::string> rcpts, uint64_t size = 100) {
    OutgoingMessage m;
    m.sender = "a@x.example";
    m.recipients = std::move(rcpts);
    m.size = size;
    m.body = "8BITMIME";
    return m;
}

}  // namespace

TEST_CASE("replies are parsed whole, with their enhanced status", "[client][reply]") {
    ReplyParser p;
    std::vector<ServerReply> out;
    p.feed("250-first\r\n250-sec", out);
    CHECK(out.empty());
    p.feed("ond\r\n250 third\r\n550 5.1.1 <x@y>: User unknown\r\n421 Service not available\r\n", out);
    REQUIRE(out.size() == 3);
    CHECK(out[0].code == 250);
    CHECK(out[0].lines.size() == 3);
    CHECK(out[0].text() == "250-first 250-second 250 third");
    CHECK(out[1].status() == "5.1.1");
    CHECK(out[1].text() == "550 5.1.1 <x@y>: User unknown");
    CHECK(out[2].status() == "4.0.0");  // no enhanced status: X.0.0
    ServerReply mismatch{450, {"450 5.1.1 wrong class"}};
    CHECK(mismatch.status() == "4.0.0");
    CHECK(is_enhanced_status("4.7.139"));
    CHECK_FALSE(is_enhanced_status("3.1.1"));
    CHECK_FALSE(is_enhanced_status("5.1"));

    ReplyParser bad;
    bad.feed("hello\r\n", out);
    CHECK(bad.failed());
    ReplyParser mixed;
    mixed.feed("250-a\r\n251 b\r\n", out);
    CHECK(mixed.failed());
}

TEST_CASE("a reply that never ends is cut off; its text is bounded and printable", "[client][reply][limits]") {
    std::vector<ServerReply> out;
    ReplyParser lines;
    for (size_t i = 0; i < ReplyParser::k_max_lines; ++i)
        lines.feed("250-x\r\n", out);
    CHECK_FALSE(lines.failed());
    lines.feed("250-x\r\n", out);
    CHECK(lines.failed());
    CHECK(lines.error() == "reply longer than 1000 lines or 64 KiB");
    CHECK(out.empty());

    ReplyParser octets;
    std::string line = "250-" + std::string(1000, 'y') + "\r\n";
    for (int i = 0; i < 70 && !octets.failed(); ++i)
        octets.feed(line, out);
    CHECK(octets.failed());
    CHECK(out.empty());

    ReplyParser longline;
    longline.feed("250 " + std::string(ReplyParser::k_max_line, 'z'), out);
    CHECK(longline.error() == "reply line longer than 64 KiB");

    // A long reply within the limits is kept whole, but what goes into the log is not.
    ReplyParser ok;
    std::string big;
    for (int i = 0; i < 40; ++i)
        big += "550-5.7.1 " + std::string(100, 'w') + "\x1b[2J\r\n";
    ok.feed(big + "550 5.7.1 end\r\n", out);
    REQUIRE(out.size() == 1);
    CHECK(out[0].lines.size() == 41);
    CHECK(ok.replies() == 1);
    std::string text = out[0].text();
    CHECK(text.size() == ServerReply::k_max_reply_text + 3);
    CHECK(text.substr(text.size() - 3) == "...");
    CHECK(text.find('\x1b') == std::string::npos);
    CHECK(text.find("?[2J") != std::string::npos);
}

TEST_CASE("a pipelined transaction, then a second one after RSET", "[client]") {
    Dialog d;
    CHECK(d.client.stage() == ClientStage::Greeting);
    CHECK(d.server("220 mx.example ESMTP\r\n") == "EHLO gw.example\r\n");
    CHECK(d.server(k_ehlo_full).empty());
    CHECK(d.kinds() == std::vector<Kind>{Kind::Ready});
    const auto& caps = d.client.capabilities();
    CHECK(caps.pipelining);
    CHECK(caps.size == 1000);
    CHECK(caps.eightbitmime);
    CHECK(caps.smtputf8);
    CHECK(caps.starttls);
    CHECK(caps.auth == std::vector<std::string>{"PLAIN", "LOGIN"});

    d.client.send_message(message({"b@y.example", "c@y.example"}));
    CHECK(
        d.client.take_output() ==
        "MAIL FROM:<a@x.example> SIZE=100 BODY=8BITMIME\r\nRCPT TO:<b@y.example>\r\nRCPT TO:<c@y.example>\r\nDATA\r\n");
    CHECK(d.server("250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n550 5.1.1 <c@y.example>: User unknown\r\n354 go\r\n").empty());
    auto ev = d.events;
    REQUIRE(d.kinds() == std::vector<Kind>{Kind::RecipientDone, Kind::RecipientDone, Kind::NeedContent});
    CHECK(ev[0].index == 0);
    CHECK(ev[0].reply.code == 250);
    CHECK(ev[1].index == 1);
    CHECK(ev[1].reply.code == 550);
    CHECK(d.client.stage() == ClientStage::Content);

    d.client.send_content("Subject: x\r\n\r\n.leading dot\r\n..two\r\nend\r\n");
    d.client.end_content();
    CHECK(d.client.take_output() == "Subject: x\r\n\r\n..leading dot\r\n...two\r\nend\r\n.\r\n");
    CHECK(d.server("250 2.0.0 Ok: queued as ABC\r\n").empty());
    ev = d.events;
    REQUIRE(d.kinds() == std::vector<Kind>{Kind::MessageSent, Kind::Ready});
    CHECK(ev[0].reply.text() == "250 2.0.0 Ok: queued as ABC");

    // The same connection carries the next message, after RSET (in the same pipelined group).
    d.client.send_message(message({"d@y.example"}));
    CHECK(d.client.take_output() ==
          "RSET\r\nMAIL FROM:<a@x.example> SIZE=100 BODY=8BITMIME\r\nRCPT TO:<d@y.example>\r\nDATA\r\n");
    CHECK(d.server("250 2.0.0 Ok\r\n250 ok\r\n250 ok\r\n354 go\r\n").empty());
    CHECK(d.kinds() == std::vector<Kind>{Kind::RecipientDone, Kind::NeedContent});
    d.client.quit();
    CHECK(d.client.take_output() == "QUIT\r\n");
}

TEST_CASE("a refused RSET ends the connection", "[client]") {
    Dialog d;
    d.server("220 x\r\n");
    d.server("250-x\r\n250 PIPELINING\r\n");
    d.client.send_message(message({"b@y.example"}));
    d.server("250 ok\r\n250 ok\r\n354 go\r\n");
    d.client.send_content("x\r\n");
    d.client.end_content();
    d.server("250 sent\r\n");
    d.kinds();
    d.client.send_message(message({"c@y.example"}));
    d.client.take_output();
    d.server("421 4.3.0 shutting down\r\n");
    auto ev = d.events;
    REQUIRE(d.kinds() == std::vector<Kind>{Kind::SiteFailed});
    CHECK(ev[0].stage == ClientStage::Rset);
    CHECK(d.client.failed());
}

TEST_CASE("without PIPELINING, one command at a time", "[client]") {
    Dialog d;
    d.server("220 old.example SMTP\r\n");
    d.server("250-old.example\r\n250 SIZE\r\n");
    d.kinds();
    d.client.send_message(message({"b@y.example", "c@y.example"}));
    CHECK(d.client.take_output() == "MAIL FROM:<a@x.example> SIZE=100\r\n");  // no BODY= without 8BITMIME
    CHECK(d.server("250 ok\r\n") == "RCPT TO:<b@y.example>\r\n");
    CHECK(d.server("450 4.2.0 busy\r\n") == "RCPT TO:<c@y.example>\r\n");
    CHECK(d.server("250 ok\r\n") == "DATA\r\n");
    CHECK(d.server("354 go\r\n").empty());
    REQUIRE(d.kinds() == std::vector<Kind>{Kind::RecipientDone, Kind::RecipientDone, Kind::NeedContent});
}

TEST_CASE("a server that does not know EHLO gets HELO", "[client]") {
    Dialog d;
    CHECK(d.server("220 ancient\r\n") == "EHLO gw.example\r\n");
    CHECK(d.server("502 5.5.2 Error: command not recognized\r\n") == "HELO gw.example\r\n");
    CHECK(d.server("250 ancient\r\n").empty());
    CHECK(d.kinds() == std::vector<Kind>{Kind::Ready});
    CHECK_FALSE(d.client.capabilities().esmtp);
    d.client.send_message(message({"b@y.example"}));
    CHECK(d.client.take_output() == "MAIL FROM:<a@x.example>\r\n");  // no ESMTP parameters
}

TEST_CASE("site failures", "[client]") {
    SECTION("greeting refused") {
        Dialog d;
        d.server("554 5.7.1 go away\r\n");
        REQUIRE(d.events.size() == 1);
        CHECK(d.events[0].kind == Kind::SiteFailed);
        CHECK(d.events[0].stage == ClientStage::Greeting);
        CHECK(d.client.failed());
    }
    SECTION("EHLO and HELO refused") {
        Dialog d;
        d.server("220 x\r\n");
        d.server("550 no\r\n");
        d.server("550 still no\r\n");
        REQUIRE(d.events.size() == 1);
        CHECK(d.events[0].stage == ClientStage::Helo);
        CHECK(d.events[0].reply.text() == "550 still no");
    }
    SECTION("421 while idle") {
        Dialog d;
        d.server("220 x\r\n");
        d.server("250 x\r\n");
        d.kinds();
        d.server("421 4.4.2 x Error: timeout exceeded\r\n");
        CHECK(d.kinds() == std::vector<Kind>{Kind::SiteFailed});
    }
    SECTION("not SMTP at all") {
        Dialog d;
        d.server("HTTP/1.1 400 Bad Request\r\n");
        REQUIRE(d.events.size() == 1);
        CHECK(d.events[0].kind == Kind::ProtocolError);
        CHECK(d.events[0].detail.find("malformed reply line") == 0);
    }
}

TEST_CASE("transaction failures", "[client]") {
    auto ready = [](Dialog& d, const char* ehlo) {
        d.server("220 x\r\n");
        d.server(ehlo);
        d.kinds();
    };
    SECTION("MAIL refused, not pipelined") {
        Dialog d;
        ready(d, "250 x\r\n");
        d.client.send_message(message({"b@y.example"}));
        d.client.take_output();
        CHECK(d.server("553 5.7.60 not allowed to send as a@x.example\r\n").empty());
        auto ev = d.events;
        REQUIRE(d.kinds() == std::vector<Kind>{Kind::MessageFailed, Kind::Ready});
        CHECK(ev[0].stage == ClientStage::Mail);
        CHECK(ev[0].reply.status() == "5.7.60");
    }
    SECTION("pipelined: every recipient refused, DATA answered 554") {
        Dialog d;
        ready(d, "250-x\r\n250 PIPELINING\r\n");
        d.client.send_message(message({"b@y.example"}));
        d.client.take_output();
        d.server("250 ok\r\n550 5.1.1 no such user\r\n554 5.5.1 Error: no valid recipients\r\n");
        auto ev = d.events;
        REQUIRE(d.kinds() == std::vector<Kind>{Kind::RecipientDone, Kind::MessageFailed, Kind::Ready});
        CHECK(ev[1].stage == ClientStage::Rcpt);
        CHECK(ev[1].reply.text() == "550 5.1.1 no such user");
    }
    SECTION("pipelined: every recipient refused but DATA accepted: an empty message ends it") {
        Dialog d;
        ready(d, "250-x\r\n250 PIPELINING\r\n");
        d.client.send_message(message({"b@y.example"}));
        d.client.take_output();
        CHECK(d.server("250 ok\r\n550 no\r\n354 go\r\n") == ".\r\n");
        d.server("554 no valid recipients\r\n");
        auto ev = d.events;
        REQUIRE(d.kinds() == std::vector<Kind>{Kind::RecipientDone, Kind::MessageFailed, Kind::Ready});
        CHECK(ev[1].reply.text() == "550 no");
    }
    SECTION("pipelined: MAIL refused; the recipients' replies are not blamed on them") {
        Dialog d;
        ready(d, "250-x\r\n250 PIPELINING\r\n");
        d.client.send_message(message({"b@y.example", "c@y.example"}));
        d.client.take_output();
        d.server("451 4.3.0 try later\r\n503 need MAIL\r\n503 need MAIL\r\n503 need MAIL\r\n");
        auto ev = d.events;
        REQUIRE(d.kinds() == std::vector<Kind>{Kind::MessageFailed, Kind::Ready});
        CHECK(ev[0].stage == ClientStage::Mail);
        CHECK(ev[0].reply.code == 451);
    }
    SECTION("end of data refused") {
        Dialog d;
        ready(d, "250-x\r\n250 PIPELINING\r\n");
        d.client.send_message(message({"b@y.example"}));
        d.client.take_output();
        d.server("250 ok\r\n250 ok\r\n354 go\r\n");
        d.kinds();
        d.client.send_content("x\r\n");
        d.client.end_content();
        d.server("552 5.3.4 too big\r\n");
        auto ev = d.events;
        REQUIRE(d.kinds() == std::vector<Kind>{Kind::MessageFailed, Kind::Ready});
        CHECK(ev[0].stage == ClientStage::DataDone);
        CHECK(std::string(in_reply_to(ev[0].stage)) == "end of DATA command");
    }
}

TEST_CASE("content: dot-stuffing and long lines broken as Postfix does", "[client]") {
    SmtpClient c(ClientSettings{"gw", 998, "gw"});
    c.feed("220 x\r\n250 x\r\n");
    c.take_output();
    c.send_message(message({"b@y.example"}));
    c.feed("250 ok\r\n250 ok\r\n354 go\r\n");
    c.take_output();
    std::string line(2100, 'a');
    // Arriving in pieces that split the line and the dot.
    c.send_content("first\r\n.");
    c.send_content("dot\r\n" + line.substr(0, 1000));
    c.send_content(line.substr(1000) + "\r\n");
    c.end_content();
    std::string expected = "first\r\n..dot\r\n" + std::string(998, 'a') + "\r\n " + std::string(997, 'a') + "\r\n " +
                           std::string(105, 'a') + "\r\n.\r\n";
    CHECK(c.take_output() == expected);
}

TEST_CASE("content lines come out the same whatever pieces they arrive in", "[client]") {
    // The plain definition, line by line over the whole content: a leading dot doubled, a line
    // longer than the limit broken with <CR><LF><SPACE> (the space counting toward the next part).
    auto expected = [](const std::string& content, size_t limit, bool stuff) {
        std::string out;
        size_t pos = 0;
        while (pos < content.size()) {
            size_t end = content.find("\r\n", pos);
            bool ended = end != std::string::npos;
            std::string text = content.substr(pos, (ended ? end : content.size()) - pos);
            if (stuff && !text.empty() && text[0] == '.') out += '.';
            size_t line = 0, i = 0;
            while (line + (text.size() - i) > limit) {
                out += text.substr(i, limit - line) + "\r\n ";
                i += limit - line;
                line = 1;
            }
            out += text.substr(i) + "\r\n";
            pos = ended ? end + 2 : content.size();
        }
        return out;
    };
    uint32_t seed = 11;
    auto next = [&](uint32_t n) { return (seed = seed * 1103515245u + 12345u) / 65536 % n; };
    const char* tokens[] = {"a", "b", ".", "\r\n", "\r\n."};
    for (int round = 0; round < 3000; ++round) {
        std::string content;
        for (uint32_t i = next(40); i > 0; --i)
            content += tokens[next(5)];
        size_t limit = 2 + next(8);
        bool stuff = next(4) != 0;
        WireLines wire(limit, stuff);
        std::string out;
        for (size_t pos = 0; pos < content.size();) {
            size_t piece = std::min<size_t>(content.size() - pos, 1 + next(12));
            wire.append(std::string_view(content).substr(pos, piece), out);
            pos += piece;
        }
        wire.finish(out);
        if (out != expected(content, limit, stuff))
            FAIL("limit " << limit << (stuff ? ", dots doubled" : "") << ": \"" << content << "\" gave \"" << out
                          << "\"");
    }
}

TEST_CASE("content without a final line break gets one before the dot", "[client]") {
    SmtpClient c(ClientSettings{"gw", 998, "gw"});
    c.feed("220 x\r\n250 x\r\n");
    c.send_message(message({"b@y.example"}));
    c.feed("250 ok\r\n250 ok\r\n354 go\r\n");
    c.take_output();
    c.send_content("no newline");
    c.end_content();
    CHECK(c.take_output() == "no newline\r\n.\r\n");
}

TEST_CASE("stage texts for reasons", "[client]") {
    CHECK(std::string(while_text(ClientStage::Greeting)) == "receiving the initial server greeting");
    CHECK(std::string(while_text(ClientStage::Content)) == "sending message body");
    CHECK(std::string(in_reply_to(ClientStage::Rcpt)) == "RCPT TO command");
    CHECK(std::string(in_reply_to(ClientStage::Mail)) == "MAIL FROM command");
}
