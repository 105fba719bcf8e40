// The spool's writer thread: every byte the gateway writes to the spool is written here.
#include "gateway/log.hpp"
#include "gateway/spool_internal.hpp"

#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>

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

// A file whose contents must be durable before it is renamed into place.
struct PendingFile {
    std::string id;
    std::string tmp;       // written under this name
    std::string final;     // renamed to this one
    bool replace = false;  // an envelope update replaces; a new message never does
    int fd = -1;
    int content_fd = -1;  // for a commit: the message content, synced first
    std::string content;  // its path, removed if the commit fails
    int error = 0;
    std::function<void(int)> done;
};

void report(const std::string& id, const std::string& what, int err) {
    log::warning(log::Component::Cleanup,
                 id + ": queue file write error" + (what.empty() ? "" : " (" + what + ")") + ": " + std::strerror(err));
}

}  // namespace

void Spool::run_writer() {
    for (;;) {
        std::vector<Job> batch;
        {
            std::unique_lock<std::mutex> lock(m_mutex);
            // Idle: look at the free space now and then, so MAIL sees a current figure.
            if (!m_cv.wait_for(lock, std::chrono::seconds(2), [this] { return m_stop || !m_jobs.empty(); })) {
                lock.unlock();
                refresh_free_space();
                continue;
            }
            if (m_jobs.empty() && m_stop) return;
            batch.swap(m_jobs);
        }
        run_batch(batch);
    }
}

void Spool::run_batch(std::vector<Job>& batch) {
    static std::atomic<uint64_t> tmp_sequence{0};
    std::vector<PendingFile> pending;
    std::vector<std::function<void()>> results;
    bool dir_changed = false;

    auto open_content = [this](SpoolTxn& t) {
        if (t.created || t.error) return;
        t.fd = ::open(m_layout.content(t.id).c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (t.fd < 0)
            t.error = errno;
        else
            t.created = true;
    };
    auto open_tmp = [this](const std::string& id, PendingFile& f) {
        f.tmp = m_layout.queue() + "/" + id + "." + std::to_string(++tmp_sequence) + ".tmp";
        f.final = m_layout.envelope(id);
        f.fd = ::open(f.tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (f.fd < 0) f.error = errno;
    };

    for (auto& job : batch) {
        SpoolTxn* t = job.txn.get();
        switch (job.kind) {
        case JobKind::Write: {
            open_content(*t);
            if (!t->error) t->error = write_all(t->fd, job.data.data(), job.data.size());
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
            if (t->created) ::unlink(m_layout.content(t->id).c_str()), t->created = false;
            break;
        case JobKind::Commit: {
            PendingFile f;
            f.id = t->id;
            f.done = std::move(job.done);
            open_content(*t);
            f.error = t->error;
            f.content_fd = t->fd;
            t->fd = -1;
            if (t->created) f.content = m_layout.content(t->id);
            if (!f.error) open_tmp(t->id, f);
            if (!f.error) f.error = write_all(f.fd, job.data.data(), job.data.size());
            pending.push_back(std::move(f));
            break;
        }
        case JobKind::Update: {
            PendingFile f;
            f.id = job.id;
            f.done = std::move(job.done);
            f.replace = true;
            open_tmp(job.id, f);
            if (!f.error) f.error = write_all(f.fd, job.data.data(), job.data.size());
            pending.push_back(std::move(f));
            break;
        }
        case JobKind::Remove: {
            // The envelope goes first: without it the message is no longer queued.
            int err = ::unlink(m_layout.envelope(job.id).c_str()) == 0 ? 0 : errno;
            ::unlink(m_layout.content(job.id).c_str());
            dir_changed = true;
            results.push_back([done = std::move(job.done), err] { done(err); });
            break;
        }
        }
    }

    // Make contents durable, then put the envelopes in place, then make the directory durable.
    if (!pending.empty()) m_commit_batches++;
    for (auto& f : pending) {
        if (!f.error && f.content_fd >= 0 && fdatasync(f.content_fd) != 0) f.error = errno;
        if (!f.error && fdatasync(f.fd) != 0) f.error = errno;
        if (f.content_fd >= 0) ::close(f.content_fd);
        if (f.fd >= 0) ::close(f.fd);
        if (!f.error) {
            int r = f.replace ? ::rename(f.tmp.c_str(), f.final.c_str())
                              : ::renameat2(AT_FDCWD, f.tmp.c_str(), AT_FDCWD, f.final.c_str(), RENAME_NOREPLACE);
            if (r != 0)
                f.error = errno;
            else
                dir_changed = true;
        }
    }
    int dir_error = dir_changed && fsync(m_dir_fd) != 0 ? errno : 0;
    for (auto& f : pending) {
        int err = f.error ? f.error : dir_error;
        if (err) {
            report(f.id, f.error ? "" : "queue directory", err);
            if (!f.tmp.empty()) ::unlink(f.tmp.c_str());
            if (!f.replace) {
                if (f.error == 0) ::unlink(f.final.c_str());  // renamed, but the directory is not durable
                if (!f.content.empty()) ::unlink(f.content.c_str());
            }
        }
        if (f.done) results.push_back([done = std::move(f.done), err] { done(err); });
    }
    refresh_free_space();
    if (results.empty()) return;
    {
        std::lock_guard<std::mutex> lock(m_mutex);
        for (auto& r : results)
            m_results.push_back(std::move(r));
    }
    uv_async_send(m_async);
}

}  // namespace gateway
