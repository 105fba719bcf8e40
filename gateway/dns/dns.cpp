#include "gateway/dns/dns.hpp"

#include <ares.h>
#include <arpa/inet.h>

#include <algorithm>
#include <cstring>
#include <mutex>
#include <stdexcept>

namespace gateway::dns {

namespace {

constexpr int k_class_in = 1;
constexpr int k_type_a = 1;
constexpr int k_type_mx = 15;
constexpr int k_type_aaaa = 28;
constexpr int k_type_ptr = 12;
constexpr int k_type_txt = 16;

Status to_status(int ares_status) {
    switch (ares_status) {
    case ARES_SUCCESS: return Status::Ok;
    case ARES_ENODATA: return Status::NoData;
    case ARES_ENOTFOUND: return Status::NotFound;
    default: return Status::TempFail;  // SERVFAIL, REFUSED, timeouts, bad replies, shutdown
    }
}

ares_channel channel_of(void* p) { return static_cast<ares_channel>(p); }

// "127.0.0.1:5353,[::1]:53" for ares_set_servers_ports_csv
std::string server_list(const std::vector<conf::HostPort>& servers) {
    std::string csv;
    for (const auto& s : servers) {
        if (!csv.empty()) csv += ",";
        bool v6 = s.host.find(':') != std::string::npos;
        csv += (v6 ? "[" + s.host + "]" : s.host) + ":" + std::to_string(s.port);
    }
    return csv;
}

}  // namespace

std::string library_version() { return ares_version(nullptr); }

const char* status_text(Status s) {
    switch (s) {
    case Status::Ok: return "Success";
    case Status::NoData: return "Host found but no data record of requested type";
    case Status::NotFound: return "Host not found";
    case Status::TempFail: return "Host not found, try again";
    }
    return "?";
}

struct Resolver::Poll {
    uv_poll_t handle;
    Resolver* owner;
    int fd;
};

Resolver::Resolver(uv_loop_t* loop, const conf::Dns& config) : m_loop(loop) {
    const auto& servers = config.servers;
    static std::once_flag library;
    std::call_once(library, [] { ares_library_init(ARES_LIB_INIT_ALL); });
    ares_options options{};
    options.sock_state_cb = &Resolver::on_sock_state;
    options.sock_state_cb_data = this;
    options.timeout = int(config.timeout.count() * 1000);  // per try, milliseconds
    options.tries = int(config.attempts);
    options.flags = ARES_FLAG_NOSEARCH;  // names are always fully qualified here
    ares_channel channel = nullptr;
    int r = ares_init_options(&channel, &options,
                              ARES_OPT_SOCK_STATE_CB | ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES | ARES_OPT_FLAGS);
    if (r != ARES_SUCCESS) throw std::runtime_error(std::string("DNS resolver: ") + ares_strerror(r));
    m_channel = channel;
    if (!servers.empty()) {
        r = ares_set_servers_ports_csv(channel, server_list(servers).c_str());
        if (r != ARES_SUCCESS) {
            ares_destroy(channel);
            m_channel = nullptr;
            throw std::runtime_error(std::string("DNS servers: ") + ares_strerror(r));
        }
    }
    m_timer = new uv_timer_t;
    uv_timer_init(loop, m_timer);
    m_timer->data = this;
}

Resolver::~Resolver() { close(); }

void Resolver::close() {
    if (m_closed) return;
    m_closed = true;
    // Stop watching the sockets while they are still open; then let c-ares close them.
    for (auto& [fd, poll] : m_polls)
        uv_close(reinterpret_cast<uv_handle_t*>(&poll->handle),
                 [](uv_handle_t* h) { delete reinterpret_cast<Poll*>(h); });
    m_polls.clear();
    if (m_channel) ares_destroy(channel_of(m_channel));  // runs pending callbacks (TempFail)
    m_channel = nullptr;
    if (m_timer)
        uv_close(reinterpret_cast<uv_handle_t*>(m_timer),
                 [](uv_handle_t* h) { delete reinterpret_cast<uv_timer_t*>(h); });
    m_timer = nullptr;
}

void Resolver::on_sock_state(void* data, int fd, int readable, int writable) {
    auto* self = static_cast<Resolver*>(data);
    if (self->m_closed) return;
    auto it = self->m_polls.find(fd);
    if (!readable && !writable) {
        if (it != self->m_polls.end()) {
            uv_close(reinterpret_cast<uv_handle_t*>(&it->second->handle),
                     [](uv_handle_t* h) { delete reinterpret_cast<Poll*>(h); });
            self->m_polls.erase(it);
        }
        return;
    }
    Poll* poll;
    if (it == self->m_polls.end()) {
        poll = new Poll{{}, self, fd};
        uv_poll_init_socket(self->m_loop, &poll->handle, fd);
        poll->handle.data = poll;
        self->m_polls[fd] = poll;
    } else {
        poll = it->second;
    }
    int events = (readable ? UV_READABLE : 0) | (writable ? UV_WRITABLE : 0);
    uv_poll_start(&poll->handle, events, [](uv_poll_t* h, int status, int ev) {
        auto* p = static_cast<Poll*>(h->data);
        int fd = p->fd;
        // On a poll error let c-ares find out by reading: it closes and retries.
        bool r = status < 0 || (ev & UV_READABLE), w = status == 0 && (ev & UV_WRITABLE);
        p->owner->process(r ? fd : ARES_SOCKET_BAD, w ? fd : ARES_SOCKET_BAD);
    });
}

void Resolver::process(int read_fd, int write_fd) {
    if (!m_channel) return;
    ares_process_fd(channel_of(m_channel), read_fd, write_fd);
    arm_timer();
}

void Resolver::arm_timer() {
    if (!m_channel || !m_timer) return;
    timeval tv{};
    timeval* t = ares_timeout(channel_of(m_channel), nullptr, &tv);
    if (!t) {
        uv_timer_stop(m_timer);
        return;
    }
    uint64_t ms = uint64_t(t->tv_sec) * 1000 + uint64_t(t->tv_usec) / 1000 + 1;
    uv_timer_start(
        m_timer, [](uv_timer_t* h) { static_cast<Resolver*>(h->data)->process(ARES_SOCKET_BAD, ARES_SOCKET_BAD); }, ms,
        0);
}

void Resolver::query(const std::string& name, int type, std::function<void(int, const unsigned char*, int)> done) {
    if (!m_channel) return done(ARES_EDESTRUCTION, nullptr, 0);
    auto* cb = new std::function<void(int, const unsigned char*, int)>(std::move(done));
    ares_query(
        channel_of(m_channel), name.c_str(), k_class_in, type,
        [](void* arg, int status, int, unsigned char* abuf, int alen) {
            std::unique_ptr<std::function<void(int, const unsigned char*, int)>> f(
                static_cast<std::function<void(int, const unsigned char*, int)>*>(arg));
            (*f)(status, abuf, alen);
        },
        cb);
    arm_timer();
}

void Resolver::mx(const std::string& name, MxCallback done) {
    query(name, k_type_mx, [done = std::move(done)](int status, const unsigned char* abuf, int alen) {
        std::vector<MxRecord> out;
        if (status != ARES_SUCCESS) return done(to_status(status), out);
        ares_mx_reply* mx = nullptr;
        int r = ares_parse_mx_reply(abuf, alen, &mx);
        if (r != ARES_SUCCESS) return done(r == ARES_ENODATA ? Status::NoData : Status::TempFail, out);
        for (auto* m = mx; m; m = m->next) {
            std::string host = m->host ? m->host : "";
            if (host == ".") host.clear();
            out.push_back({m->priority, host});
        }
        ares_free_data(mx);
        Status result = out.empty() ? Status::NoData : Status::Ok;  // before `out` is moved
        done(result, std::move(out));
    });
}

void Resolver::a(const std::string& name, AddressCallback done) {
    query(name, k_type_a, [done = std::move(done)](int status, const unsigned char* abuf, int alen) {
        std::vector<conf::IpAddress> out;
        if (status == ARES_SUCCESS) {
            ares_addrttl ttls[32];
            int n = 32;
            hostent* host = nullptr;
            if (ares_parse_a_reply(abuf, alen, &host, ttls, &n) == ARES_SUCCESS) {
                for (int i = 0; i < n; ++i) {
                    conf::IpAddress a;
                    std::memcpy(a.bytes.data(), &ttls[i].ipaddr, 4);
                    out.push_back(a);
                }
            }
            if (host) ares_free_hostent(host);
        }
        Status result = status == ARES_SUCCESS && out.empty() ? Status::NoData : to_status(status);
        done(result, std::move(out));
    });
}

void Resolver::aaaa(const std::string& name, AddressCallback done) {
    query(name, k_type_aaaa, [done = std::move(done)](int status, const unsigned char* abuf, int alen) {
        std::vector<conf::IpAddress> out;
        if (status == ARES_SUCCESS) {
            ares_addr6ttl ttls[32];
            int n = 32;
            hostent* host = nullptr;
            if (ares_parse_aaaa_reply(abuf, alen, &host, ttls, &n) == ARES_SUCCESS) {
                for (int i = 0; i < n; ++i) {
                    conf::IpAddress a;
                    a.v6 = true;
                    std::memcpy(a.bytes.data(), &ttls[i].ip6addr, 16);
                    out.push_back(a);
                }
            }
            if (host) ares_free_hostent(host);
        }
        Status result = status == ARES_SUCCESS && out.empty() ? Status::NoData : to_status(status);
        done(result, std::move(out));
    });
}

void Resolver::addresses(const std::string& name, AddressCallback done) {
    struct Pending {
        AddressCallback done;
        int outstanding = 2;
        Status v4 = Status::TempFail, v6 = Status::TempFail;
        std::vector<conf::IpAddress> a, aaaa;
    };
    auto p = std::make_shared<Pending>();
    p->done = std::move(done);
    auto finish = [p] {
        if (--p->outstanding > 0) return;
        std::vector<conf::IpAddress> all = p->a;
        all.insert(all.end(), p->aaaa.begin(), p->aaaa.end());
        Status s;
        if (!all.empty())
            s = Status::Ok;
        else if (p->v4 == Status::TempFail || p->v6 == Status::TempFail)
            s = Status::TempFail;
        else if (p->v4 == Status::NotFound || p->v6 == Status::NotFound)
            s = Status::NotFound;
        else
            s = Status::NoData;
        p->done(s, std::move(all));
    };
    a(name, [p, finish](Status s, std::vector<conf::IpAddress> list) {
        p->v4 = s;
        p->a = std::move(list);
        finish();
    });
    aaaa(name, [p, finish](Status s, std::vector<conf::IpAddress> list) {
        p->v6 = s;
        p->aaaa = std::move(list);
        finish();
    });
}

void Resolver::txt(const std::string& name, TextCallback done) {
    query(name, k_type_txt, [done = std::move(done)](int status, const unsigned char* abuf, int alen) {
        std::vector<std::string> out;
        if (status == ARES_SUCCESS) {
            ares_txt_ext* txt = nullptr;
            if (ares_parse_txt_reply_ext(abuf, alen, &txt) == ARES_SUCCESS) {
                for (ares_txt_ext* t = txt; t; t = t->next) {
                    if (t->record_start || out.empty()) out.emplace_back();
                    out.back().append(reinterpret_cast<const char*>(t->txt), t->length);
                }
            }
            if (txt) ares_free_data(txt);
        }
        Status result = status == ARES_SUCCESS && out.empty() ? Status::NoData : to_status(status);
        done(result, std::move(out));
    });
}

void Resolver::ptr(const std::string& name, TextCallback done) {
    query(name, k_type_ptr, [done = std::move(done)](int status, const unsigned char* abuf, int alen) {
        std::vector<std::string> out;
        if (status == ARES_SUCCESS) {
            hostent* host = nullptr;
            unsigned char unused[4] = {};  // c-ares copies the queried address into the hostent
            if (ares_parse_ptr_reply(abuf, alen, unused, sizeof unused, AF_INET, &host) == ARES_SUCCESS && host) {
                if (host->h_name) out.emplace_back(host->h_name);
                for (char** alias = host->h_aliases; alias && *alias; ++alias)
                    out.emplace_back(*alias);
            }
            if (host) ares_free_hostent(host);
        }
        Status result = status == ARES_SUCCESS && out.empty() ? Status::NoData : to_status(status);
        done(result, std::move(out));
    });
}

}  // namespace gateway::dns
