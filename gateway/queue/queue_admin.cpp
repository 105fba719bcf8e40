#include "gateway/queue/queue_admin.hpp"

#include "gateway/common/envelope.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>
#include <cerrno>
#include <cstring>

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

// ID.env replaced the way the gateway does it: a new file, synced, renamed over the old one.
bool write_envelope(const SpoolLayout& layout, const Envelope& e, std::string& error) {
    std::string path = layout.envelope(e.id), tmp = path + ".tmp";
    std::string text = serialize(e);
    ::unlink(tmp.c_str());  // a leftover, or a link someone put there
    int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    bool ok = fd >= 0 && ::write(fd, text.data(), text.size()) == ssize_t(text.size()) && fdatasync(fd) == 0;
    if (fd >= 0) ::close(fd);
    ok = ok && rename(tmp.c_str(), path.c_str()) == 0 && sync_dir(layout.queue());
    if (!ok) {
        error = "cannot write " + path + ": " + std::strerror(errno);
        ::unlink(tmp.c_str());
    }
    return ok;
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
    for (auto& e : chosen(layout, id, id.empty(), err, unknown)) {
        e.next_attempt_us = 0;
        std::string error;
        if (!write_envelope(layout, e, error)) {
            err << "smtpgw: " << error << "\n";
            status = 1;
            continue;
        }
        out << e.id << ": will be tried as soon as the gateway starts\n";
    }
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
