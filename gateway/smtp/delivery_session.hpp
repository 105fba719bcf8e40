// One outgoing SMTP connection at a time to one destination, carrying as many jobs as the
// destination has for it: the libuv side of SmtpClient.
//
// Order of events: resolve the destination's addresses; try them in order (at most five) until
// one greets and answers EHLO; bring the connection to the security the policy asks for
// (STARTTLS or TLS from the first byte, certificate check, AUTH: client_security.hpp); then take
// jobs from the owner one after another (RSET between) until there are none for
// `delivery.connection_reuse`; then QUIT. A recipient that gets a 4xx, or a job whose connection
// breaks, moves on to the next address; a 5xx is final at once. Results go to the owner as they
// are known; every libuv callback catches and ends this session only.
//
// The connection and security steps are in delivery_session.cpp, the jobs in delivery_jobs.cpp.
#pragma once

#include "auth/sasl_client.hpp"
#include "conf/config.hpp"
#include "gateway/smtp/client_security.hpp"
#include "gateway/smtp/client_transport.hpp"
#include "gateway/smtp/delivery.hpp"
#include "gateway/smtp/dkim.hpp"
#include "gateway/smtp/mime_downgrade.hpp"
#include "gateway/smtp/nexthop.hpp"
#include "gateway/smtp/smtp_client.hpp"
#include "gateway/smtp/tls_contexts.hpp"

#include <uv.h>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>

namespace gateway {

class DeliverySession;

class SessionOwner {
public:
    virtual ~SessionOwner() = default;
    virtual std::optional<DeliveryJob> take_job(DeliverySession* s) = 0;
    virtual const Envelope* envelope(const std::string& message_id) = 0;
    // The content when it is held in memory; otherwise read_content() reads it from storage.
    virtual std::shared_ptr<const std::string> content(const std::string& message_id) = 0;
    // Up to `max` octets of the content from `offset`, without blocking the loop; `done` gets 0
    // or an errno value, and the data (shorter than `max` at the end).
    using ContentDone = std::function<void(int err, std::string data)>;
    virtual void read_content(const std::string& message_id, uint64_t offset, size_t max, ContentDone done) = 0;
    virtual void job_done(const std::string& destination, JobResult result) = 0;
    virtual void destination_failed(const std::string& destination, const DestinationFailure& failure) = 0;
    // A connection that never became usable (refused, 421, TLS or AUTH trouble): one failure of a
    // cohort; the destination is given up only when a whole cohort fails.
    virtual void session_failed(const std::string& destination, const DestinationFailure& failure) = 0;
    // The server said it takes no more connections for now (thread_limit()): the session ends,
    // and its job's recipients came back to be sent again.
    virtual void session_throttled(DeliverySession* s, const std::string& reason) = 0;
    virtual void session_idle(DeliverySession* s, bool idle) = 0;
    virtual void session_closed(DeliverySession* s) = 0;
};

struct SessionContext {
    uv_loop_t* loop;
    HopResolver* hops;
    SessionOwner* owner;
    TlsContexts* tls;
    std::shared_ptr<const conf::Config> config;
    std::shared_ptr<const dkim::Keys> dkim;  // null or empty: nothing is signed
};

class DeliverySession : public std::enable_shared_from_this<DeliverySession>, private ClientTransport::Handler {
public:
    DeliverySession(SessionContext ctx, Destination destination);
    ~DeliverySession() override;

    void start();
    void assign(DeliveryJob job);  // an idle session gets work
    void abort();                  // shutdown: close now, report nothing more
    const Destination& destination() const { return m_destination; }
    // The server took a recipient on this connection: it counts among the connections the
    // server allows at once.
    bool accepted_mail() const { return m_accepted_mail; }
    // True once, at the first call after the server took mail on this connection.
    bool first_success() {
        if (!m_accepted_mail || m_success_counted) return false;
        return m_success_counted = true;
    }

private:
    struct Failure {
        std::string dsn, reason, relay = "none";
        bool site = true;        // about the connection, not a recipient: another `via` may do better
        bool permanent = false;  // when no address does better, the recipient bounces
    };

    // Connection and security (delivery_session.cpp)
    void on_hops(HopList hops);
    void connect_next();
    void on_connected(int status) override;
    void on_data(std::string_view plaintext) override;
    void on_lost() override;
    void on_tls(bool ok, const std::string& error, bool peer_spoke_plaintext) override;
    void on_sent() override;
    void on_timeout();
    void handle_events();
    void on_ready();
    void on_security_step(const SecurityStep& step);
    void begin_tls();
    void begin_auth(const std::string& mechanism);
    void fail_hop(const std::string& dsn, const std::string& reason);
    void fail_loop(const std::string& why);
    void throttled(const std::string& reason);
    void connection_lost(const std::string& why);
    void send_output();
    void arm_timer();
    void close_socket();
    void end();
    std::string host_label() const;
    std::string server_name() const;  // checked against the certificate, sent in SNI
    std::string helo_name() const;
    std::string source_address() const;  // empty: any
    int64_t now_us() const;

    // Jobs (delivery_jobs.cpp)
    void take_next_job();
    void begin_job(DeliveryJob job);
    void send_job();
    void carry(size_t index, const Failure& f);
    void record(size_t index, RcptStatus status, const std::string& dsn, const std::string& reason);
    void finish_job_on_this_hop(const ServerReply* reply, ClientStage stage, bool sent);
    void complete_job();
    void defer_open_recipients(const Failure& last);
    void read_content();
    bool needs_smtputf8(const Envelope& e) const;
    void on_content(int err, const std::string& data);
    void on_recipient(const ClientEvent& ev);
    void fail_locally(const std::string& dsn, const std::string& reason);

    // DKIM (delivery_signing.cpp): a pass over the content as it will be sent, before it is sent.
    struct Signing;
    void start_signing(const Envelope& e, bool downgrade);
    void sign_read();
    void sign_chunk(const std::shared_ptr<Signing>& sig, const std::string& data, bool last);
    void sign_finish(const std::shared_ptr<Signing>& sig);
    void on_signed(const std::string& headers, const std::string& error);

    SessionContext m_ctx;
    Destination m_destination;
    SecurityPolicy m_policy;
    std::vector<NextHop> m_hops;
    // The address in use, or the next to try, is m_hops[m_hop % size]; the addresses run out at
    // m_hop_end. A job that starts on a connection to a backup address goes round to the
    // preferred ones before it gives up.
    size_t m_hop = 0;
    size_t m_hop_end = 0;
    const NextHop& hop() const { return m_hops.at(m_hops.empty() ? 0 : m_hop % m_hops.size()); }
    std::shared_ptr<ClientTransport> m_transport;
    uv_timer_t* m_timer = nullptr;
    std::unique_ptr<SmtpClient> m_client;
    ConnectionState m_state;
    bool m_retry_plaintext = false;  // the next connection to this address skips TLS
    bool m_handshaking = false;
    bool m_connected = false;
    bool m_ever_ready = false;
    bool m_idle = false;
    bool m_quitting = false;
    bool m_ended = false;
    std::optional<Failure> m_last_failure;
    int64_t m_start_us = 0;
    int64_t m_ready_us = 0;
    int64_t m_setup_us = 0;

    // AUTH in progress
    std::unique_ptr<auth::SaslClient> m_sasl;
    std::string m_auth_mechanism;
    bool m_token_retried = false;
    std::string m_token;     // the OAuth 2.0 token offered, to drop it from memory when it is refused
    std::string m_throttle;  // the server's thread limit reply: this connection ends

    // The job in progress
    std::optional<DeliveryJob> m_job;
    std::vector<size_t> m_pending;                      // recipients of the job not yet resolved
    std::vector<RecipientResult> m_results;             // resolved recipients
    std::set<size_t> m_resolved;                        // recipients with a final result
    std::map<size_t, Failure> m_carried;                // soft failures: the recipient tries the next address
    std::vector<std::optional<ServerReply>> m_rcpt_ok;  // per m_pending entry: accepted by RCPT
    std::vector<std::optional<Failure>> m_soft;         // per m_pending entry: 4xx at RCPT
    bool m_job_sent = false;                            // the job went out on the current connection
    unsigned m_jobs_taken = 0;                          // for delivery.reuse_messages
    bool m_accepted_mail = false;
    bool m_success_counted = false;
    int64_t m_job_start_us = 0;
    double m_job_setup = 0;
    uint64_t m_content_offset = 0;
    bool m_content_done = false;
    std::optional<MimeDowngrade> m_downgrade;  // the content goes in quoted-printable (no 8BITMIME)
    bool m_reading_content = false;
    std::shared_ptr<Signing> m_signing;  // the pass for the job in progress
    std::string m_signature;             // DKIM-Signature fields, sent ahead of the content
    bool m_sign_wait = false;            // the content waits for the signature
    uint64_t m_generation = 0;           // bumped per connection: late callbacks of an old one are ignored
};

}  // namespace gateway
