// One client connection: the libuv adapter around an SmtpSession.
//
// It moves bytes between the socket and the session (through a TLS engine once TLS is up: from
// the first byte on an implicit listener, after STARTTLS otherwise), arms the session's
// timeout, and implements SessionHooks on top of the spool and the AUTH worker. Every libuv
// callback is a trampoline that catches exceptions and ends this one connection. The object
// lives until both of its handles are closed; other callbacks hold only a weak reference.
#pragma once

#include "gateway/smtpd/auth_worker.hpp"
#include "gateway/smtpd/server.hpp"
#include "gateway/smtpd/smtp_session.hpp"
#include "tls/tls_engine.hpp"

#include <uv.h>

#include <memory>
#include <optional>
#include <string>

namespace gateway {

struct SpoolTxn;

class ServerConnection : public SessionHooks, public std::enable_shared_from_this<ServerConnection> {
public:
    ServerConnection(Server& server, std::shared_ptr<const ListenerSettings> settings);
    ~ServerConnection() override;

    uv_tcp_t* tcp() { return &m_tcp; }
    // After uv_accept: greet (or refuse with `refusal`) and start reading.
    void start(conf::IpAddress ip, const Reply* refusal);
    // A PROXY protocol listener: the header from the balancer at `proxy` comes first, within
    // limits.handshake_timeout. `admit` gets the client it names (the balancer itself for its
    // health checks); a connection without a valid header is closed with a log line.
    void await_proxy_header(const conf::IpAddress& proxy, std::function<void(const conf::IpAddress&)> admit);
    void shutdown(bool force = false);                      // the server is stopping
    void abandon();                                         // the server stopped waiting: close now
    void fail(const char* where, const std::exception& e);  // an exception in a callback

    // SessionHooks
    std::string new_queue_id() override;
    int64_t now_us() override;
    bool storage_low() override;
    void message_write(std::string&& content) override;
    void message_commit(Envelope&& envelope) override;
    void message_abort() override;
    void start_tls() override;
    void auth_start(const std::string& mechanism, const std::optional<std::string>& initial) override;
    void auth_step(const std::string& response) override;
    void auth_cancel() override;
    bool auth_blocked() override;

private:
    void drop_copy();  // gives its octets back to the server's budget
    static void look_up_client_name(dns::Resolver& resolver, const conf::IpAddress& ip,
                                    const std::function<void(const std::string&)>& done);
    void begin(const std::string& client_name);
    void on_read(ssize_t nread, const uv_buf_t* buf);
    void on_proxy_bytes(std::string_view bytes);
    void take_early_input();  // what came after the PROXY header, before the session began
    void after_step();
    void send(std::string&& bytes);
    void update_reading();
    void arm_timer();
    void close(std::string_view reason);
    void on_handle_closed();
    void begin_tls();
    void on_ciphertext(std::string_view bytes);
    void write_raw(std::string&& bytes);
    size_t output_backlog() const;  // octets handed to libuv and not yet written to the socket
    void greet();
    void auth_result(AuthOutcome outcome, const std::string& challenge, const std::string& user,
                     const std::string& detail);
    void auth_resume(const std::string& mechanism, const std::optional<std::string>& initial);
    void auth_release();              // the worker's side of the exchange goes
    void auth_finished(bool failed);  // the exchange counted in AuthLimits is over

    Server& m_server;
    std::shared_ptr<const ListenerSettings> m_settings;
    uv_tcp_t m_tcp{};
    uv_timer_t m_timer{};
    std::unique_ptr<SmtpSession> m_session;
    conf::IpAddress m_ip;
    std::shared_ptr<SpoolTxn> m_txn;
    std::string m_copy;  // the content of a message up to 1 MiB, kept for its first delivery
    std::function<void(const conf::IpAddress&)> m_proxy_admit;  // waiting for the PROXY header
    std::string m_proxy_in;
    std::string m_early;  // the client's first bytes, which came with the PROXY header
    bool m_copying = true;
    std::string m_txn_id;
    unsigned m_writes_in_flight = 0;
    int m_handles_open = 0;
    bool m_reading = false;
    bool m_spool_paused = false;
    bool m_closing = false;
    bool m_stopping = false;
    bool m_force_stop = false;  // the drain time is over
    bool m_counted = false;     // counted in the per-client limits
    std::unique_ptr<tls::Engine> m_tls;
    bool m_tls_ready = false;        // the handshake is done
    bool m_tls_after_write = false;  // STARTTLS: start the handshake once the 220 is out
    std::optional<Reply> m_refusal;  // for an implicit listener: sent once TLS is up
    std::shared_ptr<AuthAttempt> m_auth;
    bool m_auth_counted = false;  // an exchange begun in AuthLimits and not ended there
};

}  // namespace gateway
