// The queue manager: every message in the spool, when it is tried next, where each of its
// recipients goes, and what became of them.
//
// A message is taken up when it is due (at once when it arrives, then on the queue.retry
// schedule). Its open recipients are routed (routes: are read at that moment) and grouped into
// one job per destination. Each destination keeps a queue of jobs and up to
// delivery.destination_concurrency sessions that take jobs one after another over one
// connection. When all jobs of a message are back, the results are written to the envelope,
// bounces and delay warnings are queued as new messages, and the message is either removed or
// scheduled again. Every delivery attempt leaves one Postfix-style log line per recipient.
//
// At most queue.active_limit messages are taken up at once (Postfix's qmgr_message_active_limit):
// the others wait, new arrivals and due retries taking turns, so that neither a backlog nor a
// flood of new mail holds the other up, and memory and descriptors stay bounded however large
// the queue.
//
// Call order: start() once; load() for the spool's messages as they are read (the listener
// is open meanwhile) and loaded() at the end; add() for each message the listener stored;
// flush() to retry now; reload() on SIGHUP; stop() before the spool is closed.
#pragma once

#include "conf/config.hpp"
#include "gateway/dns/dns.hpp"
#include "gateway/queue/bounce.hpp"
#include "gateway/queue/routing.hpp"
#include "gateway/queue/spool.hpp"
#include "gateway/smtp/delivery.hpp"
#include "gateway/smtp/delivery_session.hpp"
#include "gateway/smtp/nexthop.hpp"

#include <uv.h>

#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

namespace gateway {

class QueueManager : public SessionOwner {
public:
    QueueManager(uv_loop_t* loop, std::shared_ptr<const conf::Config> config, Spool& spool, dns::Client& dns,
                 SelfTest is_self, std::function<std::string()> new_queue_id);
    ~QueueManager() override;
    QueueManager(const QueueManager&) = delete;
    QueueManager& operator=(const QueueManager&) = delete;

    void start();
    void load(std::vector<Envelope> recovered);
    void loaded(size_t messages, size_t damaged, double seconds);
    // The spool is still being read: an ID not known yet may be in it.
    bool loading() const { return m_loading; }
    // A message just stored; `content`, when given, spares its first delivery a disk read.
    void add(const Envelope& e, std::shared_ptr<const std::string> content = nullptr);
    bool flush(const std::string& id);  // "" for every message; false for an unknown ID
    // `written`, when given, is called once: when the change is on disk (false: it could not be
    // written), or at once when there is nothing to write now (an unknown ID, a message already
    // so, or one whose change waits for the end of its delivery attempt).
    using Written = std::function<void(bool ok)>;
    // `smtpgw queue delete`: the message goes without a bounce; one being delivered goes when
    // its attempt ends (Later).
    enum class Removal { Unknown, Removed, Later };
    Removal remove(const std::string& id, Written written = nullptr);
    // `smtpgw queue hold` and `release`: a held message is never tried (nor expires) until
    // released; one being delivered is held when its attempt ends (Later).
    enum class Hold { Unknown, Done, Later, Already };
    Hold hold(const std::string& id, Written written = nullptr);
    Hold unhold(const std::string& id, Written written = nullptr);
    bool held(const std::string& id) const;
    // `delete --all`, `hold --all` or `release --all` given while the spool is still being read
    // (loading()): the messages read after it get the same (flush("") does this by itself).
    enum class AllAction { Delete, Hold, Release };
    void also_when_loaded(AllAction action);
    // The messages, in no particular order (the console's Email Queue).
    std::vector<const Envelope*> messages() const;
    std::vector<std::string> ids() const;
    int64_t oldest_arrival_us() const;  // 0 for an empty queue
    size_t held_count() const;
    void reload(std::shared_ptr<const conf::Config> config);
    // The DKIM keys deliveries sign with from now on (dkim::Keys::load of the configuration).
    void set_dkim(std::shared_ptr<const dkim::Keys> keys) { m_dkim = std::move(keys); }
    void stop();  // deliveries in flight are abandoned; their messages stay queued as they were

    // Each destination in use, for the console: its sessions, its concurrency window, jobs
    // waiting, and whether it is dead (failed recently; mail for it waits until dead_until_us).
    struct DestinationState {
        std::string key;  // "upstream:NAME" or "direct:DOMAIN"
        unsigned sessions = 0, window = 0, limit = 0;
        size_t jobs = 0;
        int64_t dead_until_us = 0;  // wall clock; 0: healthy
        std::string dsn, reason;    // the last failure, while dead
    };
    std::vector<DestinationState> destination_states() const;

    size_t size() const { return m_messages.size(); }
    size_t destinations() const { return m_dests.size(); }  // in use: mail queued, connections, or a recent failure

    // SessionOwner
    std::optional<DeliveryJob> take_job(DeliverySession* s) override;
    const Envelope* envelope(const std::string& message_id) override;
    std::shared_ptr<const std::string> content(const std::string& message_id) override;
    void read_content(const std::string& message_id, uint64_t offset, size_t max, ContentDone done) override;
    void job_done(const std::string& destination, JobResult result) override;
    void destination_failed(const std::string& destination, const DestinationFailure& failure) override;
    void session_failed(const std::string& destination, const DestinationFailure& failure) override;
    void session_throttled(DeliverySession* s, const std::string& reason) override;
    void session_idle(DeliverySession* s, bool idle) override;
    void session_closed(DeliverySession* s) override;

private:
    struct Message {
        Envelope env;
        bool active = false;    // jobs out, or results being written
        bool deleting = false;  // `queue delete` asked for it
        bool holding = false;   // `queue hold` asked for it during an attempt
        bool counted = false;   // one of the active messages under queue.active_limit
        unsigned jobs = 0;
        int64_t activated_us = 0;
        std::vector<size_t> bounced;                 // recipients that failed for good in this attempt
        std::shared_ptr<const std::string> content;  // kept in memory for the first attempt
    };
    struct DestQueue {
        Destination destination;
        std::deque<DeliveryJob> jobs;
        std::vector<DeliverySession*> idle;
        std::set<DeliverySession*> starting;  // sessions that have not taken a job yet
        unsigned sessions = 0;
        int64_t dead_until = 0;  // after a failure, jobs are deferred until then
        DestinationFailure dead;
        // Postfix's concurrency feedback: sessions open at most `window`, which starts at
        // delivery.initial_concurrency, grows with each session that delivers and shrinks with each
        // that fails (a 421 for too many connections, a refusal under load).
        unsigned window = 0;
        // After a thread limit (432 4.3.2): no new session until hold_until when none is left,
        // and the window stays at most `ceiling` until ceiling_until.
        int64_t hold_until = 0;
        unsigned throttles = 0;  // thread limits since the last delivery
        unsigned ceiling = 0;
        int64_t ceiling_until = 0;
        int64_t next_send_us = 0;  // upstreams.NAME.rate: the next message goes then at the earliest
    };

    static bool unused(const DestQueue& q, int64_t now);
    void prune();
    void schedule_prune();
    unsigned concurrency_limit(const DestQueue& q) const;
    bool rate_allows(DestQueue& q, bool take);
    void wake_at(const DestQueue& q, int64_t when_us);
    void on_wake();
    void schedule(Message& m, int64_t when_us);
    void arm_timer();
    void on_timer();
    void activate(Message& m);
    void take_up();
    void release(Message& m);
    void enqueue(Message& m, const Destination& d, DeliveryJob job, bool first = false);
    void enqueue_parts(Message& m, const Destination& d, DeliveryJob job);
    void dispatch(DestQueue& q);
    void start_session(DestQueue& q);
    std::optional<Destination> destination_for(const std::string& via, const std::string& recipient) const;
    void apply(Message& m, const RecipientResult& r, const Delays& d);
    void job_finished(Message& m);
    void finalize(Message& m);
    void send_notices(const std::string& id, std::vector<NoticeKind> kinds, std::function<void(bool warned)> then);
    void queue_notice(const std::string& id, NoticeKind kind, std::string headers, std::function<void(bool)> done);
    void persist(const std::string& id, bool warned);
    bool postmaster_copy(const Message& m, NoticeKind kind) const;  // notify: does the postmaster get one?
    void check_resources();                                         // notify: resource alerts
    void send_alert(const std::string& subject, const std::string& body);
    void log_delivery(const Message& m, const RecipientResult& r, const Delays& d) const;
    int64_t retry_delay_us(unsigned attempts) const;

    uv_loop_t* m_loop;
    std::shared_ptr<const conf::Config> m_config;
    Spool& m_spool;
    HopResolver m_hops;
    TlsContexts m_tls;
    std::shared_ptr<const dkim::Keys> m_dkim;
    std::unique_ptr<Router> m_router;
    std::function<std::string()> m_new_id;
    uv_timer_t* m_timer = nullptr;
    uv_timer_t* m_prune_timer = nullptr;
    uv_timer_t* m_wake_timer = nullptr;   // destinations held back for a moment
    uv_timer_t* m_alert_timer = nullptr;  // notify: resource checks
    int64_t m_resources_checked_us = 0;
    int64_t m_age_alerted_us = 0;    // the oldest-message alert went then; 0: the queue is young again
    int64_t m_space_alerted_us = 0;  // the spool-space alert went then; 0: there is room again
    std::set<std::pair<int64_t, std::string>> m_wakeups;  // (when, destination key)
    bool m_stopping = false;

    std::unordered_map<std::string, Message> m_messages;
    std::set<std::pair<int64_t, std::string>> m_schedule;  // (due, id) of messages waiting
    std::unordered_map<std::string, DestQueue> m_dests;
    std::map<DeliverySession*, std::shared_ptr<DeliverySession>> m_sessions;
    // Destinations that want a session when one is free, first come first served.
    std::deque<std::string> m_waiting;
    std::set<std::string> m_waiting_keys;
    std::deque<std::string> m_incoming;  // new arrivals waiting for room under the active limit
    bool m_incoming_turn = true;         // who is taken up next when both wait
    size_t m_active = 0;                 // messages counted against the active limit
    bool m_loading = true;
    bool m_flush_on_load = false;        // every message flushed while the queue was being read
    bool m_delete_on_load = false;       // every message deleted meanwhile
    std::optional<bool> m_hold_on_load;  // every message held (true) or released (false) meanwhile
    uint64_t m_cached_bytes = 0;         // contents kept in memory, bounded by k_cache_limit
    static constexpr uint64_t k_cache_limit = 64 * 1024 * 1024;
    static constexpr int64_t k_throttle_pause_us = 2'000'000;     // no session left after a 432
    static constexpr int64_t k_throttle_memory_us = 300'000'000;  // the window stays below a 432's
    static constexpr unsigned k_throttle_limit = 10;
    static constexpr size_t k_take_up_batch =
        1000;  // messages taken up in one turn of the loop              // 432s in a row, then the retry schedule
    void drop_content(Message& m);
    void erase_now(Message& m, Written written = nullptr);
    static void done_now(const Written& written);
};

}  // namespace gateway
