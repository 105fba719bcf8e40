#include "gateway/ops/control.hpp"

#include "gateway/common/log.hpp"

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#include <cerrno>
#include <cstring>
#include <memory>
#include <stdexcept>

namespace gateway {

namespace {

constexpr size_t k_max_request = 1024;

}  // namespace

struct ControlServer::Conn {
    uv_pipe_t pipe{};
    ControlServer* owner = nullptr;
    std::string in;
    std::string out;
    uv_write_t write{};
    bool answered = false;
    bool replied = false;
    std::shared_ptr<bool> open = std::make_shared<bool>(true);  // false once closing: a late reply is dropped

    void close() {
        *open = false;
        owner->m_conns.erase(this);
        uv_close(reinterpret_cast<uv_handle_t*>(&pipe), [](uv_handle_t* h) { delete static_cast<Conn*>(h->data); });
    }
};

ControlServer::ControlServer(uv_loop_t* loop, std::string path, Handler handle)
    : m_loop(loop), m_path(std::move(path)), m_handle(std::move(handle)) {}

ControlServer::~ControlServer() = default;

void ControlServer::start() {
    // A socket left by a gateway that died is in the way; the spool lock already ensures that no
    // other gateway uses this spool.
    struct stat st {};
    if (lstat(m_path.c_str(), &st) == 0 && S_ISSOCK(st.st_mode)) ::unlink(m_path.c_str());
    m_pipe = new uv_pipe_t;
    uv_pipe_init(m_loop, m_pipe, 0);
    m_pipe->data = this;
    int r = uv_pipe_bind(m_pipe, m_path.c_str());
    if (r == 0) r = uv_listen(reinterpret_cast<uv_stream_t*>(m_pipe), 16, &ControlServer::on_connection);
    if (r == 0 && chmod(m_path.c_str(), 0660) != 0) r = uv_translate_sys_error(errno);
    if (r != 0) {
        uv_close(reinterpret_cast<uv_handle_t*>(m_pipe),
                 [](uv_handle_t* h) { delete reinterpret_cast<uv_pipe_t*>(h); });
        m_pipe = nullptr;
        throw std::runtime_error("control socket " + m_path + ": " + uv_strerror(r));
    }
}

void ControlServer::close() {
    auto conns = m_conns;
    for (Conn* c : conns)
        c->close();
    if (m_pipe) {
        uv_close(reinterpret_cast<uv_handle_t*>(m_pipe),
                 [](uv_handle_t* h) { delete reinterpret_cast<uv_pipe_t*>(h); });
        m_pipe = nullptr;
        ::unlink(m_path.c_str());
    }
}

void ControlServer::on_connection(uv_stream_t* server, int status) {
    auto* self = static_cast<ControlServer*>(server->data);
    if (status != 0) return;
    auto* c = new Conn;
    c->owner = self;
    uv_pipe_init(self->m_loop, &c->pipe, 0);
    c->pipe.data = c;
    if (uv_accept(server, reinterpret_cast<uv_stream_t*>(&c->pipe)) != 0) {
        uv_close(reinterpret_cast<uv_handle_t*>(&c->pipe), [](uv_handle_t* h) { delete static_cast<Conn*>(h->data); });
        return;
    }
    self->m_conns.insert(c);
    uv_read_start(
        reinterpret_cast<uv_stream_t*>(&c->pipe),
        [](uv_handle_t*, size_t, uv_buf_t* buf) {
            static char storage[k_max_request];
            *buf = uv_buf_init(storage, sizeof storage);
        },
        [](uv_stream_t* s, ssize_t n, const uv_buf_t* buf) {
            auto* c = static_cast<Conn*>(s->data);
            if (c->answered) return;
            if (n < 0) return c->close();
            c->in.append(buf->base, size_t(n));
            auto nl = c->in.find('\n');
            if (nl == std::string::npos && c->in.size() < k_max_request) return;
            std::string request = c->in.substr(0, nl == std::string::npos ? k_max_request : nl);
            if (!request.empty() && request.back() == '\r') request.pop_back();
            c->answered = true;
            uv_read_stop(s);
            Reply reply = [c, open = c->open](std::string answer) {
                if (!*open || c->replied) return;
                c->replied = true;
                c->out = std::move(answer);
                uv_buf_t out = uv_buf_init(c->out.data(), unsigned(c->out.size()));
                c->write.data = c;
                uv_write(&c->write, reinterpret_cast<uv_stream_t*>(&c->pipe), &out, 1,
                         [](uv_write_t* w, int) { static_cast<Conn*>(w->data)->close(); });
            };
            if (nl == std::string::npos) return reply("error: request too long\n");
            c->owner->m_handle(request, std::move(reply));
        });
}

bool control_request(const std::string& path, const std::string& request, std::string& answer, std::string& error) {
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    if (path.size() >= sizeof addr.sun_path) {
        error = "control socket path too long: " + path;
        return false;
    }
    std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
        error = "cannot connect to " + path + ": " + std::strerror(errno);
        if (fd >= 0) ::close(fd);
        return false;
    }
    std::string line = request + "\n";
    bool ok = ::write(fd, line.data(), line.size()) == ssize_t(line.size());
    char buf[4096];
    ssize_t n;
    while (ok && (n = ::read(fd, buf, sizeof buf)) > 0)
        answer.append(buf, size_t(n));
    if (!ok) error = "cannot send to " + path + ": " + std::strerror(errno);
    ::close(fd);
    return ok;
}

}  // namespace gateway
