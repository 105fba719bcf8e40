// The log: one line per event in the syslog layout Postfix tools read,
//   MMM DD HH:MM:SS HOST smtpgw/COMPONENT[PID]: TEXT
// (or one JSON object per line with the same fields, log.format: json), to a file or standard
// error, and to the local syslog daemon when log.syslog is set.
// written by a background thread (spdlog's async logger), so logging never blocks the event
// loop. A line is never dropped: when the queue is full the caller waits.
// Secrets never reach this module; callers log names, not credentials.
#pragma once

#include "conf/config.hpp"

#include <functional>
#include <string>
#include <string_view>

namespace gateway::log {

enum class Component { Master, Smtpd, Cleanup, Qmgr, Smtp, Bounce, Control, Console };

const char* component_name(Component c);

// Starts logging as the configuration says; throws std::runtime_error if the file cannot be opened.
void init(const conf::Log& config, const std::string& hostname);
// Sends every formatted line to `capture` as well (tests); an empty function stops capturing.
void set_capture(std::function<void(const std::string&)> capture);
void set_level(conf::LogLevel level);
// Opens the log file again (SIGUSR1, after logrotate moved it); the writer thread does it.
void reopen();
void flush();
void shutdown();

bool enabled(conf::LogLevel level);
void write(conf::LogLevel level, Component c, std::string_view text);

inline void debug(Component c, std::string_view text) {
    if (enabled(conf::LogLevel::Debug)) write(conf::LogLevel::Debug, c, text);
}
inline void info(Component c, std::string_view text) { write(conf::LogLevel::Info, c, text); }
inline void warning(Component c, std::string_view text) {
    write(conf::LogLevel::Warning, c, std::string("warning: ").append(text));
}
inline void error(Component c, std::string_view text) {
    write(conf::LogLevel::Error, c, std::string("error: ").append(text));
}

}  // namespace gateway::log
