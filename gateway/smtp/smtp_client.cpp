#include "gateway/smtp/smtp_client.hpp"

#include "auth/sasl_client.hpp"

#include <strings.h>
#include <cstring>

namespace gateway {

const char* while_text(ClientStage stage) {
    switch (stage) {
    case ClientStage::Greeting: return "receiving the initial server greeting";
    case ClientStage::Helo: return "performing the EHLO handshake";
    case ClientStage::StartTls: return "performing the STARTTLS handshake";
    case ClientStage::Auth: return "performing the AUTH handshake";
    case ClientStage::Ready: return "waiting for the next command";
    case ClientStage::Rset: return "sending RSET";
    case ClientStage::Mail: return "sending MAIL FROM";
    case ClientStage::Rcpt: return "sending RCPT TO";
    case ClientStage::Data: return "sending DATA command";
    case ClientStage::Content: return "sending message body";
    case ClientStage::DataDone: return "sending end of data -- message may be sent more than once";
    case ClientStage::Quit: return "sending QUIT";
    case ClientStage::Closed: return "closing the connection";
    }
    return "?";
}

const char* in_reply_to(ClientStage stage) {
    switch (stage) {
    case ClientStage::Greeting: return "initial server greeting";
    case ClientStage::Helo: return "EHLO command";
    case ClientStage::StartTls: return "STARTTLS command";
    case ClientStage::Auth: return "AUTH command";
    case ClientStage::Rset: return "RSET command";
    case ClientStage::Mail: return "MAIL FROM command";
    case ClientStage::Rcpt: return "RCPT TO command";
    case ClientStage::Data: return "DATA command";
    case ClientStage::Content:
    case ClientStage::DataDone: return "end of DATA command";
    case ClientStage::Quit: return "QUIT command";
    case ClientStage::Ready:
    case ClientStage::Closed: break;
    }
    return "unexpected reply";
}

ClientStage SmtpClient::stage() const {
    if (m_in_content) return ClientStage::Content;
    if (!m_expect.empty()) return m_expect.front().stage;
    if (m_failed) return ClientStage::Closed;
    return m_ready ? ClientStage::Ready : ClientStage::Greeting;
}

void SmtpClient::emit(ClientEvent::Kind kind, ClientStage stage, const ServerReply& r, size_t index) {
    m_events.push_back(ClientEvent{kind, r, stage, index, {}});
}

void SmtpClient::send(const std::string& line, ClientStage stage, size_t index) {
    m_out += line;
    m_out += "\r\n";
    m_expect.push_back({stage, index});
}

void SmtpClient::feed(std::string_view bytes) {
    if (m_failed) return;
    std::vector<ServerReply> replies;
    m_parser.feed(bytes, replies);
    for (const auto& r : replies) {
        if (m_failed) return;
        on_reply(r);
    }
    if (m_parser.failed() && !m_failed) {
        m_failed = true;
        ClientEvent e{ClientEvent::Kind::ProtocolError, {}, stage(), 0, m_parser.error()};
        m_events.push_back(e);
    }
}

void SmtpClient::on_reply(const ServerReply& r) {
    if (m_expect.empty()) return fail_site(r, stage());  // unasked: usually "421 ... closing" when idle
    Expect e = m_expect.front();
    m_expect.pop_front();
    switch (e.stage) {
    case ClientStage::Greeting: return on_greeting(r);
    case ClientStage::Helo: return on_helo(r);
    case ClientStage::Rset: return on_rset(r);
    case ClientStage::StartTls: return on_starttls(r);
    case ClientStage::Auth: return on_auth(r);
    case ClientStage::Mail: return on_mail(r);
    case ClientStage::Rcpt: return on_rcpt(r, e.index);
    case ClientStage::Data: return on_data(r);
    case ClientStage::DataDone: return on_data_done(r);
    case ClientStage::Quit:
        m_failed = true;  // done with this connection
        return;
    default: return;
    }
}

void SmtpClient::fail_site(const ServerReply& r, ClientStage stage) {
    m_failed = true;
    m_expect.clear();
    emit(ClientEvent::Kind::SiteFailed, stage, r);
}

namespace {

// The host name a greeting or an EHLO reply starts with (RFC 5321 4.2: "220 domain ...").
std::string first_word(const ServerReply& r) {
    auto texts = r.texts();
    if (texts.empty()) return {};
    return texts.front().substr(0, texts.front().find(' '));
}

}  // namespace

const std::string& SmtpClient::own_name() const {
    return m_settings.hostname.empty() ? m_settings.helo_name : m_settings.hostname;
}

bool SmtpClient::is_me(const std::string& name) const {
    return !name.empty() && strcasecmp(name.c_str(), own_name().c_str()) == 0;
}

void SmtpClient::on_greeting(const ServerReply& r) {
    m_greeting = r;
    if (r.code / 100 != 2) return fail_site(r, ClientStage::Greeting);
    // Postfix's loop check: a server that is this gateway under another address or port.
    if (is_me(first_word(r))) {
        m_failed = true;
        return m_events.push_back(ClientEvent{ClientEvent::Kind::Loop, r, ClientStage::Greeting, 0,
                                              "greeted me with my own hostname " + own_name()});
    }
    send("EHLO " + m_settings.helo_name, ClientStage::Helo);
}

void SmtpClient::on_helo(const ServerReply& r) {
    if (r.code / 100 == 5 && !m_sent_helo) {
        m_sent_helo = true;  // RFC 5321 3.2: a server that does not know EHLO may know HELO
        return send("HELO " + m_settings.helo_name, ClientStage::Helo);
    }
    if (r.code / 100 != 2) return fail_site(r, ClientStage::Helo);
    if (is_me(first_word(r))) {
        m_failed = true;
        return m_events.push_back(ClientEvent{ClientEvent::Kind::Loop, r, ClientStage::Helo, 0,
                                              "replied to HELO/EHLO with my own hostname " + own_name()});
    }
    if (!m_sent_helo) parse_capabilities(r);
    m_sent_helo = true;
    m_ready = true;
    emit(ClientEvent::Kind::Ready, ClientStage::Ready);
}

void SmtpClient::parse_capabilities(const ServerReply& r) {
    m_caps = ServerCapabilities();
    m_caps.esmtp = true;
    auto texts = r.texts();
    for (size_t i = 1; i < texts.size(); ++i) {
        std::string t = texts[i];
        auto space = t.find_first_of(" =");
        std::string keyword = t.substr(0, space);
        std::string args = space == std::string::npos ? "" : t.substr(space + 1);
        auto is = [&](const char* k) { return strcasecmp(keyword.c_str(), k) == 0; };
        if (is("PIPELINING"))
            m_caps.pipelining = true;
        else if (is("8BITMIME"))
            m_caps.eightbitmime = true;
        else if (is("SMTPUTF8"))
            m_caps.smtputf8 = true;
        else if (is("STARTTLS"))
            m_caps.starttls = true;
        else if (is("SIZE")) {
            m_caps.size_offered = true;
            m_caps.size = args.empty() ? 0 : std::strtoull(args.c_str(), nullptr, 10);
        } else if (is("AUTH")) {
            size_t pos = 0;
            while (pos < args.size()) {
                size_t end = args.find(' ', pos);
                if (end == std::string::npos) end = args.size();
                std::string mech = args.substr(pos, end - pos);
                for (auto& c : mech)
                    c = char(toupper(static_cast<unsigned char>(c)));
                if (!mech.empty()) m_caps.auth.push_back(mech);
                pos = end + 1;
            }
        }
    }
}

void SmtpClient::start_tls() {
    m_ready = false;
    send("STARTTLS", ClientStage::StartTls);
}

void SmtpClient::on_starttls(const ServerReply& r) {
    if (r.code == 220) return emit(ClientEvent::Kind::TlsReady, ClientStage::StartTls, r);
    m_ready = true;
    emit(ClientEvent::Kind::StartTlsRefused, ClientStage::StartTls, r);
}

void SmtpClient::tls_started() {
    // RFC 3207 4.2: forget everything learned before TLS and start with EHLO again.
    m_caps = ServerCapabilities();
    m_sent_helo = false;
    m_parser = ReplyParser();
    send("EHLO " + m_settings.helo_name, ClientStage::Helo);
}

void SmtpClient::auth(const std::string& mechanism, const std::string& initial, bool has_initial) {
    m_ready = false;
    std::string line = "AUTH " + mechanism;
    // RFC 4954 4: an empty initial response is sent as "=".
    if (has_initial) line += " " + (initial.empty() ? std::string("=") : auth::base64_encode(initial));
    send(line, ClientStage::Auth);
}

void SmtpClient::auth_response(const std::string& response) {
    m_out += auth::base64_encode(response);
    m_out += "\r\n";
    m_expect.push_back({ClientStage::Auth});
}

void SmtpClient::on_auth(const ServerReply& r) {
    if (r.code == 334) {
        std::string text = r.lines.front().size() > 4 ? r.lines.front().substr(4) : "";
        std::string challenge;
        if (!auth::base64_decode(text, challenge)) {
            m_ready = true;
            return emit(ClientEvent::Kind::AuthFailed, ClientStage::Auth, r);
        }
        ClientEvent e{ClientEvent::Kind::AuthChallenge, r, ClientStage::Auth, 0, challenge};
        m_events.push_back(std::move(e));
        return;
    }
    m_ready = true;
    emit(r.code == 235 ? ClientEvent::Kind::AuthSucceeded : ClientEvent::Kind::AuthFailed, ClientStage::Auth, r);
}

void SmtpClient::send_message(const OutgoingMessage& m) {
    m_message = m;
    m_has_message = true;
    m_ready = false;
    if (!m_need_rset) return start_transaction();
    send("RSET", ClientStage::Rset);
    // RFC 2920 3.1: RSET may open the pipelined group.
    m_rset_pipelined = m_caps.pipelining;
    if (m_rset_pipelined) start_transaction();
}

void SmtpClient::on_rset(const ServerReply& r) {
    if (r.code / 100 != 2) return fail_site(r, ClientStage::Rset);
    m_need_rset = false;
    if (m_has_message && !m_rset_pipelined) start_transaction();
}

std::string SmtpClient::mail_command() const {
    std::string cmd = "MAIL FROM:<" + m_message.sender + ">";
    if (!m_caps.esmtp) return cmd;
    if (m_caps.size_offered) cmd += " SIZE=" + std::to_string(m_message.size);             // RFC 1870
    if (m_caps.eightbitmime && !m_message.body.empty()) cmd += " BODY=" + m_message.body;  // RFC 6152
    if (m_message.smtputf8 && m_caps.smtputf8) cmd += " SMTPUTF8";                         // RFC 6531
    return cmd;
}

void SmtpClient::start_transaction() {
    m_next_rcpt = 0;
    m_accepted = 0;
    m_mail_failed = false;
    m_mail_reply = ServerReply();
    m_wire = WireLines(m_settings.line_length, true);
    send(mail_command(), ClientStage::Mail);
    if (!m_caps.pipelining) return;
    // RFC 2920 3.1: MAIL, RCPT and DATA go in one group; the replies come back in order.
    for (size_t i = 0; i < m_message.recipients.size(); ++i)
        send("RCPT TO:<" + m_message.recipients[i] + ">", ClientStage::Rcpt, i);
    m_next_rcpt = m_message.recipients.size();
    send("DATA", ClientStage::Data);
}

void SmtpClient::on_mail(const ServerReply& r) {
    if (r.code / 100 != 2) {
        m_mail_failed = true;
        m_mail_reply = r;
        if (!m_caps.pipelining) finish_message(ClientEvent::Kind::MessageFailed, r, ClientStage::Mail);
        return;
    }
    if (!m_caps.pipelining) send_next_rcpt();
}

void SmtpClient::send_next_rcpt() {
    size_t i = m_next_rcpt++;
    send("RCPT TO:<" + m_message.recipients[i] + ">", ClientStage::Rcpt, i);
}

void SmtpClient::on_rcpt(const ServerReply& r, size_t index) {
    if (m_mail_failed) return;  // pipelined after a refused MAIL: answered by the MAIL reply
    emit(ClientEvent::Kind::RecipientDone, ClientStage::Rcpt, r, index);
    if (r.code / 100 == 2)
        m_accepted++;
    else
        m_mail_reply = r;  // the last refusal, should nothing be accepted
    if (m_caps.pipelining) return;
    if (m_next_rcpt < m_message.recipients.size()) return send_next_rcpt();
    if (m_accepted == 0) return finish_message(ClientEvent::Kind::MessageFailed, m_mail_reply, ClientStage::Rcpt);
    send("DATA", ClientStage::Data);
}

void SmtpClient::on_data(const ServerReply& r) {
    bool nothing_to_send = m_mail_failed || m_accepted == 0;
    if (r.code == 354 && nothing_to_send) {
        // Pipelined DATA was accepted although no recipient was: end an empty message.
        m_out += ".\r\n";
        m_expect.push_back({ClientStage::DataDone, 1});
        return;
    }
    if (nothing_to_send)
        return finish_message(ClientEvent::Kind::MessageFailed, m_mail_reply,
                              m_mail_failed ? ClientStage::Mail : ClientStage::Rcpt);
    if (r.code != 354) return finish_message(ClientEvent::Kind::MessageFailed, r, ClientStage::Data);
    m_in_content = true;
    emit(ClientEvent::Kind::NeedContent, ClientStage::Content);
}

void WireLines::append(std::string_view in, std::string& out) {
    if (in.empty()) return;
    if (m_cr) {
        // A <CR> that ended the previous piece goes with the line it belongs to, so that where
        // the pieces were cut does not change where lines are broken.
        m_cr = false;
        size_t nl = in.find('\n');
        size_t first = nl == std::string_view::npos ? in.size() : nl + 1;
        std::string joined = "\r";
        joined.append(in.data(), first);
        append(joined, out);
        return append(in.substr(first), out);
    }
    if (in.back() == '\r') {
        m_cr = true;
        in.remove_suffix(1);
    }
    lines(in, out);
}

void WireLines::lines(std::string_view in, std::string& out) {
    // The content is canonical (<CR><LF> only). Lines that go out as they are (the usual case)
    // are gathered and appended in one piece; only a dot to double or a line to break stops a run.
    out.reserve(out.size() + in.size() + 64);
    size_t pos = 0;
    size_t run = 0;  // start of the bytes not yet appended
    while (pos < in.size()) {
        if (m_at_line_start && m_stuff && in[pos] == '.') {
            out.append(in.data() + run, pos - run);
            out += '.';
            run = pos;
        }
        m_at_line_start = false;
        const void* nl = std::memchr(in.data() + pos, '\n', in.size() - pos);
        size_t end = nl ? size_t(static_cast<const char*>(nl) - in.data()) + 1 : in.size();
        // Characters of this run that count toward the line length (not the CR LF).
        size_t text_end = end;
        if (nl) text_end = end - 1 - (end >= pos + 2 && in[end - 2] == '\r' ? 1 : 0);
        if (m_line + (text_end - pos) > m_limit) {
            out.append(in.data() + run, pos - run);
            while (m_line + (text_end - pos) > m_limit && pos < text_end) {
                size_t take = m_limit > m_line ? m_limit - m_line : 0;
                out.append(in.data() + pos, take);
                out += "\r\n ";
                pos += take;
                m_line = 1;
            }
            run = pos;
        }
        m_line += text_end > pos ? text_end - pos : 0;
        if (nl) {
            m_at_line_start = true;
            m_line = 0;
        }
        pos = end;
    }
    out.append(in.data() + run, in.size() - run);
}

void WireLines::finish(std::string& out) {
    if (m_cr) {
        m_cr = false;
        lines("\r", out);
    }
    if (!m_at_line_start) out += "\r\n";
    m_at_line_start = true;
    m_line = 0;
}

void SmtpClient::send_content(std::string_view in) { m_wire.append(in, m_out); }

void SmtpClient::end_content() {
    m_wire.finish(m_out);
    m_out += ".\r\n";
    m_in_content = false;
    m_expect.push_back({ClientStage::DataDone, 0});
}

void SmtpClient::on_data_done(const ServerReply& r) {
    if (m_mail_failed || m_accepted == 0)
        return finish_message(ClientEvent::Kind::MessageFailed, m_mail_reply,
                              m_mail_failed ? ClientStage::Mail : ClientStage::Rcpt);
    if (r.code / 100 == 2) return finish_message(ClientEvent::Kind::MessageSent, r, ClientStage::DataDone);
    finish_message(ClientEvent::Kind::MessageFailed, r, ClientStage::DataDone);
}

void SmtpClient::finish_message(ClientEvent::Kind kind, const ServerReply& r, ClientStage stage) {
    m_has_message = false;
    m_need_rset = true;
    m_ready = true;
    emit(kind, stage, r);
    emit(ClientEvent::Kind::Ready, ClientStage::Ready);
}

void SmtpClient::quit() {
    if (m_failed) return;
    send("QUIT", ClientStage::Quit);
    m_ready = false;
}

}  // namespace gateway
