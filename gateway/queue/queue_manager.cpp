#include "gateway/queue/queue_manager.hpp"

#include "gateway/common/address.hpp"
#include "gateway/common/log.hpp"
#include "gateway/common/message_headers.hpp"
#include "gateway/common/metrics.hpp"
#include "gateway/common/text.hpp"
#include "gateway/smtp/secrets.hpp"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <random>

namespace gateway {

namespace {

int64_t now_us() {
    using namespace std::chrono;
    return duration_cast<microseconds>(system_clock::now().time_since_epoch()).count();
}

constexpr int64_t k_second = 1000000;

bool open(RcptStatus s) { return s == RcptStatus::Pending || s == RcptStatus::Deferred; }

// "2 h 5 min", "35 s", "3 d 4 h": a wait in the two largest units.
std::string format_duration(int64_t seconds) {
    const std::pair<const char*, int64_t> units[] = {{"d", 86400}, {"h", 3600}, {"min", 60}, {"s", 1}};
    std::string out;
    int parts = 0;
    for (auto [name, length] : units) {
        if (seconds < length && !(length == 1 && out.empty())) continue;
        out += (out.empty() ? "" : " ") + std::to_string(seconds / length) + " " + name;
        seconds %= length;
        if (++parts == 2 || seconds == 0) break;
    }
    return out;
}

}  // namespace

QueueManager::QueueManager(uv_loop_t* loop, std::shared_ptr<const conf::Config> config, Spool& spool, dns::Client& dns,
                           SelfTest is_self, std::function<std::string()> new_queue_id)
    : m_loop(loop),
      m_config(std::move(config)),
      m_spool(spool),
      m_hops(dns, std::move(is_self)),
      m_router(std::make_unique<Router>(*m_config)),
      m_new_id(std::move(new_queue_id)) {
    m_timer = new uv_timer_t;
    uv_timer_init(loop, m_timer);
    m_timer->data = this;
    m_prune_timer = new uv_timer_t;
    uv_timer_init(loop, m_prune_timer);
    m_prune_timer->data = this;
    m_wake_timer = new uv_timer_t;
    uv_timer_init(loop, m_wake_timer);
    m_wake_timer->data = this;
    m_alert_timer = new uv_timer_t;
    uv_timer_init(loop, m_alert_timer);
    m_alert_timer->data = this;
    m_tls.preload(*m_config);
}

QueueManager::~QueueManager() { stop(); }

void QueueManager::start() {
    arm_timer();
    // notify: resource alerts are looked for a few times per queue_age, at least once a minute.
    uv_timer_start(
        m_alert_timer, [](uv_timer_t* t) { static_cast<QueueManager*>(t->data)->check_resources(); }, 1000, 1000);
}

void QueueManager::load(std::vector<Envelope> recovered) {
    if (m_stopping) return;
    int64_t now = now_us();
    for (auto& e : recovered) {
        std::string id = e.id;
        if (m_messages.count(id)) continue;
        auto& m = m_messages[id];
        m.env = std::move(e);
        // A flush, delete, hold or release of every message while the queue was being read
        // covers those read after it.
        if (!m.env.held) schedule(m, m_flush_on_load ? now : std::max(m.env.next_attempt_us, now));
        if (m_delete_on_load)
            remove(id);
        else if (m_hold_on_load)
            *m_hold_on_load ? hold(id) : unhold(id);
    }
    arm_timer();
}

void QueueManager::also_when_loaded(AllAction action) {
    if (!m_loading) return;
    if (action == AllAction::Delete)
        m_delete_on_load = true;
    else
        m_hold_on_load = action == AllAction::Hold;
}

// "queue loaded: 100000 message(s) in 2.41 s, 0 damaged file(s) moved aside; 20000 active"
void QueueManager::loaded(size_t messages, size_t damaged, double seconds) {
    m_loading = false;
    m_flush_on_load = m_delete_on_load = false;
    m_hold_on_load.reset();
    char took[32];
    std::snprintf(took, sizeof took, "%.2f", seconds);
    log::info(log::Component::Qmgr, "queue loaded: " + std::to_string(messages) + " message(s) in " + took + " s, " +
                                        std::to_string(damaged) + " damaged file(s) moved aside; " +
                                        std::to_string(m_active) + " active");
}

void QueueManager::add(const Envelope& e, std::shared_ptr<const std::string> content) {
    if (m_stopping) return;
    auto& m = m_messages[e.id];
    m.env = e;
    if (content && m_cached_bytes + content->size() <= k_cache_limit) {
        m_cached_bytes += content->size();
        m.content = std::move(content);
    }
    if (m_active < m_config->queue.active_limit && m_incoming.empty()) return activate(m);
    m_incoming.push_back(e.id);  // its turn comes when an active message is done
    arm_timer();
}

// Fills the room under the active limit: new arrivals and due retries alternately, at most
// k_take_up_batch in one go so that the loop turns between (arm_timer() calls again at once).
void QueueManager::take_up() {
    int64_t now = now_us();
    for (size_t n = 0; n < k_take_up_batch && !m_stopping && m_active < m_config->queue.active_limit; ++n) {
        while (!m_incoming.empty()) {  // dropped or held meanwhile (`queue delete`, `queue hold`)
            auto it = m_messages.find(m_incoming.front());
            if (it != m_messages.end() && !it->second.active && !it->second.env.held) break;
            m_incoming.pop_front();
        }
        bool due = !m_schedule.empty() && m_schedule.begin()->first <= now;
        if (m_incoming.empty() && !due) return;
        bool incoming = !m_incoming.empty() && (m_incoming_turn || !due);
        m_incoming_turn = !incoming;
        std::string id;
        if (incoming) {
            id = m_incoming.front();
            m_incoming.pop_front();
        } else {
            id = m_schedule.begin()->second;
            m_schedule.erase(m_schedule.begin());
        }
        auto it = m_messages.find(id);
        if (it != m_messages.end() && !it->second.active && !it->second.env.held) activate(it->second);
    }
}

// An active message is done with (its results written, or it is gone): room for the next.
void QueueManager::release(Message& m) {
    if (!m.counted) return;
    m.counted = false;
    m_active--;
    arm_timer();
}

void QueueManager::drop_content(Message& m) {
    if (!m.content) return;
    m_cached_bytes -= m.content->size();
    m.content.reset();
}

bool QueueManager::flush(const std::string& id) {
    int64_t now = now_us();
    bool found = id.empty();
    for (auto& [mid, m] : m_messages) {
        if (!id.empty() && mid != id) continue;
        found = true;
        if (!m.active && !m.env.held) schedule(m, now);
    }
    if (id.empty() && m_loading) m_flush_on_load = true;
    for (auto& [key, q] : m_dests)
        q.dead_until = 0;  // a flush tries dead destinations again
    arm_timer();
    return found;
}

QueueManager::Removal QueueManager::remove(const std::string& id, Written written) {
    auto it = m_messages.find(id);
    if (it == m_messages.end()) {
        done_now(written);
        return Removal::Unknown;
    }
    Message& m = it->second;
    if (!m.deleting) log::info(log::Component::Qmgr, id + ": deleted by the administrator");
    m.deleting = true;
    if (m.active) {  // finalize() takes it away when the attempt ends
        done_now(written);
        return Removal::Later;
    }
    erase_now(m, std::move(written));
    return Removal::Removed;
}

QueueManager::Hold QueueManager::hold(const std::string& id, Written written) {
    auto it = m_messages.find(id);
    if (it == m_messages.end()) {
        done_now(written);
        return Hold::Unknown;
    }
    Message& m = it->second;
    if (m.env.held || m.holding) {
        done_now(written);
        return Hold::Already;
    }
    log::info(log::Component::Qmgr, id + ": placed on hold by the administrator");
    if (m.active) {
        m.holding = true;  // persist() writes it when the attempt ends
        done_now(written);
        return Hold::Later;
    }
    m_schedule.erase({m.env.next_attempt_us, id});
    m.env.held = true;
    m_spool.update(m.env, [id, written = std::move(written)](bool ok) {
        if (!ok) log::warning(log::Component::Qmgr, id + ": cannot write the envelope; the hold lasts until a restart");
        if (written) written(ok);
    });
    return Hold::Done;
}

QueueManager::Hold QueueManager::unhold(const std::string& id, Written written) {
    auto it = m_messages.find(id);
    if (it == m_messages.end()) {
        done_now(written);
        return Hold::Unknown;
    }
    Message& m = it->second;
    if (m.holding) {
        m.holding = false;
        log::info(log::Component::Qmgr, id + ": released from hold");
        done_now(written);
        return Hold::Done;
    }
    if (!m.env.held) {
        done_now(written);
        return Hold::Already;
    }
    log::info(log::Component::Qmgr, id + ": released from hold");
    m.env.held = false;
    schedule(m, now_us());
    m_spool.update(m.env, [id, written = std::move(written)](bool ok) {
        if (!ok)
            log::warning(log::Component::Qmgr, id + ": cannot write the envelope; it is held again after a restart");
        if (written) written(ok);
    });
    arm_timer();
    return Hold::Done;
}

void QueueManager::done_now(const Written& written) {
    if (written) written(true);
}

bool QueueManager::held(const std::string& id) const {
    auto it = m_messages.find(id);
    return it != m_messages.end() && (it->second.env.held || it->second.holding);
}

std::vector<const Envelope*> QueueManager::messages() const {
    std::vector<const Envelope*> out;
    out.reserve(m_messages.size());
    for (const auto& [id, m] : m_messages)
        out.push_back(&m.env);
    return out;
}

int64_t QueueManager::oldest_arrival_us() const {
    int64_t oldest = 0;
    for (const auto& [id, m] : m_messages)
        if (oldest == 0 || m.env.arrival_us < oldest) oldest = m.env.arrival_us;
    return oldest;
}

std::vector<QueueManager::DestinationState> QueueManager::destination_states() const {
    std::vector<DestinationState> out;
    int64_t now = now_us();
    for (const auto& [key, q] : m_dests) {
        DestinationState d;
        d.key = key;
        d.sessions = q.sessions;
        d.window = q.window;
        d.limit = concurrency_limit(q);
        d.jobs = q.jobs.size();
        d.dead_until_us = q.dead_until > now ? q.dead_until : 0;
        d.dsn = q.dead.dsn;
        d.reason = q.dead.reason;
        out.push_back(std::move(d));
    }
    std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.key < b.key; });
    return out;
}

size_t QueueManager::held_count() const {
    return size_t(std::count_if(m_messages.begin(), m_messages.end(), [](const auto& m) { return m.second.env.held; }));
}

std::vector<std::string> QueueManager::ids() const {
    std::vector<std::string> out;
    for (const auto& [id, m] : m_messages)
        out.push_back(id);
    return out;
}

void QueueManager::erase_now(Message& m, Written written) {
    m_schedule.erase({m.env.next_attempt_us, m.env.id});
    m.active = true;  // never taken up again
    drop_content(m);
    std::string id = m.env.id;
    m_spool.remove(id, m.env.attempts > 0, m.env.size, [this, id, written = std::move(written)](bool ok) {
        if (!ok) log::warning(log::Component::Qmgr, id + ": cannot remove the queue files");
        log::info(log::Component::Qmgr, id + ": removed");
        if (auto it = m_messages.find(id); it != m_messages.end()) release(it->second);
        m_messages.erase(id);
        if (written) written(ok);
    });
}

void QueueManager::reload(std::shared_ptr<const conf::Config> config) {
    m_config = std::move(config);
    m_router = std::make_unique<Router>(*m_config);
    m_tls.preload(*m_config);
    for (auto& [key, q] : m_dests) {
        if (q.destination.kind != Destination::Kind::Upstream) continue;
        for (const auto& u : m_config->upstreams)
            if (u.name == q.destination.upstream.name) q.destination.upstream = u, q.destination.port = u.port;
    }
    arm_timer();  // queue.active_limit may have grown
}

void QueueManager::stop() {
    if (m_stopping) return;
    m_stopping = true;
    auto sessions = m_sessions;
    for (auto& [ptr, s] : sessions)
        s->abort();
    stop_secret_commands();
    m_sessions.clear();
    m_dests.clear();
    for (uv_timer_t** t : {&m_timer, &m_prune_timer, &m_wake_timer, &m_alert_timer}) {
        if (!*t) continue;
        uv_close(reinterpret_cast<uv_handle_t*>(*t), [](uv_handle_t* h) { delete reinterpret_cast<uv_timer_t*>(h); });
        *t = nullptr;
    }
}

// --- scheduling ----------------------------------------------------------------------------

void QueueManager::schedule(Message& m, int64_t when_us) {
    m_schedule.erase({m.env.next_attempt_us, m.env.id});
    m.env.next_attempt_us = when_us;
    m_schedule.insert({when_us, m.env.id});
}

void QueueManager::arm_timer() {
    if (!m_timer || m_stopping) return;
    bool room = m_active < m_config->queue.active_limit;
    if (room && !m_incoming.empty()) {
        uv_timer_start(
            m_timer, [](uv_timer_t* t) { static_cast<QueueManager*>(t->data)->on_timer(); }, 0, 0);
        return;
    }
    // Full: release() calls again when there is room.
    if (m_schedule.empty() || !room) return (void)uv_timer_stop(m_timer);
    int64_t wait = m_schedule.begin()->first - now_us();
    uv_timer_start(
        m_timer, [](uv_timer_t* t) { static_cast<QueueManager*>(t->data)->on_timer(); },
        wait > 0 ? uint64_t(wait / 1000 + 1) : 0, 0);
}

// A destination with nothing queued, no connection and no failure to remember is forgotten: the
// table holds what is in use, not every domain ever mailed.
bool QueueManager::unused(const DestQueue& q, int64_t now) {
    return q.jobs.empty() && q.sessions == 0 && q.dead_until <= now && q.ceiling_until <= now && q.next_send_us <= now;
}

// Called from a timer of its own, never from within the queue manager's work: a DestQueue is
// often in use further up the stack (dispatch() starting a session that fails at once).
void QueueManager::prune() {
    int64_t now = now_us();
    for (auto it = m_dests.begin(); it != m_dests.end();)
        it = unused(it->second, now) ? m_dests.erase(it) : std::next(it);
}

void QueueManager::schedule_prune() {
    if (m_prune_timer && !uv_is_active(reinterpret_cast<uv_handle_t*>(m_prune_timer)))
        uv_timer_start(
            m_prune_timer, [](uv_timer_t* t) { static_cast<QueueManager*>(t->data)->prune(); }, 0, 0);
}

void QueueManager::on_timer() {
    prune();
    take_up();
    arm_timer();
}

int64_t QueueManager::retry_delay_us(unsigned attempts) const {
    const auto& r = m_config->queue.retry;
    size_t i = std::min<size_t>(attempts == 0 ? 0 : attempts - 1, r.size() - 1);
    return int64_t(r[i].count()) * k_second;
}

// --- routing recipients into jobs -------------------------------------------------------------

std::optional<Destination> QueueManager::destination_for(const std::string& via, const std::string& recipient) const {
    Destination d;
    if (via == "direct") {
        d.kind = Destination::Kind::Direct;
        d.domain = domain_of(recipient);
        d.port = m_config->direct.port;
        return d;
    }
    for (const auto& u : m_config->upstreams) {
        if (u.name != via) continue;
        d.kind = Destination::Kind::Upstream;
        d.upstream = u;
        d.port = u.port;
        return d;
    }
    return std::nullopt;
}

void QueueManager::activate(Message& m) {
    m_schedule.erase({m.env.next_attempt_us, m.env.id});
    m.active = true;
    if (!m.counted) m.counted = true, m_active++;
    m.activated_us = now_us();
    m.bounced.clear();
    log::info(log::Component::Qmgr, m.env.id + ": from=<" + m.env.sender + ">" +
                                        (m.env.orig_sender.empty() ? "" : ", orig_from=<" + m.env.orig_sender + ">") +
                                        ", size=" + std::to_string(m.env.size) +
                                        ", nrcpt=" + std::to_string(m.env.recipients.size()) + " (queue active)");
    // Routes match the original sender, before any rewriting.
    const std::string& sender = m.env.orig_sender.empty() ? m.env.sender : m.env.orig_sender;
    m.jobs++;  // held while the jobs go out, so that an immediate result cannot finish the message early
    std::map<std::string, std::pair<Destination, DeliveryJob>> jobs;
    for (size_t i = 0; i < m.env.recipients.size(); ++i) {
        const auto& r = m.env.recipients[i];
        if (!open(r.status)) continue;
        const auto& via = m_router->via(sender, r.address);
        auto d = via.empty() ? std::nullopt : destination_for(via.front(), r.address);
        if (!d) {
            RecipientResult res;
            res.index = i;
            res.dsn = "4.3.5";
            res.reason = "mail routing configuration: no route matches this recipient (check routes:)";
            apply(m, res, Delays{});
            continue;
        }
        // One job per destination and route: recipients that share an upstream now may fail
        // over to different places.
        std::string key = d->key();
        for (const auto& v : via)
            key += "\n" + v;
        auto& entry = jobs[key];
        entry.first = *d;
        entry.second.recipients.push_back(i);
        entry.second.via = via;
    }
    for (auto& [key, entry] : jobs) {
        entry.second.message_id = m.env.id;
        entry.second.activated_us = m.activated_us;
        enqueue_parts(m, entry.first, std::move(entry.second));
    }
    job_finished(m);
}

// At most delivery.recipient_limit recipients go in one transaction (Postfix's
// smtp_destination_recipient_limit); the parts follow each other on a connection.
void QueueManager::enqueue_parts(Message& m, const Destination& d, DeliveryJob job) {
    size_t limit = std::max<size_t>(1, m_config->delivery.recipient_limit);
    if (d.kind == Destination::Kind::Upstream && d.upstream.recipients_per_message > 0)
        limit = d.upstream.recipients_per_message;
    while (job.recipients.size() > limit) {
        DeliveryJob part = job;
        part.recipients.assign(job.recipients.begin(), job.recipients.begin() + long(limit));
        job.recipients.erase(job.recipients.begin(), job.recipients.begin() + long(limit));
        enqueue(m, d, std::move(part));
    }
    enqueue(m, d, std::move(job));
}

void QueueManager::enqueue(Message& m, const Destination& d, DeliveryJob job, bool first) {
    m.jobs++;
    job.queued_us = now_us();
    auto [it, created] = m_dests.try_emplace(d.key());
    DestQueue& q = it->second;
    if (created) q.destination = d;
    if (q.dead_until > job.queued_us) {
        // Postfix's dead destination: no new connection until the retry time has passed.
        JobResult r;
        r.job = std::move(job);
        for (size_t i : r.job.recipients) {
            RecipientResult res;
            res.index = i;
            res.dsn = q.dead.dsn;
            res.reason = "delivery temporarily suspended: " + q.dead.reason;
            res.relay = q.dead.relay;
            res.site_failure = q.dead.site_failure;
            r.results.push_back(res);
        }
        return job_done(d.key(), std::move(r));
    }
    if (first) {
        // Taken by the session that had it, when it asks for its next job; should that session
        // end first, session_closed() finds the job a session.
        q.jobs.push_front(std::move(job));
        return;
    }
    q.jobs.push_back(std::move(job));
    dispatch(q);
}

// --- sessions ------------------------------------------------------------------------------------

void QueueManager::dispatch(DestQueue& q) {
    if (m_stopping) return;
    while (!q.jobs.empty() && !q.idle.empty() && rate_allows(q, true)) {
        DeliverySession* s = q.idle.back();
        q.idle.pop_back();
        DeliveryJob job = std::move(q.jobs.front());
        q.jobs.pop_front();
        m_sessions.at(s)->assign(std::move(job));
    }
    const auto& d = m_config->delivery;
    if (q.window == 0) q.window = std::min(d.initial_concurrency, concurrency_limit(q));
    int64_t now = now_us();
    if (q.hold_until > now) return wake_at(q, q.hold_until);
    if (!rate_allows(q, false)) return;  // a session is started when the next message may go
    while (q.jobs.size() > q.starting.size()) {
        if (q.sessions >= q.window) break;
        if (m_sessions.size() >= d.concurrency) {
            if (m_waiting_keys.insert(q.destination.key()).second) m_waiting.push_back(q.destination.key());
            break;
        }
        start_session(q);
    }
}

void QueueManager::start_session(DestQueue& q) {
    SessionContext ctx{m_loop, &m_hops, this, &m_tls, m_config, m_dkim};
    auto s = std::make_shared<DeliverySession>(ctx, q.destination);
    m_sessions[s.get()] = s;
    q.sessions++;
    q.starting.insert(s.get());
    s->start();
}

// upstreams.NAME.rate: messages go at most one per interval. `take`: one goes now.
bool QueueManager::rate_allows(DestQueue& q, bool take) {
    const auto& u = q.destination.upstream;
    if (q.destination.kind != Destination::Kind::Upstream || u.rate_messages == 0) return true;
    int64_t now = now_us();
    if (q.next_send_us > now) {
        wake_at(q, q.next_send_us);
        return false;
    }
    if (take) q.next_send_us = now + int64_t(u.rate_seconds) * k_second / u.rate_messages;
    return true;
}

void QueueManager::wake_at(const DestQueue& q, int64_t when_us) {
    if (!m_wake_timer || m_stopping) return;
    m_wakeups.insert({when_us, q.destination.key()});
    int64_t wait = std::max<int64_t>(0, m_wakeups.begin()->first - now_us());
    uv_timer_start(
        m_wake_timer, [](uv_timer_t* t) { static_cast<QueueManager*>(t->data)->on_wake(); }, uint64_t(wait / 1000 + 1),
        0);
}

void QueueManager::on_wake() {
    int64_t now = now_us();
    std::set<std::string> due;
    while (!m_wakeups.empty() && m_wakeups.begin()->first <= now) {
        due.insert(m_wakeups.begin()->second);
        m_wakeups.erase(m_wakeups.begin());
    }
    for (const auto& key : due)
        if (auto it = m_dests.find(key); it != m_dests.end()) dispatch(it->second);
    if (!m_wakeups.empty() && !m_stopping) {
        int64_t wait = std::max<int64_t>(0, m_wakeups.begin()->first - now_us());
        uv_timer_start(
            m_wake_timer, [](uv_timer_t* t) { static_cast<QueueManager*>(t->data)->on_wake(); },
            uint64_t(wait / 1000 + 1), 0);
    }
}

unsigned QueueManager::concurrency_limit(const DestQueue& q) const {
    if (q.destination.kind == Destination::Kind::Upstream && q.destination.upstream.concurrency > 0)
        return q.destination.upstream.concurrency;
    return m_config->delivery.destination_concurrency;
}

std::optional<DeliveryJob> QueueManager::take_job(DeliverySession* s) {
    auto it = m_dests.find(s->destination().key());
    if (it == m_dests.end()) return std::nullopt;
    auto& q = it->second;
    q.starting.erase(s);
    std::optional<DeliveryJob> job;
    if (!q.jobs.empty() && rate_allows(q, true)) {
        job = std::move(q.jobs.front());
        q.jobs.pop_front();
    }
    if (s->first_success()) {  // a session that delivers: the destination takes one more
        unsigned limit = concurrency_limit(q);
        if (q.ceiling_until > now_us()) limit = std::min(limit, q.ceiling);
        q.window = std::min(q.window + 1, limit);
        dispatch(q);
    }
    return job;
}

std::shared_ptr<const std::string> QueueManager::content(const std::string& message_id) {
    auto it = m_messages.find(message_id);
    return it == m_messages.end() ? nullptr : it->second.content;
}

void QueueManager::read_content(const std::string& message_id, uint64_t offset, size_t max, ContentDone done) {
    const Envelope* e = envelope(message_id);
    m_spool.read(message_id, e ? e->size : 0, offset, max, std::move(done));
}

const Envelope* QueueManager::envelope(const std::string& message_id) {
    auto it = m_messages.find(message_id);
    return it == m_messages.end() ? nullptr : &it->second.env;
}

void QueueManager::session_idle(DeliverySession* s, bool idle) {
    auto it = m_dests.find(s->destination().key());
    if (it == m_dests.end()) return;
    auto& q = it->second;
    q.starting.erase(s);
    q.idle.erase(std::remove(q.idle.begin(), q.idle.end(), s), q.idle.end());
    if (idle) {
        q.idle.push_back(s);
        dispatch(q);
    }
}

void QueueManager::session_closed(DeliverySession* s) {
    std::string key = s->destination().key();
    m_sessions.erase(s);  // the session keeps itself alive until it returns
    if (auto it = m_dests.find(key); it != m_dests.end()) {
        auto& q = it->second;
        q.sessions--;
        q.starting.erase(s);
        q.idle.erase(std::remove(q.idle.begin(), q.idle.end(), s), q.idle.end());
    }
    // The slot that came free goes to the other destinations that waited for one, in the order
    // they asked (round robin); the closing session's own destination queues behind them.
    auto waiting = std::move(m_waiting);
    m_waiting.clear();
    m_waiting_keys.clear();
    for (const auto& k : waiting)
        if (k != key)
            if (auto w = m_dests.find(k); w != m_dests.end()) dispatch(w->second);
    if (auto it = m_dests.find(key); it != m_dests.end()) {
        dispatch(it->second);
        if (unused(it->second, now_us())) schedule_prune();
    }
}

void QueueManager::session_failed(const std::string& destination, const DestinationFailure& f) {
    auto it = m_dests.find(destination);
    if (it == m_dests.end()) return;
    auto& q = it->second;
    q.window = std::max(q.window, 2u) - 1;
    // The destination is dead only when the whole cohort failed: no other session of it works
    // or is still starting. Until then its jobs wait for the sessions that do work.
    if (q.sessions > 1) return;
    destination_failed(destination, f);
}

// A thread limit (432 4.3.2) is no failure of the destination: it gets fewer connections, not
// more for a while, and a pause when none is left. Only when it keeps answering so with no
// delivery in between does the mail wait for the retry schedule.
void QueueManager::session_throttled(DeliverySession* throttled, const std::string& reason) {
    const std::string& destination = throttled->destination().key();
    auto it = m_dests.find(destination);
    if (it == m_dests.end()) return;
    auto& q = it->second;
    int64_t now = now_us();
    unsigned others = q.sessions > 0 ? q.sessions - 1 : 0;  // this one is on its way out
    // As many connections as now deliver is what the server allows; it refused one more than the
    // others, so the window does not grow back past them for a while.
    unsigned delivering = 0;
    for (const auto& [s, session] : m_sessions)
        if (s != throttled && session->accepted_mail() && s->destination().key() == destination) delivering++;
    unsigned before = q.window;
    q.window = std::max(1u, std::min(q.window, delivering));
    q.ceiling = std::max(q.window, q.ceiling_until > now ? std::min(q.ceiling, others) : others);
    q.ceiling_until = now + k_throttle_memory_us;
    q.throttles++;
    if (q.window < before || q.throttles == 1)
        log::warning(log::Component::Qmgr,
                     (q.destination.kind == Destination::Kind::Upstream ? "upstream " + q.destination.upstream.name
                                                                        : "mail for " + q.destination.domain) +
                         ": " + reason + "; at most " + std::to_string(q.window) + " connection(s) to it now");
    if (others > 0) return;
    q.hold_until = now + k_throttle_pause_us;
    if (q.throttles < k_throttle_limit) return;
    q.throttles = 0;
    DestinationFailure f;
    f.dsn = "4.3.2";
    f.reason = reason;
    f.site_failure = false;  // the account's limit: another route would not help
    f.throttled = true;
    destination_failed(destination, f);
}

void QueueManager::destination_failed(const std::string& destination, const DestinationFailure& f) {
    auto it = m_dests.find(destination);
    if (it == m_dests.end()) return;
    auto& q = it->second;
    if (f.outcome == DestinationFailure::Outcome::Defer && !f.throttled) {
        // Half the first retry interval: the retries of the messages deferred now find the
        // destination tried afresh, while the burst arriving meanwhile does not hammer it.
        q.dead_until = now_us() + std::min<int64_t>(retry_delay_us(1) / 2, 150 * k_second);
        q.dead = f;
    }
    // Everything waiting for this destination shares the verdict.
    auto jobs = std::move(q.jobs);
    q.jobs.clear();
    for (auto& job : jobs) {
        JobResult r;
        r.job = std::move(job);
        for (size_t i : r.job.recipients) {
            RecipientResult res;
            res.index = i;
            res.status = f.outcome == DestinationFailure::Outcome::Bounce ? RcptStatus::Bounced : RcptStatus::Deferred;
            res.dsn = f.dsn;
            res.reason = f.reason;
            res.relay = f.relay;
            res.site_failure = f.site_failure;
            r.results.push_back(res);
        }
        job_done(destination, std::move(r));
    }
}

// --- results -------------------------------------------------------------------------------------

void QueueManager::job_done(const std::string& destination, JobResult result) {
    if (std::any_of(result.results.begin(), result.results.end(), [](auto& r) { return r.status == RcptStatus::Sent; }))
        if (auto d = m_dests.find(destination); d != m_dests.end()) d->second.throttles = 0;
    auto it = m_messages.find(result.job.message_id);
    if (it == m_messages.end()) return;
    Message& m = it->second;
    DeliveryJob& job = result.job;
    // Recipients whose destination could not be used at all fail over to the next `via`.
    std::vector<size_t> failover, again;
    bool delivered = false;
    for (auto r : result.results) {
        if (r.again) {  // the server's recipient limit: another transaction, at once
            again.push_back(r.index);
            continue;
        }
        // RFC 3464 2.3.4: a recipient that stays queued has a class 4 status, even when the last
        // server's refusal was a 5xx that does not end the message (EHLO, STARTTLS).
        if (r.status == RcptStatus::Deferred && !r.dsn.empty() && r.dsn[0] == '5') r.dsn[0] = '4';
        if (r.status == RcptStatus::Deferred && r.site_failure && job.via_index + 1 < job.via.size()) {
            failover.push_back(r.index);
            log::info(log::Component::Smtp, m.env.id + ": to=<" + m.env.recipients[r.index].address + ">, via " +
                                                job.via[job.via_index] + " failed (" + r.reason + "); trying " +
                                                job.via[job.via_index + 1]);
            continue;
        }
        metrics::delivery(job.via.empty() ? std::string("none") : job.via[job.via_index], to_string(r.status),
                          r.dsn.empty() ? '4' : r.dsn[0], double(now_us() - m.env.arrival_us) / 1e6);
        delivered = delivered || r.status == RcptStatus::Sent;
        apply(m, r, result.delays);
    }
    // Other jobs of the message are still out: what was delivered is written down now, so that
    // a crash or a stop meanwhile does not send it again. (Bounces wait for their notice.)
    if (delivered && m.jobs > 1) {
        Envelope written = m.env;
        for (size_t i : m.bounced)  // open on disk until the notice is queued
            written.recipients[i].status = RcptStatus::Deferred;
        m_spool.update(written, [id = m.env.id](bool ok) {
            if (!ok)
                log::warning(log::Component::Qmgr,
                             id + ": cannot write the envelope; delivered recipients may be sent again");
        });
    }
    if (!failover.empty()) {
        // Each recipient goes to its own next destination: `direct` after an upstream means
        // the MX hosts of each recipient's domain.
        std::map<std::string, std::pair<Destination, DeliveryJob>> next;
        for (size_t i : failover) {
            const std::string& via = job.via[job.via_index + 1];
            auto d = destination_for(via, m.env.recipients[i].address);
            if (!d) {  // gone from upstreams: since a reload
                RecipientResult res;
                res.index = i;
                res.dsn = "4.3.5";
                res.reason = "mail routing configuration: the next route, " + via + ", is no longer in upstreams:";
                apply(m, res, result.delays);
                continue;
            }
            auto& entry = next[d->key()];
            entry.first = *d;
            entry.second.message_id = m.env.id;
            entry.second.recipients.push_back(i);
            entry.second.via = job.via;
            entry.second.via_index = job.via_index + 1;
            entry.second.activated_us = job.activated_us;
        }
        for (auto& [key, entry] : next)
            enqueue_parts(m, entry.first, std::move(entry.second));
    }
    if (!again.empty() && !job.via.empty()) {
        DeliveryJob next = job;
        next.recipients = again;
        auto d = destination_for(job.via[job.via_index], m.env.recipients[again.front()].address);
        if (d) enqueue(m, *d, std::move(next), true);  // first in line: the session that had it takes it
    }
    job_finished(m);
}

void QueueManager::apply(Message& m, const RecipientResult& r, const Delays& d) {
    auto& rcpt = m.env.recipients.at(r.index);
    rcpt.status = r.status;
    rcpt.dsn = r.dsn;
    rcpt.reason = r.reason;
    rcpt.relay = r.relay;
    rcpt.last_attempt_us = now_us();
    if (r.status == RcptStatus::Bounced) m.bounced.push_back(r.index);
    log_delivery(m, r, d);
}

void QueueManager::log_delivery(const Message& m, const RecipientResult& r, const Delays& d) const {
    double delay = double(now_us() - m.env.arrival_us) / 1e6;
    log::info(log::Component::Smtp, m.env.id + ": to=<" + m.env.recipients[r.index].address + ">, relay=" + r.relay +
                                        ", delay=" + format_delay(delay) + ", delays=" + format_delay(d.before_active) +
                                        "/" + format_delay(d.in_queue) + "/" + format_delay(d.setup) + "/" +
                                        format_delay(d.transfer) + ", dsn=" + r.dsn +
                                        ", status=" + to_string(r.status) + " (" + r.reason + ")");
}

void QueueManager::job_finished(Message& m) {
    if (--m.jobs == 0) finalize(m);
}

void QueueManager::finalize(Message& m) {
    if (m.deleting) return erase_now(m);  // no bounce, no warning: the administrator said so
    int64_t now = now_us();
    const auto& q = m_config->queue;
    std::vector<size_t> open_rcpts;
    for (size_t i = 0; i < m.env.recipients.size(); ++i)
        if (open(m.env.recipients[i].status)) open_rcpts.push_back(i);
    bool expired = !open_rcpts.empty() && now >= m.env.arrival_us + int64_t(q.lifetime.count()) * k_second;
    if (expired) {
        // Postfix: the last deferral reason and status go into the bounce.
        log::info(log::Component::Qmgr, m.env.id + ": from=<" + m.env.sender + ">, status=expired, returned to sender");
        for (size_t i : open_rcpts) {
            m.env.recipients[i].status = RcptStatus::Bounced;
            m.bounced.push_back(i);
        }
        open_rcpts.clear();
    }
    bool warn = !open_rcpts.empty() && q.delay_warning.count() > 0 && !m.env.delay_warned &&
                now >= m.env.arrival_us + int64_t(q.delay_warning.count()) * k_second;
    std::vector<NoticeKind> kinds;
    if (!m.env.sender.empty()) {  // the null sender is never bounced (RFC 5321 4.5.5)
        if (!m.bounced.empty()) kinds.push_back(NoticeKind::Failed);
        if (warn) kinds.push_back(NoticeKind::Delayed);
    } else if (!m.bounced.empty() && postmaster_copy(m, NoticeKind::Failed)) {
        kinds.push_back(NoticeKind::Failed);  // a bounce nobody else gets: to the postmaster alone
    }
    std::string id = m.env.id;
    send_notices(id, kinds, [this, id](bool warned) { persist(id, warned); });
}

void QueueManager::persist(const std::string& id, bool warned) {
    auto it = m_messages.find(id);
    if (it == m_messages.end()) return;
    Message& m = it->second;
    if (m.deleting) return erase_now(m);
    m.bounced.clear();
    drop_content(m);  // after the first attempt the disk copy serves
    bool done = std::none_of(m.env.recipients.begin(), m.env.recipients.end(), [](auto& r) { return open(r.status); });
    if (done) return erase_now(m);
    m.env.attempts++;
    m.env.delay_warned = m.env.delay_warned || warned;
    int64_t next = now_us() + retry_delay_us(m.env.attempts);
    m.env.next_attempt_us = next;
    m.env.held = m.env.held || m.holding;
    m.holding = false;
    m_spool.update(m.env, [this, id, next](bool ok) {
        auto it = m_messages.find(id);
        if (it == m_messages.end()) return;
        if (!ok) log::warning(log::Component::Qmgr, id + ": cannot write the envelope; the last results are lost");
        Message& msg = it->second;
        msg.active = false;
        release(msg);
        if (m_stopping) return;
        // `queue delete` or `queue hold` may have come while the envelope was being written.
        if (msg.deleting) return erase_now(msg);
        if (msg.holding) {
            msg.holding = false;
            msg.env.held = true;
            m_spool.update(msg.env, [id](bool written) {
                if (!written)
                    log::warning(log::Component::Qmgr,
                                 id + ": cannot write the envelope; the hold lasts until a restart");
            });
        }
        if (msg.env.held) return;
        msg.env.next_attempt_us = 0;  // not in the schedule yet
        schedule(msg, next);
        arm_timer();
    });
}

// --- notices -----------------------------------------------------------------------------------

void QueueManager::send_notices(const std::string& id, std::vector<NoticeKind> kinds,
                                std::function<void(bool warned)> then) {
    if (kinds.empty()) return then(false);
    // The original's header section goes into the notice (text/rfc822-headers).
    auto it = m_messages.find(id);
    uint64_t size = it == m_messages.end() ? 0 : it->second.env.size;
    m_spool.read(id, size, 0, 64 * 1024,
                 [this, id, kinds = std::move(kinds), then = std::move(then)](int err, const std::string& data) {
                     std::string headers = err ? std::string() : header_section(data);
                     auto remaining = std::make_shared<size_t>(kinds.size());
                     auto warned = std::make_shared<bool>(false);  // a delay warning is queued
                     for (auto kind : kinds) {
                         queue_notice(id, kind, headers, [this, id, kind, remaining, warned, then](bool ok) {
                             auto it = m_messages.find(id);
                             if (!ok && it != m_messages.end() && kind == NoticeKind::Failed) {
                                 // Not stored: the recipients stay open and fail again next time, with a notice then.
                                 for (size_t i : it->second.bounced)
                                     it->second.env.recipients[i].status = RcptStatus::Deferred;
                             }
                             // Not stored either: the warning is due again at the next attempt.
                             if (ok && kind == NoticeKind::Delayed) *warned = true;
                             if (--*remaining == 0) then(*warned);
                         });
                     }
                 });
}

void QueueManager::queue_notice(const std::string& id, NoticeKind kind, std::string headers,
                                std::function<void(bool)> done) {
    auto it = m_messages.find(id);
    if (it == m_messages.end()) return done(false);
    const Message& m = it->second;
    std::vector<std::string> recipients;
    if (!m.env.sender.empty()) recipients.push_back(m.env.sender);
    bool copy = postmaster_copy(m, kind) && m.env.sender != m_config->notify->postmaster;
    if (copy) recipients.push_back(m_config->notify->postmaster);
    if (recipients.empty()) return done(false);
    int64_t now = now_us();
    NoticeInput in;
    in.kind = kind;
    in.original = &m.env;
    if (kind == NoticeKind::Failed)
        in.recipients = m.bounced;
    else
        for (size_t i = 0; i < m.env.recipients.size(); ++i)
            if (open(m.env.recipients[i].status)) in.recipients.push_back(i);
    in.original_headers = std::move(headers);
    in.hostname = m_config->hostname;
    in.now = std::time_t(now / k_second);
    in.retry_until = std::time_t(m.env.arrival_us / k_second + m_config->queue.lifetime.count());
    std::string notice_id = m_new_id();
    in.boundary = notice_id + "/" + m_config->hostname;
    std::string content = "Received: by " + m_config->hostname + " (smtpgw) id " + notice_id + "; " +
                          rfc5322_date(in.now) + "\r\n" + build_notice(in);
    Envelope e;
    e.id = notice_id;
    e.arrival_us = now;
    e.size = content.size();
    e.client_name = "localhost";
    e.client_ip = "127.0.0.1";
    e.helo = m_config->hostname;
    e.protocol = "local";
    e.body = "8BITMIME";
    e.message_id = notice_message_id(in);
    for (const auto& r : recipients)
        e.recipients.emplace_back(r);
    // RFC 6531 3.5: a sender with a UTF-8 address gets the notice with SMTPUTF8.
    e.smtputf8 = std::any_of(m.env.sender.begin(), m.env.sender.end(), [](char c) { return c & 0x80; });
    auto txn = m_spool.begin(notice_id);
    m_spool.write(txn, std::move(content), [] {});
    std::string what = std::string(m.env.sender.empty() ? "postmaster" : "sender") +
                       (kind == NoticeKind::Failed ? " non-delivery notification" : " delay notification");
    if (copy && !m.env.sender.empty()) what += " (copy to <" + m_config->notify->postmaster + ">)";
    m_spool.commit(txn, std::move(e), [this, id, what, done = std::move(done)](CommitResult r, const Envelope& stored) {
        if (r != CommitResult::Stored) {
            log::warning(log::Component::Bounce, id + ": cannot queue the " + what);
            return done(false);
        }
        log::info(log::Component::Bounce, id + ": " + what + ": " + stored.id);
        if (!m_stopping) add(stored);
        done(true);
    });
}

// --- notify: copies and alerts for the administrator ------------------------------------------------

bool QueueManager::postmaster_copy(const Message& m, NoticeKind kind) const {
    const auto& n = m_config->notify;
    // Never about a notice or alert of the gateway's own: a copy that bounced would bounce again.
    if (!n || m.env.protocol == "local") return false;
    return kind == NoticeKind::Failed ? n->bounce : n->delay;
}

void QueueManager::check_resources() {
    const auto& n = m_config->notify;
    if (!n || !n->resource || m_stopping) return;
    int64_t now = now_us(),
            interval = std::clamp<int64_t>(int64_t(n->queue_age.count()) * k_second / 4, k_second, 60 * k_second);
    if (now - m_resources_checked_us < interval) return;
    m_resources_checked_us = now;
    const int64_t k_again = 24 * 3600 * k_second;  // while a condition lasts, the alert comes again daily
    const Message* oldest = nullptr;
    for (const auto& [id, m] : m_messages)
        if (!m.env.held && m.env.protocol != "local" && (!oldest || m.env.arrival_us < oldest->env.arrival_us))
            oldest = &m;
    bool old = oldest && now - oldest->env.arrival_us > int64_t(n->queue_age.count()) * k_second;
    if (!old) {
        m_age_alerted_us = 0;
    } else if (m_age_alerted_us == 0 || now - m_age_alerted_us > k_again) {
        m_age_alerted_us = now;
        const Envelope& e = oldest->env;
        std::string waited = format_duration((now - e.arrival_us) / k_second);
        std::string body = "The oldest message in the queue of " + m_config->hostname + " has waited " + waited +
                           " (notify.queue_age is " + format_duration(n->queue_age.count()) + "):\n\n  " + e.id +
                           " from <" + e.sender + ">\n";
        for (const auto& r : e.recipients)
            if (open(r.status))
                body += "    to <" + r.address + ">" + (r.reason.empty() ? "" : ": " + printable(r.reason, 600)) + "\n";
        body += "\n" + std::to_string(m_messages.size()) +
                " message(s) are queued. `smtpgw queue list` shows each with the reason it waits; once the cause is "
                "fixed, `smtpgw queue flush` tries them all at once.\n";
        send_alert("the oldest queued message has waited " + waited, body);
    }
    if (!m_spool.storage_low(0)) {
        m_space_alerted_us = 0;
    } else if (m_space_alerted_us == 0 || now - m_space_alerted_us > k_again) {
        m_space_alerted_us = now;
        send_alert("the spool is nearly full",
                   "The file system of the spool " + m_config->queue.dir + " on " + m_config->hostname +
                       " is nearly full: new mail gets 452 4.3.1 Insufficient system storage until there is room "
                       "again. Free space on it (or move the spool to a larger file system), and look for the reason "
                       "mail piles up: `smtpgw queue list`.\n");
    }
}

void QueueManager::send_alert(const std::string& subject, const std::string& body) {
    const auto& n = *m_config->notify;
    std::string id = m_new_id();
    std::time_t now_s = std::time_t(now_us() / k_second);
    const std::string& host = m_config->hostname;
    std::string content = "Received: by " + host + " (smtpgw) id " + id + "; " + rfc5322_date(now_s) + "\r\n" +
                          "From: Mail Delivery System <MAILER-DAEMON@" + host + ">\r\nTo: <" + n.postmaster +
                          ">\r\nSubject: smtpgw on " + host + ": " + subject + "\r\nDate: " + rfc5322_date(now_s) +
                          "\r\nMessage-ID: <" + id + ".alert@" + host +
                          ">\r\nAuto-Submitted: auto-generated\r\nMIME-Version: 1.0\r\n"
                          "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n";
    for (size_t pos = 0; pos < body.size();) {  // CRLF line ends
        size_t nl = body.find('\n', pos);
        if (nl == std::string::npos) nl = body.size();
        content += body.substr(pos, nl - pos) + "\r\n";
        pos = nl + 1;
    }
    Envelope e;
    e.id = id;
    e.arrival_us = now_us();
    e.size = content.size();
    e.client_name = "localhost";
    e.client_ip = "127.0.0.1";
    e.helo = host;
    e.protocol = "local";
    e.body = "8BITMIME";
    e.message_id = "<" + id + ".alert@" + host + ">";
    e.recipients.emplace_back(n.postmaster);
    auto txn = m_spool.begin(id);
    m_spool.write(txn, std::move(content), [] {});
    m_spool.commit(txn, std::move(e), [this, subject](CommitResult r, const Envelope& stored) {
        if (r != CommitResult::Stored) {
            log::warning(log::Component::Qmgr, "cannot queue the alert to notify.postmaster: " + subject);
            return;
        }
        log::warning(log::Component::Qmgr, "alert to notify.postmaster: " + subject + ": " + stored.id);
        if (!m_stopping) add(stored);
    });
}

}  // namespace gateway
