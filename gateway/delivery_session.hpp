// One outgoing SMTP connection at a time to one destination, carrying as many jobs as the
// destination has for it: the libuv side of SmtpClient.
//
// Order of events: resolve the destination's addresses; try them in order (at most five) until
// one greets and answers EHLO; then take jobs from the owner one after another (RSET between)
// until there are none for `delivery.connection_reuse`; then QUIT. A recipient that gets a 4xx,
// or a job whose connection breaks, moves on to the next address; a 5xx is final at once.
// Results go to the owner as they are known; every libuv callback catches and ends this
// session only.
#pragma once

#include "conf/config.hpp"
#include "gateway/delivery.hpp"
#include "gateway/nexthop.hpp"
#include "gateway/smtp_client.hpp"
#include "gateway/spool.hpp"

#include <uv.h>

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
    // The content when it is held in memory; otherwise it is read from the spool.
    virtual std::shared_ptr<const std::string> content(const std::string& message_id) = 0;
    virtual void job_done(const std::string& destination, JobResult result) = 0;
    virtual void destination_failed(const std::string& destination, const DestinationFailure& failure) = 0;
    virtual void session_idle(DeliverySession* s, bool idle) = 0;
    virtual void session_closed(DeliverySession* s) = 0;
};

struct SessionContext {
    uv_loop_t* loop;
    Spool* spool;
    HopResolver* hops;
    SessionOwner* owner;
    std::shared_ptr<const conf::Config> config;
};

class DeliverySession : public std::enable_shared_from_this<DeliverySession> {
public:
    DeliverySession(SessionContext ctx, Destination destination);
    ~DeliverySession();

    void start();
    void assign(DeliveryJob job);  // an idle session gets work
    void abort();                  // shutdown: close now, report nothing more
    const Destination& destination() const { return m_destination; }

private:
    struct Socket;
    struct Failure {
        std::string dsn, reason, relay = "none";
        bool site = true;  // about the connection, not a recipient: another `via` may do better
    };

    void on_hops(HopList hops);
    void connect_next();
    void on_connected(int status);
    void on_read(ssize_t nread, const uv_buf_t* buf);
    void on_timeout();
    void handle_events();
    void on_ready();
    void begin_job(DeliveryJob job);
    void send_job();
    void carry(size_t index, const Failure& f);
    void read_content();
    void on_content(int err, const std::string& data);
    void record(size_t index, RcptStatus status, const std::string& dsn, const std::string& reason);
    void finish_job_on_this_hop(const ServerReply* reply, ClientStage stage, bool sent);
    void connection_lost(const std::string& why);
    void complete_job();
    void send_output();
    void arm_timer();
    void close_socket();
    void end();
    std::string host_label() const;
    int64_t now_us() const;

    SessionContext m_ctx;
    Destination m_destination;
    std::vector<NextHop> m_hops;
    size_t m_hop = 0;  // the address in use, or the next to try
    Socket* m_socket = nullptr;
    uv_timer_t* m_timer = nullptr;
    std::unique_ptr<SmtpClient> m_client;
    bool m_connected = false;
    bool m_ever_ready = false;
    bool m_idle = false;
    bool m_quitting = false;
    bool m_ended = false;
    std::optional<Failure> m_last_failure;
    int64_t m_start_us = 0;
    int64_t m_ready_us = 0;
    int64_t m_setup_us = 0;  // start of the current connection attempt series

    // The job in progress
    std::optional<DeliveryJob> m_job;
    std::vector<size_t> m_pending;                      // recipients of the job not yet resolved
    std::vector<RecipientResult> m_results;             // resolved recipients
    std::set<size_t> m_resolved;                        // recipients with a final result
    std::map<size_t, Failure> m_carried;                // soft failures: the recipient tries the next address
    std::vector<std::optional<ServerReply>> m_rcpt_ok;  // per m_pending entry: accepted by RCPT
    std::vector<std::optional<Failure>> m_soft;         // per m_pending entry: 4xx at RCPT
    bool m_job_sent = false;                            // the job went out on the current connection
    int64_t m_job_start_us = 0;
    double m_job_setup = 0;
    uint64_t m_content_offset = 0;
    bool m_content_done = false;
    bool m_reading_content = false;
    size_t m_write_backlog = 0;
    uint64_t m_generation = 0;  // bumped per connection: late callbacks of an old one are ignored
};

}  // namespace gateway
