// DeliverySession: the jobs a connection carries, and what becomes of each recipient.
#include "gateway/smtp/delivery_session.hpp"

#include "gateway/common/idn.hpp"
#include "gateway/common/log.hpp"

#include <algorithm>
#include <cstring>

namespace gateway {

namespace {

constexpr size_t k_content_chunk = 256 * 1024;
constexpr size_t k_write_backlog_limit = 1024 * 1024;

}  // namespace

void DeliverySession::take_next_job() {
    if (m_job && m_job_sent) {
        // The transaction is over but some recipients want the next address.
        close_socket();
        m_hop++;
        return connect_next();
    }
    if (m_job) return send_job();
    if (!m_throttle.empty()) {  // a 432 came in a transaction: no more on this connection
        auto self = shared_from_this();
        std::string why = std::move(m_throttle);
        m_throttle.clear();
        m_ctx.owner->session_throttled(this, why);
        m_quitting = true;
        m_client->quit();
        send_output();
        return arm_timer();
    }
    // Postfix's connection reuse limits: a busy destination gives its slot up now and then, and
    // the queue manager hands it to the destinations that waited.
    const auto& d = m_ctx.config->delivery;
    if (m_jobs_taken >= d.reuse_messages || now_us() - m_ready_us >= int64_t(d.reuse_time.count()) * 1000000) {
        m_quitting = true;
        m_client->quit();
        send_output();
        return arm_timer();
    }
    auto job = m_ctx.owner->take_job(this);
    if (job) return begin_job(std::move(*job));
    m_idle = true;
    m_ctx.owner->session_idle(this, true);
    arm_timer();
}

void DeliverySession::assign(DeliveryJob job) {
    auto self = shared_from_this();  // the job may end the session (a local failure) and the owner drop it
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
    m_jobs_taken++;
    m_pending = m_job->recipients;
    m_hop_end = m_hop + m_hops.size();  // every address once for this job, from the one in use on
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
        take_next_job();
    };
    if (caps.size > 0 && e->size > caps.size)  // RFC 1870 4
        return fail_all("5.3.4", "message size " + std::to_string(e->size) + " exceeds size limit " +
                                     std::to_string(caps.size) + " of server " + label);
    // RFC 6531 3.5: SMTPUTF8 only for a message that needs it (UTF-8 in its addresses or headers).
    // A server without it may be the wrong MX: the next one is tried, and only then does it bounce.
    if (needs_smtputf8(*e) && !caps.smtputf8) {
        Failure f{"5.6.7", "SMTPUTF8 is required, but was not offered by host " + label, hop().label(), false, true};
        for (size_t i : m_pending)
            carry(i, f);
        m_job_sent = true;
        return take_next_job();  // to the next address
    }
    OutgoingMessage m;
    // Without SMTPUTF8 at the server, domains go in their A-label form (needs_smtputf8() made sure
    // that is all there is to convert).
    auto wire = [&](const std::string& a) { return caps.smtputf8 ? a : ascii_address(a).value_or(a); };
    m.sender = wire(e->sender);
    for (size_t i : m_pending)
        m.recipients.push_back(wire(e->recipients.at(i).address));
    m.size = e->size;
    // RFC 6152: 8-bit content goes as 8BITMIME to a server that offers it (declared by the
    // client or not), and converted to quoted-printable to one that does not.
    bool eight_bit = e->eight_bit || e->body == "8BITMIME";
    m.body = eight_bit ? "8BITMIME" : e->body;
    m_downgrade.reset();
    if (eight_bit && !caps.eightbitmime) m_downgrade.emplace();
    m.smtputf8 = e->smtputf8;
    m_rcpt_ok.assign(m_pending.size(), std::nullopt);
    m_soft.assign(m_pending.size(), std::nullopt);
    m_client->send_message(m);
    start_signing(*e, m_downgrade.has_value());  // last: a failure to start it ends the session
}

// UTF-8 in a local part or in the headers needs SMTPUTF8; a UTF-8 domain does not, as it can go
// in its A-label form (RFC 6531 3.2).
bool DeliverySession::needs_smtputf8(const Envelope& e) const {
    if (!e.smtputf8) return false;
    auto utf8 = [](const std::string& a) { return utf8_local_part(a) || !ascii_address(a); };
    if (e.utf8_headers || utf8(e.sender)) return true;
    return std::any_of(m_pending.begin(), m_pending.end(), [&](size_t i) { return utf8(e.recipients.at(i).address); });
}

void DeliverySession::on_recipient(const ClientEvent& ev) {
    size_t index = m_pending.at(ev.index);
    std::string label = host_label();
    if (ev.reply.ok()) {
        m_rcpt_ok[ev.index] = ev.reply;
        m_accepted_mail = true;
        return;
    }
    std::string reason = said_reason(label, ev.reply, "RCPT TO command");
    if (auto hint = hint_for(ev.reply, m_policy); !hint.empty()) reason += " (" + hint + ")";
    std::string dsn = reply_dsn(ev.reply);
    if (thread_limit(ev.reply)) {  // sent again soon, on another connection
        record(index, RcptStatus::Deferred, "4.3.2", reason);
        m_results.back().again = true;
        m_throttle = reason;
        return;
    }
    bool transient = ev.reply.transient();
    if (ev.reply.code == 552) {  // RFC 5321 4.5.3.1.10: an old server's 552 at RCPT means 452 (as Postfix takes it)
        transient = true;
        dsn[0] = '4';
    }
    // 452 4.5.3: the server takes no more recipients in this transaction. When it took some, the
    // rest go again at once, in a transaction of their own on this connection.
    bool some_taken = std::any_of(m_rcpt_ok.begin(), m_rcpt_ok.end(), [](const auto& r) { return r.has_value(); });
    if (transient && dsn.compare(1, std::string::npos, ".5.3") == 0 && some_taken) {
        record(index, RcptStatus::Deferred, dsn, reason);
        m_results.back().again = true;
        return;
    }
    if (transient)
        m_soft[ev.index] = Failure{dsn, reason, hop().label(), false};
    else
        record(index, RcptStatus::Bounced, dsn, reason);
}

void DeliverySession::record(size_t index, RcptStatus status, const std::string& dsn, const std::string& reason) {
    RecipientResult r;
    r.index = index;
    r.status = status;
    r.dsn = dsn;
    r.reason = reason;
    r.relay = hop().label();
    m_results.push_back(r);
    m_resolved.insert(index);
}

void DeliverySession::carry(size_t index, const Failure& f) { m_carried[index] = f; }

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
        if (auto hint = hint_for(*reply, m_policy); !hint.empty()) reason += " (" + hint + ")";
        if (thread_limit(*reply)) {  // sent again soon, on another connection
            record(index, RcptStatus::Deferred, "4.3.2", reason);
            m_results.back().again = true;
            m_throttle = reason;
        } else if (submission_quota(*reply)) {  // waits for the quota, on the retry schedule
            std::string dsn = reply_dsn(*reply);
            dsn[0] = '4';
            record(index, RcptStatus::Deferred, dsn, reason);
        } else if (reply->transient()) {
            next.push_back(index);
            carry(index, Failure{reply_dsn(*reply), reason, hop().label(), false});
        } else {
            record(index, RcptStatus::Bounced, reply_dsn(*reply), reason);
        }
    }
    m_pending = next;
    if (m_pending.empty()) {
        complete_job();
        m_job_sent = false;
    }
    // The client emits Ready next: take_next_job() takes another job or moves to the next address.
}

void DeliverySession::defer_open_recipients(const Failure& last) {
    for (size_t i : m_pending) {
        const Failure& f = m_carried.count(i) ? m_carried[i] : last;
        RecipientResult r;
        r.index = i;
        r.status = f.permanent ? RcptStatus::Bounced : RcptStatus::Deferred;
        r.dsn = f.dsn;
        r.reason = f.reason;
        r.relay = f.relay;
        r.site_failure = f.site;
        m_results.push_back(r);
    }
    m_pending.clear();
    complete_job();
}

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

// Nothing is the server's fault: the open recipients are tried again later, and the connection
// ends (a transaction in progress is not completed).
void DeliverySession::fail_locally(const std::string& dsn, const std::string& reason) {
    for (size_t i : m_pending)
        if (!m_resolved.count(i)) record(i, RcptStatus::Deferred, dsn, reason);
    m_pending.clear();
    complete_job();
    end();
}

void DeliverySession::read_content() {
    if (m_reading_content || m_content_done || !m_job || !m_transport || m_sign_wait) return;
    if (m_transport->backlog() > k_write_backlog_limit) return;  // on_sent() calls again
    if (m_content_offset == 0) {
        if (auto cached = m_ctx.owner->content(m_job->message_id)) return on_content(0, *cached);
    }
    m_reading_content = true;
    std::weak_ptr<DeliverySession> weak = shared_from_this();
    uint64_t generation = m_generation;
    m_ctx.owner->read_content(
        m_job->message_id, m_content_offset, k_content_chunk, [weak, generation](int err, const std::string& data) {
            auto s = weak.lock();
            if (!s || s->m_ended || s->m_generation != generation) return;
            try {
                s->on_content(err, data);
            } catch (const std::exception& ex) {
                log::error(log::Component::Smtp, std::string("delivery session failed: ") + ex.what());
                s->abort();
            }
        });
}

void DeliverySession::on_content(int err, const std::string& data) {
    m_reading_content = false;
    if (!m_client || !m_job) return;
    const Envelope* e = m_ctx.owner->envelope(m_job->message_id);
    // Nothing came back before the end of the content: the queue file was cut short after it was
    // accepted (a disk problem, or someone). Reading at the same place again would never end.
    bool truncated = !err && data.empty() && e && m_content_offset < e->size;
    if (err || truncated) {
        // Postfix: "local data error while talking to HOST": nothing is the server's fault.
        std::string reason = "local data error while talking to " + host_label() + ": " +
                             (truncated ? "the queue file ends after " + std::to_string(m_content_offset) + " of its " +
                                              std::to_string(e->size) + " octets of content"
                                        : "cannot read queue file: " + std::string(std::strerror(err)));
        return fail_locally("4.3.0", reason);
    }
    if (m_content_offset == 0 && !m_signature.empty()) m_client->send_content(m_signature);
    bool last = !e || m_content_offset + data.size() >= e->size;
    if (m_downgrade) {
        std::string converted;
        m_downgrade->feed(data, converted);
        if (last) m_downgrade->finish(converted);
        m_client->send_content(converted);
    } else {
        m_client->send_content(data);
    }
    m_content_offset += data.size();
    if (last) {
        m_client->end_content();
        m_content_done = true;
    }
    send_output();
    arm_timer();
    read_content();
}

}  // namespace gateway
