// The SMTP client session (RFC 5321, RFC 1870, RFC 2920, RFC 6152, RFC 6531) as a state machine
// without I/O: server bytes in; command bytes and events out.
//
// Call order, for the connection that drives it:
//   feed(bytes)               after every read (the greeting first)
//   start_tls()               after a Ready event, when TLS is wanted; on TlsReady run the
//                             handshake, then tls_started() (EHLO again; Ready follows)
//   auth(mech, initial)       after a Ready event, when AUTH is wanted; answer AuthChallenge
//                             with auth_response() until AuthSucceeded or AuthFailed
//   send_message(m)           after a Ready event
//   send_content(c)...        after a NeedContent event, then end_content()
//   quit()                    when there is nothing more to send
// After each call: write take_output(), handle take_events(). A connection carries several
// messages: after MessageSent or MessageFailed comes Ready again (RSET goes first).
// STARTTLS and AUTH have their stages here; the TLS and SASL engines plug into them.
#pragma once

#include "gateway/smtp/smtp_reply.hpp"

#include <cstdint>
#include <deque>
#include <string>
#include <string_view>
#include <vector>

namespace gateway {

struct OutgoingMessage {
    std::string sender;  // empty: the null sender
    std::vector<std::string> recipients;
    uint64_t size = 0;
    std::string body;  // "", "7BIT" or "8BITMIME"
    bool smtputf8 = false;
};

enum class ClientStage {
    Greeting,
    Helo,
    StartTls,
    Auth,
    Ready,
    Rset,
    Mail,
    Rcpt,
    Data,
    Content,
    DataDone,
    Quit,
    Closed
};

// "receiving the initial server greeting", for "lost connection with HOST[IP] while ..."
const char* while_text(ClientStage stage);
// "MAIL FROM command", for "host HOST[IP] said: ... (in reply to ...)"
const char* in_reply_to(ClientStage stage);

struct ServerCapabilities {
    bool esmtp = false;
    bool pipelining = false;
    bool eightbitmime = false;
    bool smtputf8 = false;
    bool starttls = false;
    bool size_offered = false;
    uint64_t size = 0;  // 0: no limit announced
    std::vector<std::string> auth;
};

struct ClientEvent {
    enum class Kind {
        Ready,            // a message can be sent now
        SiteFailed,       // greeting, EHLO/HELO or RSET refused: `reply`, `stage`; the connection is done
        RecipientDone,    // RCPT number `index` answered `reply`
        NeedContent,      // 354 received: send the content
        MessageSent,      // the final reply accepted the message: `reply`
        MessageFailed,    // MAIL, DATA or end of data refused, or no recipient accepted: `reply`, `stage`
        ProtocolError,    // the server's bytes are not SMTP: `detail`
        TlsReady,         // 220 to STARTTLS: start the handshake now
        StartTlsRefused,  // STARTTLS answered otherwise: `reply`
        AuthChallenge,    // 334: `detail` holds the decoded challenge
        AuthSucceeded,    // 235
        AuthFailed,       // AUTH refused: `reply`; or a challenge that is not base64
        Loop,             // the server greeted us or answered EHLO with our own name: `detail` says which
    };
    Kind kind;
    ServerReply reply;
    ClientStage stage = ClientStage::Greeting;
    size_t index = 0;
    std::string detail;
};

// Content lines as they go on the wire: a line longer than `limit` (not counting <CR><LF>) is
// broken with <CR><LF><SPACE>, as Postfix's smtp_line_length_limit does, and for DATA a line
// that starts with a dot gets another (RFC 5321 4.5.2). The DKIM signer sees the same lines
// without the dots, so it signs what the server receives.
class WireLines {
public:
    WireLines(size_t limit, bool stuff_dots) : m_limit(limit), m_stuff(stuff_dots) {}
    void append(std::string_view canonical, std::string& out);  // <CR><LF> lines, in pieces of any size
    void finish(std::string& out);                              // <CR><LF> after a last line without one

private:
    void lines(std::string_view in, std::string& out);

    size_t m_limit;
    bool m_stuff;
    bool m_cr = false;  // the last piece ended in <CR>, held back until the next one
    bool m_at_line_start = true;
    size_t m_line = 0;  // octets of the current line so far
};

struct ClientSettings {
    std::string helo_name;
    size_t line_length = 998;  // longer content lines are broken with <CR><LF><SPACE>
    std::string hostname;      // the gateway's name: a server that greets with it is this gateway (a loop)
};

class SmtpClient {
public:
    explicit SmtpClient(ClientSettings settings) : m_settings(std::move(settings)) {
        m_expect.push_back({ClientStage::Greeting});
    }

    void feed(std::string_view bytes);
    void start_tls();
    void tls_started();  // the handshake is done: what was learned before it is forgotten
    void auth(const std::string& mechanism, const std::string& initial, bool has_initial);
    void auth_response(const std::string& response);
    void send_message(const OutgoingMessage& m);
    void send_content(std::string_view canonical);  // <CR><LF> lines, as stored in the spool
    void end_content();
    void quit();

    std::string take_output() { return std::move(m_out); }
    std::vector<ClientEvent> take_events() { return std::move(m_events); }
    ClientStage stage() const;
    const ServerCapabilities& capabilities() const { return m_caps; }
    const ServerReply& greeting() const { return m_greeting; }
    bool failed() const { return m_failed; }
    uint64_t replies_received() const { return m_parser.replies(); }  // complete replies

private:
    struct Expect {
        ClientStage stage;
        size_t index = 0;
    };

    void on_reply(const ServerReply& r);
    void on_greeting(const ServerReply& r);
    bool is_me(const std::string& name) const;
    const std::string& own_name() const;
    void on_helo(const ServerReply& r);
    void on_mail(const ServerReply& r);
    void on_rcpt(const ServerReply& r, size_t index);
    void on_data(const ServerReply& r);
    void on_data_done(const ServerReply& r);
    void on_rset(const ServerReply& r);
    void on_starttls(const ServerReply& r);
    void on_auth(const ServerReply& r);
    void start_transaction();
    void send_next_rcpt();
    void send(const std::string& line, ClientStage stage, size_t index = 0);
    void finish_message(ClientEvent::Kind kind, const ServerReply& r, ClientStage stage);
    void fail_site(const ServerReply& r, ClientStage stage);
    void emit(ClientEvent::Kind kind, ClientStage stage, const ServerReply& r = {}, size_t index = 0);
    void parse_capabilities(const ServerReply& r);
    std::string mail_command() const;

    ClientSettings m_settings;
    ReplyParser m_parser;
    ServerCapabilities m_caps;
    ServerReply m_greeting;
    std::deque<Expect> m_expect;
    std::string m_out;
    std::vector<ClientEvent> m_events;
    bool m_failed = false;
    bool m_sent_helo = false;  // fell back from EHLO to HELO
    bool m_need_rset = false;
    bool m_rset_pipelined = false;
    bool m_in_content = false;
    bool m_ready = false;

    // The message in progress
    bool m_has_message = false;
    OutgoingMessage m_message;
    size_t m_next_rcpt = 0;
    size_t m_accepted = 0;
    bool m_mail_failed = false;
    ServerReply m_mail_reply;
    WireLines m_wire{998, true};
};

}  // namespace gateway
