#include "gateway/log.hpp"

#include <spdlog/async.h>
#include <spdlog/sinks/base_sink.h>
#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include <unistd.h>
#include <atomic>
#include <ctime>
#include <mutex>

namespace gateway::log {

namespace {

class CaptureSink : public spdlog::sinks::base_sink<std::mutex> {
public:
    explicit CaptureSink(std::function<void(const std::string&)> f) : m_f(std::move(f)) {}

protected:
    void sink_it_(const spdlog::details::log_msg& msg) override {
        m_f(std::string(msg.payload.data(), msg.payload.size()));
    }
    void flush_() override {}

private:
    std::function<void(const std::string&)> m_f;
};

struct State {
    std::mutex mutex;
    std::shared_ptr<spdlog::logger> logger;
    std::function<void(const std::string&)> capture;
    std::string host = "localhost";
    std::string pid = std::to_string(getpid());
    std::atomic<int> level{int(conf::LogLevel::Info)};
};

State& state() {
    static State s;
    return s;
}

std::string timestamp() {
    std::time_t now = std::time(nullptr);
    struct tm tm {};
    localtime_r(&now, &tm);
    char buf[32];
    std::strftime(buf, sizeof buf, "%b %e %H:%M:%S", &tm);
    return buf;
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
    std::lock_guard<std::mutex> lock(s.mutex);
    spdlog::sink_ptr sink;
    if (config.file.empty())
        sink = std::make_shared<spdlog::sinks::stderr_sink_mt>();
    else
        sink = std::make_shared<spdlog::sinks::basic_file_sink_mt>(config.file);  // throws spdlog_ex
    sink->set_pattern("%v");
    if (!spdlog::thread_pool()) spdlog::init_thread_pool(8192, 1);
    s.logger = std::make_shared<spdlog::async_logger>("smtpgw", sink, spdlog::thread_pool(),
                                                      spdlog::async_overflow_policy::block);
    s.logger->set_level(spdlog::level::debug);
    s.logger->flush_on(spdlog::level::debug);
    s.host = hostname.substr(0, hostname.find('.'));
    s.level = int(config.level);
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
    if (s.logger) s.logger->log(to_spdlog(level), line);
}

void flush() {
    auto& s = state();
    std::lock_guard<std::mutex> lock(s.mutex);
    if (s.logger) s.logger->flush();
}

void shutdown() {
    {
        auto& s = state();
        std::lock_guard<std::mutex> lock(s.mutex);
        if (s.logger) s.logger->flush();
        s.logger.reset();
    }
    spdlog::shutdown();
}

}  // namespace gateway::log
