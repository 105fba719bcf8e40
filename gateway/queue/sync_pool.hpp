// Runs fdatasync()/fsync() on several descriptors at once. File systems with a journal (ext4,
// xfs) merge syncs that arrive together into one journal commit, so a batch of N new messages
// costs about one commit instead of N. The calling thread takes part in the work.
#pragma once

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>

namespace gateway {

class SyncPool {
public:
    struct Item {
        int fd = -1;
        bool data_only = true;  // fdatasync; otherwise fsync (directories)
        int error = 0;          // errno of a failed sync
    };

    explicit SyncPool(unsigned threads);
    ~SyncPool();
    SyncPool(const SyncPool&) = delete;
    SyncPool& operator=(const SyncPool&) = delete;

    // Returns when every item has been synced.
    void sync(std::vector<Item>& items);

private:
    void work();
    void run_items(std::vector<Item>& items);

    std::mutex m_mutex;
    std::condition_variable m_start, m_done;
    std::vector<Item>* m_items = nullptr;
    std::atomic<size_t> m_next{0};
    size_t m_remaining = 0;
    unsigned m_active = 0;
    unsigned m_generation = 0;
    bool m_stop = false;
    std::vector<std::thread> m_threads;
};

}  // namespace gateway
