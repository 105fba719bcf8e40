#include "gateway/delivery_session.hpp"

#include "gateway/log.hpp"
#include "gateway/net.hpp"

#include <algorithm>
#include <chrono>
#include <cstring>

namespace gateway {

namespace {

constexpr size_t k_content_chunk = 256 * 1024;
constexpr size_t k_write_backlog_limit = 1024 * 1024;

template <typename F>
void guarded(const std::shared_ptr<DeliverySession>& s, F&& f) {
    try {
        f();
    } catch (const std::exception& e) {
        log::error(log::Component::Smtp, std::string("delivery session failed: ") + e.what());
        s->abort();
    }
}

}  // namespace

struct DeliverySession::Socket {
    uv_tcp_t tcp{};
    uv_connect_t connect{};
    std::weak_ptr<DeliverySession> owner;
};

DeliverySession::DeliverySession(SessionContext ctx, Destination destination)
    : m_ctx(std::move(ctx)), m_destination(std::move(destination)) {}

DeliverySession::~DeliverySession() = default;

int64_t DeliverySession::now_us() const {
    using namespace std::chrono;
    return duration_cast<microseconds>(system_clock::now().time_since_epoch()).count();
}

std::string DeliverySession::host_label() const {
    const auto& h = m_hops.at(m_hop);
    return h.host + "[" + h.address.to_string() + "]";
}

void DeliverySession::start() {
    m_start_us = m_setup_us = now_us();
    m_timer = new uv_timer_t;
    uv_timer_init(m_ctx.loop, m_timer);
    m_timer->data = nullptr;
    std::weak_ptr<DeliverySession> weak = shared_from_this();
    auto done = [weak](HopList hops) {
        if (auto s = weak.lock(); s && !s->m_ended) guarded(s, [&] { s->on_hops(std::move(hops)); });
    };
    if (m_destination.kind == Destination::Kind::Direct)
        m_ctx.hops->direct(m_destination.domain, m_destination.port, done);
    else
        m_ctx.hops->upstream(m_destination.upstream.host, m_destination.port, done);
}

void DeliverySession::on_hops(HopList list) {
    if (list.outcome != HopList::Outcome::Ok) {
        DestinationFailure f;
        f.outcome = list.outcome == HopList::Outcome::Bounce ? DestinationFailure::Outcome::Bounce
                                                             : DestinationFailure::Outcome::Defer;
        f.dsn = list.dsn;
        f.reason = list.reason;
        f.site_failure = f.outcome == DestinationFailure::Outcome::Defer;
        auto self = shared_from_this();
        m_ctx.owner->destination_failed(m_destination.key(), f);
        return end();
    }
    m_hops = std::move(list.hops);
    m_hop = 0;
    connect_next();
}

void DeliverySession::connect_next() {
    if (m_hop >= m_hops.size()) {
        // Every address has been tried.
        Failure last = m_last_failure.value_or(Failure{"4.4.1", "no address could be reached", "none", true});
        if (m_job) {
            for (size_t i : m_pending) {
                const Failure& f = m_carried.count(i) ? m_carried[i] : last;
                RecipientResult r;
                r.index = i;
                r.status = RcptStatus::Deferred;
                r.dsn = f.dsn;
                r.reason = f.reason;
                r.relay = f.relay;
                r.site_failure = f.site;
                m_results.push_back(r);
            }
            m_pending.clear();
            complete_job();
        } else if (!m_ever_ready) {
            DestinationFailure d;
            d.dsn = last.dsn;
            d.reason = last.reason;
            d.relay = last.relay;
            auto self = shared_from_this();
            m_ctx.owner->destination_failed(m_destination.key(), d);
        }
        return end();
    }
    const NextHop& hop = m_hops[m_hop];
    auto addr = to_sockaddr({hop.address.to_string(), hop.port});
    m_socket = new Socket;
    m_socket->owner = shared_from_this();
    uv_tcp_init(m_ctx.loop, &m_socket->tcp);
    m_socket->tcp.data = m_socket;
    m_socket->connect.data = m_socket;
    int r = uv_tcp_connect(&m_socket->connect, &m_socket->tcp, reinterpret_cast<const sockaddr*>(&*addr),
                           [](uv_connect_t* req, int status) {
                               auto* sock = static_cast<Socket*>(req->data);
                               if (auto s = sock->owner.lock(); s && s->m_socket == sock)
                                   guarded(s, [&] { s->on_connected(status); });
                           });
    if (r != 0) return on_connected(r);
    uv_timer_start(
        m_timer,
        [](uv_timer_t* t) {
            auto* s = static_cast<DeliverySession*>(t->data);
            if (s) guarded(s->shared_from_this(), [&] { s->on_timeout(); });
        },
        uint64_t(m_ctx.config->delivery.timeouts.connect.count()) * 1000, 0);
    m_timer->data = this;
}

void DeliverySession::on_connected(int status) {
    uv_timer_stop(m_timer);
    const NextHop& hop = m_hops[m_hop];
    if (status != 0) {
        m_last_failure = Failure{"4.4.1", "connect to " + hop.label() + ": " + uv_text(status), "none", true};
        for (size_t i : m_pending)
            carry(i, *m_last_failure);
        close_socket();
        m_hop++;
        return connect_next();
    }
    m_connected = true;
    m_client = std::make_unique<SmtpClient>(ClientSettings{m_ctx.config->hostname, m_ctx.config->delivery.line_length});
    uv_tcp_nodelay(&m_socket->tcp, 1);
    uv_read_start(
        reinterpret_cast<uv_stream_t*>(&m_socket->tcp),
        [](uv_handle_t*, size_t, uv_buf_t* buf) {
            static char buffer[64 * 1024];
            *buf = uv_buf_init(buffer, sizeof buffer);
        },
        [](uv_stream_t* stream, ssize_t nread, const uv_buf_t* buf) {
            auto* sock = static_cast<Socket*>(stream->data);
            if (auto s = sock->owner.lock(); s && s->m_socket == sock) guarded(s, [&] { s->on_read(nread, buf); });
        });
    arm_timer();
}

void DeliverySession::on_read(ssize_t nread, const uv_buf_t* buf) {
    if (nread == 0) return;
    if (nread < 0) {
        if (m_quitting || (m_idle && !m_job)) return end();
        return connection_lost("lost connection with " + host_label() + " while " + while_text(m_client->stage()));
    }
    m_client->feed(std::string_view(buf->base, size_t(nread)));
    handle_events();
    if (m_ended || !m_client) return;
    send_output();
    arm_timer();
}

void DeliverySession::handle_events() {
    for (auto& ev : m_client->take_events()) {
        if (m_ended || !m_client) return;
        std::string label = host_label();
        switch (ev.kind) {
        case ClientEvent::Kind::Ready: on_ready(); break;
        case ClientEvent::Kind::SiteFailed: {
            if (m_quitting) return end();
            std::string dsn = reply_dsn(ev.reply);
            std::string reason;
            if (ev.stage == ClientStage::Greeting) {
                reason = "host " + label + " refused to talk to me: " + ev.reply.text();
                dsn[0] = '4';  // Postfix's smtp_skip_5xx_greeting: try elsewhere, later
            } else {
                reason = said_reason(label, ev.reply, in_reply_to(ev.stage));
            }
            m_last_failure = Failure{dsn, reason, m_hops[m_hop].label(), true};
            for (size_t i : m_pending)
                carry(i, *m_last_failure);
            close_socket();
            m_hop++;
            return connect_next();
        }
        case ClientEvent::Kind::RecipientDone: {
            size_t index = m_pending.at(ev.index);
            if (ev.reply.ok())
                m_rcpt_ok[ev.index] = ev.reply;
            else if (!ev.reply.transient())
                record(index, RcptStatus::Bounced, reply_dsn(ev.reply),
                       said_reason(label, ev.reply, "RCPT TO command"));
            else
                m_soft[ev.index] = Failure{reply_dsn(ev.reply), said_reason(label, ev.reply, "RCPT TO command"),
                                           m_hops[m_hop].label(), false};
            break;
        }
        case ClientEvent::Kind::NeedContent:
            m_content_offset = 0;
            m_content_done = false;
            read_content();
            break;
        case ClientEvent::Kind::MessageSent: finish_job_on_this_hop(&ev.reply, ev.stage, true); break;
        case ClientEvent::Kind::MessageFailed: finish_job_on_this_hop(&ev.reply, ev.stage, false); break;
        case ClientEvent::Kind::ProtocolError:
            return connection_lost("protocol error with " + label + " while " + while_text(ev.stage) + ": " +
                                   ev.detail);
        }
    }
    if (m_quitting && m_client && m_client->stage() == ClientStage::Closed) end();
}

void DeliverySession::record(size_t index, RcptStatus status, const std::string& dsn, const std::string& reason) {
    RecipientResult r;
    r.index = index;
    r.status = status;
    r.dsn = dsn;
    r.reason = reason;
    r.relay = m_hops[m_hop].label();
    m_results.push_back(r);
    m_resolved.insert(index);
}

void DeliverySession::on_ready() {
    m_ever_ready = true;
    if (!m_ready_us) m_ready_us = now_us();
    if (m_job && m_job_sent) {
        // The transaction is over but some recipients want the next address.
        close_socket();
        m_hop++;
        return connect_next();
    }
    if (m_job) return send_job();
    auto job = m_ctx.owner->take_job(this);
    if (job) return begin_job(std::move(*job));
    m_idle = true;
    m_ctx.owner->session_idle(this, true);
    arm_timer();
}

void DeliverySession::assign(DeliveryJob job) {
    m_idle = false;
    begin_job(std::move(job));
    send_output();
    arm_timer();
}

void DeliverySession::begin_job(DeliveryJob job) {
    int64_t now = now_us();
    // Connection setup counts for this job when the connection was made while it waited.
    int64_t setup_from = std::max(m_setup_us, job.queued_us);
    m_job_setup = m_ready_us > setup_from ? double(m_ready_us - setup_from) / 1e6 : 0;
    m_job = std::move(job);
    m_pending = m_job->recipients;
    m_results.clear();
    m_resolved.clear();
    m_job_start_us = now;
    send_job();
}

void DeliverySession::send_job() {
    const Envelope* e = m_ctx.owner->envelope(m_job->message_id);
    m_job_sent = true;
    if (!e) {  // deleted meanwhile
        m_pending.clear();
        return complete_job();
    }
    const auto& caps = m_client->capabilities();
    std::string label = host_label();
    auto fail_all = [&](const char* dsn, const std::string& reason) {
        for (size_t i : m_pending)
            record(i, RcptStatus::Bounced, dsn, reason);
        m_pending.clear();
        complete_job();
        m_job_sent = false;
        on_ready();
    };
    if (caps.size > 0 && e->size > caps.size)  // RFC 1870 4
        return fail_all("5.3.4", "message size " + std::to_string(e->size) + " exceeds size limit " +
                                     std::to_string(caps.size) + " of server " + label);
    if (e->smtputf8 && !caps.smtputf8)  // RFC 6531 3.5
        return fail_all("5.6.7", "SMTPUTF8 is required, but was not offered by host " + label);
    OutgoingMessage m;
    m.sender = e->sender;
    for (size_t i : m_pending)
        m.recipients.push_back(e->recipients.at(i).address);
    m.size = e->size;
    m.body = e->body;
    m.smtputf8 = e->smtputf8;
    m_rcpt_ok.assign(m_pending.size(), std::nullopt);
    m_soft.assign(m_pending.size(), std::nullopt);
    m_client->send_message(m);
}

void DeliverySession::finish_job_on_this_hop(const ServerReply* reply, ClientStage stage, bool sent) {
    std::string label = host_label();
    std::vector<size_t> next;  // recipients for the next address
    for (size_t k = 0; k < m_pending.size(); ++k) {
        size_t index = m_pending[k];
        if (m_resolved.count(index)) continue;
        if (m_soft[k]) {
            next.push_back(index);
            carry(index, *m_soft[k]);
            continue;
        }
        if (sent && m_rcpt_ok[k]) {
            record(index, RcptStatus::Sent, reply_dsn(*reply), reply->text());
            continue;
        }
        if (sent) continue;
        // The transaction failed for every recipient still open.
        std::string reason = said_reason(label, *reply, in_reply_to(stage));
        if (reply->transient()) {
            next.push_back(index);
            carry(index, Failure{reply_dsn(*reply), reason, m_hops[m_hop].label(), false});
        } else {
            record(index, RcptStatus::Bounced, reply_dsn(*reply), reason);
        }
    }
    m_pending = next;
    if (m_pending.empty()) {
        complete_job();
        m_job_sent = false;
    }
    // The client emits Ready next: on_ready() takes the next job or moves to the next address.
}

void DeliverySession::carry(size_t index, const Failure& f) { m_carried[index] = f; }

void DeliverySession::complete_job() {
    if (!m_job) return;
    int64_t now = now_us();
    JobResult r;
    r.job = std::move(*m_job);
    r.results = std::move(m_results);
    const Envelope* e = m_ctx.owner->envelope(r.job.message_id);
    int64_t arrival = e ? e->arrival_us : r.job.activated_us;
    r.delays.before_active = double(r.job.activated_us - arrival) / 1e6;
    r.delays.setup = m_job_setup;
    r.delays.in_queue = std::max(0.0, double(m_job_start_us - r.job.activated_us) / 1e6 - m_job_setup);
    r.delays.transfer = double(now - m_job_start_us) / 1e6;
    m_job.reset();
    m_results.clear();
    m_resolved.clear();
    m_carried.clear();
    m_ctx.owner->job_done(m_destination.key(), std::move(r));
}

void DeliverySession::read_content() {
    if (m_reading_content || m_content_done || !m_job || m_write_backlog > k_write_backlog_limit) return;
    if (m_content_offset == 0) {
        if (auto cached = m_ctx.owner->content(m_job->message_id)) return on_content(0, *cached);
    }
    m_reading_content = true;
    std::weak_ptr<DeliverySession> weak = shared_from_this();
    uint64_t generation = m_generation;
    const Envelope* e = m_ctx.owner->envelope(m_job->message_id);
    m_ctx.spool->read(m_job->message_id, e ? e->size : 0, m_content_offset, k_content_chunk,
                      [weak, generation](int err, std::string data) {
                          auto s = weak.lock();
                          if (!s || s->m_ended || s->m_generation != generation) return;
                          guarded(s, [&] { s->on_content(err, data); });
                      });
}

void DeliverySession::on_content(int err, const std::string& data) {
    m_reading_content = false;
    if (!m_client || !m_job) return;
    if (err) {
        // Postfix: "local data error while talking to HOST": nothing is the server's fault.
        std::string reason =
            "local data error while talking to " + host_label() + ": cannot read queue file: " + std::strerror(err);
        for (size_t i : m_pending)
            if (!m_resolved.count(i)) record(i, RcptStatus::Deferred, "4.3.0", reason);
        m_pending.clear();
        complete_job();
        return end();
    }
    const Envelope* e = m_ctx.owner->envelope(m_job->message_id);
    bool last = !e || m_content_offset + data.size() >= e->size;
    m_client->send_content(data);
    m_content_offset += data.size();
    if (last) {
        m_client->end_content();
        m_content_done = true;
    }
    send_output();
    arm_timer();
    read_content();
}

void DeliverySession::send_output() {
    if (!m_client || !m_socket) return;
    std::string out = m_client->take_output();
    if (out.empty()) return;
    struct Write {
        uv_write_t req;
        std::string data;
        std::weak_ptr<DeliverySession> owner;
        uint64_t generation;
    };
    auto* w = new Write{{}, std::move(out), shared_from_this(), m_generation};
    w->req.data = w;
    m_write_backlog += w->data.size();
    uv_buf_t b = uv_buf_init(w->data.data(), unsigned(w->data.size()));
    int r = uv_write(&w->req, reinterpret_cast<uv_stream_t*>(&m_socket->tcp), &b, 1, [](uv_write_t* req, int status) {
        std::unique_ptr<Write> w(static_cast<Write*>(req->data));
        auto s = w->owner.lock();
        if (!s || s->m_ended || s->m_generation != w->generation) return;
        guarded(s, [&] {
            s->m_write_backlog -= w->data.size();
            if (status < 0)
                return s->connection_lost("lost connection with " + s->host_label() + " while " +
                                          while_text(s->m_client->stage()));
            if (s->m_client->stage() == ClientStage::Content) {
                s->arm_timer();  // progress
                s->read_content();
            }
        });
    });
    if (r != 0) {
        delete w;
        connection_lost("lost connection with " + host_label() + " while " + while_text(m_client->stage()));
    }
}

void DeliverySession::arm_timer() {
    if (!m_timer || !m_client) return;
    const auto& t = m_ctx.config->delivery.timeouts;
    conf::Seconds s{0};
    if (m_idle)
        s = m_ctx.config->delivery.connection_reuse;
    else {
        switch (m_client->stage()) {
        case ClientStage::Greeting:
        case ClientStage::Helo:
        case ClientStage::StartTls:
        case ClientStage::Auth: s = t.helo; break;
        case ClientStage::Mail: s = t.mail; break;
        case ClientStage::Rcpt: s = t.rcpt; break;
        case ClientStage::Data: s = t.data_init; break;
        case ClientStage::Content: s = t.data_xfer; break;
        case ClientStage::DataDone: s = t.data_done; break;
        case ClientStage::Rset: s = t.rset; break;
        case ClientStage::Quit: s = t.quit; break;
        case ClientStage::Ready:
        case ClientStage::Closed: uv_timer_stop(m_timer); return;
        }
    }
    m_timer->data = this;
    uv_timer_start(
        m_timer,
        [](uv_timer_t* timer) {
            auto* s = static_cast<DeliverySession*>(timer->data);
            if (s) guarded(s->shared_from_this(), [&] { s->on_timeout(); });
        },
        uint64_t(s.count()) * 1000 + (s.count() == 0 ? 1 : 0), 0);
}

void DeliverySession::on_timeout() {
    if (m_ended) return;
    if (!m_connected) {
        m_last_failure =
            Failure{"4.4.1", "connect to " + m_hops[m_hop].label() + ": Connection timed out", "none", true};
        for (size_t i : m_pending)
            carry(i, *m_last_failure);
        close_socket();
        m_hop++;
        return connect_next();
    }
    if (m_idle) {
        m_idle = false;
        m_ctx.owner->session_idle(this, false);
        m_quitting = true;
        m_client->quit();
        send_output();
        return arm_timer();
    }
    if (m_quitting) return end();
    connection_lost("conversation with " + host_label() + " timed out while " + while_text(m_client->stage()));
}

void DeliverySession::connection_lost(const std::string& why) {
    std::string relay = m_hops[m_hop].label();
    close_socket();
    if (m_idle) {
        m_idle = false;
        m_ctx.owner->session_idle(this, false);
    }
    if (m_quitting || (!m_job && m_ever_ready)) return end();
    m_last_failure = Failure{"4.4.2", why, relay, true};
    // Recipients not yet settled try the next address (or are deferred after the last one).
    if (m_job) {
        std::vector<size_t> open;
        for (size_t i : m_pending)
            if (!m_resolved.count(i)) {
                open.push_back(i);
                carry(i, *m_last_failure);
            }
        m_pending = open;
        m_job_sent = false;
    }
    m_hop++;
    connect_next();
}

void DeliverySession::close_socket() {
    m_generation++;
    m_job_sent = false;
    m_client.reset();
    m_connected = false;
    m_write_backlog = 0;
    m_reading_content = false;
    if (m_timer) uv_timer_stop(m_timer);
    if (!m_socket) return;
    Socket* sock = m_socket;
    m_socket = nullptr;
    sock->owner.reset();
    uv_close(reinterpret_cast<uv_handle_t*>(&sock->tcp), [](uv_handle_t* h) { delete static_cast<Socket*>(h->data); });
}

void DeliverySession::abort() {
    if (m_ended) return;
    m_ended = true;
    close_socket();
    if (m_timer) {
        m_timer->data = nullptr;
        uv_close(reinterpret_cast<uv_handle_t*>(m_timer),
                 [](uv_handle_t* h) { delete reinterpret_cast<uv_timer_t*>(h); });
        m_timer = nullptr;
    }
}

void DeliverySession::end() {
    if (m_ended) return;
    auto self = shared_from_this();  // the owner may drop its reference below
    abort();
    m_ctx.owner->session_closed(this);
}

}  // namespace gateway
