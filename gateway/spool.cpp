// Loop side of the spool, and start-up recovery. The writer thread is in spool_writer.cpp.
#include "gateway/spool.hpp"

#include "gateway/log.hpp"
#include "gateway/queue_id.hpp"
#include "gateway/spool_internal.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <set>
#include <stdexcept>

namespace gateway {

namespace {

std::string errno_text(int e) { return std::strerror(e); }

void make_dir(const std::string& path) {
    if (mkdir(path.c_str(), 0700) != 0 && errno != EEXIST)
        throw std::runtime_error("cannot create " + path + ": " + errno_text(errno));
}

bool read_file(const std::string& path, std::string& out) {
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
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

SpoolScan scan_spool(const SpoolLayout& layout) {
    SpoolScan scan;
    DIR* dir = opendir(layout.queue().c_str());
    if (!dir) return scan;
    // readdir() may miss a name that is being renamed over (an envelope update), so the names
    // only say which IDs exist; each file is then opened by its name, which rename keeps atomic.
    std::set<std::string> ids;
    while (struct dirent* d = readdir(dir)) {
        std::string name = d->d_name;
        if (name == "." || name == "..") continue;
        auto dot = name.find('.');
        std::string id = name.substr(0, dot), ext = dot == std::string::npos ? "" : name.substr(dot);
        if ((ext == ".msg" || ext == ".env") && QueueIdGenerator::is_valid(id))
            ids.insert(id);
        else if (name.size() > 4 && name.compare(name.size() - 4, 4, ".tmp") == 0)
            scan.damaged.push_back({name, "envelope write that never completed"});
        else
            scan.damaged.push_back({name, "not a spool file"});
    }
    closedir(dir);
    for (const auto& id : ids) {
        struct stat st {};
        bool msg = stat(layout.content(id).c_str(), &st) == 0;
        std::string text;
        if (!read_file(layout.envelope(id), text)) {
            if (errno == ENOENT && msg)
                scan.damaged.push_back({id + ".msg", "content without an envelope (never acknowledged)"});
            else if (errno != ENOENT)
                scan.damaged.push_back({id + ".env", "unreadable: " + errno_text(errno)});
            continue;  // neither file: removed while we looked
        }
        EnvelopeParse parsed = parse_envelope(text);
        std::string why = parsed.error;
        if (why.empty() && parsed.envelope->id != id) why = "envelope names another queue ID";
        if (why.empty() && !msg) why = "envelope without content";
        if (why.empty() && uint64_t(st.st_size) != parsed.envelope->size)
            why = "content size does not match the envelope";
        if (!why.empty()) {
            scan.damaged.push_back({id + ".env", why});
            if (msg) scan.damaged.push_back({id + ".msg", "belongs to a damaged envelope"});
            continue;
        }
        scan.messages.push_back(std::move(*parsed.envelope));
    }
    return scan;
}

Spool::Spool(std::string root) : m_layout{std::move(root)} {}

Spool::~Spool() {
    if (m_thread.joinable()) {
        {
            std::lock_guard<std::mutex> lock(m_mutex);
            m_stop = true;
        }
        m_cv.notify_all();
        m_thread.join();
    }
    if (m_dir_fd >= 0) ::close(m_dir_fd);
    if (m_lock_fd >= 0) ::close(m_lock_fd);
}

std::vector<RecoveredMessage> Spool::open(uv_loop_t* loop) {
    make_dir(m_layout.root);
    make_dir(m_layout.queue());
    make_dir(m_layout.corrupt());
    m_lock_fd = ::open(m_layout.lock().c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (m_lock_fd < 0) throw std::runtime_error("cannot open " + m_layout.lock() + ": " + errno_text(errno));
    if (flock(m_lock_fd, LOCK_EX | LOCK_NB) != 0)
        throw std::runtime_error("spool " + m_layout.root + " is in use by another smtpgw process");
    m_dir_fd = ::open(m_layout.queue().c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (m_dir_fd < 0) throw std::runtime_error("cannot open " + m_layout.queue() + ": " + errno_text(errno));

    auto scan = scan_spool(m_layout);
    for (const auto& [name, why] : scan.damaged) {
        std::string from = m_layout.queue() + "/" + name, to = m_layout.corrupt() + "/" + name;
        if (rename(from.c_str(), to.c_str()) == 0)
            log::warning(log::Component::Qmgr, "moved " + from + " to " + m_layout.corrupt() + "/: " + why);
        else
            log::error(log::Component::Qmgr,
                       "cannot move damaged " + from + " aside (" + why + "): " + errno_text(errno));
    }
    if (!scan.damaged.empty()) {
        fsync(m_dir_fd);
        int cfd = ::open(m_layout.corrupt().c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (cfd >= 0) fsync(cfd), ::close(cfd);
    }
    std::vector<RecoveredMessage> out;
    for (auto& e : scan.messages)
        out.push_back({std::move(e)});

    m_loop = loop;
    m_async = new uv_async_t;
    m_async->data = this;
    uv_async_init(loop, m_async, [](uv_async_t* h) { static_cast<Spool*>(h->data)->on_async(); });
    refresh_free_space();
    m_thread = std::thread([this] { run_writer(); });
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

void Spool::remove(const std::string& id, Done done) {
    push(Job{JobKind::Remove, nullptr, {}, id, [done = std::move(done)](int err) { done(err == 0); }});
}

void Spool::read(const std::string& id, uint64_t offset, size_t max, ReadDone done) {
    struct Work {
        uv_work_t req;
        std::string path;
        uint64_t offset;
        size_t max;
        int err = 0;
        std::string data;
        ReadDone done;
    };
    auto* w = new Work{{}, m_layout.content(id), offset, max, 0, {}, std::move(done)};
    w->req.data = w;
    uv_queue_work(
        m_loop, &w->req,
        [](uv_work_t* req) {
            auto* w = static_cast<Work*>(req->data);
            int fd = ::open(w->path.c_str(), O_RDONLY | O_CLOEXEC);
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
    {
        std::lock_guard<std::mutex> lock(m_mutex);
        m_jobs.push_back(std::move(job));
    }
    m_cv.notify_one();
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

void Spool::refresh_free_space() {
    struct statvfs vfs {};
    if (fstatvfs(m_dir_fd, &vfs) == 0) m_free_bytes = uint64_t(vfs.f_bavail) * vfs.f_frsize;
}

void Spool::close() {
    if (m_thread.joinable()) {
        {
            std::lock_guard<std::mutex> lock(m_mutex);
            m_stop = true;
        }
        m_cv.notify_all();
        m_thread.join();
    }
    on_async();  // results of the last batch
    if (m_async) {
        uv_close(reinterpret_cast<uv_handle_t*>(m_async),
                 [](uv_handle_t* h) { delete reinterpret_cast<uv_async_t*>(h); });
        m_async = nullptr;
    }
}

}  // namespace gateway
