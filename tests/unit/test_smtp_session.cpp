// Whole SMTP dialogs against the session state machine, as strings: no sockets, no disk.
#include "gateway/common/log.hpp"
#include "gateway/smtpd/smtp_session.hpp"

#include <catch2/catch.hpp>

#include <optional>
#include <vector>

using namespace gateway;

namespace {

struct FakeHooks : SessionHooks {
    std::string content;
    std::optional<Envelope> committed;
    int aborts = 0;
    bool low = false;
    int ids = 0;

    std::string new_queue_id() override { return "QID" + std::to_string(++ids); }
    int64_t now_us() override { return 1795803759000000; }
    bool storage_low() override { return low; }
    void message_write(std::string&& c) override { content += c; }
    void message_commit(Envelope&& e) override { committed = std::move(e); }
    void message_abort() override {
        ++aborts;
        content.clear();
    }
    bool tls_requested = false;
    std::vector<std::pair<std::string, std::optional<std::string>>> auth_starts;
    std::vector<std::string> auth_steps;
    int auth_cancels = 0;
    bool blocked = false;
    void start_tls() override { tls_requested = true; }
    void auth_start(const std::string& m, const std::optional<std::string>& initial) override {
        auth_starts.emplace_back(m, initial);
    }
    void auth_step(const std::string& r) override { auth_steps.push_back(r); }
    void auth_cancel() override { ++auth_cancels; }
    bool auth_blocked() override { return blocked; }
};

struct LogCapture {
    std::vector<std::string> lines;
    LogCapture() {
        log::set_capture([this](const std::string& l) { lines.push_back(l); });
    }
    ~LogCapture() { log::set_capture(nullptr); }
    bool has(const std::string& fragment) const {
        for (const auto& l : lines)
            if (l.find(fragment) != std::string::npos) return true;
        return false;
    }
};

struct Dialog {
    SessionPolicy policy;
    FakeHooks hooks;
    std::unique_ptr<SmtpSession> session;

    explicit Dialog(bool may_relay = true, SessionPolicy p = default_policy()) : policy(std::move(p)) {
        ClientInfo client;
        client.ip = "192.0.2.7";
        client.may_relay = may_relay;
        session = std::make_unique<SmtpSession>(policy, client, hooks);
        session->start();
    }

    static SessionPolicy default_policy() {
        SessionPolicy p;
        p.hostname = "gw.example";
        p.message_size = 10000;
        p.max_recipients = 3;
        p.max_errors = 50;
        p.line_length = 2000;
        return p;
    }

    std::string out() { return session->take_output(); }

    // Sends bytes; returns every reply produced.
    std::string send(const std::string& bytes) {
        session->feed(bytes);
        return out();
    }

    std::string commit(CommitResult r = CommitResult::Stored) {
        REQUIRE(session->waiting());
        session->on_commit_result(r);
        return out();
    }
};

const std::string k_ehlo_reply =
    "250-gw.example\r\n250-PIPELINING\r\n250-SIZE 10000\r\n250-8BITMIME\r\n250-ENHANCEDSTATUSCODES\r\n250 SMTPUTF8\r\n";

}  // namespace

TEST_CASE("a whole transaction, one command at a time", "[session]") {
    LogCapture logs;
    Dialog d;
    CHECK(d.out() == "220 gw.example ESMTP\r\n");
    CHECK(d.send("EHLO printer.lan\r\n") == k_ehlo_reply);
    CHECK(d.send("MAIL FROM:<scanner@corp.example>\r\n") == "250 2.1.0 Ok\r\n");
    CHECK(d.send("RCPT TO:<a@example.org>\r\n") == "250 2.1.5 Ok\r\n");
    CHECK(d.send("DATA\r\n") == "354 End data with <CR><LF>.<CR><LF>\r\n");
    CHECK(d.session->timeout() == TimeoutKind::Data);
    CHECK(d.send("Subject: hi\r\nMessage-ID: <m@x>\r\nDate: today\r\n\r\nhello\r\n") == "");
    CHECK(d.send(".\r\n") == "");
    REQUIRE(d.hooks.committed);
    CHECK(d.session->timeout() == TimeoutKind::None);
    CHECK(d.commit() == "250 2.0.0 Ok: queued as QID1\r\n");
    CHECK(d.send("QUIT\r\n") == "221 2.0.0 Bye\r\n");
    CHECK(d.session->closing());

    const auto& e = *d.hooks.committed;
    CHECK(e.id == "QID1");
    CHECK(e.sender == "scanner@corp.example");
    REQUIRE(e.recipients.size() == 1);
    CHECK(e.recipients[0].address == "a@example.org");
    CHECK(e.recipients[0].status == RcptStatus::Pending);
    CHECK(e.helo == "printer.lan");
    CHECK(e.protocol == "ESMTP");
    CHECK(e.client_ip == "192.0.2.7");
    CHECK(e.message_id == "<m@x>");
    CHECK(e.size == d.hooks.content.size());
    // The Received: header comes first, then the message exactly as sent.
    auto& c = d.hooks.content;
    CHECK(c.rfind("Received: from printer.lan (unknown [192.0.2.7])\r\n\tby gw.example (smtpgw) with ESMTP id QID1\r\n"
                  "\tfor <a@example.org>; ",
                  0) == 0);
    CHECK(c.substr(c.find("\r\nSubject") + 2) == "Subject: hi\r\nMessage-ID: <m@x>\r\nDate: today\r\n\r\nhello\r\n");

    d.session->on_disconnect("");
    CHECK(logs.has("smtpd["));
    CHECK(logs.has(": connect from unknown[192.0.2.7]"));
    CHECK(logs.has(": QID1: client=unknown[192.0.2.7]"));
    CHECK(logs.has(": disconnect from unknown[192.0.2.7] ehlo=1 mail=1 rcpt=1 data=1 quit=1 commands=5"));
}

TEST_CASE("a pipelined client gets every reply in order, across two messages", "[session]") {
    Dialog d;
    d.out();
    // RFC 2920: the whole group in one packet, including the content and a second transaction.
    std::string out = d.send(
        "EHLO c\r\nMAIL FROM:<a@x.example>\r\nRCPT TO:<b@y.example>\r\nRCPT TO:<c@y.example>\r\nDATA\r\n"
        "Subject: one\r\n\r\n1\r\n.\r\nMAIL FROM:<a@x.example>\r\nRCPT TO:<d@y.example>\r\nDATA\r\nSubject: "
        "two\r\n\r\n2\r\n.\r\n"
        "QUIT\r\n");
    CHECK(out ==
          k_ehlo_reply + "250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n");
    CHECK(d.session->waiting());  // the rest waits for the commit
    CHECK(d.hooks.committed->recipients.size() == 2);
    out = d.commit();
    CHECK(out ==
          "250 2.0.0 Ok: queued as QID1\r\n250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n");
    CHECK(d.hooks.committed->recipients.at(0).address == "d@y.example");
    CHECK(d.hooks.committed->id == "QID2");
    CHECK(d.commit() == "250 2.0.0 Ok: queued as QID2\r\n221 2.0.0 Bye\r\n");
    CHECK(d.session->closing());
}

TEST_CASE("a client that pipelines faster than it reads gets its replies a batch at a time", "[session][limits]") {
    Dialog d;
    d.out();
    std::string flood;
    for (int i = 0; i < 1000; ++i)
        flood += "EHLO c\r\n";
    std::string out = d.send(flood + "NOOP\r\n");
    // One batch: the replies stop once k_output_batch octets wait; the rest of the input stays.
    CHECK(out.size() >= SmtpSession::k_output_batch);
    CHECK(out.size() < SmtpSession::k_output_batch + k_ehlo_reply.size());
    CHECK(d.session->can_resume());
    CHECK(d.session->buffered_input() > 0);
    // resume() goes on where it stopped; nothing is lost or repeated.
    std::string all = out;
    while (d.session->can_resume()) {
        d.session->resume();
        std::string more = d.out();
        CHECK(more.size() < SmtpSession::k_output_batch + k_ehlo_reply.size());
        all += more;
    }
    std::string expected;
    for (int i = 0; i < 1000; ++i)
        expected += k_ehlo_reply;
    CHECK(all == expected + "250 2.0.0 Ok\r\n");
    CHECK(d.session->buffered_input() == 0);
}

TEST_CASE("a client outside `clients` cannot relay", "[session]") {
    LogCapture logs;
    Dialog d(false);
    d.out();
    d.send("EHLO outsider.example\r\nMAIL FROM:<x@outsider.example>\r\n");
    CHECK(d.send("RCPT TO:<victim@example.org>\r\n") == "554 5.7.1 <victim@example.org>: Relay access denied\r\n");
    CHECK(d.send("DATA\r\n") == "554 5.5.1 Error: no valid recipients\r\n");
    CHECK(
        logs.has(": NOQUEUE: reject: RCPT from unknown[192.0.2.7]: 554 5.7.1 <victim@example.org>: Relay access "
                 "denied; from=<x@outsider.example> to=<victim@example.org> proto=ESMTP helo=<outsider.example>"));
    CHECK_FALSE(d.hooks.committed);
}

TEST_CASE("address literals are refused unless allowed", "[session]") {
    LogCapture logs;
    Dialog d;
    d.out();
    d.send("EHLO c\r\nMAIL FROM:<a@x.example>\r\n");
    CHECK(d.send("RCPT TO:<b@[10.1.2.3]>\r\n") ==
          "550 5.7.1 <b@[10.1.2.3]>: Recipient address rejected: Address literals are not accepted\r\n");
    CHECK(logs.has("NOQUEUE: reject: RCPT from unknown[192.0.2.7]: 550 5.7.1 <b@[10.1.2.3]>"));
    CHECK(d.send("RCPT TO:<b@y.example>\r\n") == "250 2.1.5 Ok\r\n");
    auto p = Dialog::default_policy();
    p.address_literals = true;
    Dialog allowed(true, p);
    allowed.out();
    allowed.send("EHLO c\r\nMAIL FROM:<a@x.example>\r\n");
    CHECK(allowed.send("RCPT TO:<b@[IPv6:2001:db8::1]>\r\n") == "250 2.1.5 Ok\r\n");
}

TEST_CASE("commands out of sequence", "[session]") {
    Dialog d;
    d.out();
    CHECK(d.send("MAIL FROM:<a@x.example>\r\n") == "503 5.5.1 Error: send HELO/EHLO first\r\n");
    d.send("HELO c\r\n");
    CHECK(d.send("RCPT TO:<b@y.example>\r\n") == "503 5.5.1 Error: need MAIL command\r\n");
    CHECK(d.send("DATA\r\n") == "503 5.5.1 Error: need MAIL command\r\n");
    d.send("MAIL FROM:<a@x.example>\r\n");
    CHECK(d.send("MAIL FROM:<a@x.example>\r\n") == "503 5.5.1 Error: nested MAIL command\r\n");
    CHECK(d.send("DATA\r\n") == "503 5.5.1 Error: need RCPT command\r\n");
    CHECK(d.send("RSET\r\n") == "250 2.0.0 Ok\r\n");
    CHECK(d.send("RCPT TO:<b@y.example>\r\n") == "503 5.5.1 Error: need MAIL command\r\n");
}

TEST_CASE("syntax errors", "[session]") {
    Dialog d;
    d.out();
    struct Case {
        const char* command;
        const char* reply;
    } cases[] = {
        {"EHLO", "501 5.5.4 Syntax: EHLO hostname"},
        {"EHLO c", "250-gw.example"},
        {"MAIL", "501 5.5.4 Syntax: MAIL FROM:<address>"},
        {"MAIL TO:<a@b.example>", "501 5.5.4 Syntax: MAIL FROM:<address>"},
        {"MAIL FROM:<a@b.example", "501 5.1.7 Bad sender address syntax"},
        {"MAIL FROM:<user>", "553 5.1.7 <user>: Sender address rejected: need fully-qualified address"},
        {"MAIL FROM:<a..b@x.example>", "553 5.1.7 <a..b@x.example>: Sender address rejected: invalid address syntax"},
        {"MAIL FROM:<jörg@x.example>", "553 5.6.7 <jörg@x.example>: non-ASCII address requires the SMTPUTF8 parameter"},
        {"MAIL FROM:<a@x.example> SIZE=abc", "501 5.5.4 Bad parameter value: SIZE=abc"},
        {"MAIL FROM:<a@x.example> BODY=BINARYMIME", "555 5.5.4 Unsupported option: BODY=BINARYMIME"},
        {"MAIL FROM:<a@x.example> FOO=1", "555 5.5.4 Unsupported option: FOO=1"},
        {"MAIL FROM: <a@x.example> BODY=8bitmime", "250 2.1.0 Ok"},
        {"RCPT TO:<b@y.example> NOTIFY=NEVER", "555 5.5.4 Unsupported option: NOTIFY=NEVER"},
        {"RCPT TO:<postmaster>", "553 5.1.3 <postmaster>: Recipient address rejected: need fully-qualified address"},
        {"RCPT TO:<b@-y.example>", "553 5.1.3 <b@-y.example>: Recipient address rejected: invalid address syntax"},
        {"RCPT TO:b@y.example", "250 2.1.5 Ok"},
        {"DATA now", "501 5.5.4 Syntax: DATA"},
    };
    for (const auto& c : cases) {
        INFO(c.command);
        auto out = d.send(std::string(c.command) + "\r\n");
        CHECK(out.rfind(std::string(c.reply) + "\r\n", 0) == 0);
    }
}

TEST_CASE("SMTPUTF8 addresses and the protocol name", "[session]") {
    Dialog d;
    d.out();
    d.send("EHLO c\r\n");
    CHECK(d.send("MAIL FROM:<jörg@x.example> SMTPUTF8\r\n") == "250 2.1.0 Ok\r\n");
    CHECK(d.send("RCPT TO:<用户@例子.测试>\r\n") == "250 2.1.5 Ok\r\n");
    d.send("DATA\r\nSubject: x\r\n\r\n.\r\n");
    REQUIRE(d.hooks.committed);
    CHECK(d.hooks.committed->smtputf8);
    CHECK(d.hooks.committed->protocol == "UTF8SMTP");  // RFC 6531 3.7.3
    CHECK(d.hooks.content.find("with UTF8SMTP id") != std::string::npos);
}

TEST_CASE("HELO clients get no ESMTP parameters", "[session]") {
    Dialog d;
    d.out();
    CHECK(d.send("HELO old.example\r\n") == "250 gw.example\r\n");
    CHECK(d.send("MAIL FROM:<a@x.example> SIZE=10\r\n") == "555 5.5.4 Unsupported option: SIZE=10\r\n");
    CHECK(d.send("MAIL FROM:<a@x.example>\r\n") == "250 2.1.0 Ok\r\n");
}

TEST_CASE("message size limits", "[session][limits]") {
    LogCapture logs;
    Dialog d;
    d.out();
    d.send("EHLO c\r\n");
    // RFC 1870 6.1: a declared size over the limit is refused at MAIL.
    CHECK(d.send("MAIL FROM:<a@x.example> SIZE=10001\r\n") == "552 5.3.4 Message size exceeds fixed limit\r\n");
    CHECK(logs.has("NOQUEUE: reject: MAIL from unknown[192.0.2.7]: 552 5.3.4 Message size exceeds fixed limit;"));
    CHECK(d.send("MAIL FROM:<a@x.example> SIZE=10000\r\n") == "250 2.1.0 Ok\r\n");
    d.send("RCPT TO:<b@y.example>\r\nDATA\r\n");
    // Content beyond the limit: read to the end, then refused once.
    std::string big;
    for (int i = 0; i < 200; ++i)
        big += std::string(70, 'x') + "\r\n";
    CHECK(d.send(big) == "");
    CHECK(d.send(".\r\n") == "552 5.3.4 Error: message file too big\r\n");
    CHECK(d.hooks.aborts == 1);
    CHECK_FALSE(d.hooks.committed);
    CHECK(
        logs.has("QID1: reject: END-OF-MESSAGE from unknown[192.0.2.7]: 552 5.3.4 Error: message file too big; "
                 "from=<a@x.example> to=<b@y.example>"));
    // The session goes on.
    CHECK(d.send("MAIL FROM:<a@x.example>\r\n") == "250 2.1.0 Ok\r\n");
}

TEST_CASE("recipient limit", "[session][limits]") {
    Dialog d;
    d.out();
    d.send("EHLO c\r\nMAIL FROM:<a@x.example>\r\n");
    std::string out;
    for (int i = 0; i < 6; ++i)
        out += d.send("RCPT TO:<r" + std::to_string(i) + "@y.example>\r\n");
    CHECK(out ==
          "250 2.1.5 Ok\r\n250 2.1.5 Ok\r\n250 2.1.5 Ok\r\n452 4.5.3 Error: too many recipients\r\n"
          "452 4.5.3 Error: too many recipients\r\n452 4.5.3 Error: too many recipients\r\n");
    CHECK_FALSE(d.session->closing());  // not counted against the error budget
    d.send("DATA\r\n.\r\n");
    CHECK(d.hooks.committed->recipients.size() == 3);
}

TEST_CASE("command lines over 2048 octets", "[session][limits]") {
    Dialog d;
    d.out();
    CHECK(d.send("NOOP " + std::string(3000, 'a') + "\r\n") == "500 5.5.2 Line too long\r\n");
    // Arriving in pieces: one reply, the rest of the line is discarded, the next command works.
    CHECK(d.send("NOOP " + std::string(2100, 'b')) == "500 5.5.2 Line too long\r\n");
    CHECK(d.send(std::string(5000, 'b')) == "");
    CHECK(d.send("bbb\r\nNOOP\r\n") == "250 2.0.0 Ok\r\n");
    CHECK(d.send("NOOP " + std::string(2040, 'c') + "\r\n") == "250 2.0.0 Ok\r\n");
    // RFC 4954 4: AUTH lines may be up to 12288 octets.
    CHECK(d.send("AUTH PLAIN " + std::string(5000, 'd') + "\r\n") == "503 5.5.1 Error: authentication not enabled\r\n");
    CHECK(d.send("AUTH PLAIN " + std::string(13000, 'd') + "\r\n") == "500 5.5.2 Line too long\r\n");
}

TEST_CASE("the error budget closes the session", "[session][limits]") {
    LogCapture logs;
    auto p = Dialog::default_policy();
    p.max_errors = 5;
    Dialog d(true, p);
    d.out();
    std::string out;
    for (int i = 0; i < 5; ++i)
        out += d.send("BOGUS\r\n");
    CHECK(out.find("421 4.7.0 gw.example Error: too many errors\r\n") != std::string::npos);
    CHECK(d.session->closing());
    CHECK(d.send("NOOP\r\n") == "");
    CHECK(logs.has("too many errors after UNKNOWN from unknown[192.0.2.7]"));
}

TEST_CASE("an HTTP request closes the session at once", "[session]") {
    LogCapture logs;
    Dialog d;
    d.out();
    CHECK(d.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n") ==
          "221 2.7.0 Error: non-SMTP command received; closing connection\r\n");
    CHECK(d.session->closing());
    CHECK(logs.has("warning: non-SMTP command from unknown[192.0.2.7]: GET / HTTP/1.1"));
}

TEST_CASE("timeouts", "[session][limits]") {
    LogCapture logs;
    Dialog d;
    d.out();
    d.send("EHLO c\r\nMAIL FROM:<a@x.example>\r\nRCPT TO:<b@y.example>\r\nDATA\r\nSubject: x\r\n");
    d.session->on_timeout();
    CHECK(d.out() == "421 4.4.2 gw.example Error: timeout exceeded\r\n");
    CHECK(d.session->closing());
    CHECK(d.hooks.aborts == 1);
    CHECK(logs.has("timeout after DATA from unknown[192.0.2.7]"));
}

TEST_CASE("bare line feeds as the listener decides", "[session][smuggling]") {
    SECTION("accepted by default and stored as CRLF") {
        Dialog d;
        d.out();
        d.send("EHLO c\nMAIL FROM:<a@x.example>\nRCPT TO:<b@y.example>\nDATA\n");
        // The line before the final dot ended with a bare LF: not the end of the data.
        CHECK(d.send("Subject: lf\n\nline\n.\r\n") == "");
        CHECK_FALSE(d.hooks.committed);
        CHECK(d.send(".\r\n") == "");
        REQUIRE(d.hooks.committed);
        const auto& c = d.hooks.content;
        CHECK(c.find("Subject: lf\r\n") != std::string::npos);
        CHECK(c.substr(c.size() - 12) == "\r\n\r\nline\r\n\r\n");
    }
    SECTION("refused with bare_newline: reject") {
        auto p = Dialog::default_policy();
        p.reject_bare_lf = true;
        Dialog d(true, p);
        d.out();
        d.send("EHLO c\r\nMAIL FROM:<a@x.example>\r\nRCPT TO:<b@y.example>\r\nDATA\r\n");
        CHECK(d.send("Subject: lf\n\nline\r\n.\r\n") ==
              "550 5.5.2 Message contains a bare <LF> (line feed without carriage return); see RFC 5321 2.3.8\r\n");
        CHECK_FALSE(d.hooks.committed);
    }
    SECTION("a bare CR is always refused") {
        Dialog d;
        d.out();
        d.send("EHLO c\r\nMAIL FROM:<a@x.example>\r\nRCPT TO:<b@y.example>\r\nDATA\r\n");
        CHECK(d.send("Subject: cr\r\n\r\nx\ry\r\n.\r\n") ==
              "550 5.5.2 Message contains a bare <CR> (carriage return without line feed); see RFC 5321 2.3.8\r\n");
        CHECK_FALSE(d.hooks.committed);
    }
}

TEST_CASE("a smuggled second message stays inside the first", "[session][smuggling]") {
    Dialog d;
    d.out();
    d.send("EHLO c\r\nMAIL FROM:<a@x.example>\r\nRCPT TO:<b@y.example>\r\nDATA\r\n");
    std::string out = d.send(
        "Subject: one\r\n\r\nhi\n.\r\nMAIL FROM:<evil@x.example>\r\nRCPT TO:<c@y.example>\r\nDATA\r\n"
        "Subject: smuggled\r\n\r\n.\r\n");
    CHECK(out == "");  // one message, not two
    REQUIRE(d.hooks.committed);
    CHECK(d.hooks.committed->recipients.size() == 1);
    CHECK(d.hooks.content.find("MAIL FROM:<evil@x.example>\r\n") != std::string::npos);
    CHECK(d.commit() == "250 2.0.0 Ok: queued as QID1\r\n");
}

TEST_CASE("storage trouble", "[session]") {
    LogCapture logs;
    SECTION("low disk space refuses MAIL") {
        Dialog d;
        d.out();
        d.hooks.low = true;
        d.send("EHLO c\r\n");
        CHECK(d.send("MAIL FROM:<a@x.example>\r\n") == "452 4.3.1 Insufficient system storage\r\n");
    }
    SECTION("a failed commit") {
        Dialog d;
        d.out();
        d.send("EHLO c\r\nMAIL FROM:<a@x.example>\r\nRCPT TO:<b@y.example>\r\nDATA\r\nx\r\n.\r\n");
        CHECK(d.commit(CommitResult::NoSpace) == "452 4.3.1 Insufficient system storage\r\n");
        d.send("MAIL FROM:<a@x.example>\r\nRCPT TO:<b@y.example>\r\nDATA\r\nx\r\n.\r\n");
        CHECK(d.commit(CommitResult::Failed) == "451 4.3.0 Error: queue file write error\r\n");
        CHECK(logs.has("reject: END-OF-MESSAGE from unknown[192.0.2.7]: 452 4.3.1 Insufficient system storage"));
    }
}

TEST_CASE("other commands", "[session]") {
    Dialog d;
    d.out();
    CHECK(d.send("NOOP\r\n") == "250 2.0.0 Ok\r\n");
    CHECK(d.send("VRFY someone\r\n") == "252 2.0.0 Cannot VRFY user; send mail and delivery will be attempted\r\n");
    CHECK(d.send("VRFY\r\n") == "501 5.5.4 Syntax: VRFY address\r\n");
    CHECK(d.send("HELP\r\n").rfind("214 2.0.0 ", 0) == 0);
    CHECK(d.send("EXPN list\r\n") == "502 5.5.2 Error: command not recognized\r\n");
    CHECK(d.send("ehlo lower.case\r\n").rfind("250-gw.example\r\n", 0) == 0);
    CHECK(d.send("quit\r\n") == "221 2.0.0 Bye\r\n");
}

TEST_CASE("shutdown: idle sessions get 421, a commit in flight is answered first", "[session]") {
    Dialog idle;
    idle.out();
    idle.session->on_shutdown();
    CHECK(idle.out() == "421 4.3.2 gw.example Service shutting down, closing transmission channel\r\n");

    Dialog busy;
    busy.out();
    busy.send("EHLO c\r\nMAIL FROM:<a@x.example>\r\nRCPT TO:<b@y.example>\r\nDATA\r\nx\r\n.\r\n");
    busy.session->on_shutdown();
    CHECK(busy.out() == "");
    CHECK(busy.commit() == "250 2.0.0 Ok: queued as QID1\r\n");

    // A message in transfer is finished first (the connection asks again once it is stored);
    // when the drain time is over it is cut off, never acknowledged.
    Dialog transfer;
    transfer.out();
    transfer.send("EHLO c\r\nMAIL FROM:<a@x.example>\r\nRCPT TO:<b@y.example>\r\nDATA\r\nfirst half\r\n");
    transfer.out();
    transfer.session->on_shutdown();
    CHECK(transfer.out() == "");
    CHECK_FALSE(transfer.session->closing());
    transfer.send("second half\r\n.\r\n");
    REQUIRE(transfer.hooks.committed);
    CHECK(transfer.hooks.content.find("first half\r\nsecond half\r\n") != std::string::npos);
    CHECK(transfer.commit() == "250 2.0.0 Ok: queued as QID1\r\n");
    transfer.session->on_shutdown();
    CHECK(transfer.out() == "421 4.3.2 gw.example Service shutting down, closing transmission channel\r\n");

    Dialog stalled;
    stalled.out();
    stalled.send("EHLO c\r\nMAIL FROM:<a@x.example>\r\nRCPT TO:<b@y.example>\r\nDATA\r\nnever ends\r\n");
    stalled.out();
    stalled.session->on_shutdown(true);
    CHECK(stalled.out() == "421 4.3.2 gw.example Service shutting down, closing transmission channel\r\n");
    CHECK(stalled.hooks.aborts == 1);
    CHECK_FALSE(stalled.hooks.committed);
}

TEST_CASE("a lost connection is logged with the stage", "[session]") {
    LogCapture logs;
    Dialog d;
    d.out();
    d.send("EHLO c\r\nMAIL FROM:<a@x.example>\r\nRCPT TO:<b@y.example>\r\nDATA\r\npartial");
    d.session->on_disconnect("lost connection");
    CHECK(d.hooks.aborts == 1);
    CHECK(logs.has("lost connection after DATA (7 bytes) from unknown[192.0.2.7]"));
    CHECK(logs.has("disconnect from unknown[192.0.2.7] ehlo=1 mail=1 rcpt=1 data=0/1 commands=3/4"));
}

namespace {

SessionPolicy tls_policy(conf::ListenAuth auth = conf::ListenAuth::Optional) {
    auto p = Dialog::default_policy();
    p.starttls = true;
    p.auth = auth;
    p.mechanisms = {"PLAIN", "LOGIN"};
    return p;
}

}  // namespace

TEST_CASE("STARTTLS: pipelined commands are discarded and EHLO starts again", "[session][tls]") {
    Dialog d(true, tls_policy());
    d.out();
    auto ehlo = d.send("EHLO c\r\n");
    CHECK(ehlo.find("250-STARTTLS\r\n") != std::string::npos);
    CHECK(ehlo.find("AUTH") == std::string::npos);  // not before TLS
    // A command injected after STARTTLS in the same packet is never executed (RFC 3207 4).
    CHECK(d.send("STARTTLS\r\nMAIL FROM:<evil@x.example>\r\n") == "220 2.0.0 Ready to start TLS\r\n");
    CHECK(d.hooks.tls_requested);
    CHECK(d.session->waiting());
    d.session->on_tls_started("TLSv1.2 with cipher TLS-ECDHE-RSA-WITH-AES-256-GCM-SHA384");
    CHECK(d.out().empty());
    CHECK(d.send("MAIL FROM:<a@x.example>\r\n") == "503 5.5.1 Error: send HELO/EHLO first\r\n");
    ehlo = d.send("EHLO c\r\n");
    CHECK(ehlo.find("STARTTLS") == std::string::npos);
    CHECK(ehlo.find("250-AUTH PLAIN LOGIN\r\n") != std::string::npos);
    CHECK(d.send("STARTTLS\r\n") == "554 5.5.1 Error: TLS already active\r\n");
    d.send("MAIL FROM:<a@x.example>\r\nRCPT TO:<b@y.example>\r\nDATA\r\nSubject: s\r\n\r\nx\r\n.\r\n");
    REQUIRE(d.hooks.committed);
    CHECK(d.hooks.committed->protocol == "ESMTPS");
    CHECK(d.hooks.content.find("\r\n\t(using TLSv1.2 with cipher TLS-ECDHE-RSA-WITH-AES-256-GCM-SHA384)\r\n") !=
          std::string::npos);
}

TEST_CASE("STARTTLS where it is not offered", "[session][tls]") {
    Dialog d;
    d.out();
    d.send("EHLO c\r\n");
    CHECK(d.send("STARTTLS\r\n") == "502 5.5.1 Error: command not implemented\r\n");
}

TEST_CASE("AUTH: offered only on TLS, PLAIN with an initial response, relay after it", "[session][auth]") {
    LogCapture logs;
    Dialog d(false, tls_policy());
    d.out();
    d.send("EHLO c\r\n");
    CHECK(d.send("AUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n") ==
          "538 5.7.11 Encryption required for requested authentication mechanism\r\n");
    d.send("STARTTLS\r\n");
    d.session->on_tls_started("TLSv1.2 with cipher X");
    d.send("EHLO c\r\n");
    CHECK(d.send("AUTH CRAM-MD5\r\n") == "504 5.5.4 Unrecognized authentication type\r\n");
    CHECK(d.send("AUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n").empty());
    REQUIRE(d.hooks.auth_starts.size() == 1);
    CHECK(d.hooks.auth_starts[0].first == "PLAIN");
    CHECK(d.hooks.auth_starts[0].second == std::string("\0alice\0secret", 13));
    d.session->on_auth_result(AuthOutcome::Success, "", "alice", "");
    CHECK(d.out() == "235 2.7.0 Authentication successful\r\n");
    CHECK(d.send("AUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n") == "503 5.5.1 Error: already authenticated\r\n");
    // Not in `clients`, but authenticated: may relay.
    CHECK(d.send("MAIL FROM:<alice@x.example> AUTH=<>\r\n") == "250 2.1.0 Ok\r\n");
    CHECK(d.send("RCPT TO:<b@y.example>\r\n") == "250 2.1.5 Ok\r\n");
    d.send("DATA\r\nx\r\n.\r\n");
    REQUIRE(d.hooks.committed);
    CHECK(d.hooks.committed->protocol == "ESMTPSA");
    CHECK(d.hooks.committed->sasl_username == "alice");
    CHECK(logs.has(": QID1: client=unknown[192.0.2.7], sasl_method=PLAIN, sasl_username=alice"));
    for (const auto& l : logs.lines)
        CHECK(l.find("secret") == std::string::npos);
}

TEST_CASE("AUTH: continuations, cancel, failure", "[session][auth]") {
    LogCapture logs;
    auto p = tls_policy();
    p.auth_without_tls = true;
    Dialog d(false, p);
    d.out();
    CHECK(d.send("EHLO c\r\n").find("250-AUTH PLAIN LOGIN\r\n") != std::string::npos);
    CHECK(d.send("AUTH LOGIN\r\n").empty());
    CHECK_FALSE(d.hooks.auth_starts.at(0).second);
    d.session->on_auth_result(AuthOutcome::Continue, "Username:", "", "");
    CHECK(d.out() == "334 VXNlcm5hbWU6\r\n");
    CHECK(d.send("YWxpY2U=\r\n").empty());
    CHECK(d.hooks.auth_steps.at(0) == "alice");
    d.session->on_auth_result(AuthOutcome::Continue, "Password:", "", "");
    CHECK(d.out() == "334 UGFzc3dvcmQ6\r\n");
    CHECK(d.send("*\r\n") == "501 5.7.0 Authentication aborted\r\n");
    CHECK(d.hooks.auth_cancels == 1);

    d.send("AUTH PLAIN AGFsaWNlAHdyb25n\r\n");
    d.session->on_auth_result(AuthOutcome::Failure, "", "alice", "user not found");
    CHECK(d.out() == "535 5.7.8 Error: authentication failed: authentication failure\r\n");
    CHECK(
        logs.has("warning: unknown[192.0.2.7]: SASL PLAIN authentication failed: user not found, sasl_username=alice"));
    CHECK(d.send("RCPT TO:<b@y.example>\r\n") == "503 5.5.1 Error: need MAIL command\r\n");
    d.send("MAIL FROM:<a@x.example>\r\n");
    CHECK(d.send("RCPT TO:<b@y.example>\r\n") == "554 5.7.1 <b@y.example>: Relay access denied\r\n");
    CHECK(d.send("RSET\r\nAUTH PLAIN !!!\r\n") == "250 2.0.0 Ok\r\n501 5.5.2 Cannot decode response\r\n");
    d.send("AUTH PLAIN =\r\n");
    d.session->on_auth_result(AuthOutcome::TempFailure, "", "", "cannot open the sasldb");
    CHECK(d.out() == "454 4.7.0 Temporary authentication failure\r\n");
    CHECK(logs.has("warning: unknown[192.0.2.7]: SASL PLAIN authentication problem: cannot open the sasldb"));
    d.hooks.blocked = true;
    CHECK(d.send("AUTH PLAIN =\r\n") == "421 4.7.0 gw.example Error: too many AUTH failures from 192.0.2.7\r\n");
    CHECK(d.session->closing());
    d.session->on_disconnect("");
    // Five AUTH commands, none of which succeeded.
    CHECK(logs.has("disconnect from unknown[192.0.2.7] ehlo=1 auth=0/5 mail=1 rcpt=0/2 rset=1 commands=3/10"));
}

TEST_CASE("auth: required refuses MAIL until AUTH", "[session][auth]") {
    auto p = tls_policy(conf::ListenAuth::Required);
    Dialog d(true, p);  // even a client in `clients`
    d.out();
    d.send("EHLO c\r\n");
    CHECK(d.send("MAIL FROM:<a@x.example>\r\n") == "530 5.7.0 Authentication required\r\n");
}

TEST_CASE("sender.rewrite changes the envelope sender; header_from: rewrite changes From:", "[session][rewrite]") {
    for (bool header_from : {false, true}) {
        INFO("header_from: " << (header_from ? "rewrite" : "keep"));
        LogCapture logs;
        conf::SenderPolicy sp;
        sp.rewrite.push_back(conf::RewriteRule{"*@other.example", "x@example.com", {}});
        sp.rewrite.push_back(conf::RewriteRule{"*@scanner.local", "scans@example.com", {}});
        sp.header_from = header_from ? conf::HeaderFrom::Rewrite : conf::HeaderFrom::Keep;
        auto p = Dialog::default_policy();
        p.rewriter = std::make_shared<SenderRewriter>(sp);
        Dialog d(true, p);
        d.out();
        d.send("EHLO c\r\nMAIL FROM:<scan@scanner.local>\r\nRCPT TO:<a@example.org>\r\nDATA\r\n");
        d.send("From: Scanner <scan@scanner.local>\r\nSubject: s\r\n\r\nbody\r\n.\r\n");
        REQUIRE(d.hooks.committed);
        CHECK(d.hooks.committed->sender == "scans@example.com");
        CHECK(d.hooks.committed->orig_sender == "scan@scanner.local");
        CHECK(d.commit() == "250 2.0.0 Ok: queued as QID1\r\n");
        const auto& c = d.hooks.content;
        if (header_from) {
            CHECK(c.find("\r\nFrom: Scanner <scans@example.com>\r\nReply-To: Scanner <scan@scanner.local>\r\n") !=
                  std::string::npos);
            CHECK(
                logs.has(": QID1: sender.rewrite[1]: from=<scans@example.com>, orig_from=<scan@scanner.local>, "
                         "header From: rewritten"));
        } else {
            CHECK(c.find("\r\nFrom: Scanner <scan@scanner.local>\r\nSubject: s\r\n") != std::string::npos);
            CHECK(logs.has(": QID1: sender.rewrite[1]: from=<scans@example.com>, orig_from=<scan@scanner.local>"));
            CHECK_FALSE(logs.has("header From"));
        }
        // The null sender is never rewritten; a sender no rule matches neither.
        d.hooks.committed.reset();
        d.send("MAIL FROM:<>\r\nRCPT TO:<a@example.org>\r\nDATA\r\nSubject: s\r\n\r\nb\r\n.\r\n");
        REQUIRE(d.hooks.committed);
        CHECK(d.hooks.committed->sender.empty());
        CHECK(d.hooks.committed->orig_sender.empty());
        d.commit();
        d.hooks.committed.reset();
        d.send("MAIL FROM:<a@elsewhere.example>\r\nRCPT TO:<a@example.org>\r\nDATA\r\nSubject: s\r\n\r\nb\r\n.\r\n");
        REQUIRE(d.hooks.committed);
        CHECK(d.hooks.committed->sender == "a@elsewhere.example");
        CHECK(d.hooks.committed->orig_sender.empty());
    }
}
