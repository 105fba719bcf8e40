#include "gateway/common/log.hpp"

#include "gateway/common/json.hpp"
#include "gateway/common/text.hpp"

#include <spdlog/sinks/base_sink.h>
#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/null_sink.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <mutex>
#include <stdexcept>
#include <thread>
#include <vector>

namespace gateway::log {

namespace {

struct Entry {
    conf::LogLevel level;
    Component component;
    std::time_t when;
    std::string text;
};

// Lines are handed to a writer thread in batches: the event loop only appends to a vector, and
// the writer formats and writes them, waking every few milliseconds (or at once for a large
// backlog or a warning), so that under load many lines share one write() and one wake-up. A line
// reaches the file within k_linger of the event.
struct State {
    std::mutex mutex;
    std::condition_variable wake;
    std::vector<Entry> pending;
    std::shared_ptr<spdlog::logger> logger;  // the file, or standard error
    int syslog_fd = -1;                      // a datagram socket connected to /dev/log
    std::function<void(const std::string&)> capture;
    std::thread writer;
    bool stop = false;
    bool writing = false;
    bool urgent = false;  // a warning or an error, or someone waits in flush()
    bool reopen = false;  // SIGUSR1: open the file again (logrotate moved it)
    conf::Log config;
    std::string host = "localhost";
    std::string pid = std::to_string(getpid());
    std::atomic<int> level{int(conf::LogLevel::Info)};
};

State& state() {
    static State s;
    return s;
}

// "Nov 27 20:06:01", formatted once per second per thread.
const std::string& syslog_time(std::time_t t) {
    thread_local std::time_t second = 0;
    thread_local std::string text;
    if (t != second) {
        struct tm tm {};
        localtime_r(&t, &tm);
        char buf[32];
        std::strftime(buf, sizeof buf, "%b %e %H:%M:%S", &tm);
        text = buf;
        second = t;
    }
    return text;
}

std::string iso_time(std::time_t t) {
    struct tm tm {};
    localtime_r(&t, &tm);
    char buf[40];
    std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S%z", &tm);
    std::string s = buf;
    if (s.size() > 5) s.insert(s.size() - 2, ":");  // +0100 -> +01:00 (RFC 3339)
    return s;
}

const char* level_name(conf::LogLevel l) {
    switch (l) {
    case conf::LogLevel::Debug: return "debug";
    case conf::LogLevel::Info: return "info";
    case conf::LogLevel::Warning: return "warning";
    case conf::LogLevel::Error: return "error";
    }
    return "info";
}

// The queue ID a line is about: "6614796D9B541: to=<...>" or "NOQUEUE: reject: ...".
std::string_view queue_id_of(std::string_view text) {
    size_t n = 0;
    while (n < text.size() && n < 20 && ((text[n] >= '0' && text[n] <= '9') || (text[n] >= 'A' && text[n] <= 'Z')))
        ++n;
    if (n >= 7 && n < text.size() && text[n] == ':') return text.substr(0, n);
    return {};
}

// Whatever a line quotes (client input, headers, server replies, DNS names) leaves here inert
// and bounded: no control character reaches a terminal, a syslog daemon or a log tool.
constexpr size_t k_max_text = 8192;

std::string format_line(const State& s, const Entry& e) {
    if (s.config.format == conf::LogFormat::Json) {
        std::string line = "{\"time\":\"" + iso_time(e.when) + "\",\"host\":" + json_string(s.host) +
                           ",\"program\":\"smtpgw\",\"component\":\"" + component_name(e.component) +
                           "\",\"pid\":" + s.pid + ",\"level\":\"" + level_name(e.level) + "\"";
        auto qid = queue_id_of(e.text);
        if (!qid.empty()) line += ",\"queue_id\":\"" + std::string(qid) + "\"";
        return line + ",\"text\":" + json_string(std::string_view(e.text).substr(0, k_max_text)) + "}";
    }
    std::string line = syslog_time(e.when);
    line.append(" ").append(s.host).append(" smtpgw/").append(component_name(e.component));
    return line.append("[").append(s.pid).append("]: ").append(printable(e.text, k_max_text));
}

spdlog::level::level_enum to_spdlog(conf::LogLevel l) {
    switch (l) {
    case conf::LogLevel::Debug: return spdlog::level::debug;
    case conf::LogLevel::Info: return spdlog::level::info;
    case conf::LogLevel::Warning: return spdlog::level::warn;
    case conf::LogLevel::Error: return spdlog::level::err;
    }
    return spdlog::level::info;
}

sockaddr_un syslog_address(const std::string& path) {
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
    return addr;
}

// RFC 3164 as the local syslog daemon takes it, with the program name Postfix's way:
// "<22>Nov 27 20:06:01 smtpgw/smtpd[812]: text" (facility mail).
void send_syslog(State& s, const Entry& e) {
    int severity = e.level == conf::LogLevel::Error     ? 3
                   : e.level == conf::LogLevel::Warning ? 4
                   : e.level == conf::LogLevel::Info    ? 6
                                                        : 7;
    std::string msg = "<" + std::to_string(2 * 8 + severity) + ">" + syslog_time(e.when) + " smtpgw/" +
                      component_name(e.component) + "[" + s.pid + "]: " + printable(e.text, k_max_text);
    if (send(s.syslog_fd, msg.data(), msg.size(), MSG_NOSIGNAL) < 0 && errno == ECONNREFUSED) {
        // The daemon restarted: connect again once.
        auto addr = syslog_address(s.config.syslog_socket);
        if (connect(s.syslog_fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0)
            send(s.syslog_fd, msg.data(), msg.size(), MSG_NOSIGNAL);
    }
}

// The log file is opened as root at start-up, in a folder the service account may write: it must
// be the plain file its name says, not a link (or a link swapped in meanwhile) to some other file.
void check_log_file(const std::string& path, std::FILE* file) {
    struct stat opened {
    }, named{};
    if (fstat(fileno(file), &opened) != 0 || lstat(path.c_str(), &named) != 0 || !S_ISREG(named.st_mode) ||
        opened.st_dev != named.st_dev || opened.st_ino != named.st_ino)
        throw std::runtime_error("log.file " + path +
                                 " is not a plain file (a link, or replaced while it was opened); the gateway "
                                 "writes only to a file of that name, which it creates when there is none");
}

std::shared_ptr<spdlog::logger> make_logger(const conf::Log& config) {
    spdlog::sink_ptr sink;
    spdlog::file_event_handlers checks;
    checks.after_open = [path = config.file](const spdlog::filename_t&, std::FILE* f) { check_log_file(path, f); };
    if (!config.file.empty()) {
        // Made here when missing, without following a link; spdlog then opens what is there.
        int fd = ::open(config.file.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0640);
        if (fd < 0 && errno == ELOOP)
            throw std::runtime_error("log.file " + config.file +
                                     " is a symbolic link; the gateway writes only to a "
                                     "plain file of that name, which it creates when there is none");
        if (fd >= 0) ::close(fd);
        sink = std::make_shared<spdlog::sinks::basic_file_sink_mt>(config.file, false, checks);  // throws
    } else if (config.syslog)
        sink = std::make_shared<spdlog::sinks::null_sink_mt>();
    else
        sink = std::make_shared<spdlog::sinks::stderr_sink_mt>();
    sink->set_pattern("%v");
    auto logger = std::make_shared<spdlog::logger>("smtpgw", sink);
    logger->set_level(spdlog::level::debug);
    return logger;
}

constexpr auto k_linger = std::chrono::milliseconds(20);
constexpr size_t k_wake_backlog = 256;  // lines

void run_writer() {
    auto& s = state();
    std::vector<Entry> batch;
    std::unique_lock<std::mutex> lock(s.mutex);
    for (;;) {
        s.wake.wait(lock, [&] { return s.stop || s.reopen || !s.pending.empty(); });
        // Let more lines gather, unless there are many already or the program is stopping.
        s.wake.wait_for(lock, k_linger, [&] { return s.stop || s.urgent || s.pending.size() >= k_wake_backlog; });
        s.urgent = false;
        if (s.pending.empty() && s.stop) return;
        batch.swap(s.pending);
        bool reopen = s.reopen;
        s.reopen = false;
        conf::Log config = s.config;
        s.writing = true;
        lock.unlock();
        if (reopen) {
            try {
                auto fresh = make_logger(config);
                lock.lock();
                s.logger = fresh;
                lock.unlock();
            } catch (const std::exception& e) {
                batch.push_back(
                    {conf::LogLevel::Error, Component::Master, std::time(nullptr),
                     "error: cannot open the log file again, writing on to the old one: " + std::string(e.what())});
            }
        }
        lock.lock();
        auto logger = s.logger;
        lock.unlock();
        for (auto& e : batch) {
            if (logger) logger->log(to_spdlog(e.level), format_line(s, e));
            if (s.syslog_fd >= 0) send_syslog(s, e);
        }
        if (logger) logger->flush();
        batch.clear();
        lock.lock();
        s.writing = false;
        s.wake.notify_all();  // flush() may be waiting
    }
}

}  // namespace

const char* component_name(Component c) {
    switch (c) {
    case Component::Master: return "master";
    case Component::Smtpd: return "smtpd";
    case Component::Cleanup: return "cleanup";
    case Component::Qmgr: return "qmgr";
    case Component::Smtp: return "smtp";
    case Component::Bounce: return "bounce";
    case Component::Control: return "control";
    case Component::Console: return "console";
    }
    return "?";
}

void init(const conf::Log& config, const std::string& hostname) {
    auto& s = state();
    auto logger = make_logger(config);
    int fd = -1;
    if (config.syslog) {
        fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        auto addr = syslog_address(config.syslog_socket);
        if (fd < 0 || connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
            std::string why = std::strerror(errno);
            if (fd >= 0) ::close(fd);
            throw std::runtime_error("cannot reach the syslog daemon at " + config.syslog_socket + ": " + why);
        }
    }
    std::lock_guard<std::mutex> lock(s.mutex);
    s.logger = logger;
    if (s.syslog_fd >= 0) ::close(s.syslog_fd);
    s.syslog_fd = fd;
    s.config = config;
    s.host = hostname.substr(0, hostname.find('.'));
    s.level = int(config.level);
    s.stop = false;
    if (!s.writer.joinable()) s.writer = std::thread(run_writer);
}

void reopen() {
    auto& s = state();
    std::lock_guard<std::mutex> lock(s.mutex);
    if (s.config.file.empty()) return;
    s.reopen = true;
    s.wake.notify_all();
}

void set_capture(std::function<void(const std::string&)> capture) {
    auto& s = state();
    std::lock_guard<std::mutex> lock(s.mutex);
    s.capture = std::move(capture);
}

void set_level(conf::LogLevel level) { state().level = int(level); }

bool enabled(conf::LogLevel level) { return int(level) >= state().level.load(); }

void write(conf::LogLevel level, Component c, std::string_view text) {
    if (!enabled(level)) return;
    auto& s = state();
    Entry e{level, c, std::time(nullptr), std::string(text)};
    std::lock_guard<std::mutex> lock(s.mutex);
    if (s.capture) s.capture(format_line(s, e));
    if (!s.logger) return;
    bool was_empty = s.pending.empty();
    s.pending.push_back(std::move(e));
    if (level >= conf::LogLevel::Warning) s.urgent = true;
    if (was_empty || s.urgent || s.pending.size() == k_wake_backlog) s.wake.notify_all();
}

void flush() {
    auto& s = state();
    std::unique_lock<std::mutex> lock(s.mutex);
    s.urgent = true;
    s.wake.notify_all();
    s.wake.wait(lock, [&] { return s.pending.empty() && !s.writing && !s.reopen; });
}

void shutdown() {
    auto& s = state();
    {
        std::lock_guard<std::mutex> lock(s.mutex);
        s.stop = true;
    }
    s.wake.notify_all();
    if (s.writer.joinable()) s.writer.join();
    std::lock_guard<std::mutex> lock(s.mutex);
    s.logger.reset();
    if (s.syslog_fd >= 0) ::close(s.syslog_fd);
    s.syslog_fd = -1;
}

}  // namespace gateway::log
