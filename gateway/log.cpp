#include "gateway/log.hpp"

#include <spdlog/sinks/base_sink.h>
#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include <unistd.h>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <ctime>
#include <mutex>
#include <thread>
#include <vector>

namespace gateway::log {

namespace {

// Lines are handed to a writer thread in batches: the event loop only appends to a vector, and
// the writer wakes every few milliseconds (or at once for a large backlog or a warning), so that
// under load many lines share one write() and one wake-up. A line reaches the file within
// k_linger of the event.
struct State {
    std::mutex mutex;
    std::condition_variable wake;
    std::vector<std::pair<spdlog::level::level_enum, std::string>> pending;
    std::shared_ptr<spdlog::logger> logger;
    std::function<void(const std::string&)> capture;
    std::thread writer;
    bool stop = false;
    bool writing = false;
    bool urgent = false;  // a warning or an error, or someone waits in flush()
    std::string host = "localhost";
    std::string pid = std::to_string(getpid());
    std::atomic<int> level{int(conf::LogLevel::Info)};
    // The timestamp text changes once a second; it is formatted once per second.
    std::mutex clock_mutex;
    std::time_t stamp_second = 0;
    std::string stamp;
};

State& state() {
    static State s;
    return s;
}

std::string timestamp() {
    auto& s = state();
    std::time_t now = std::time(nullptr);
    std::lock_guard<std::mutex> lock(s.clock_mutex);
    if (now != s.stamp_second) {
        struct tm tm {};
        localtime_r(&now, &tm);
        char buf[32];
        std::strftime(buf, sizeof buf, "%b %e %H:%M:%S", &tm);
        s.stamp = buf;
        s.stamp_second = now;
    }
    return s.stamp;
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

constexpr auto k_linger = std::chrono::milliseconds(20);
constexpr size_t k_wake_backlog = 256;  // lines

void run_writer() {
    auto& s = state();
    std::vector<std::pair<spdlog::level::level_enum, std::string>> batch;
    std::unique_lock<std::mutex> lock(s.mutex);
    for (;;) {
        s.wake.wait(lock, [&] { return s.stop || !s.pending.empty(); });
        // Let more lines gather, unless there are many already or the program is stopping.
        s.wake.wait_for(lock, k_linger, [&] { return s.stop || s.urgent || s.pending.size() >= k_wake_backlog; });
        s.urgent = false;
        if (s.pending.empty() && s.stop) return;
        batch.swap(s.pending);
        auto logger = s.logger;
        s.writing = true;
        lock.unlock();
        for (auto& [level, line] : batch)
            logger->log(level, line);
        logger->flush();
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
    }
    return "?";
}

void init(const conf::Log& config, const std::string& hostname) {
    auto& s = state();
    spdlog::sink_ptr sink;
    if (config.file.empty())
        sink = std::make_shared<spdlog::sinks::stderr_sink_mt>();
    else
        sink = std::make_shared<spdlog::sinks::basic_file_sink_mt>(config.file);  // throws spdlog_ex
    sink->set_pattern("%v");
    auto logger = std::make_shared<spdlog::logger>("smtpgw", sink);
    logger->set_level(spdlog::level::debug);
    std::lock_guard<std::mutex> lock(s.mutex);
    s.logger = logger;
    s.host = hostname.substr(0, hostname.find('.'));
    s.level = int(config.level);
    s.stop = false;
    if (!s.writer.joinable()) s.writer = std::thread(run_writer);
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
    std::string line = timestamp();
    line.append(" ").append(s.host).append(" smtpgw/").append(component_name(c));
    line.append("[").append(s.pid).append("]: ").append(text);
    std::lock_guard<std::mutex> lock(s.mutex);
    if (s.capture) s.capture(line);
    if (!s.logger) return;
    bool was_empty = s.pending.empty();
    s.pending.emplace_back(to_spdlog(level), std::move(line));
    if (level >= conf::LogLevel::Warning) s.urgent = true;
    if (was_empty || s.urgent || s.pending.size() == k_wake_backlog) s.wake.notify_all();
}

void flush() {
    auto& s = state();
    std::unique_lock<std::mutex> lock(s.mutex);
    s.urgent = true;
    s.wake.notify_all();
    s.wake.wait(lock, [&] { return s.pending.empty() && !s.writing; });
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
}

}  // namespace gateway::log
