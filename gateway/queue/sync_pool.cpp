#include "gateway/queue/sync_pool.hpp"

#include <unistd.h>

#include <cerrno>

namespace gateway {

SyncPool::SyncPool(unsigned threads) {
    for (unsigned i = 0; i < threads; ++i)
        m_threads.emplace_back([this] { work(); });
}

SyncPool::~SyncPool() {
    {
        std::lock_guard<std::mutex> lock(m_mutex);
        m_stop = true;
    }
    m_start.notify_all();
    for (auto& t : m_threads)
        t.join();
}

void SyncPool::run_items(std::vector<Item>& items) {
    for (size_t i = m_next++; i < items.size(); i = m_next++) {
        Item& it = items[i];
        int r = it.data_only ? fdatasync(it.fd) : fsync(it.fd);
        if (r != 0) it.error = errno;
        std::lock_guard<std::mutex> lock(m_mutex);
        if (--m_remaining == 0) m_done.notify_all();
    }
}

void SyncPool::work() {
    unsigned seen = 0;
    std::unique_lock<std::mutex> lock(m_mutex);
    for (;;) {
        m_start.wait(lock, [&] { return m_stop || (m_generation != seen && m_items); });
        if (m_stop) return;
        seen = m_generation;
        std::vector<Item>* items = m_items;
        m_active++;  // sync() does not return while a worker still looks at the items
        lock.unlock();
        run_items(*items);
        lock.lock();
        if (--m_active == 0) m_done.notify_all();
    }
}

void SyncPool::sync(std::vector<Item>& items) {
    if (items.empty()) return;
    {
        std::lock_guard<std::mutex> lock(m_mutex);
        m_items = &items;
        m_next = 0;
        m_remaining = items.size();
        m_generation++;
    }
    // The caller works too; wake only as many helpers as there are other items.
    for (size_t i = 1; i < items.size() && i <= m_threads.size(); ++i)
        m_start.notify_one();
    run_items(items);
    std::unique_lock<std::mutex> lock(m_mutex);
    m_done.wait(lock, [&] { return m_remaining == 0; });
    m_items = nullptr;  // no worker starts on these items any more
    m_done.wait(lock, [&] { return m_active == 0; });
}

}  // namespace gateway
