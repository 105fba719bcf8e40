// smtp-load: the load generator of scripts/bench. Like Postfix's smtp-source (N sessions, M
// messages of S octets, one transaction after another in each session, no pipelining), and it
// also records each message's acceptance latency: from the write of the final "." to the 250
// that answers it. One libuv loop, so that hundreds of sessions cost the generator little.
//
//   smtp-load HOST:PORT [--sessions 20] [--messages 10000] [--size 2000] [--from a@b] [--to c@d]
//             [--sources 127.0.9.] [--rate R]
//
// Without --rate every session sends as fast as the relay answers (a closed loop: the relay's
// capacity). With --rate R the messages are offered at R a second in all (message k is due at
// k/R s; a session waits for its next message's time), so relays of different speed are
// compared on latency under the same load.
//
// Prints one JSON object: messages, errors, seconds, rate, latency p50/p99/max in milliseconds.
// A 4xx to MAIL FROM (a relay's limit of messages per session, such as OpenSMTPD's 100) ends
// the session and the message goes in a new one. Exit 1 when a session fails otherwise (a
// refused connection, any other reply that is not 2xx/354).
#include <uv.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <set>
#include <string>
#include <vector>

namespace {

struct Options {
    std::string host = "127.0.0.1";
    int port = 25;
    unsigned sessions = 20;
    unsigned messages = 10000;
    size_t size = 2000;
    std::string from = "load@source.test", to = "sink@sink.test";
    std::string sources;  // "127.0.9.": session i binds 127.0.9.(1 + i % 250)
    double rate = 0;      // messages a second offered in all; 0: as fast as the relay answers
};

using Clock = std::chrono::steady_clock;

struct Session;

struct Run {
    Options o;
    uv_loop_t* loop = nullptr;
    unsigned started = 0;  // messages handed to sessions
    unsigned done = 0;     // messages acknowledged
    unsigned errors = 0;
    unsigned open = 0;
    std::vector<double> latencies_ms;
    std::vector<unsigned> again;  // messages to send in another session
    unsigned seen = 0;            // `done` at the watchdog's last look
    unsigned idle_seconds = 0;    // looks in a row without progress
    bool stalled = false;
    unsigned reconnects = 0;
    std::set<Session*> ungreeted;  // open, no greeting yet
    unsigned never_served = 0;     // closed at the end of the run without having had a greeting
    std::string body;              // without the final dot
    Clock::time_point start, end;  // end: the last session closed
};

struct Session {
    Run* run = nullptr;
    unsigned index = 0;
    uv_tcp_t tcp{};
    uv_timer_t timer{};  // --rate: until the next message is due
    uv_connect_t connect{};
    std::string in;
    enum class Step { Greeting, Ehlo, Mail, Rcpt, Data, Dot, Quit } step = Step::Greeting;
    Clock::time_point dot_sent;
    unsigned message = 0;
    int handles = 2;  // the socket and the timer, until both are closed
    bool closing = false;
    bool reconnect = false;  // a new session takes over once this one has closed
};

struct Write {
    uv_write_t req;
    std::string data;
};

bool failed_run(const Run* r) { return r->errors > 0; }
void start_session(Run* r, unsigned index);

void send(Session* s, std::string data) {
    auto* w = new Write{{}, std::move(data)};
    uv_buf_t b = uv_buf_init(w->data.data(), unsigned(w->data.size()));
    uv_write(&w->req, reinterpret_cast<uv_stream_t*>(&s->tcp), &b, 1,
             [](uv_write_t* req, int) { delete reinterpret_cast<Write*>(req); });
}

void close_session(Session* s, bool failed) {
    if (s->closing) return;
    s->closing = true;
    if (failed) s->run->errors++;
    if (--s->run->open == 0) s->run->end = Clock::now();
    s->run->ungreeted.erase(s);
    auto closed = [](uv_handle_t* h) {
        auto* s = static_cast<Session*>(h->data);
        if (--s->handles > 0) return;
        if (s->reconnect && !failed_run(s->run)) start_session(s->run, s->index);
        delete s;
    };
    uv_close(reinterpret_cast<uv_handle_t*>(&s->timer), closed);
    uv_close(reinterpret_cast<uv_handle_t*>(&s->tcp), closed);
}

void next_message(Session* s) {
    Run* r = s->run;
    if (r->again.empty() && r->started >= r->o.messages) {
        s->step = Session::Step::Quit;
        return send(s, "QUIT\r\n");
    }
    if (!r->again.empty()) {
        s->message = r->again.back();
        r->again.pop_back();
    } else {
        s->message = r->started++;
    }
    s->step = Session::Step::Mail;
    if (r->o.rate > 0) {
        auto due = r->start + std::chrono::duration_cast<Clock::duration>(
                                  std::chrono::duration<double>(double(s->message) / r->o.rate));
        auto wait = std::chrono::duration_cast<std::chrono::milliseconds>(due - Clock::now()).count();
        if (wait > 0)
            return (void)uv_timer_start(
                &s->timer,
                [](uv_timer_t* t) {
                    auto* s = static_cast<Session*>(t->data);
                    send(s, "MAIL FROM:<" + s->run->o.from + ">\r\n");
                },
                uint64_t(wait), 0);
    }
    send(s, "MAIL FROM:<" + r->o.from + ">\r\n");
}

// One whole reply (its last line) arrived.
void on_reply(Session* s, int code, const std::string& text) {
    Run* r = s->run;
    auto fail = [&] {
        std::fprintf(stderr, "smtp-load: session %u: unexpected reply at step %d: %s\n", s->index, int(s->step),
                     text.c_str());
        close_session(s, true);
    };
    switch (s->step) {
    case Session::Step::Greeting:
        if (code != 220) return fail();
        r->ungreeted.erase(s);
        s->step = Session::Step::Ehlo;
        return send(s, "EHLO load.test\r\n");
    case Session::Step::Ehlo:
        if (code != 250) return fail();
        return next_message(s);
    case Session::Step::Mail:
        if (code >= 400 && code < 500) {  // no more in this session: the message goes in a new one
            r->again.push_back(s->message);
            r->reconnects++;
            s->reconnect = true;
            s->step = Session::Step::Quit;
            return send(s, "QUIT\r\n");
        }
        if (code != 250) return fail();
        s->step = Session::Step::Rcpt;
        return send(s, "RCPT TO:<" + r->o.to + ">\r\n");
    case Session::Step::Rcpt:
        if (code != 250) return fail();
        s->step = Session::Step::Data;
        return send(s, "DATA\r\n");
    case Session::Step::Data: {
        if (code != 354) return fail();
        s->step = Session::Step::Dot;
        char id[64];
        std::snprintf(id, sizeof id, "Message-ID: <%u.load@source.test>\r\n", s->message);
        send(s, id + r->body + ".\r\n");
        s->dot_sent = Clock::now();
        return;
    }
    case Session::Step::Dot:
        if (code != 250) return fail();
        r->latencies_ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - s->dot_sent).count());
        r->done++;
        // Every message is acknowledged: sessions the relay has not greeted yet are not waited
        // for (a relay that greets only so many connections at once is reported, not stalled).
        if (r->done >= r->o.messages && r->again.empty())
            for (auto* waiting : std::set<Session*>(r->ungreeted)) {
                r->never_served++;
                close_session(waiting, false);
            }
        return next_message(s);
    case Session::Step::Quit: return close_session(s, false);
    }
}

void on_read(uv_stream_t* stream, ssize_t n, const uv_buf_t* buf) {
    auto* s = static_cast<Session*>(stream->data);
    if (n > 0) s->in.append(buf->base, size_t(n));
    delete[] buf->base;
    if (n < 0) {
        if (s->step != Session::Step::Quit) std::fprintf(stderr, "smtp-load: session %u: connection lost\n", s->index);
        return close_session(s, s->step != Session::Step::Quit);
    }
    size_t eol;
    while (!s->closing && (eol = s->in.find("\r\n")) != std::string::npos) {
        std::string line = s->in.substr(0, eol);
        s->in.erase(0, eol + 2);
        if (line.size() >= 4 && line[3] == '-') continue;  // a reply goes on
        on_reply(s, std::atoi(line.c_str()), line);
    }
}

void start_session(Run* r, unsigned index) {
    auto* s = new Session;
    s->run = r;
    s->index = index;
    uv_tcp_init(r->loop, &s->tcp);
    uv_timer_init(r->loop, &s->timer);
    s->tcp.data = s;
    s->timer.data = s;
    s->connect.data = s;
    r->open++;
    r->ungreeted.insert(s);
    if (!r->o.sources.empty()) {
        sockaddr_in src{};
        uv_ip4_addr((r->o.sources + std::to_string(1 + index % 250)).c_str(), 0, &src);
        uv_tcp_bind(&s->tcp, reinterpret_cast<const sockaddr*>(&src), 0);
    }
    sockaddr_in dst{};
    uv_ip4_addr(r->o.host.c_str(), r->o.port, &dst);
    uv_tcp_connect(&s->connect, &s->tcp, reinterpret_cast<const sockaddr*>(&dst), [](uv_connect_t* c, int status) {
        auto* s = static_cast<Session*>(c->data);
        if (status != 0) {
            std::fprintf(stderr, "smtp-load: session %u: %s\n", s->index, uv_strerror(status));
            return close_session(s, true);
        }
        uv_tcp_nodelay(&s->tcp, 1);
        uv_read_start(
            reinterpret_cast<uv_stream_t*>(&s->tcp),
            [](uv_handle_t*, size_t size, uv_buf_t* b) { *b = uv_buf_init(new char[size], unsigned(size)); }, on_read);
    });
}

double percentile(std::vector<double>& v, double p) {
    if (v.empty()) return 0;
    size_t k = std::min(v.size() - 1, size_t(p * double(v.size())));
    std::nth_element(v.begin(), v.begin() + long(k), v.end());
    return v[k];
}

}  // namespace

int main(int argc, char** argv) {
    Run r;
    for (int i = 1; i < argc; ++i) {
        std::string a = argv[i];
        auto value = [&]() -> std::string {
            if (i + 1 >= argc) std::exit((std::fprintf(stderr, "smtp-load: %s needs a value\n", a.c_str()), 2));
            return argv[++i];
        };
        if (a == "--sessions")
            r.o.sessions = unsigned(std::stoul(value()));
        else if (a == "--messages")
            r.o.messages = unsigned(std::stoul(value()));
        else if (a == "--size")
            r.o.size = std::stoul(value());
        else if (a == "--from")
            r.o.from = value();
        else if (a == "--to")
            r.o.to = value();
        else if (a == "--sources")
            r.o.sources = value();
        else if (a == "--rate")
            r.o.rate = std::stod(value());
        else if (a.find(':') != std::string::npos && a[0] != '-') {
            r.o.host = a.substr(0, a.rfind(':'));
            r.o.port = std::atoi(a.substr(a.rfind(':') + 1).c_str());
        } else {
            std::fprintf(stderr,
                         "usage: smtp-load HOST:PORT [--sessions N] [--messages M] [--size OCTETS] "
                         "[--from ADDR] [--to ADDR] [--sources 127.0.9.] [--rate R]\n");
            return 2;
        }
    }
    std::string head = "From: <" + r.o.from + ">\r\nTo: <" + r.o.to + ">\r\nSubject: load\r\n\r\n";
    r.body = head;
    const std::string line(76, 'x');
    while (r.body.size() + line.size() + 2 < std::max(r.o.size, head.size() + 80))
        r.body += line + "\r\n";
    r.latencies_ms.reserve(r.o.messages);
    uv_loop_t loop;
    uv_loop_init(&loop);
    r.loop = &loop;
    auto start = Clock::now();
    r.start = start;
    for (unsigned i = 0; i < r.o.sessions; ++i)
        start_session(&r, i);
    // A relay that stops answering ends the run after 60 s without a message acknowledged.
    uv_timer_t watchdog;
    uv_timer_init(&loop, &watchdog);
    watchdog.data = &r;
    uv_timer_start(
        &watchdog,
        [](uv_timer_t* t) {
            auto* r = static_cast<Run*>(t->data);
            r->idle_seconds = r->done == r->seen ? r->idle_seconds + 1 : 0;
            r->seen = r->done;
            if (r->idle_seconds < 60) return;
            std::fprintf(stderr, "smtp-load: no message acknowledged for 60 s (%u sessions open)\n", r->open);
            r->stalled = true;
            uv_stop(r->loop);
        },
        1000, 1000);
    uv_unref(reinterpret_cast<uv_handle_t*>(&watchdog));  // the sessions keep the loop running, not it
    uv_run(&loop, UV_RUN_DEFAULT);
    double seconds = std::chrono::duration<double>((r.open == 0 ? r.end : Clock::now()) - start).count();
    if (r.stalled) {  // the sockets go with the process
        std::printf("{\"messages\":%u,\"errors\":%u,\"stalled\":true}\n", r.done, r.errors + 1);
        return 1;
    }
    uv_close(reinterpret_cast<uv_handle_t*>(&watchdog), nullptr);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    double p50 = percentile(r.latencies_ms, 0.50), p99 = percentile(r.latencies_ms, 0.99);
    double max = r.latencies_ms.empty() ? 0 : *std::max_element(r.latencies_ms.begin(), r.latencies_ms.end());
    std::printf(
        "{\"messages\":%u,\"errors\":%u,\"reconnects\":%u,\"never_greeted\":%u,\"seconds\":%.3f,\"rate\":%.1f,"
        "\"p50_ms\":%.3f,\"p99_ms\":%.3f,\"max_ms\":%.3f}\n",
        r.done, r.errors, r.reconnects, r.never_served, seconds, double(r.done) / seconds, p50, p99, max);
    return r.errors || r.done < r.o.messages ? 1 : 0;
}
