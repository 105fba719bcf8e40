#include "gateway/ops/web_server.hpp"

#include "gateway/common/net.hpp"

#include <microhttpd.h>
#include <sys/socket.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <iterator>
#include <optional>
#include <stdexcept>

namespace gateway {

namespace {

constexpr size_t k_max_body = 64 * 1024;

void put_lower(std::map<std::string, std::string>& m, const char* key, const char* value) {
    std::string k = key ? key : "";
    for (char& ch : k)
        ch = char(std::tolower(static_cast<unsigned char>(ch)));
    m.emplace(std::move(k), value ? value : "");
}

// A PEM file, at most 1 MiB.
bool read_pem(const std::string& path, std::string& out, std::string& error) {
    std::ifstream f(path, std::ios::binary);
    if (!f) {
        error = "cannot read " + path + ": " + std::strerror(errno);
        return false;
    }
    out.assign(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
    if (out.size() > 1024 * 1024 || out.find("-----BEGIN ") == std::string::npos) {
        error = path + " is not a PEM file";
        return false;
    }
    return true;
}

}  // namespace

std::string url_decode(const std::string& s) {
    std::string out;
    for (size_t i = 0; i < s.size(); ++i) {
        if (s[i] == '+') {
            out += ' ';
        } else if (s[i] == '%' && i + 2 < s.size() && std::isxdigit(static_cast<unsigned char>(s[i + 1])) &&
                   std::isxdigit(static_cast<unsigned char>(s[i + 2]))) {
            out += char(std::stoi(s.substr(i + 1, 2), nullptr, 16));
            i += 2;
        } else {
            out += s[i];
        }
    }
    return out;
}

std::map<std::string, std::string> parse_form(const std::string& body) {
    std::map<std::string, std::string> out;
    size_t pos = 0;
    while (pos <= body.size()) {
        size_t amp = body.find('&', pos);
        if (amp == std::string::npos) amp = body.size();
        std::string pair = body.substr(pos, amp - pos);
        if (!pair.empty()) {
            size_t eq = pair.find('=');
            out.emplace(url_decode(pair.substr(0, eq)), eq == std::string::npos ? "" : url_decode(pair.substr(eq + 1)));
        }
        pos = amp + 1;
    }
    return out;
}

struct WebServer::Pending {
    WebServer* server = nullptr;
    MHD_Connection* connection = nullptr;
    std::string body;
    bool too_large = false;
    bool started = false;
    bool suspended = false;
    std::optional<WebResponse> answer;
};

struct WebServer::Tracked {
    MHD_Connection* connection = nullptr;
    uint64_t number = 0;
    bool busy = false;     // a request is under way
    bool evicted = false;  // shut down; MHD closes it next
};

struct WebServer::Glue {
    static MHD_Result queue(MHD_Connection* c, const WebResponse& r) {
        MHD_Response* response =
            MHD_create_response_from_buffer(r.body.size(), const_cast<char*>(r.body.data()), MHD_RESPMEM_MUST_COPY);
        if (!response) return MHD_NO;
        MHD_add_response_header(response, "Content-Type", r.type.c_str());
        for (const auto& [name, value] : r.headers)
            MHD_add_response_header(response, name.c_str(), value.c_str());
        MHD_Result result = MHD_queue_response(c, unsigned(r.status), response);
        MHD_destroy_response(response);
        return result;
    }

    static MHD_Result collect(void* cls, MHD_ValueKind, const char* key, const char* value) {
        put_lower(*static_cast<std::map<std::string, std::string>*>(cls), key, value);
        return MHD_YES;
    }
    static MHD_Result collect_exact(void* cls, MHD_ValueKind, const char* key, const char* value) {
        static_cast<std::map<std::string, std::string>*>(cls)->emplace(key ? key : "", value ? value : "");
        return MHD_YES;
    }

    static MHD_Result request(void* cls, MHD_Connection* c, const char* url, const char* method, const char*,
                              const char* upload, size_t* upload_size, void** state) {
        auto* self = static_cast<WebServer*>(cls);
        auto* p = static_cast<Pending*>(*state);
        if (!p) {  // the head has come; the body, if any, follows
            if (auto* info = MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT))
                if (auto* t = static_cast<Tracked*>(info->socket_context)) t->busy = true;
            p = new Pending;
            p->server = self;
            p->connection = c;
            *state = p;
            return MHD_YES;
        }
        if (*upload_size) {
            if (p->body.size() + *upload_size <= k_max_body)
                p->body.append(upload, *upload_size);
            else
                p->too_large = true;
            *upload_size = 0;
            return MHD_YES;
        }
        if (p->answer) return queue(c, *p->answer);  // resumed with its answer
        if (p->started) return MHD_YES;
        p->started = true;
        WebRequest r;
        r.method = method ? method : "";
        r.path = url ? url : "/";
        if (auto* info = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS))
            if (auto ip = conf::IpAddress::from_sockaddr(info->client_addr)) r.client = ip->to_string();
        MHD_get_connection_values(c, MHD_HEADER_KIND, &Glue::collect, &r.headers);
        MHD_get_connection_values(c, MHD_COOKIE_KIND, &Glue::collect_exact, &r.cookies);
        MHD_get_connection_values(c, MHD_GET_ARGUMENT_KIND, &Glue::collect_exact, &r.query);
        r.body_too_large = p->too_large;
        auto type = r.headers.find("content-type");
        if (!p->too_large && type != r.headers.end() && type->second.rfind("application/x-www-form-urlencoded", 0) == 0)
            r.form = parse_form(p->body);
        std::weak_ptr<bool> alive = self->m_alive;
        self->m_handler(r, [p, self, alive](WebResponse response) {
            if (alive.expired() || p->answer) return;
            p->answer = std::move(response);
            if (!p->suspended) return;  // answered at once: queued below
            p->suspended = false;
            self->m_suspended.erase(p);
            MHD_resume_connection(p->connection);
            uv_timer_start(
                self->m_timer, [](uv_timer_t* t) { static_cast<WebServer*>(t->data)->run(); }, 0, 0);
        });
        if (p->answer) return queue(c, *p->answer);
        p->suspended = true;
        self->m_suspended.insert(p);
        MHD_suspend_connection(c);
        return MHD_YES;
    }

    static void completed(void* cls, MHD_Connection* c, void** state, MHD_RequestTerminationCode) {
        auto* self = static_cast<WebServer*>(cls);
        if (auto* info = MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT))
            if (auto* t = static_cast<Tracked*>(info->socket_context)) t->busy = false;
        auto* p = static_cast<Pending*>(*state);
        if (!p) return;
        self->m_suspended.erase(p);
        delete p;
        *state = nullptr;
    }

    static void connection(void* cls, MHD_Connection* c, void** context, MHD_ConnectionNotificationCode code) {
        auto* self = static_cast<WebServer*>(cls);
        if (code == MHD_CONNECTION_NOTIFY_STARTED) {
            auto* t = new Tracked{c, self->m_next_connection++};
            *context = t;
            self->m_connections[t->number] = t;
            // Full: one place is kept free by closing the oldest idle connection.
            if (self->m_connections.size() >= self->m_limits.connections) self->evict_idle();
        } else if (auto* t = static_cast<Tracked*>(*context)) {
            self->m_connections.erase(t->number);
            delete t;
            *context = nullptr;
            // A place is free: MHD watches its listening socket again only in its next run.
            self->m_run_again = true;
        }
    }
};

void WebServer::evict_idle() {
    for (auto& [number, t] : m_connections) {
        if (t->busy || t->evicted) continue;
        t->evicted = true;
        if (auto* info = MHD_get_connection_info(t->connection, MHD_CONNECTION_INFO_CONNECTION_FD))
            ::shutdown(info->connect_fd, SHUT_RDWR);  // MHD sees the end and closes it
        return;
    }
}

WebServer::WebServer(uv_loop_t* loop, conf::HostPort endpoint, WebHandler handler, WebLimits limits)
    : m_loop(loop), m_endpoint(std::move(endpoint)), m_handler(std::move(handler)), m_limits(limits) {}

WebServer::~WebServer() { close(); }

void WebServer::use_tls(std::string certificate_file, std::string key_file) {
    m_cert_file = std::move(certificate_file);
    m_key_file = std::move(key_file);
}

void WebServer::start() {
    auto addr = to_sockaddr(m_endpoint);
    std::string where = m_endpoint.host + ":" + std::to_string(m_endpoint.port);
    if (!addr) throw std::runtime_error(where + ": not an address to listen on");
    unsigned flags = MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME;
    if (addr->ss_family == AF_INET6) flags |= MHD_USE_IPv6;
    MHD_OptionItem tls[3] = {{MHD_OPTION_END, 0, nullptr}, {MHD_OPTION_END, 0, nullptr}, {MHD_OPTION_END, 0, nullptr}};
    if (!m_cert_file.empty()) {
        if (MHD_is_feature_supported(MHD_FEATURE_TLS) != MHD_YES)
            throw std::runtime_error(where + ": this libmicrohttpd was built without TLS");
        std::string error;
        if (!read_pem(m_cert_file, m_cert_pem, error) || !read_pem(m_key_file, m_key_pem, error))
            throw std::runtime_error(where + ": " + error);
        flags |= MHD_USE_TLS;
        tls[0] = {MHD_OPTION_HTTPS_MEM_CERT, 0, m_cert_pem.data()};
        tls[1] = {MHD_OPTION_HTTPS_MEM_KEY, 0, m_key_pem.data()};
    }
    m_daemon = MHD_start_daemon(flags, m_endpoint.port, nullptr, nullptr, &Glue::request, this, MHD_OPTION_SOCK_ADDR,
                                reinterpret_cast<sockaddr*>(&*addr), MHD_OPTION_CONNECTION_LIMIT, m_limits.connections,
                                MHD_OPTION_PER_IP_CONNECTION_LIMIT, m_limits.per_client, MHD_OPTION_CONNECTION_TIMEOUT,
                                m_limits.timeout_seconds, MHD_OPTION_CONNECTION_MEMORY_LIMIT, size_t(32 * 1024),
                                MHD_OPTION_NOTIFY_COMPLETED, &Glue::completed, this, MHD_OPTION_NOTIFY_CONNECTION,
                                &Glue::connection, this, MHD_OPTION_ARRAY, tls, MHD_OPTION_END);
    // The key is MHD's (GnuTLS's) now: no copy of it stays here.
    std::fill(m_key_pem.begin(), m_key_pem.end(), '\0');
    if (!m_daemon) throw std::runtime_error(where + ": cannot listen (the address is taken or not this machine's)");
    const MHD_DaemonInfo* info = MHD_get_daemon_info(m_daemon, MHD_DAEMON_INFO_EPOLL_FD);
    m_poll = new uv_poll_t;
    m_poll->data = this;
    uv_poll_init(m_loop, m_poll, info->epoll_fd);
    uv_poll_start(m_poll, UV_READABLE, [](uv_poll_t* h, int, int) { static_cast<WebServer*>(h->data)->run(); });
    m_timer = new uv_timer_t;
    uv_timer_init(m_loop, m_timer);
    m_timer->data = this;
    run();
}

void WebServer::run() {
    if (!m_daemon) return;
    m_run_again = false;
    MHD_run(m_daemon);
    MHD_UNSIGNED_LONG_LONG ms = 0;
    if (m_run_again)
        uv_timer_start(
            m_timer, [](uv_timer_t* t) { static_cast<WebServer*>(t->data)->run(); }, 0, 0);
    else if (MHD_get_timeout(m_daemon, &ms) == MHD_YES)
        uv_timer_start(
            m_timer, [](uv_timer_t* t) { static_cast<WebServer*>(t->data)->run(); }, uint64_t(ms), 0);
    else
        uv_timer_stop(m_timer);
}

void WebServer::close() {
    if (!m_daemon) return;
    // Requests still waiting for an answer get one before the daemon goes.
    auto waiting = m_suspended;
    for (Pending* p : waiting) {
        p->answer = WebResponse{503, "text/plain; charset=utf-8", "the gateway is stopping\n", {}};
        p->suspended = false;
        MHD_resume_connection(p->connection);
    }
    m_suspended.clear();
    MHD_run(m_daemon);
    m_alive.reset();
    uv_poll_stop(m_poll);  // before MHD closes the descriptor it watches
    uv_timer_stop(m_timer);
    MHD_stop_daemon(m_daemon);
    m_daemon = nullptr;
    uv_close(reinterpret_cast<uv_handle_t*>(m_poll), [](uv_handle_t* h) { delete reinterpret_cast<uv_poll_t*>(h); });
    uv_close(reinterpret_cast<uv_handle_t*>(m_timer), [](uv_handle_t* h) { delete reinterpret_cast<uv_timer_t*>(h); });
    m_poll = nullptr;
    m_timer = nullptr;
}

}  // namespace gateway
