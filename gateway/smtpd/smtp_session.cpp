#include "gateway/smtpd/smtp_session.hpp"

#include "gateway/common/address.hpp"
#include "gateway/common/log.hpp"
#include "gateway/common/metrics.hpp"
#include "gateway/common/text.hpp"
#include "gateway/smtpd/smtp_syntax.hpp"

#include <strings.h>
#include <algorithm>
#include <cstring>

namespace gateway {

namespace {

constexpr size_t k_command_line_limit = 2048;  // RFC 5321 4.5.3.1.4 as extended; Postfix's line_length_limit
constexpr size_t k_auth_line_limit = 12288;    // RFC 4954 4
constexpr unsigned k_hop_limit = 50;           // Received: fields (Postfix's hopcount_limit, RFC 5321 6.3)
constexpr size_t k_chunk_size = 64 * 1024;     // content handed to the spool at a time
constexpr size_t k_header_hold_limit = 256 * 1024;

using log::Component;

}  // namespace

// The command table. `counter` selects the disconnect-line counter.
struct SmtpSession::Command {
    const char* verb;
    void (SmtpSession::*handler)(std::string_view);
    Counter counter;
};

const SmtpSession::Command* SmtpSession::find_command(std::string_view verb) {
    static const Command table[] = {
        {"EHLO", &SmtpSession::cmd_ehlo, Ehlo},
        {"HELO", &SmtpSession::cmd_helo, Helo},
        {"MAIL", &SmtpSession::cmd_mail, Mail},
        {"RCPT", &SmtpSession::cmd_rcpt, Rcpt},
        {"DATA", &SmtpSession::cmd_data, Data},
        {"RSET", &SmtpSession::cmd_rset, Rset},
        {"NOOP", &SmtpSession::cmd_noop, Noop},
        {"QUIT", &SmtpSession::cmd_quit, Quit},
        {"VRFY", &SmtpSession::cmd_vrfy, Vrfy},
        {"HELP", &SmtpSession::cmd_help, Help},
        {"STARTTLS", &SmtpSession::cmd_starttls, Starttls},
        {"AUTH", &SmtpSession::cmd_auth, Auth},
    };
    for (const auto& c : table)
        if (verb.size() == strlen(c.verb) && strncasecmp(verb.data(), c.verb, verb.size()) == 0) return &c;
    return nullptr;
}

SmtpSession::SmtpSession(const SessionPolicy& policy, ClientInfo client, SessionHooks& hooks)
    : m_policy(policy), m_client(std::move(client)), m_hooks(hooks) {}

SmtpSession::~SmtpSession() = default;

void SmtpSession::start() {
    log::info(Component::Smtpd, "connect from " + m_client.label());
    reply(replies::greeting(m_policy.hostname));
}

void SmtpSession::start_refused(const Reply& r) {
    log::warning(Component::Smtpd, "refusing connection from " + m_client.label() + ": " + r.text());
    close_with(r);
}

TimeoutKind SmtpSession::timeout() const {
    if (m_closing || m_state == State::Committing || m_state == State::AuthWait || m_state == State::Closed)
        return TimeoutKind::None;
    return m_state == State::Data ? TimeoutKind::Data : TimeoutKind::Command;
}

// The only place the state changes.
void SmtpSession::set_state(State s) { m_state = s; }

void SmtpSession::reply(const Reply& r, bool client_error) {
    m_out += r.wire();
    if (log::enabled(conf::LogLevel::Debug)) log::debug(Component::Smtpd, "> " + m_client.label() + ": " + r.text());
    m_command_failed = m_command_failed || r.is_error();
    if (client_error && r.is_error() && ++m_errors >= m_policy.max_errors && !m_closing) {
        log::info(Component::Smtpd, "too many errors after " + m_last_command + " from " + m_client.label());
        close_with(replies::too_many_errors(m_policy.hostname));
    }
}

void SmtpSession::close_with(const Reply& r) {
    if (m_closing) return;
    m_out += r.wire();
    m_closing = true;
}

// Logs a refused command the way Postfix does, so that log tools count it as a reject.
void SmtpSession::reject(const char* stage, const Reply& r, std::string_view recipient) {
    std::string line = (m_queue_id.empty() ? std::string("NOQUEUE") : m_queue_id) + ": reject: " + stage + " from " +
                       m_client.label() + ": " + r.text() + "; from=<" + m_sender + ">";
    if (!recipient.empty()) line += " to=<" + std::string(recipient) + ">";
    line += " proto=" + std::string(m_esmtp ? "ESMTP" : "SMTP") + " helo=<" + m_helo + ">";
    log::info(Component::Smtpd, line);
    metrics::message_rejected(stage, r.status);
    reply(r);
}

void SmtpSession::feed(std::string_view bytes) {
    if (m_closing || m_state == State::Closed) return;
    if (m_in.empty()) {  // nothing kept from before: work on the bytes where they are, keep the rest
        size_t used = process(bytes);
        if (!m_closing) m_in.assign(bytes.substr(used));
        return;
    }
    m_in.append(bytes);
    resume();
}

void SmtpSession::resume() {
    if (m_closing || m_state == State::Closed) return;
    size_t used = process(m_in);
    m_in.erase(0, used);
    if (m_closing) std::string().swap(m_in);
}

size_t SmtpSession::process(std::string_view in) {
    size_t pos = 0;
    while (pos < in.size() && !m_closing && !waiting() && m_out.size() < k_output_batch) {
        size_t used = m_state == State::Data ? process_data(in.substr(pos)) : process_line(in.substr(pos));
        if (used == 0) break;
        pos += used;
    }
    return pos;
}

// Consumes one command line (or the part of an over-long one that arrived); 0 if incomplete.
size_t SmtpSession::process_line(std::string_view in) {
    size_t nl = in.find('\n');
    bool auth = m_state == State::AuthLine || (in.size() >= 5 && strncasecmp(in.data(), "AUTH ", 5) == 0);
    size_t limit = auth ? k_auth_line_limit : k_command_line_limit;
    if (m_discarding) {
        if (nl == std::string_view::npos) return in.size();
        m_discarding = false;
        return nl + 1;
    }
    if (nl == std::string_view::npos) {
        if (in.size() <= limit + 1) return 0;  // wait for the rest of the line
        m_discarding = true;
        reply(replies::line_too_long());  // RFC 5321 4.5.3.1.4
        return in.size();
    }
    std::string_view line = in.substr(0, nl);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.size() > limit)
        reply(replies::line_too_long());
    else if (m_state == State::AuthLine)
        process_auth_line(line);
    else
        handle_command(line);
    return nl + 1;
}

void SmtpSession::handle_command(std::string_view line) {
    auto cmd = split_command(line);
    const Command* c = find_command(cmd.verb);
    // A line that is no command may be a credential: a client that pipelines AUTH LOGIN's
    // answers after an AUTH that was refused (503, 504, 538) sends them as command lines.
    if (log::enabled(conf::LogLevel::Debug))
        log::debug(Component::Smtpd,
                   "< " + m_client.label() + ": " +
                       (c ? loggable(cmd, line) : "(not a command, " + std::to_string(line.size()) + " octets)"));
    if (is_http_verb(cmd.verb)) {
        log::warning(Component::Smtpd, "non-SMTP command from " + m_client.label() + ": " + printable(line));
        close_with(replies::non_smtp_command());
        return;
    }
    m_current = c ? c->counter : Unknown;
    m_counts[m_current][1]++;
    if (!c) {
        m_last_command = "UNKNOWN";
        reply(replies::unknown_command());
        return;
    }
    m_last_command = c->verb;
    m_command_failed = false;
    (this->*(c->handler))(cmd.args);
    // DATA counts as done only once the message is stored (on_commit_result), AUTH once it succeeds.
    if (!m_command_failed && m_current != Data && m_current != Auth) m_counts[m_current][0]++;
}

void SmtpSession::cmd_ehlo(std::string_view args) { begin_helo(args, true); }
void SmtpSession::cmd_helo(std::string_view args) { begin_helo(args, false); }

void SmtpSession::begin_helo(std::string_view args, bool esmtp) {
    std::string_view name = trim_spaces(args);
    if (name.empty()) {
        reply(replies::syntax(esmtp ? "EHLO hostname" : "HELO hostname"));
        return;
    }
    reset_transaction();  // RFC 5321 4.1.4: EHLO/HELO also reset the transaction
    m_helo = printable(name);
    m_esmtp = esmtp;
    set_state(State::Ready);
    if (!esmtp) {
        reply(replies::helo(m_policy.hostname));
        return;
    }
    reply(replies::ehlo(m_policy.hostname, capabilities()));
}

void SmtpSession::cmd_mail(std::string_view args) {
    if (m_state == State::Connected) return reply(replies::need_helo());
    if (m_state != State::Ready) return reply(replies::nested_mail());
    if (m_policy.auth == conf::ListenAuth::Required && m_user.empty()) return reply(replies::auth_required());
    std::string_view rest;
    if (!strip_keyword(args, "FROM:", rest)) return reply(replies::syntax("MAIL FROM:<address>"));
    // SMTPUTF8 among the parameters allows a UTF-8 address (RFC 6531 3.4).
    bool utf8_param = m_esmtp && has_parameter(rest, "SMTPUTF8");
    auto path = parse_path(rest, true, utf8_param);
    switch (path.error) {
    case AddressError::None: break;
    case AddressError::Syntax: return reply(replies::bad_sender_syntax());
    case AddressError::NoDomain: return reply(replies::sender_not_fqdn(printable(trim_brackets(rest))));
    case AddressError::NeedsUtf8: return reply(replies::needs_smtputf8(printable(trim_brackets(rest))));
    default: return reply(replies::bad_address(printable(trim_brackets(rest)), true));
    }
    m_sender = path.address;
    m_sender_null = path.null;
    m_rule = m_policy.access ? m_policy.access->find(m_policy.listener, m_client.ip, m_user) : nullptr;
    m_message_size = m_rule && m_rule->conf.message_size ? m_rule->conf.message_size : m_policy.message_size;
    if (!parse_mail_parameters(path.rest)) return reset_transaction();
    if (!apply_policy_at_mail()) return reset_transaction();
    if (m_hooks.storage_low()) {
        reject("MAIL", replies::insufficient_storage(), {});
        return reset_transaction();
    }
    set_state(State::Mail);
    reply(replies::sender_ok());
}

bool SmtpSession::parse_mail_parameters(std::string_view params) {
    for (const auto& p : split_parameters(params)) {
        if (!m_esmtp) return reply(replies::unsupported_parameter(p.text)), false;
        if (p.keyword == "SIZE") {
            auto size = parse_decimal(p.value);
            if (!size) return reply(replies::bad_parameter_value(p.text)), false;
            if (*size > m_message_size) {  // RFC 1870 6.1
                reject("MAIL", replies::size_exceeded_at_mail(), {});
                return false;
            }
        } else if (p.keyword == "BODY") {
            if (strcasecmp(p.value.c_str(), "7BIT") == 0)
                m_body = "7BIT";
            else if (strcasecmp(p.value.c_str(), "8BITMIME") == 0)
                m_body = "8BITMIME";
            else
                return reply(replies::unsupported_parameter(p.text)), false;
        } else if (p.keyword == "SMTPUTF8" && !p.has_value) {
            m_smtputf8 = true;
        } else if (p.keyword == "AUTH" && m_policy.auth != conf::ListenAuth::None) {
            // RFC 4954 5: the AUTH= parameter is accepted; this relay does not act on it.
        } else {
            return reply(replies::unsupported_parameter(p.text)), false;
        }
    }
    return true;
}

void SmtpSession::cmd_rcpt(std::string_view args) {
    if (m_state != State::Mail && m_state != State::Rcpt) return reply(replies::need_mail());
    std::string_view rest;
    if (!strip_keyword(args, "TO:", rest)) return reply(replies::syntax("RCPT TO:<address>"));
    auto path = parse_path(rest, false, m_smtputf8);
    switch (path.error) {
    case AddressError::None: break;
    case AddressError::Syntax: return reply(replies::bad_recipient_syntax());
    case AddressError::NoDomain: return reply(replies::recipient_not_fqdn(printable(trim_brackets(rest))));
    case AddressError::NeedsUtf8: return reply(replies::needs_smtputf8(printable(trim_brackets(rest))));
    default: return reply(replies::bad_address(printable(trim_brackets(rest)), false));
    }
    if (!path.rest.empty()) return reply(replies::unsupported_parameter(split_parameters(path.rest).front().text));
    if (m_recipients.size() >= m_policy.max_recipients) {
        // Not counted against the error budget: RFC 5321 4.5.3.1.10 expects the client to
        // send the remaining recipients in a later transaction.
        return reply(replies::too_many_recipients(), false);
    }
    if (!m_client.may_relay && m_user.empty()) {
        ++m_rejected_recipients;
        return reject("RCPT", replies::relay_denied(path.address), path.address);
    }
    // An address literal would have the gateway connect wherever a client says, hosts inside
    // the network included (limits.address_literals: allow permits it).
    if (!m_policy.address_literals && domain_of(path.address).rfind('[', 0) == 0) {
        ++m_rejected_recipients;
        return reject("RCPT", replies::address_literal_denied(path.address), path.address);
    }
    if (!apply_policy_at_rcpt(path.address)) {
        ++m_rejected_recipients;
        return;
    }
    if (m_queue_id.empty()) {
        m_queue_id = m_hooks.new_queue_id();
        m_arrival_us = m_hooks.now_us();
        std::string line = m_queue_id + ": client=" + m_client.label();
        if (!m_user.empty()) line += ", sasl_method=" + m_auth_mechanism + ", sasl_username=" + m_user;
        log::info(Component::Smtpd, line);
    }
    m_recipients.push_back(path.address);
    set_state(State::Rcpt);
    reply(replies::recipient_ok());
}

std::string SmtpSession::rate_subject() const { return m_user.empty() ? m_client.ip : "user " + m_user; }

bool SmtpSession::apply_policy_at_mail() {
    if (!m_rule) return true;
    const auto& c = m_rule->conf;
    if (!m_rule->sender_allowed(m_sender_null ? std::string() : m_sender))
        m_sender_refusal =
            m_user.empty() ? replies::sender_access_denied(m_sender) : replies::sender_not_owned(m_sender, m_user);
    if (!m_sender_refusal && c.messages.count && m_policy.limiter &&
        !m_policy.limiter->take("m" + std::to_string(m_rule->index) + ":" + rate_subject(), 1, c.messages.count,
                                c.messages.seconds, m_hooks.now_us())) {
        metrics::rate_limited("messages");
        reject("MAIL",
               replies::sender_rate_exceeded(m_sender, std::to_string(c.messages.count) + " messages per " +
                                                           period_words(c.messages.seconds) + " for " + rate_subject()),
               {});
        return false;
    }
    return true;
}

bool SmtpSession::apply_policy_at_rcpt(const std::string& recipient) {
    if (!m_rule) return true;
    // As Postfix with smtpd_delay_reject: a refused sender is said at each recipient, with it in the log.
    if (m_sender_refusal) return reject("RCPT", *m_sender_refusal, recipient), false;
    if (!m_rule->recipient_allowed(recipient))
        return reject("RCPT", replies::recipient_access_denied(recipient), recipient), false;
    const auto& c = m_rule->conf;
    if (c.recipient_rate.count && m_policy.limiter &&
        !m_policy.limiter->take("r" + std::to_string(m_rule->index) + ":" + rate_subject(), 1, c.recipient_rate.count,
                                c.recipient_rate.seconds, m_hooks.now_us())) {
        metrics::rate_limited("recipients");
        reject("RCPT",
               replies::recipient_rate_exceeded(recipient, std::to_string(c.recipient_rate.count) + " recipients per " +
                                                               period_words(c.recipient_rate.seconds) + " for " +
                                                               rate_subject()),
               recipient);
        return false;
    }
    return true;
}

void SmtpSession::cmd_data(std::string_view args) {
    if (!trim_spaces(args).empty()) return reply(replies::syntax("DATA"));
    if (m_state == State::Mail && m_rejected_recipients > 0) return reply(replies::no_valid_recipients());
    if (m_state != State::Rcpt) return reply(m_state == State::Mail ? replies::need_rcpt() : replies::need_mail());
    int64_t now = m_hooks.now_us();
    std::time_t now_s = std::time_t(now / 1000000);
    std::string date = rfc5322_date(now_s);
    char stamp[32];
    struct tm tm {};
    localtime_r(&now_s, &tm);
    std::strftime(stamp, sizeof stamp, "%Y%m%d%H%M%S", &tm);
    m_reader = std::make_unique<DataReader>(DataLimits{m_message_size, m_policy.line_length, m_policy.reject_bare_lf});
    m_headers = std::make_unique<HeaderStage>(
        "Message-ID: <" + std::string(stamp) + "." + m_queue_id + "@" + m_policy.hostname + ">\r\n",
        "Date: " + date + "\r\n", k_header_hold_limit);
    apply_rewrite();
    TraceInfo trace{m_helo,
                    m_client.name,
                    m_client.ip,
                    m_policy.hostname,
                    protocol(),
                    m_queue_id,
                    m_recipients.size() == 1 ? m_recipients.front() : std::string(),
                    now_s,
                    m_tls_description};
    m_chunk = received_header(trace);
    m_stored = 0;
    m_eight_bit = false;
    set_state(State::Data);
    reply(replies::start_data());
}

void SmtpSession::apply_rewrite() {
    m_rewritten.reset();
    if (!m_policy.rewriter || m_policy.rewriter->empty()) return;
    std::optional<RewriteProblem> problem;
    m_rewritten = m_policy.rewriter->rewrite(m_sender, &problem);
    if (problem)
        log::warning(Component::Cleanup, m_queue_id + ": sender.rewrite[" + std::to_string(problem->rule) +
                                             "] turns <" + m_sender + "> into <" + printable(problem->result) +
                                             ">, which is not an address; the sender stays as it is");
    if (m_rewritten && m_policy.rewriter->header_from()) m_headers->rewrite_from(m_rewritten->address);
}

namespace {

// Any octet above 127, eight at a time.
bool has_eight_bit(std::string_view s) {
    size_t i = 0;
    for (; i + 8 <= s.size(); i += 8) {
        uint64_t w;
        std::memcpy(&w, s.data() + i, 8);
        if (w & 0x8080808080808080ull) return true;
    }
    for (; i < s.size(); ++i)
        if (s[i] & 0x80) return true;
    return false;
}

}  // namespace

size_t SmtpSession::process_data(std::string_view in) {
    size_t used;
    // 8-bit content is noticed whatever BODY= said: a server without 8BITMIME gets it converted.
    if (m_headers->passing()) {  // the header section is done: content goes straight into the chunk
        size_t before = m_chunk.size();
        used = m_reader->feed(in, m_chunk);
        m_eight_bit = m_eight_bit || has_eight_bit(std::string_view(m_chunk).substr(before));
    } else {
        used = m_reader->feed(in, m_scratch);
        m_eight_bit = m_eight_bit || has_eight_bit(m_scratch);
        m_headers->feed(m_scratch, m_chunk);
        m_scratch.clear();
    }
    if (m_reader->error() != DataError::None)
        m_chunk.clear();
    else if (m_chunk.size() >= k_chunk_size) {
        m_stored += m_chunk.size();
        m_hooks.message_write(std::move(m_chunk));
        m_chunk = std::string();
    }
    if (m_reader->done()) finish_data();
    return used;
}

void SmtpSession::finish_data() {
    DataError error = m_reader->error();
    Reply refusal;
    switch (error) {
    case DataError::None: break;
    case DataError::BareCr: refusal = replies::bare_cr(); break;
    case DataError::BareLf: refusal = replies::bare_lf(); break;
    case DataError::LineTooLong: refusal = replies::content_line_too_long(m_policy.line_length); break;
    case DataError::TooBig: refusal = replies::size_exceeded(); break;
    }
    if (error != DataError::None) {
        m_hooks.message_abort();
        reject("END-OF-MESSAGE", refusal, m_recipients.front());
        reset_transaction();
        set_state(State::Ready);
        return;
    }
    m_headers->finish(m_chunk);
    // Postfix's hopcount_limit: a message that has passed this many hosts is going round a loop.
    if (m_headers->received() >= k_hop_limit) {
        m_hooks.message_abort();
        reject("END-OF-MESSAGE", replies::too_many_hops(), m_recipients.front());
        reset_transaction();
        set_state(State::Ready);
        return;
    }
    m_stored += m_chunk.size();
    if (!m_chunk.empty()) m_hooks.message_write(std::move(m_chunk));
    m_chunk = std::string();
    Envelope e;
    e.id = m_queue_id;
    e.arrival_us = m_arrival_us;
    e.size = m_stored;
    e.sender = m_rewritten ? m_rewritten->address : m_sender;
    if (m_rewritten) e.orig_sender = m_sender;
    e.client_name = m_client.name;
    e.client_ip = m_client.ip;
    e.helo = m_helo;
    e.protocol = protocol();
    e.sasl_username = m_user;
    e.body = m_body;
    e.smtputf8 = m_smtputf8;
    e.utf8_headers = m_headers->eight_bit();
    e.eight_bit = m_eight_bit;
    e.message_id = m_headers->message_id();
    for (const auto& r : m_recipients)
        e.recipients.push_back(Recipient{r});
    set_state(State::Committing);
    m_hooks.message_commit(std::move(e));
}

void SmtpSession::on_commit_result(CommitResult result) {
    if (m_state != State::Committing) return;
    set_state(State::Ready);
    if (result == CommitResult::Stored) {
        if (m_rewritten) log_rewrite();
        reply(replies::queued(m_queue_id));
        m_counts[Data][0]++;
        m_errors = 0;  // a delivered message clears the error budget, as in Postfix
    } else {
        reject("END-OF-MESSAGE",
               result == CommitResult::NoSpace ? replies::insufficient_storage() : replies::queue_write_error(),
               m_recipients.front());
    }
    reset_transaction();
    set_state(State::Ready);
    if (!m_disconnected) resume();
}

// "QID: sender.rewrite[2]: from=<scans@example.com>, orig_from=<x@scanner.local>, header From: rewritten"
void SmtpSession::log_rewrite() {
    std::string line = m_queue_id + ": sender.rewrite[" + std::to_string(m_rewritten->rule) + "]: from=<" +
                       m_rewritten->address + ">, orig_from=<" + m_sender + ">";
    switch (m_headers ? m_headers->from_outcome() : HeaderStage::FromOutcome::Untouched) {
    case HeaderStage::FromOutcome::Untouched: break;
    case HeaderStage::FromOutcome::Rewritten: line += ", header From: rewritten"; break;
    case HeaderStage::FromOutcome::Added: line += ", header From: added"; break;
    case HeaderStage::FromOutcome::HeadersTooLarge:
        line += ", header From: left as it was (header section too large to rewrite)";
        break;
    }
    log::info(Component::Cleanup, line);
}

void SmtpSession::cmd_rset(std::string_view) {
    reset_transaction();
    if (m_state != State::Connected) set_state(State::Ready);
    reply(replies::ok());
}

void SmtpSession::cmd_noop(std::string_view) { reply(replies::ok()); }

void SmtpSession::cmd_quit(std::string_view) { close_with(replies::bye()); }

void SmtpSession::cmd_vrfy(std::string_view args) {
    if (trim_spaces(args).empty()) return reply(replies::syntax("VRFY address"));
    reply(replies::vrfy());
}

void SmtpSession::cmd_help(std::string_view) { reply(replies::help()); }

void SmtpSession::reset_transaction() {
    m_queue_id.clear();
    m_sender.clear();
    m_sender_null = false;
    m_smtputf8 = false;
    m_body.clear();
    m_recipients.clear();
    m_rejected_recipients = 0;
    m_rewritten.reset();
    m_rule = nullptr;
    m_sender_refusal.reset();
    m_reader.reset();
    m_headers.reset();
    std::string().swap(m_chunk);
    std::string().swap(m_scratch);
    if (m_state == State::Mail || m_state == State::Rcpt) set_state(State::Ready);
}

void SmtpSession::on_timeout() {
    if (m_closing) return;
    log::info(Component::Smtpd, "timeout after " + m_last_command + " from " + m_client.label());
    if (m_state == State::Data) m_hooks.message_abort();
    close_with(replies::timeout(m_policy.hostname));
}

void SmtpSession::on_shutdown(bool force) {
    if (m_closing || m_state == State::Committing) return;  // a commit in flight is answered first
    if (m_state == State::Data && !force) return;           // the message in transfer is finished first
    if (m_state == State::Data) m_hooks.message_abort();
    close_with(replies::shutting_down(m_policy.hostname));
}

void SmtpSession::on_disconnect(std::string_view reason) {
    if (m_disconnected) return;
    m_disconnected = true;
    if (m_state == State::Data) m_hooks.message_abort();
    if (!m_closing && !reason.empty()) {
        std::string after = m_last_command;
        if (m_state == State::Data && m_reader) after = "DATA (" + std::to_string(m_reader->size()) + " bytes)";
        log::info(Component::Smtpd, std::string(reason) + " after " + after + " from " + m_client.label());
    }
    log::info(Component::Smtpd, "disconnect from " + m_client.label() + stats());
    set_state(State::Closed);
}

std::string SmtpSession::protocol() const {
    // RFC 3848: ESMTP, then S for TLS and A for AUTH; RFC 6531 3.7.3 registers UTF8SMTP with the
    // same suffixes (UTF8SMTPS, UTF8SMTPA, UTF8SMTPSA) for a transaction with SMTPUTF8.
    std::string p = m_smtputf8 ? "UTF8SMTP" : m_esmtp ? "ESMTP" : "SMTP";
    if (m_esmtp && m_tls) p += "S";
    if (m_esmtp && !m_user.empty()) p += "A";
    return p;
}

std::string SmtpSession::stats() const {
    static const char* const names[] = {"ehlo", "helo", "starttls", "auth", "mail", "rcpt",   "data",
                                        "rset", "noop", "quit",     "vrfy", "help", "unknown"};
    std::string out;
    unsigned ok = 0, total = 0;
    for (int i = 0; i < Counters; ++i) {
        auto [good, all] = m_counts[i];
        if (all == 0) continue;
        out += " " + std::string(names[i]) + "=" + std::to_string(good);
        if (good != all) out += "/" + std::to_string(all);
        ok += good;
        total += all;
    }
    out += " commands=" + std::to_string(ok);
    if (ok != total) out += "/" + std::to_string(total);
    return out;
}

}  // namespace gateway
