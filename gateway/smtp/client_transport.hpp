// One outgoing TCP connection, in plaintext or through a TLS engine: what the SMTP client
// reads and writes goes through here, the engine (tls/) in between once TLS has started.
//
// Call order: connect(); after on_connected(0), send() and, when STARTTLS was answered 220 or
// for implicit TLS right away, start_tls(), whose outcome comes as on_tls(); close() at the end
// (the socket closes in the background). Held by shared_ptr: a handler may drop its
// reference from inside a callback.
#pragma once

#include "tls/tls_engine.hpp"

#include <uv.h>

#include <functional>
#include <memory>
#include <string>
#include <string_view>

namespace gateway {

class ClientTransport : public std::enable_shared_from_this<ClientTransport> {
public:
    struct Handler {
        virtual ~Handler() = default;
        virtual void on_connected(int status) = 0;  // 0 or a libuv error
        virtual void on_data(std::string_view plaintext) = 0;
        virtual void on_lost() = 0;  // closed by the peer, or a socket error
        virtual void on_tls(bool ok, const std::string& error, bool peer_spoke_plaintext) = 0;
        virtual void on_sent() = 0;  // a queued write completed (progress); not for one taken at once
    };

    ClientTransport(uv_loop_t* loop, Handler& handler);
    ~ClientTransport();
    ClientTransport(const ClientTransport&) = delete;
    ClientTransport& operator=(const ClientTransport&) = delete;

    void connect(const sockaddr* address, const std::string& source = {});  // source: a local IP, or any
    void send(std::string_view plaintext);
    void send(std::string&& plaintext);  // the same, without a copy when there is no TLS
    void start_tls(std::shared_ptr<tls::Context> context, const std::string& server_name);
    void close();

    bool tls_active() const { return m_tls_done; }
    tls::SessionInfo tls_info() const;
    size_t backlog() const { return m_backlog; }

private:
    struct Socket;
    void on_read(std::string_view bytes);
    void write_raw(std::string bytes);
    void drive_handshake();

    uv_loop_t* m_loop;
    Handler& m_handler;
    Socket* m_socket = nullptr;
    std::unique_ptr<tls::Engine> m_tls;
    bool m_tls_done = false;
    size_t m_backlog = 0;
};

}  // namespace gateway
