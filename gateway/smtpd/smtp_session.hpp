// The SMTP server session (RFC 5321, RFC 1870, RFC 2920, RFC 3463, RFC 6152, RFC 6531) as a
// state machine without I/O: bytes and events go in, reply bytes and requests come out.
//
// Call order, for the connection that owns it:
//   start()                      once; queues the greeting (or start_refused() instead)
//   feed(bytes)                  for every read; then write take_output()
//   on_commit_result(...)        when the spool answers a commit the session asked for
//   on_timeout()                 when timeout() expired without input
//   on_disconnect(reason)        once, last; logs the one teardown line
// After each call: write take_output(); close after writing when closing(); stop reading while
// waiting() (a commit is in flight; input stays buffered and is processed afterwards, which is
// what lets a client pipeline its next transaction after the final dot). A client that pipelines
// commands faster than it reads the replies gets at most k_output_batch octets of replies per
// call; resume() goes on once the connection has written them.
//
// The session reaches the spool and the clock only through SessionHooks, so a whole dialog is
// a unit test on strings.
#pragma once

#include "conf/config.hpp"
#include "gateway/common/envelope.hpp"
#include "gateway/common/message_headers.hpp"
#include "gateway/smtpd/access_policy.hpp"
#include "gateway/smtpd/data_reader.hpp"
#include "gateway/smtpd/rate_limiter.hpp"
#include "gateway/smtpd/replies.hpp"
#include "gateway/smtpd/sender_rewrite.hpp"

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace gateway {

struct SessionPolicy {
    std::string hostname;
    // TLS and AUTH (RFC 3207, RFC 4954), from the listener and the tls:/sasl: sections
    bool starttls = false;  // STARTTLS is offered (tls: starttls, a certificate loaded)
    conf::ListenAuth auth = conf::ListenAuth::None;
    std::vector<std::string> mechanisms;  // offered in EHLO, in this order
    bool auth_without_tls = false;        // sasl.plaintext_without_tls
    uint64_t message_size = 0;
    unsigned max_recipients = 100;
    unsigned max_errors = 20;
    uint64_t line_length = 1024 * 1024;
    bool reject_bare_lf = false;
    bool address_literals = false;                   // recipients at [address] are accepted
    std::shared_ptr<const SenderRewriter> rewriter;  // sender.rewrite and sender.header_from
    std::string listener;                            // the listen address as written, for policy rules
    std::shared_ptr<const AccessPolicy> access;      // policy:
    RateLimiter* limiter = nullptr;                  // the server's, for policy rates
};

struct ClientInfo {
    std::string name = "unknown";  // verified reverse name, or "unknown"
    std::string ip;
    bool may_relay = false;  // in `clients`

    std::string label() const { return name + "[" + ip + "]"; }  // Postfix's HOST[IP]
};

class SessionHooks {
public:
    virtual ~SessionHooks() = default;
    virtual std::string new_queue_id() = 0;
    virtual int64_t now_us() = 0;
    virtual bool storage_low() = 0;
    // Message content, in order, between the 354 and the final dot.
    virtual void message_write(std::string&& content) = 0;
    // Asks the spool to make the message durable; the answer comes as on_commit_result().
    virtual void message_commit(Envelope&& envelope) = 0;
    // Forgets the content written so far (the message was refused or the client went away).
    virtual void message_abort() = 0;
    // After the 220 to STARTTLS has been written: the TLS handshake. The session hears of it
    // through on_tls_started(), or the connection closes.
    virtual void start_tls() = 0;
    // AUTH: the SASL exchange runs outside the session; the answers come as on_auth_result().
    virtual void auth_start(const std::string& mechanism, const std::optional<std::string>& initial) = 0;
    virtual void auth_step(const std::string& response) = 0;
    virtual void auth_cancel() = 0;   // the client gave up the exchange: it counts as a failure
    virtual bool auth_blocked() = 0;  // this client address has failed too often lately
};

// Blocked: the attempt waited for others from the same address, and they failed too often.
enum class AuthOutcome { Continue, Success, Failure, TempFailure, Invalid, Blocked };

enum class TimeoutKind { None, Command, Data };

class SmtpSession {
public:
    SmtpSession(const SessionPolicy& policy, ClientInfo client, SessionHooks& hooks);
    ~SmtpSession();
    SmtpSession(const SmtpSession&) = delete;
    SmtpSession& operator=(const SmtpSession&) = delete;

    void start();
    void start_refused(const Reply& reply);  // too many connections: reply and close
    // Input is worked on until a batch of replies (k_output_batch) is waiting; the rest stays
    // buffered until the connection has written them and calls resume().
    void feed(std::string_view bytes);
    void resume();
    void on_commit_result(CommitResult result);
    // TLS is up (after STARTTLS, or from the first byte on an implicit listener): what the client
    // sent before it is forgotten, and a new EHLO is required. `description` goes into Received:.
    void on_tls_started(const std::string& description);
    void on_auth_result(AuthOutcome outcome, const std::string& challenge, const std::string& username,
                        const std::string& detail);
    void on_timeout();
    // The server is stopping: 421, except that a message being transferred or committed is
    // finished first unless `force` (the drain time is over).
    void on_shutdown(bool force = false);
    void on_disconnect(std::string_view reason);

    std::string take_output() { return std::move(m_out); }
    bool has_output() const { return !m_out.empty(); }
    bool closing() const { return m_closing; }
    bool waiting() const {
        return m_state == State::Committing || m_state == State::StartingTls || m_state == State::AuthWait;
    }
    bool tls_active() const { return m_tls; }
    const std::string& username() const { return m_user; }
    TimeoutKind timeout() const;
    size_t buffered_input() const { return m_in.size(); }
    // Buffered input could be worked on now (the session is not waiting and has not closed).
    bool can_resume() const { return !m_in.empty() && !m_closing && !waiting(); }
    static constexpr size_t k_output_batch = 4 * 1024;
    const ClientInfo& client() const { return m_client; }

private:
    enum class State { Connected, Ready, Mail, Rcpt, Data, Committing, StartingTls, AuthWait, AuthLine, Closed };
    struct Command;
    static const Command* find_command(std::string_view verb);

    size_t process(std::string_view in);  // what of `in` was used
    size_t process_line(std::string_view in);
    size_t process_data(std::string_view in);
    void handle_command(std::string_view line);
    void finish_data();
    void apply_rewrite();
    void log_rewrite();

    void cmd_ehlo(std::string_view args);
    void cmd_helo(std::string_view args);
    void cmd_mail(std::string_view args);
    void cmd_rcpt(std::string_view args);
    void cmd_data(std::string_view args);
    void cmd_rset(std::string_view args);
    void cmd_noop(std::string_view args);
    void cmd_quit(std::string_view args);
    void cmd_vrfy(std::string_view args);
    void cmd_help(std::string_view args);
    void cmd_starttls(std::string_view args);
    void cmd_auth(std::string_view args);
    void process_auth_line(std::string_view line);
    void refuse_auth_blocked();
    std::vector<std::string> capabilities() const;

    bool parse_mail_parameters(std::string_view params);
    void begin_helo(std::string_view args, bool esmtp);
    void reset_transaction();
    void set_state(State s);
    void reply(const Reply& r, bool client_error = true);
    void reject(const char* stage, const Reply& r, std::string_view recipient);
    bool apply_policy_at_mail();                              // false: refused, replied
    bool apply_policy_at_rcpt(const std::string& recipient);  // false: refused, replied
    std::string rate_subject() const;
    void close_with(const Reply& r);
    std::string protocol() const;
    std::string stats() const;

    const SessionPolicy& m_policy;
    ClientInfo m_client;
    SessionHooks& m_hooks;

    State m_state = State::Connected;
    bool m_closing = false;
    bool m_disconnected = false;
    bool m_discarding = false;  // inside an over-long command line
    std::string m_in;
    std::string m_out;
    std::string m_last_command = "CONNECT";
    unsigned m_errors = 0;
    bool m_command_failed = false;

    // HELO/EHLO
    std::string m_helo;
    bool m_esmtp = false;

    // TLS and AUTH
    bool m_tls = false;
    std::string m_tls_description;  // "TLSv1.2 with cipher ..."
    std::string m_user;             // authenticated as
    std::string m_auth_mechanism;

    // The current transaction
    std::string m_queue_id;
    std::string m_sender;
    bool m_sender_null = false;
    bool m_smtputf8 = false;
    std::string m_body;
    std::vector<std::string> m_recipients;
    unsigned m_rejected_recipients = 0;
    std::optional<Rewritten> m_rewritten;   // the sender after sender.rewrite
    const AccessRule* m_rule = nullptr;     // the policy rule of this transaction, if any
    std::optional<Reply> m_sender_refusal;  // the sender is not allowed: said at each RCPT, as Postfix does
    uint64_t m_message_size = 0;            // the rule's message_size, or limits.message_size
    int64_t m_arrival_us = 0;
    std::unique_ptr<DataReader> m_reader;
    std::unique_ptr<HeaderStage> m_headers;
    std::string m_chunk;       // content waiting to go to the spool
    std::string m_scratch;     // reader output before the header stage
    uint64_t m_stored = 0;     // content octets handed to the spool
    bool m_eight_bit = false;  // content octets above 127

    // Counters for the disconnect line: accepted/total per command
    enum Counter { Ehlo, Helo, Starttls, Auth, Mail, Rcpt, Data, Rset, Noop, Quit, Vrfy, Help, Unknown, Counters };
    std::array<std::array<unsigned, 2>, Counters> m_counts{};
    Counter m_current = Unknown;
};

}  // namespace gateway
