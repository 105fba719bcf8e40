// Loop side of the spool, and start-up recovery. The writer thread is in spool_writer.cpp.
#include "gateway/queue/spool.hpp"

#include "gateway/common/log.hpp"
#include "gateway/common/queue_id.hpp"
#include "gateway/queue/spool_internal.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <set>
#include <stdexcept>

namespace gateway {

namespace {

std::string errno_text(int e) { return std::strerror(e); }

const char* const k_not_made_here =
    ": the spool's folders and files are made by smtpgw, and none of them is a link; move it out of the way";

void make_dir(const std::string& path) {
    if (mkdir(path.c_str(), 0700) != 0 && errno != EEXIST)
        throw std::runtime_error("cannot create " + path + ": " + errno_text(errno));
}

bool read_file(const std::string& path, std::string& out) {
    int fd = ::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) return false;
    out.clear();
    char buf[8192];
    ssize_t n;
    while ((n = ::read(fd, buf, sizeof buf)) > 0)
        out.append(buf, size_t(n));
    ::close(fd);
    return n == 0;
}

}  // namespace

std::string message_trailer(uint64_t content_size) {
    char buf[k_trailer_size + 1];
    std::snprintf(buf, sizeof buf, "smtpgw-content %016llx\n", static_cast<unsigned long long>(content_size));
    return std::string(buf, k_trailer_size);
}

StoredMessage read_stored_message(const SpoolLayout& layout, const std::string& id) {
    StoredMessage out;
    if (!QueueIdGenerator::is_valid(id)) {  // never a path outside queue/
        out.error = "not a queue ID";
        return out;
    }
    int fd = ::open(layout.message(id).c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
        out.missing = errno == ENOENT;
        out.error = "unreadable: " + errno_text(errno);
        return out;
    }
    // The trailer gives where the content ends and the accepted envelope begins; only the
    // envelope is read, however large the content.
    struct stat st {};
    fstat(fd, &st);
    uint64_t file_size = uint64_t(st.st_size);
    char trailer[k_trailer_size + 1] = {};
    unsigned long long size = 0;
    bool ok = file_size >= k_trailer_size &&
              pread(fd, trailer, k_trailer_size, off_t(file_size - k_trailer_size)) == ssize_t(k_trailer_size) &&
              std::strncmp(trailer, "smtpgw-content ", 15) == 0 && std::sscanf(trailer + 15, "%16llx", &size) == 1 &&
              size <= file_size - k_trailer_size;
    std::string embedded;
    if (ok) {
        embedded.resize(file_size - k_trailer_size - size);
        ok = pread(fd, embedded.data(), embedded.size(), off_t(size)) == ssize_t(embedded.size());
    }
    ::close(fd);
    if (!ok) {
        out.error = "truncated: no content trailer";
        return out;
    }
    out.content_size = size;
    std::string updated;
    EnvelopeParse parsed;
    if (read_file(layout.envelope(id), updated))
        parsed = parse_envelope(updated);
    else if (errno == ENOENT)
        parsed = parse_envelope(embedded);
    else
        parsed.error = "envelope unreadable: " + errno_text(errno);
    if (!parsed.envelope) {
        out.error = parsed.error;
        return out;
    }
    if (parsed.envelope->id != id)
        out.error = "envelope names another queue ID";
    else if (parsed.envelope->size != size)
        out.error = "content size does not match the envelope";
    else
        out.envelope = std::move(parsed.envelope);
    return out;
}

SpoolListing list_spool(const SpoolLayout& layout) {
    SpoolListing out;
    DIR* dir = opendir(layout.queue().c_str());
    if (!dir) return out;
    std::set<std::string> envelopes;
    while (struct dirent* d = readdir(dir)) {
        std::string name = d->d_name;
        if (name == "." || name == "..") continue;
        bool plain = d->d_type == DT_REG;
        if (d->d_type == DT_UNKNOWN) {  // a file system that does not say: ask
            struct stat st {};
            plain = lstat((layout.queue() + "/" + name).c_str(), &st) == 0 && S_ISREG(st.st_mode);
        }
        if (!plain)
            out.damaged.push_back({name, "not a plain file"});
        else if (QueueIdGenerator::is_valid(name))
            out.ids.push_back(name);
        else if (name.size() > 4 && name.compare(name.size() - 4, 4, ".env") == 0 &&
                 QueueIdGenerator::is_valid(name.substr(0, name.size() - 4)))
            envelopes.insert(name.substr(0, name.size() - 4));
        else if ((name.size() > 7 && name.compare(name.size() - 7, 7, ".import") == 0 &&
                  QueueIdGenerator::is_valid(name.substr(0, name.size() - 7))) ||
                 (name.find(".exported.") != std::string::npos &&
                  QueueIdGenerator::is_valid(name.substr(0, name.find(".exported.")))))
            out.in_transit.push_back(name);
        else if (name.size() > 4 && name.compare(name.size() - 4, 4, ".tmp") == 0)
            out.damaged.push_back({name, "written, but never acknowledged or put in place"});
        else
            out.damaged.push_back({name, "not a spool file"});
    }
    closedir(dir);
    std::sort(out.ids.begin(), out.ids.end());  // equal lengths: by arrival
    for (const auto& id : envelopes)
        if (!std::binary_search(out.ids.begin(), out.ids.end(), id)) out.lone_envelopes.push_back(id);
    return out;
}

namespace {

// A listed message read: its envelope, or the damaged names it leaves (the file, and its
// envelope update if any).
void read_listed(const SpoolLayout& layout, const std::string& id, std::vector<Envelope>& messages,
                 std::vector<std::pair<std::string, std::string>>& damaged) {
    // Opened by name: readdir() may miss ID.env while it is being renamed over.
    auto stored = read_stored_message(layout, id);
    if (stored.envelope) {
        messages.push_back(std::move(*stored.envelope));
    } else if (!stored.missing) {  // missing: removed while we looked
        damaged.push_back({id, stored.error});
        struct stat st {};
        if (lstat(layout.envelope(id).c_str(), &st) == 0)
            damaged.push_back({id + ".env", "belongs to a damaged message"});
    }
}

// An envelope update without its message: what a removal cut short leaves.
bool lone_envelope(const SpoolLayout& layout, const std::string& id) {
    struct stat st {};
    return stat(layout.message(id).c_str(), &st) != 0;  // not a message that appeared meanwhile
}

const char* const k_lone_envelope = "envelope of a message that is gone (removal cut short)";

}  // namespace

SpoolScan scan_spool(const SpoolLayout& layout) {
    SpoolScan scan;
    auto listing = list_spool(layout);
    scan.damaged = std::move(listing.damaged);
    for (const auto& id : listing.ids)
        read_listed(layout, id, scan.messages, scan.damaged);
    for (const auto& id : listing.lone_envelopes)
        if (lone_envelope(layout, id)) scan.damaged.push_back({id + ".env", k_lone_envelope});
    return scan;
}

Spool::Spool(std::string root) : m_layout{std::move(root)} {}

Spool::~Spool() {
    if (m_loader.joinable()) {
        {
            std::lock_guard<std::mutex> lock(m_mutex);
            m_load_stop = true;
        }
        m_load_cv.notify_all();
        m_loader.join();
    }
    if (m_thread.joinable()) {
        {
            std::lock_guard<std::mutex> lock(m_mutex);
            m_stop = true;
        }
        m_cv.notify_all();
        m_bulk_cv.notify_all();
        m_thread.join();
        m_bulk_thread.join();
    }
    if (m_dir_fd >= 0) ::close(m_dir_fd);
    if (m_lock_fd >= 0) {
        // A stale process id would be harmless (the lock, not the file, says who runs).
        int cleared = ftruncate(m_lock_fd, 0);
        (void)cleared;
        ::close(m_lock_fd);
    }
}

std::string spool_problem(const SpoolLayout& layout) {
    struct stat st {};
    for (const auto& dir : {layout.queue(), layout.corrupt(), layout.free()}) {
        if (lstat(dir.c_str(), &st) != 0) continue;  // made at start-up
        if (S_ISLNK(st.st_mode)) return dir + " is a symbolic link" + k_not_made_here;
        if (!S_ISDIR(st.st_mode)) return dir + " is not a directory" + k_not_made_here;
    }
    if (lstat(layout.lock().c_str(), &st) == 0 && !S_ISREG(st.st_mode))
        return layout.lock() + " is not a plain file" + k_not_made_here;
    return {};
}

int running_gateway(const SpoolLayout& layout) {
    int fd = ::open(layout.lock().c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) return 0;
    int pid = 0;
    if (flock(fd, LOCK_SH | LOCK_NB) != 0 && errno == EWOULDBLOCK) {
        char buf[32] = {};
        ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
        if (n > 0) pid = std::atoi(buf);
    }
    ::close(fd);
    return pid;
}

std::vector<std::string> Spool::open(uv_loop_t* loop) {
    // Started as root, the gateway works in folders its service account can write: it follows
    // no link it did not make, so that nothing outside the spool is read, moved or given away.
    make_dir(m_layout.root);
    if (auto problem = spool_problem(m_layout); !problem.empty()) throw std::runtime_error(problem);
    make_dir(m_layout.queue());
    make_dir(m_layout.corrupt());
    make_dir(m_layout.free());
    if (auto problem = spool_problem(m_layout); !problem.empty()) throw std::runtime_error(problem);
    m_lock_fd = ::open(m_layout.lock().c_str(), O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (m_lock_fd < 0) throw std::runtime_error("cannot open " + m_layout.lock() + ": " + errno_text(errno));
    if (flock(m_lock_fd, LOCK_EX | LOCK_NB) != 0)
        throw std::runtime_error("spool " + m_layout.root + " is in use by another smtpgw process");
    // The lock file names its holder, for `smtpgw reload` and the queue commands.
    std::string pid = std::to_string(getpid()) + "\n";
    if (ftruncate(m_lock_fd, 0) != 0 || pwrite(m_lock_fd, pid.data(), pid.size(), 0) != ssize_t(pid.size()))
        log::warning(log::Component::Master,
                     "cannot write the process id into " + m_layout.lock() + ": " + errno_text(errno));
    m_dir_fd = ::open(m_layout.queue().c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (m_dir_fd < 0) throw std::runtime_error("cannot open " + m_layout.queue() + ": " + errno_text(errno));

    // Only the names now: whatever the listener stores from here on is not in this listing, so
    // the loader never takes a message being written for a damaged one.
    m_listing = list_spool(m_layout);
    std::vector<std::string> out = m_listing.ids;
    // What is plainly no message goes aside now, before privileges are dropped; what turns out
    // damaged when read goes as the loader finds it.
    for (const auto& [name, why] : m_listing.damaged)
        m_moved_at_open += move_aside(name, why);
    m_listing.damaged.clear();
    if (m_moved_at_open > 0) sync_dirs();
    for (const auto& name : m_listing.in_transit)
        log::warning(log::Component::Master, m_layout.queue() + "/" + name +
                                                 ": left by an interrupted `smtpgw queue import`; run it again (with "
                                                 "this gateway stopped) to finish it");

    m_loop = loop;
    m_async = new uv_async_t;
    m_async->data = this;
    uv_async_init(loop, m_async, [](uv_async_t* h) { static_cast<Spool*>(h->data)->on_async(); });
    refresh_free_space();
    m_thread = std::thread([this] { run_writer(false); });
    m_bulk_thread = std::thread([this] { run_writer(true); });
    return out;
}

std::shared_ptr<SpoolTxn> Spool::begin(const std::string& id) {
    auto txn = std::make_shared<SpoolTxn>();
    txn->id = id;
    return txn;
}

bool Spool::write(const std::shared_ptr<SpoolTxn>& txn, std::string&& data, std::function<void()> resume) {
    uint64_t backlog = txn->backlog.fetch_add(data.size()) + data.size();
    bool ok = backlog <= k_backlog_limit;
    if (!ok) {
        txn->resume = std::move(resume);
        txn->paused = true;
    }
    push(Job{JobKind::Write, txn, std::move(data), {}, {}});
    return ok;
}

void Spool::commit(const std::shared_ptr<SpoolTxn>& txn, Envelope&& envelope, CommitDone done) {
    std::string text = serialize(envelope);
    auto shared = std::make_shared<Envelope>(std::move(envelope));
    push(Job{JobKind::Commit, txn, std::move(text), {}, [shared, done = std::move(done)](int err) {
                 done(err == 0                           ? CommitResult::Stored
                      : (err == ENOSPC || err == EDQUOT) ? CommitResult::NoSpace
                                                         : CommitResult::Failed,
                      *shared);
             }});
}

void Spool::abort(const std::shared_ptr<SpoolTxn>& txn) { push(Job{JobKind::Abort, txn, {}, {}, {}}); }

void Spool::update(const Envelope& envelope, Done done) {
    push(Job{JobKind::Update, nullptr, serialize(envelope), envelope.id,
             [done = std::move(done)](int err) { done(err == 0); }});
}

void Spool::remove(const std::string& id, bool has_update, uint64_t size, Done done) {
    Job job{JobKind::Remove, nullptr, {}, id, [done = std::move(done)](int err) { done(err == 0); }};
    job.has_update = has_update;
    job.size = size;
    push(std::move(job));
}

void Spool::read(const std::string& id, uint64_t content_size, uint64_t offset, size_t max, ReadDone done) {
    struct Work {
        uv_work_t req;
        std::string path;
        uint64_t offset;
        size_t max;
        int err = 0;
        std::string data;
        ReadDone done;
    };
    max = offset >= content_size ? 0 : std::min<uint64_t>(max, content_size - offset);
    auto* w = new Work{{}, m_layout.message(id), offset, max, 0, {}, std::move(done)};
    w->req.data = w;
    uv_queue_work(
        m_loop, &w->req,
        [](uv_work_t* req) {
            auto* w = static_cast<Work*>(req->data);
            int fd = ::open(w->path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
            if (fd < 0) {
                w->err = errno;
                return;
            }
            w->data.resize(w->max);
            size_t got = 0;
            while (got < w->max) {
                ssize_t n = pread(fd, &w->data[got], w->max - got, off_t(w->offset + got));
                if (n < 0 && errno == EINTR) continue;
                if (n < 0) w->err = errno;
                if (n <= 0) break;
                got += size_t(n);
            }
            w->data.resize(got);
            ::close(fd);
        },
        [](uv_work_t* req, int) {
            std::unique_ptr<Work> w(static_cast<Work*>(req->data));
            w->done(w->err, std::move(w->data));
        });
}

bool Spool::storage_low(uint64_t message_size) const {
    return m_free_bytes.load() < message_size + message_size / 2;  // Postfix: 1.5 x message_size_limit
}

void Spool::push(Job&& job) {
    bool bulk;
    {
        std::lock_guard<std::mutex> lock(m_mutex);
        bulk = job.kind == JobKind::Update || job.kind == JobKind::Remove;
        if (bulk)
            m_bulk.push_back(std::move(job));
        else
            m_jobs.push_back(std::move(job));
    }
    // Only the thread the job is for: waking the other for nothing costs two system calls and a
    // context switch per job.
    (bulk ? m_bulk_cv : m_cv).notify_one();
}

void Spool::on_async() {
    std::vector<std::function<void()>> results;
    {
        std::lock_guard<std::mutex> lock(m_mutex);
        results.swap(m_results);
    }
    for (auto& r : results)
        r();
}

bool Spool::move_aside(const std::string& name, const std::string& why) {
    std::string from = m_layout.queue() + "/" + name, to = m_layout.corrupt() + "/" + name;
    if (rename(from.c_str(), to.c_str()) != 0) {
        log::error(log::Component::Qmgr, "cannot move damaged " + from + " aside (" + why + "): " + errno_text(errno));
        return false;
    }
    log::warning(log::Component::Qmgr, "moved " + from + " to " + m_layout.corrupt() + "/: " + why);
    return true;
}

// The moves aside made durable: queue/ and corrupt/.
void Spool::sync_dirs() {
    fsync(m_dir_fd);
    int cfd = ::open(m_layout.corrupt().c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (cfd >= 0) fsync(cfd), ::close(cfd);
}

void Spool::load(std::function<void(std::vector<Envelope>)> chunk, std::function<void(const LoadSummary&)> done) {
    m_load_chunk = std::move(chunk);
    m_load_done = std::move(done);
    m_loader = std::thread([this, listing = std::move(m_listing)]() mutable { run_loader(std::move(listing)); });
}

void Spool::run_loader(SpoolListing listing) {
    auto started = std::chrono::steady_clock::now();
    LoadSummary summary;
    summary.damaged = m_moved_at_open;
    bool moved = false;
    // Hands a chunk to the loop once the loop has taken the one before; false: stop.
    auto hand_over = [this](std::function<void()> work) {
        std::unique_lock<std::mutex> lock(m_mutex);
        m_load_cv.wait(lock, [this] { return m_load_stop || m_load_in_flight == 0; });
        if (m_load_stop) return false;
        m_load_in_flight++;
        m_results.push_back(std::move(work));
        lock.unlock();
        uv_async_send(m_async);
        return true;
    };
    auto taken = [this] {
        std::lock_guard<std::mutex> lock(m_mutex);
        m_load_in_flight--;
        m_load_cv.notify_all();
    };
    std::vector<Envelope> messages;
    for (size_t i = 0; i < listing.ids.size(); ++i) {
        std::vector<std::pair<std::string, std::string>> bad;
        read_listed(m_layout, listing.ids[i], messages, bad);
        for (const auto& [name, why] : bad)
            if (move_aside(name, why)) summary.damaged++, moved = true;
        if (messages.size() < k_load_chunk && i + 1 < listing.ids.size()) continue;
        summary.messages += messages.size();
        bool go_on = hand_over([this, taken, chunk = std::move(messages)]() mutable {
            if (m_load_chunk) m_load_chunk(std::move(chunk));
            taken();
        });
        if (!go_on) return;
        messages.clear();
    }
    for (const auto& id : listing.lone_envelopes) {
        if (lone_envelope(m_layout, id) && move_aside(id + ".env", k_lone_envelope)) summary.damaged++, moved = true;
    }
    if (moved) sync_dirs();
    summary.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    hand_over([this, taken, summary] {
        if (m_load_done) m_load_done(summary);
        taken();
    });
}

size_t Spool::bulk_backlog() {
    std::lock_guard<std::mutex> lock(m_mutex);
    return m_bulk.size();
}

void Spool::refresh_free_space() {
    struct statvfs vfs {};
    if (fstatvfs(m_dir_fd, &vfs) == 0) m_free_bytes = uint64_t(vfs.f_bavail) * vfs.f_frsize;
}

void Spool::close() {
    if (m_loader.joinable()) {
        {
            std::lock_guard<std::mutex> lock(m_mutex);
            m_load_stop = true;
        }
        m_load_cv.notify_all();
        m_loader.join();
    }
    m_load_chunk = nullptr;  // chunks still on their way go nowhere
    m_load_done = nullptr;
    if (m_thread.joinable()) {
        {
            std::lock_guard<std::mutex> lock(m_mutex);
            m_stop = true;
        }
        m_cv.notify_all();
        m_bulk_cv.notify_all();
        m_thread.join();
        m_bulk_thread.join();
    }
    on_async();  // results of the last batch
    if (m_async) {
        uv_close(reinterpret_cast<uv_handle_t*>(m_async),
                 [](uv_handle_t* h) { delete reinterpret_cast<uv_async_t*>(h); });
        m_async = nullptr;
    }
}

}  // namespace gateway
