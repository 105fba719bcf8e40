#include "gateway/smtp/client_transport.hpp"

#include "gateway/common/net.hpp"

namespace gateway {

// The libuv handle outlives the transport when it is closed: `owner` is cleared then.
struct ClientTransport::Socket {
    uv_tcp_t tcp{};
    uv_connect_t connect{};
    ClientTransport* owner = nullptr;
};

namespace {

struct WriteRequest {
    uv_write_t req;
    std::string data;
    void* socket;
};

}  // namespace

ClientTransport::ClientTransport(uv_loop_t* loop, Handler& handler) : m_loop(loop), m_handler(handler) {}

ClientTransport::~ClientTransport() { close(); }

void ClientTransport::connect(const sockaddr* address, const std::string& source) {
    m_socket = new Socket;
    m_socket->owner = this;
    uv_tcp_init(m_loop, &m_socket->tcp);
    m_socket->tcp.data = m_socket;
    m_socket->connect.data = m_socket;
    if (!source.empty()) {  // the local address the connection comes from
        auto local = to_sockaddr({source, 0});
        int b = local ? uv_tcp_bind(&m_socket->tcp, reinterpret_cast<const sockaddr*>(&*local), 0) : UV_EINVAL;
        if (b != 0) return m_handler.on_connected(b);
    }
    int r = uv_tcp_connect(&m_socket->connect, &m_socket->tcp, address, [](uv_connect_t* req, int status) {
        auto* sock = static_cast<Socket*>(req->data);
        if (!sock->owner) return;
        auto self = sock->owner->shared_from_this();
        if (status == 0) {
            uv_tcp_nodelay(&sock->tcp, 1);
            uv_read_start(
                reinterpret_cast<uv_stream_t*>(&sock->tcp),
                [](uv_handle_t*, size_t, uv_buf_t* buf) {
                    static char buffer[64 * 1024];  // one loop thread: read and used at once
                    *buf = uv_buf_init(buffer, sizeof buffer);
                },
                [](uv_stream_t* s, ssize_t nread, const uv_buf_t* buf) {
                    auto* sock = static_cast<Socket*>(s->data);
                    if (!sock->owner || nread == 0) return;
                    auto self = sock->owner->shared_from_this();
                    if (nread < 0) return self->m_handler.on_lost();
                    self->on_read(std::string_view(buf->base, size_t(nread)));
                });
        }
        self->m_handler.on_connected(status);
    });
    if (r != 0) m_handler.on_connected(r);
}

void ClientTransport::on_read(std::string_view bytes) {
    if (!m_tls) return m_handler.on_data(bytes);
    m_tls->receive(bytes);
    if (!m_tls_done) return drive_handshake();
    std::string plain;
    auto r = m_tls->read(plain);
    if (m_tls->has_output()) write_raw(m_tls->take_output());
    // A handler may close this transport; then it says nothing more.
    Socket* sock = m_socket;
    if (!plain.empty()) m_handler.on_data(plain);
    if ((r == tls::Result::Closed || r == tls::Result::Failed) && sock && sock->owner == this) m_handler.on_lost();
}

void ClientTransport::start_tls(std::shared_ptr<tls::Context> context, const std::string& server_name) {
    m_tls = std::make_unique<tls::Engine>(std::move(context), tls::Engine::Role::Client, server_name);
    drive_handshake();
}

void ClientTransport::drive_handshake() {
    auto r = m_tls->handshake();
    if (m_tls->has_output()) write_raw(m_tls->take_output());
    if (r == tls::Result::WantIo) return;
    if (r != tls::Result::Ok) return m_handler.on_tls(false, m_tls->error(), m_tls->peer_spoke_plaintext());
    m_tls_done = true;
    m_handler.on_tls(true, {}, false);
}

tls::SessionInfo ClientTransport::tls_info() const { return m_tls ? m_tls->info() : tls::SessionInfo{}; }

void ClientTransport::send(std::string_view plaintext) {
    if (plaintext.empty()) return;
    if (!m_tls_done) return write_raw(std::string(plaintext));
    if (m_tls->write(plaintext) != tls::Result::Ok) return m_handler.on_lost();
    write_raw(m_tls->take_output());
}

void ClientTransport::send(std::string&& plaintext) {
    if (!m_tls_done) return write_raw(std::move(plaintext));
    send(std::string_view(plaintext));
}

void ClientTransport::write_raw(std::string bytes) {
    if (!m_socket || bytes.empty()) return;
    // Nothing queued: the socket mostly takes it all at once, and then no write request is made
    // (one fewer allocation, and no change to what the loop polls for). A failure is left to
    // uv_write below, which reports it through its callback as before.
    if (m_backlog == 0) {
        uv_buf_t b = uv_buf_init(bytes.data(), unsigned(bytes.size()));
        int n = uv_try_write(reinterpret_cast<uv_stream_t*>(&m_socket->tcp), &b, 1);
        if (n == int(bytes.size())) return;
        if (n > 0) bytes.erase(0, size_t(n));
    }
    auto* w = new WriteRequest{{}, std::move(bytes), m_socket};
    w->req.data = w;
    m_backlog += w->data.size();
    uv_buf_t b = uv_buf_init(w->data.data(), unsigned(w->data.size()));
    int r = uv_write(&w->req, reinterpret_cast<uv_stream_t*>(&m_socket->tcp), &b, 1, [](uv_write_t* req, int status) {
        std::unique_ptr<WriteRequest> w(static_cast<WriteRequest*>(req->data));
        auto* sock = static_cast<Socket*>(w->socket);
        if (!sock->owner) return;
        auto self = sock->owner->shared_from_this();
        self->m_backlog -= w->data.size();
        if (status < 0) return self->m_handler.on_lost();
        self->m_handler.on_sent();
    });
    if (r != 0) {
        m_backlog -= w->data.size();
        delete w;
        m_handler.on_lost();
    }
}

void ClientTransport::close() {
    if (!m_socket) return;
    Socket* sock = m_socket;
    m_socket = nullptr;
    sock->owner = nullptr;
    uv_close(reinterpret_cast<uv_handle_t*>(&sock->tcp), [](uv_handle_t* h) { delete static_cast<Socket*>(h->data); });
}

}  // namespace gateway
