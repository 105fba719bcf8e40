#include "gateway/queue/queue_admin.hpp"

#include "gateway/common/envelope.hpp"
#include "gateway/common/queue_id.hpp"

#include <dirent.h>
#include <limits.h>
#include <sys/stat.h>

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>
#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdlib>
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

// A file's name in a folder made durable, or why not.
bool durable_rename(const std::string& from, const std::string& to, const std::string& dir, std::string& error) {
    if (rename(from.c_str(), to.c_str()) != 0) {
        error = "cannot rename " + from + " to " + to + ": " + std::strerror(errno);
        return false;
    }
    if (!sync_dir(dir)) {
        error = "cannot sync " + dir + ": " + std::strerror(errno);
        return false;
    }
    return true;
}

bool exists(const std::string& path) { return ::access(path.c_str(), F_OK) == 0; }

std::vector<std::string> names_in(const std::string& dir) {
    std::vector<std::string> out;
    if (DIR* d = opendir(dir.c_str())) {
        while (struct dirent* e = readdir(d))
            out.push_back(e->d_name);
        closedir(d);
    }
    std::sort(out.begin(), out.end());
    return out;
}

bool ends_with(const std::string& s, const std::string& tail) {
    return s.size() > tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
}

// `path`'s first `size` octets, then `tail`, into `to` (created, synced). False with the reason.
bool copy_message(const std::string& path, uint64_t size, const std::string& tail, const std::string& to,
                  std::string& error) {
    int in = ::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (in < 0) return error = "cannot read " + path + ": " + std::strerror(errno), false;
    ::unlink(to.c_str());  // a leftover of an attempt that did not commit
    int out = ::open(to.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (out < 0) {
        error = "cannot create " + to + ": " + std::strerror(errno);
        ::close(in);
        return false;
    }
    std::vector<char> buf(1 << 20);
    uint64_t left = size;
    bool ok = true;
    while (ok && left > 0) {
        ssize_t n = ::read(in, buf.data(), size_t(std::min<uint64_t>(left, buf.size())));
        if (n <= 0) {
            error = "cannot read " + path + ": " + (n == 0 ? "shorter than its content size" : std::strerror(errno));
            ok = false;
        } else if (::write(out, buf.data(), size_t(n)) != n) {
            error = "cannot write " + to + ": " + std::strerror(errno);
            ok = false;
        }
        left -= uint64_t(std::max<ssize_t>(n, 0));
    }
    if (ok && ::write(out, tail.data(), tail.size()) != ssize_t(tail.size()))
        error = "cannot write " + to + ": " + std::strerror(errno), ok = false;
    if (ok && fdatasync(out) != 0) error = "cannot sync " + to + ": " + std::strerror(errno), ok = false;
    ::close(in);
    ::close(out);
    if (!ok) ::unlink(to.c_str());
    return ok;
}

// Moves an interrupted import on, from DIR's markers: committed ones are finished, others undone.
bool finish_interrupted(const SpoolLayout& ours, const SpoolLayout& source, std::ostream& out, std::ostream& err) {
    bool ok = true;
    for (const auto& name : names_in(source.queue())) {
        size_t at = name.find(".exported.");
        if (at == std::string::npos) continue;
        std::string old_id = name.substr(0, at), new_id = name.substr(at + 10), marker = source.queue() + "/" + name;
        if (!QueueIdGenerator::is_valid(old_id) || !QueueIdGenerator::is_valid(new_id)) continue;
        std::string error;
        bool moved = true;
        if (exists(ours.message(new_id) + ".import"))
            moved = durable_rename(ours.message(new_id) + ".import", ours.message(new_id), ours.queue(), error);
        else if (!exists(ours.message(new_id)))  // never copied here: it stays where it was
            moved = false, ok = durable_rename(marker, source.message(old_id), source.queue(), error) && ok;
        if (moved) {
            ::unlink(source.envelope(old_id).c_str());
            ::unlink(marker.c_str());
            out << old_id << ": imported" << (new_id != old_id ? " as " + new_id : "")
                << " (finishing an interrupted import)\n";
        }
        if (!error.empty()) err << "smtpgw: " << error << "\n", ok = false;
    }
    sync_dir(source.queue());
    // Copies that never committed: the message is still in DIR.
    for (const auto& name : names_in(ours.queue()))
        if (ends_with(name, ".import")) ::unlink((ours.queue() + "/" + name).c_str());
    sync_dir(ours.queue());
    return ok;
}

}  // namespace

int offline_import(const SpoolLayout& layout, const std::string& source_root, std::ostream& out, std::ostream& err) {
    SpoolLayout source{source_root};
    char a[PATH_MAX], b[PATH_MAX];
    if (!realpath(source.queue().c_str(), a))
        return err << "smtpgw: " << source.queue() << ": " << std::strerror(errno)
                   << " (give the other instance's queue.dir, the folder that holds queue/)\n",
               1;
    ::mkdir(layout.root.c_str(), 0700);
    ::mkdir(layout.queue().c_str(), 0700);
    if (realpath(layout.queue().c_str(), b) && std::string(a) == b)
        return err << "smtpgw: " << source_root << " is this gateway's own spool\n", 1;
    SpoolLock lock(layout);
    if (!lock.held())
        return err << "smtpgw: " << lock.error()
                   << ": stop it first (a balancer sends the mail to the other instances meanwhile), or import into "
                      "an instance before it starts\n",
               1;
    SpoolLock source_lock(source);
    if (!source_lock.held())
        return err << "smtpgw: " << source_lock.error() << ": import only from an instance that is stopped or dead\n",
               1;
    int status = finish_interrupted(layout, source, out, err) ? 0 : 1;
    QueueIdGenerator ids;
    auto listing = list_spool(source);
    size_t imported = 0;
    for (const auto& id : listing.ids) {
        auto stored = read_stored_message(source, id);
        if (!stored.envelope) {
            if (stored.missing) continue;
            err << "smtpgw: " << id << ": left in " << source_root << ": " << stored.error << "\n";
            status = 1;
            continue;
        }
        // Its own ID unless this spool has it.
        std::string new_id = id;
        while (exists(layout.message(new_id)) || exists(layout.message(new_id) + ".import"))
            new_id = ids.next(std::chrono::duration_cast<std::chrono::microseconds>(
                                  std::chrono::system_clock::now().time_since_epoch())
                                  .count());
        Envelope e = std::move(*stored.envelope);
        e.id = new_id;
        std::string error, copy = layout.message(new_id) + ".import",
                           marker = source.queue() + "/" + id + ".exported." + new_id;
        bool ok = copy_message(source.message(id), stored.content_size,
                               serialize(e) + message_trailer(stored.content_size), copy, error) &&
                  sync_dir(layout.queue());
        // The commit: from the rename on, the message is this spool's.
        ok = ok && durable_rename(source.message(id), marker, source.queue(), error);
        ok = ok && durable_rename(copy, layout.message(new_id), layout.queue(), error);
        if (!ok) {
            err << "smtpgw: " << id << ": " << (error.empty() ? "cannot sync " + layout.queue() : error) << "\n";
            status = 1;
            break;  // the next run finishes or undoes it
        }
        ::unlink(source.envelope(id).c_str());
        ::unlink(marker.c_str());
        out << id << ": imported" << (new_id != id ? " as " + new_id : "") << "\n";
        imported++;
    }
    sync_dir(source.queue());
    for (const auto& [name, why] : listing.damaged)
        if (name.find(".exported.") == std::string::npos)
            err << "smtpgw: " << name << ": left in " << source_root << ": " << why << "\n";
    out << imported << " message(s) imported from " << source_root << "\n";
    return status;
}

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
