// The spool's writer thread: every byte the gateway writes to the spool is written here.
#include "gateway/common/log.hpp"
#include "gateway/queue/spool_internal.hpp"

#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>

namespace gateway {

namespace {

int write_all(int fd, const char* p, size_t n) {
    while (n > 0) {
        ssize_t w = ::write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            return errno;
        }
        p += w;
        n -= size_t(w);
    }
    return 0;
}

// Several pieces in one call, short writes carried on.
int write_all(int fd, std::vector<iovec> pieces) {
    size_t i = 0;
    while (i < pieces.size()) {
        ssize_t w = ::writev(fd, pieces.data() + i, int(std::min<size_t>(pieces.size() - i, IOV_MAX)));
        if (w < 0) {
            if (errno == EINTR) continue;
            return errno;
        }
        size_t done = size_t(w);
        size_t before = i;
        while (i < pieces.size() && done >= pieces[i].iov_len)
            done -= pieces[i++].iov_len;
        if (i < pieces.size()) {
            if (w == 0 && i == before) return EIO;  // no progress
            pieces[i].iov_base = static_cast<char*>(pieces[i].iov_base) + done;
            pieces[i].iov_len -= done;
        }
    }
    return 0;
}

// A file written in this batch that must be durable before its job is answered.
struct PendingFile {
    std::string id;
    std::string path;   // the message file, or the temporary name of an envelope update
    std::string final;  // an update is renamed to this one once durable
    int fd = -1;
    int error = 0;
    std::function<void(int)> done;
};

void report(const std::string& id, const std::string& what, int err) {
    log::warning(log::Component::Cleanup,
                 id + ": queue file write error" + (what.empty() ? "" : " (" + what + ")") + ": " + std::strerror(err));
}

}  // namespace

void Spool::run_writer(bool bulk) {
    for (;;) {
        std::vector<Job> batch;
        {
            std::unique_lock<std::mutex> lock(m_mutex);
            auto ready = [&] { return m_stop || !(bulk ? m_bulk.empty() : m_jobs.empty()); };
            // Idle: look at the free space now and then, so MAIL sees a current figure.
            if (!(bulk ? m_bulk_cv : m_cv).wait_for(lock, std::chrono::seconds(2), ready)) {
                lock.unlock();
                if (!bulk) refresh_free_space();
                continue;
            }
            if (bulk) {
                if (m_bulk.empty()) return;  // stopping
                size_t n = std::min(m_bulk.size(), k_bulk_batch);
                for (size_t i = 0; i < n; ++i) {
                    batch.push_back(std::move(m_bulk.front()));
                    m_bulk.pop_front();
                }
            } else {
                if (m_jobs.empty()) return;  // stopping
                batch.swap(m_jobs);
            }
        }
        run_batch(batch, bulk ? m_bulk_sync : m_sync);
    }
}

void Spool::run_batch(std::vector<Job>& batch, SyncPool& sync_pool) {
    static std::atomic<uint64_t> tmp_sequence{0};
    std::vector<PendingFile> pending;
    std::vector<std::function<void()>> results;

    // A message is written straight under its name; until its trailer is on disk it is not a
    // valid message (start-up moves such a file aside), and nobody is told 250 before then.
    auto open_message = [this](SpoolTxn& t) {
        if (t.created || t.error) return;
        std::string path = m_layout.message(t.id);
        for (;;) {
            std::string free;
            {
                std::lock_guard<std::mutex> lock(m_free_mutex);
                if (m_free.empty()) break;
                free = std::move(m_free.back().first);
                m_free_kept -= m_free.back().second;
                m_free.pop_back();
            }
            // A recycled file: never over an existing message (RENAME_NOREPLACE).
            if (::renameat2(AT_FDCWD, free.c_str(), AT_FDCWD, path.c_str(), RENAME_NOREPLACE) == 0) {
                t.fd = ::open(path.c_str(), O_WRONLY | O_NOFOLLOW | O_CLOEXEC);
                if (t.fd < 0)
                    t.error = errno;
                else
                    t.created = t.recycled = true;
                return;
            }
            if (errno != ENOENT) {
                t.error = errno;
                return;
            }
        }
        t.fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (t.fd < 0)
            t.error = errno;
        else
            t.created = true;
    };
    // A message file that is no longer needed becomes a free file, or goes.
    auto release = [this](const std::string& path, uint64_t size) {
        std::string to;
        {
            std::lock_guard<std::mutex> lock(m_free_mutex);
            if (m_free.size() < k_free_limit && size <= k_free_file_limit && m_free_kept + size <= k_free_bytes_limit) {
                to = m_layout.free() + "/" + std::to_string(++m_free_sequence);
                m_free_kept += size;  // claimed before the rename, so that two releases cannot pass the limit
            }
        }
        if (!to.empty()) {
            bool renamed = ::rename(path.c_str(), to.c_str()) == 0;
            std::lock_guard<std::mutex> lock(m_free_mutex);
            if (renamed) {
                m_free.emplace_back(to, size);
                return 0;
            }
            m_free_kept -= size;
        }
        return ::unlink(path.c_str()) == 0 ? 0 : errno;
    };

    // The last content of a message that is committed by the next job: written with its
    // envelope and trailer in one call.
    const std::string* carried = nullptr;
    for (size_t k = 0; k < batch.size(); ++k) {
        Job& job = batch[k];
        SpoolTxn* t = job.txn.get();
        switch (job.kind) {
        case JobKind::Write: {
            open_message(*t);
            if (k + 1 < batch.size() && batch[k + 1].kind == JobKind::Commit && batch[k + 1].txn == job.txn)
                carried = &job.data;
            else if (!t->error)
                t->error = write_all(t->fd, job.data.data(), job.data.size());
            if (!t->error) t->written += job.data.size();
            uint64_t left = t->backlog.fetch_sub(job.data.size()) - job.data.size();
            if (left <= k_backlog_limit / 2 && t->paused.exchange(false)) {
                results.push_back([txn = job.txn] {
                    if (txn->resume) txn->resume();
                });
            }
            break;
        }
        case JobKind::Abort:
            if (t->fd >= 0) ::close(t->fd), t->fd = -1;
            if (t->created) release(m_layout.message(t->id), t->written), t->created = false;
            break;
        case JobKind::Commit: {
            // The envelope and the trailer go after the content.
            PendingFile f;
            f.id = t->id;
            f.done = std::move(job.done);
            open_message(*t);
            f.path = m_layout.message(t->id);
            f.fd = t->fd;
            t->fd = -1;
            f.error = t->error;
            std::string trailer = message_trailer(t->written);
            std::vector<iovec> pieces;
            if (carried) pieces.push_back({const_cast<char*>(carried->data()), carried->size()});
            pieces.push_back({job.data.data(), job.data.size()});
            pieces.push_back({trailer.data(), trailer.size()});
            carried = nullptr;
            if (!f.error) f.error = write_all(f.fd, std::move(pieces));
            // A recycled file may be longer than the new message: cut the old tail off.
            uint64_t end = t->written + job.data.size() + trailer.size();
            if (!f.error && t->recycled && ftruncate(f.fd, off_t(end)) != 0) f.error = errno;
            pending.push_back(std::move(f));
            break;
        }
        case JobKind::Update: {
            PendingFile f;
            f.id = job.id;
            f.done = std::move(job.done);
            f.path = m_layout.queue() + "/" + job.id + "." + std::to_string(++tmp_sequence) + ".tmp";
            f.final = m_layout.envelope(job.id);
            f.fd = ::open(f.path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
            if (f.fd < 0)
                f.error = errno;
            else
                f.error = write_all(f.fd, job.data.data(), job.data.size());
            pending.push_back(std::move(f));
            break;
        }
        case JobKind::Remove: {
            // The message file first: without it the message is no longer queued. Removal is not
            // synced: should a crash undo it, the message is delivered again (at least once).
            int err = release(m_layout.message(job.id), job.size);
            if (job.has_update) ::unlink(m_layout.envelope(job.id).c_str());
            results.push_back([done = std::move(job.done), err] { done(err); });
            break;
        }
        }
    }

    if (!pending.empty()) {
        if (&sync_pool == &m_sync) m_commit_batches++;
        // Every file's data and the directory (the new names) in one go: the journal commits
        // them together.
        std::vector<SyncPool::Item> syncs;
        for (auto& f : pending)
            if (!f.error) syncs.push_back({f.fd, true, 0});
        syncs.push_back({m_dir_fd, false, 0});
        sync_pool.sync(syncs);
        int dir_error = syncs.back().error;
        size_t k = 0;
        bool renamed = false;
        for (auto& f : pending) {
            if (!f.error) f.error = syncs[k++].error;
            if (!f.error && f.final.empty()) f.error = dir_error;
            ::close(f.fd);
            if (!f.error && !f.final.empty()) {  // an envelope update: now put it in place
                if (::rename(f.path.c_str(), f.final.c_str()) != 0)
                    f.error = errno;
                else
                    renamed = true;
            }
        }
        if (renamed && fsync(m_dir_fd) != 0) dir_error = errno;
        for (auto& f : pending) {
            if (!f.error && !f.final.empty()) f.error = dir_error;
            if (f.error) {
                report(f.id, "", f.error);
                ::unlink(f.path.c_str());  // a failed write: give the space back
            }
            if (f.done) results.push_back([done = std::move(f.done), err = f.error] { done(err); });
        }
    }
    if (!results.empty()) {
        {
            std::lock_guard<std::mutex> lock(m_mutex);
            for (auto& r : results)
                m_results.push_back(std::move(r));
        }
        uv_async_send(m_async);
    }
    refresh_free_space();
}

}  // namespace gateway
