// The durable spool: the one module that writes to disk.
//
// Layout under queue.dir:
//   lock              flock()ed by the running gateway, and by queue commands working offline
//   queue/ID.msg      message content as stored (CRLF lines, our headers first); written in place
//   queue/ID.env      the envelope (envelope.hpp); its presence is the commit record
//   queue/*.tmp       envelopes being written; renamed over ID.env when durable
//   corrupt/          files found damaged or half-written at start-up, moved aside and logged
//
// Commit order for one message: write ID.msg, fdatasync it; write ID.env.tmp, fdatasync it;
// rename it to ID.env; fsync queue/. Only then does the session say 250. A crash at any point
// leaves either no ID.env (the client was never told 250; the leftovers are moved aside at the
// next start) or a complete message.
//
// All disk work happens on one writer thread, never on the event loop. The writer takes every
// job queued while it was busy as one batch, so many sessions waiting for a commit share one
// directory fsync (group commit). Results come back on the loop through a uv_async_t.
//
// Call order: open() (blocking, at start-up), then begin()/write()/commit()/abort() and
// update()/remove() from the loop thread, then close() before the loop is closed.
#pragma once

#include "gateway/envelope.hpp"

#include <uv.h>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
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
    std::string content(const std::string& id) const { return queue() + "/" + id + ".msg"; }
    std::string envelope(const std::string& id) const { return queue() + "/" + id + ".env"; }
};

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

    // Creates the directories, takes the lock, moves damaged leftovers aside (logging each)
    // and returns the messages found. Throws std::runtime_error with the reason.
    std::vector<RecoveredMessage> open(uv_loop_t* loop);

    std::shared_ptr<SpoolTxn> begin(const std::string& id);
    // Queues content; returns false when the transaction has more than the backlog limit in
    // flight: the caller should stop reading until `resume` is called.
    bool write(const std::shared_ptr<SpoolTxn>& txn, std::string&& data, std::function<void()> resume);
    void commit(const std::shared_ptr<SpoolTxn>& txn, Envelope&& envelope, CommitDone done);
    void abort(const std::shared_ptr<SpoolTxn>& txn);

    // Reads up to `max` octets of a message's content from `offset` on libuv's thread pool;
    // `done` gets 0 or an errno value, and the data (shorter than `max` at the end).
    using ReadDone = std::function<void(int err, std::string data)>;
    void read(const std::string& id, uint64_t offset, size_t max, ReadDone done);

    // Rewrites the envelope of a stored message atomically; removes a message.
    void update(const Envelope& envelope, Done done);
    void remove(const std::string& id, Done done);

    // Free space is below what one more message of `message_size` octets could need.
    bool storage_low(uint64_t message_size) const;

    void close();  // finishes queued jobs, stops the writer, closes the uv handle
    // Writer batches that made envelopes durable; fewer than commits when sessions share syncs.
    uint64_t commit_batches() const { return m_commit_batches.load(); }
    const SpoolLayout& layout() const { return m_layout; }

    static constexpr uint64_t k_backlog_limit = 4 * 1024 * 1024;

private:
    struct Job;
    void run_writer();
    void run_batch(std::vector<Job>& batch);
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

    std::mutex m_mutex;
    std::condition_variable m_cv;
    std::vector<Job> m_jobs;                       // to the writer
    std::vector<std::function<void()>> m_results;  // back to the loop
    bool m_stop = false;
    std::thread m_thread;
};

}  // namespace gateway
