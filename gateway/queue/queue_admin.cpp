#include "gateway/queue/queue_admin.hpp"

#include "gateway/common/envelope.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>
#include <algorithm>
#include <cerrno>
#include <cstring>
#include <vector>

namespace gateway {

namespace {

class SpoolLock {
public:
    explicit SpoolLock(const SpoolLayout& layout) {
        if (m_error = spool_problem(layout); !m_error.empty()) return;
        m_fd = ::open(layout.lock().c_str(), O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
        if (m_fd < 0) {
            m_error = "cannot open " + layout.lock() + ": " + std::strerror(errno);
        } else if (flock(m_fd, LOCK_EX | LOCK_NB) != 0) {
            m_error = "the spool " + layout.root + " is in use by a running gateway";
            ::close(m_fd);
            m_fd = -1;
        }
    }
    ~SpoolLock() {
        if (m_fd >= 0) ::close(m_fd);
    }
    SpoolLock(const SpoolLock&) = delete;
    SpoolLock& operator=(const SpoolLock&) = delete;
    bool held() const { return m_fd >= 0; }
    const std::string& error() const { return m_error; }

private:
    int m_fd = -1;
    std::string m_error;
};

bool sync_dir(const std::string& dir) {
    int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return false;
    bool ok = fsync(fd) == 0;
    ::close(fd);
    return ok;
}

// ID.env replaced the way the gateway does it (a new file, synced, renamed over the old one),
// for many envelopes at once with two syncs a batch in place of two per message: every new file
// is written, then the file system synced, then each is renamed over the old one, then the
// directory synced. A crash in between leaves temporary
// files, which the next start moves aside; the envelopes in place stay whole.
// `done` says, after each ID, what became of it.
void write_envelopes(const SpoolLayout& layout, std::vector<Envelope>& envelopes, const char* done, std::ostream& out,
                     std::ostream& err, int& status) {
    constexpr size_t k_batch = 1000;
    for (size_t from = 0; from < envelopes.size(); from += k_batch) {
        size_t to = std::min(envelopes.size(), from + k_batch);
        std::vector<bool> written(to - from, false);
        for (size_t i = from; i < to; ++i) {
            const Envelope& e = envelopes[i];
            std::string path = layout.envelope(e.id), tmp = path + ".tmp", text = serialize(e);
            ::unlink(tmp.c_str());  // a leftover, or a link someone put there
            int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
            bool ok = fd >= 0 && ::write(fd, text.data(), text.size()) == ssize_t(text.size());
            int saved = errno;
            if (fd >= 0) ::close(fd);
            written[i - from] = ok;
            if (!ok) {
                err << "smtpgw: cannot write " << path << ": " << std::strerror(saved) << "\n";
                ::unlink(tmp.c_str());
                status = 1;
            }
        }
        int dir = ::open(layout.queue().c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dir < 0 || syncfs(dir) != 0) {
            err << "smtpgw: cannot sync " << layout.queue() << ": " << std::strerror(errno) << "\n";
            if (dir >= 0) ::close(dir);
            status = 1;
            return;
        }
        for (size_t i = from; i < to; ++i) {
            if (!written[i - from]) continue;
            std::string path = layout.envelope(envelopes[i].id);
            if (rename((path + ".tmp").c_str(), path.c_str()) != 0) {
                err << "smtpgw: cannot write " << path << ": " << std::strerror(errno) << "\n";
                status = 1;
                written[i - from] = false;
            }
        }
        int sync_error = fsync(dir) == 0 ? 0 : errno;
        ::close(dir);
        if (sync_error) {
            err << "smtpgw: cannot sync " << layout.queue() << ": " << std::strerror(sync_error) << "\n";
            status = 1;
            return;
        }
        for (size_t i = from; i < to; ++i)
            if (written[i - from]) out << envelopes[i].id << ": " << done << "\n";
    }
}

// The envelopes of the messages asked for: one ID, or every message in the spool.
std::vector<Envelope> chosen(const SpoolLayout& layout, const std::string& id, bool all, std::ostream& err,
                             bool& unknown) {
    unknown = false;
    if (all) return scan_spool(layout).messages;
    auto stored = read_stored_message(layout, id);
    if (stored.envelope) return {std::move(*stored.envelope)};
    err << "smtpgw: " << id << ": " << (stored.missing ? "no such message in the queue" : stored.error) << "\n";
    unknown = true;
    return {};
}

}  // namespace

int offline_flush(const SpoolLayout& layout, const std::string& id, std::ostream& out, std::ostream& err) {
    SpoolLock lock(layout);
    if (!lock.held()) return err << "smtpgw: " << lock.error() << "\n", 1;
    bool unknown = false;
    int status = 0;
    auto envelopes = chosen(layout, id, id.empty(), err, unknown);
    for (auto& e : envelopes)
        e.next_attempt_us = 0;
    write_envelopes(layout, envelopes, "will be tried as soon as the gateway starts", out, err, status);
    return unknown ? 1 : status;
}

int offline_hold(const SpoolLayout& layout, const std::string& id, bool hold, std::ostream& out, std::ostream& err) {
    SpoolLock lock(layout);
    if (!lock.held()) return err << "smtpgw: " << lock.error() << "\n", 1;
    bool unknown = false;
    int status = 0;
    std::vector<Envelope> changed;
    for (auto& e : chosen(layout, id, id == "--all", err, unknown)) {
        if (e.held == hold) {
            if (id != "--all") out << e.id << (hold ? ": already on hold\n" : ": not on hold\n");
            continue;
        }
        e.held = hold;
        if (!hold) e.next_attempt_us = 0;  // released: tried as soon as the gateway starts
        changed.push_back(std::move(e));
    }
    write_envelopes(layout, changed, hold ? "placed on hold" : "released; tried as soon as the gateway starts", out,
                    err, status);
    return unknown ? 1 : status;
}

int offline_delete(const SpoolLayout& layout, const std::string& id, std::ostream& out, std::ostream& err) {
    SpoolLock lock(layout);
    if (!lock.held()) return err << "smtpgw: " << lock.error() << "\n", 1;
    bool unknown = false;
    int status = 0;
    for (const auto& e : chosen(layout, id, id == "--all", err, unknown)) {
        const std::string& qid = e.id;
        // The envelope update first: a message file without it is still whole.
        bool ok = (::unlink(layout.envelope(qid).c_str()) == 0 || errno == ENOENT) &&
                  ::unlink(layout.message(qid).c_str()) == 0;
        if (!ok) {
            err << "smtpgw: cannot remove " << layout.message(qid) << ": " << std::strerror(errno) << "\n";
            status = 1;
            continue;
        }
        out << qid << ": removed\n";
    }
    sync_dir(layout.queue());
    return unknown ? 1 : status;
}

}  // namespace gateway
