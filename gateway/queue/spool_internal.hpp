// Shared between the loop side (spool.cpp) and the writer thread (spool_writer.cpp).
#pragma once

#include "gateway/queue/spool.hpp"

#include <atomic>
#include <functional>
#include <memory>
#include <string>

namespace gateway {

struct SpoolTxn {
    std::string id;
    // Writer thread only.
    int fd = -1;
    int error = 0;
    bool created = false;
    bool recycled = false;  // written over a free file
    uint64_t written = 0;   // content octets in the file
    // Both threads.
    std::atomic<uint64_t> backlog{0};  // octets queued but not yet written
    std::atomic<bool> paused{false};   // the writer owes a resume() once the backlog drains
    // Loop thread only.
    std::function<void()> resume;
};

enum class JobKind { Write, Commit, Abort, Update, Remove };

struct Spool::Job {
    JobKind kind;
    std::shared_ptr<SpoolTxn> txn;  // Write, Commit, Abort
    std::string data;               // content (Write) or envelope text (Commit, Update)
    std::string id;                 // Update, Remove
    std::function<void(int)> done;  // runs on the loop with 0 or an errno value
    bool has_update = false;        // Remove: ID.env exists too
    uint64_t size = 0;              // Remove: the message's content size
};

}  // namespace gateway
