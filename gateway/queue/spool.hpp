// The durable spool: the one module that writes to disk.
//
// Layout under queue.dir:
//   lock              flock()ed by the running gateway, and by queue commands working offline
//   queue/ID          one message: its content (CRLF lines, our headers first), then the envelope
//                     as accepted (envelope.hpp), then a fixed-size trailer giving the content size
//   queue/ID.env      the envelope as it is now, once a delivery attempt has changed it
//   queue/*.tmp       envelope updates being written; renamed over ID.env when durable
//   corrupt/          files found damaged or half-written at start-up, moved aside and logged
//   free/N            files of delivered messages, kept to be written over by new ones
//
// Commit of one message: write queue/ID (content as it arrives, then envelope and trailer),
// then fdatasync it and fsync queue/ together. Only then does the session say 250. A file whose
// trailer is missing or whose envelope fails its checksum was never acknowledged: it is moved
// aside at the next start. One file and one sync per message keep the path to 250 short.
//
// Files are recycled: a delivered message's file moves to free/ and a new message takes it over
// (renamed to its ID, written from the start, cut to length). Writing over blocks that are
// already allocated spares the file system an inode and block allocation per message, which
// under a steady flow is most of the cost of a create and an unlink. A recycled file keeps
// stale bytes only until it is rewritten, and its envelope names its old ID, so a file cut short
// by a crash is recognised as never acknowledged.
//
// All disk work happens on two writer threads, never on the event loop. The writer stores the
// messages being received: it takes every job queued while it was busy as one batch, so many
// sessions waiting for a commit share one directory fsync (group commit). The bulk writer
// rewrites envelopes and removes messages for the queue manager, k_bulk_batch at a time: a
// mass deferral after a destination dies never holds up a client waiting for its 250, nor opens
// more than a batch's descriptors. Results come back on the loop through a uv_async_t. The
// reader of the queue at start-up is a third thread, for that time only.
//
// Call order: open() (blocking, at start-up, short: it only lists the queue directory), load(),
// then begin()/write()/commit()/abort() and update()/remove() from the loop thread, then close()
// before the loop is closed.
#pragma once

#include "gateway/common/envelope.hpp"
#include "gateway/queue/sync_pool.hpp"

#include <uv.h>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace gateway {

struct SpoolTxn;  // a message being written; opaque to callers

struct RecoveredMessage {
    Envelope envelope;
};

struct SpoolLayout {
    std::string root;
    std::string queue() const { return root + "/queue"; }
    std::string corrupt() const { return root + "/corrupt"; }
    std::string lock() const { return root + "/lock"; }
    std::string free() const { return root + "/free"; }
    std::string message(const std::string& id) const { return queue() + "/" + id; }
    std::string envelope(const std::string& id) const { return queue() + "/" + id + ".env"; }
};

// The process id of the gateway running on this spool, or 0 when none holds its lock.
int running_gateway(const SpoolLayout& layout);

// Why the spool is not as the gateway makes it (a folder that is a link, a lock that is not a
// plain file); empty when it is. Nothing works on such a spool.
std::string spool_problem(const SpoolLayout& layout);

// The last line of a message file: "smtpgw-content " + 16 hex digits + "\n".
constexpr size_t k_trailer_size = 32;
std::string message_trailer(uint64_t content_size);

// Reads a message file's current envelope (ID.env if present, else the one inside the file)
// and the content size; the error says what is wrong with a damaged file.
struct StoredMessage {
    std::optional<Envelope> envelope;
    uint64_t content_size = 0;
    std::string error;
    bool missing = false;  // no such message (removed)
};
StoredMessage read_stored_message(const SpoolLayout& layout, const std::string& id);

// The queue directory's names, sorted: message files (oldest first, as IDs sort by arrival),
// envelope updates whose message file is not there, and names that are no spool file.
struct SpoolListing {
    std::vector<std::string> ids;
    std::vector<std::string> lone_envelopes;                   // IDs
    std::vector<std::pair<std::string, std::string>> damaged;  // file name in queue/, reason
    // `queue import` interrupted: ID.import (a copy coming in) and ID.exported.NEW (gone out).
    // Left alone; the next run of the import finishes them.
    std::vector<std::string> in_transit;
};
SpoolListing list_spool(const SpoolLayout& layout);

// What the queue directory holds, read without changing anything.
struct SpoolScan {
    std::vector<Envelope> messages;
    std::vector<std::pair<std::string, std::string>> damaged;  // file name in queue/, reason
};

SpoolScan scan_spool(const SpoolLayout& layout);

class Spool {
public:
    using CommitDone = std::function<void(CommitResult, const Envelope&)>;
    using Done = std::function<void(bool ok)>;

    explicit Spool(std::string root);
    ~Spool();
    Spool(const Spool&) = delete;
    Spool& operator=(const Spool&) = delete;

    // Creates the directories, takes the lock and lists the queue directory; returns the IDs of
    // the messages found, oldest first. Their envelopes are read by load(). Throws
    // std::runtime_error with the reason.
    std::vector<std::string> open(uv_loop_t* loop);

    // Reads the envelopes of the messages open() listed, on a thread of its own, and moves
    // damaged files aside (logging each): the listener need not wait for a large queue. `chunk`
    // gets the envelopes on the loop, k_load_chunk at a time; the next chunk is read only once
    // the loop has taken the one before, so the loop is never flooded. `done` comes last.
    struct LoadSummary {
        size_t messages = 0;  // loaded
        size_t damaged = 0;   // files moved to corrupt/, at open() and since
        double seconds = 0;
    };
    void load(std::function<void(std::vector<Envelope>)> chunk, std::function<void(const LoadSummary&)> done);
    static constexpr size_t k_load_chunk = 1000;

    std::shared_ptr<SpoolTxn> begin(const std::string& id);
    // Queues content; returns false when the transaction has more than the backlog limit in
    // flight: the caller should stop reading until `resume` is called.
    bool write(const std::shared_ptr<SpoolTxn>& txn, std::string&& data, std::function<void()> resume);
    void commit(const std::shared_ptr<SpoolTxn>& txn, Envelope&& envelope, CommitDone done);
    void abort(const std::shared_ptr<SpoolTxn>& txn);

    // Reads up to `max` octets of a message's content from `offset` on libuv's thread pool
    // (never past the content: the envelope that follows it in the file is not returned);
    // `done` gets 0 or an errno value, and the data (shorter than `max` at the end).
    using ReadDone = std::function<void(int err, std::string data)>;
    void read(const std::string& id, uint64_t content_size, uint64_t offset, size_t max, ReadDone done);

    // Rewrites the envelope of a stored message atomically; removes a message.
    void update(const Envelope& envelope, Done done);
    // has_update: ID.env exists; size: the content size (small files are kept for reuse).
    void remove(const std::string& id, bool has_update, uint64_t size, Done done);

    // Free space is below what one more message of `message_size` octets could need.
    bool storage_low(uint64_t message_size) const;

    void close();  // finishes queued jobs, stops the writer, closes the uv handle
    // Envelope updates and removals waiting for the writer (after the messages being received,
    // which always go first).
    size_t bulk_backlog();
    // Writer batches that made envelopes durable; fewer than commits when sessions share syncs.
    uint64_t commit_batches() const { return m_commit_batches.load(); }
    const SpoolLayout& layout() const { return m_layout; }

    static constexpr uint64_t k_backlog_limit = 4 * 1024 * 1024;
    // Envelope updates and removals in one batch of their writer: an update holds a descriptor
    // until its batch is synced, so however many messages a mass deferral gives back at once,
    // few descriptors are open.
    static constexpr size_t k_bulk_batch = 256;

private:
    struct Job;
    void run_writer(bool bulk);
    void run_batch(std::vector<Job>& batch, SyncPool& sync_pool);
    void run_loader(SpoolListing listing);
    bool move_aside(const std::string& name, const std::string& why);
    void sync_dirs();
    void push(Job&& job);
    void on_async();
    void refresh_free_space();

    SpoolLayout m_layout;
    uv_loop_t* m_loop = nullptr;
    uv_async_t* m_async = nullptr;
    int m_lock_fd = -1;
    int m_dir_fd = -1;
    std::atomic<uint64_t> m_free_bytes{UINT64_MAX};
    std::atomic<uint64_t> m_commit_batches{0};
    SyncPool m_sync{7};       // with the writer itself: up to eight syncs in flight
    SyncPool m_bulk_sync{3};  // the bulk writer's
    // Recycled files ready to take a new message, under m_free_mutex.
    std::mutex m_free_mutex;
    std::vector<std::pair<std::string, uint64_t>> m_free;  // path, octets
    uint64_t m_free_sequence = 0;
    uint64_t m_free_kept = 0;                                         // octets in m_free's files
    static constexpr size_t k_free_limit = 512;                       // files kept for reuse
    static constexpr uint64_t k_free_file_limit = 1024 * 1024;        // larger ones are not kept
    static constexpr uint64_t k_free_bytes_limit = 64 * 1024 * 1024;  // nor more than this in all

    std::mutex m_mutex;
    std::condition_variable m_cv;                  // the writer waits on it
    std::condition_variable m_bulk_cv;             // the bulk writer
    std::vector<Job> m_jobs;                       // to the writer: messages being received
    std::deque<Job> m_bulk;                        // to the bulk writer: envelope updates and removals
    std::vector<std::function<void()>> m_results;  // back to the loop
    bool m_stop = false;
    std::thread m_thread;       // the writer
    std::thread m_bulk_thread;  // the bulk writer

    SpoolListing m_listing;      // from open() to load()
    size_t m_moved_at_open = 0;  // names that were no message
    std::thread m_loader;
    std::condition_variable m_load_cv;
    bool m_load_stop = false;     // under m_mutex
    size_t m_load_in_flight = 0;  // chunks handed to the loop and not yet taken, under m_mutex
    std::function<void(std::vector<Envelope>)> m_load_chunk;  // loop thread only
    std::function<void(const LoadSummary&)> m_load_done;
};

}  // namespace gateway
