// DeliverySession: DKIM signing of the job in progress.
//
// A DKIM-Signature field goes before the header section it signs, and covers the whole body, so
// the content is read once ahead of the transfer: while MAIL, RCPT and DATA are exchanged, the
// pass converts it exactly as the transfer will (the 8BITMIME downgrade when this server needs
// it, long lines broken), picks the keys by the From: domain it finds, and hashes it; the
// private-key operation runs on libuv's thread pool. The content waits for the signature after
// 354. Reading ahead costs a second read of the queue file (from the page cache as a rule) only
// for messages that are signed: the pass stops at the end of the header section when no key
// applies. Each attempt signs again, since each server may need another conversion.
#include "gateway/smtp/delivery_session.hpp"

#include "gateway/common/log.hpp"

#include <cstring>

namespace gateway {

namespace {

constexpr size_t k_sign_chunk = 256 * 1024;
// The header section is held until its end to find From:; past this, the message is not signed.
constexpr size_t k_max_sign_head = 1024 * 1024;

}  // namespace

struct DeliverySession::Signing {
    Signing(std::string id, size_t line_length) : message_id(std::move(id)), lines(line_length, false) {}
    std::string message_id;
    uint64_t offset = 0;
    std::optional<MimeDowngrade> downgrade;
    WireLines lines;
    std::string head;  // the content up to the end of its header section, until the keys are chosen
    bool chosen = false;
    std::vector<std::unique_ptr<dkim::Signer>> signers;
    // Filled on the thread pool.
    std::string headers, error;
};

void DeliverySession::start_signing(const Envelope& e, bool downgrade) {
    m_signing.reset();
    m_signature.clear();
    m_sign_wait = false;
    if (!m_ctx.dkim || m_ctx.dkim->empty()) return;
    m_signing = std::make_shared<Signing>(e.id, m_ctx.config->delivery.line_length);
    if (downgrade) m_signing->downgrade.emplace();
    m_sign_wait = true;
    sign_read();
}

void DeliverySession::sign_read() {
    auto sig = m_signing;
    if (!sig || !m_job) return;
    if (sig->offset == 0) {
        if (auto cached = m_ctx.owner->content(sig->message_id)) return sign_chunk(sig, *cached, true);
    }
    std::weak_ptr<DeliverySession> weak = shared_from_this();
    m_ctx.owner->read_content(
        sig->message_id, sig->offset, k_sign_chunk, [weak, sig](int err, const std::string& data) {
            auto s = weak.lock();
            if (!s || s->m_ended || s->m_signing != sig) return;  // the job moved on
            try {
                const Envelope* e = s->m_ctx.owner->envelope(sig->message_id);
                if (err || !e || (data.empty() && sig->offset < e->size))
                    return s->fail_locally("4.3.0", "local data error while signing for " + s->host_label() +
                                                        ": cannot read queue file: " +
                                                        (err ? std::strerror(err) : "it ends before its size"));
                s->sign_chunk(sig, data, sig->offset + data.size() >= e->size);
            } catch (const std::exception& ex) {
                log::error(log::Component::Smtp, std::string("delivery session failed: ") + ex.what());
                s->abort();
            }
        });
}

void DeliverySession::sign_chunk(const std::shared_ptr<Signing>& sig, const std::string& data, bool last) {
    sig->offset += data.size();
    std::string converted, wire;
    std::string_view in = data;
    if (sig->downgrade) {
        sig->downgrade->feed(data, converted);
        if (last) sig->downgrade->finish(converted);
        in = converted;
    }
    sig->lines.append(in, wire);
    if (last) sig->lines.finish(wire);
    if (!sig->chosen) {
        sig->head += wire;
        wire.clear();
        bool head_done = sig->head.rfind("\r\n", 0) == 0 || sig->head.find("\r\n\r\n") != std::string::npos;
        if (!head_done && !last && sig->head.size() <= k_max_sign_head) return sign_read();
        auto keys = m_ctx.dkim->for_domain(dkim::from_domain(sig->head));
        if (keys.empty()) return on_signed("", "");
        if (!head_done && sig->head.size() > k_max_sign_head) {
            log::warning(log::Component::Smtp, sig->message_id + ": not DKIM-signed: its header section is over " +
                                                   std::to_string(k_max_sign_head / 1024) + " KiB");
            return on_signed("", "");
        }
        try {
            for (const auto* k : keys)
                sig->signers.push_back(std::make_unique<dkim::Signer>(m_ctx.dkim, *k));
        } catch (const std::exception& ex) {
            return on_signed("", ex.what());
        }
        sig->chosen = true;
        wire = std::move(sig->head);
        sig->head.clear();
    }
    for (auto& s : sig->signers)
        s->feed(wire);
    if (last) return sign_finish(sig);
    sign_read();
}

void DeliverySession::sign_finish(const std::shared_ptr<Signing>& sig) {
    struct Work {
        uv_work_t req;
        std::shared_ptr<Signing> sig;
        std::weak_ptr<DeliverySession> session;
    };
    auto* w = new Work{{}, sig, shared_from_this()};
    w->req.data = w;
    int rc = uv_queue_work(
        m_ctx.loop, &w->req,
        [](uv_work_t* req) {
            auto* w = static_cast<Work*>(req->data);
            for (auto& s : w->sig->signers) {
                std::string error, header = s->finish(error);
                if (header.empty()) {
                    w->sig->error = "s=" + s->key().selector + ", d=" + s->key().domain + ": " + error;
                    return;
                }
                w->sig->headers += header;
            }
        },
        [](uv_work_t* req, int) {
            std::unique_ptr<Work> w(static_cast<Work*>(req->data));
            auto s = w->session.lock();
            if (!s || s->m_ended || s->m_signing != w->sig) return;
            try {
                s->on_signed(w->sig->headers, w->sig->error);
            } catch (const std::exception& ex) {
                log::error(log::Component::Smtp, std::string("delivery session failed: ") + ex.what());
                s->abort();
            }
        });
    if (rc != 0) {
        delete w;
        on_signed("", std::string("cannot queue the signature: ") + uv_strerror(rc));
    }
}

void DeliverySession::on_signed(const std::string& headers, const std::string& error) {
    auto sig = std::move(m_signing);
    m_sign_wait = false;
    if (!error.empty()) {
        // Sending it unsigned could have it refused or filed as spam under DMARC: it waits for
        // the key to be mended, and the log says which key failed.
        log::error(log::Component::Smtp, (sig ? sig->message_id + ": " : "") + "DKIM signing failed: " + error);
        return fail_locally("4.3.5", "local configuration error: DKIM signing failed: " + error);
    }
    m_signature = headers;
    if (sig)
        for (const auto& s : sig->signers)
            log::info(log::Component::Smtp, sig->message_id + ": DKIM-Signature field added (s=" + s->key().selector +
                                                ", d=" + s->key().domain + ")");
    // 354 may have come while the signature was computed.
    if (m_client && m_client->stage() == ClientStage::Content) {
        read_content();
        send_output();
        arm_timer();
    }
}

}  // namespace gateway
