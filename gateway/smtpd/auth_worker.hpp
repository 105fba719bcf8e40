// AUTH from clients runs on one worker thread: Cyrus SASL reads the sasldb from disk, and the
// event loop must not wait for that. Each attempt has its own SASL server object, used only
// on the worker; results come back on the loop through a uv_async_t.
//
// Call order: start() on the loop thread; then, per attempt, begin(); step() for each client
// response; cancel() when the client gives up or goes away; close() before the loop closes.
#pragma once

#include "auth/sasl_server.hpp"
#include "gateway/smtpd/smtp_session.hpp"

#include <uv.h>

#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

namespace gateway {

struct AuthAttempt;  // one AUTH exchange; opaque

using AuthDone = std::function<void(AuthOutcome, const std::string& challenge, const std::string& username,
                                    const std::string& detail)>;

class AuthWorker {
public:
    AuthWorker() = default;
    ~AuthWorker();
    AuthWorker(const AuthWorker&) = delete;
    AuthWorker& operator=(const AuthWorker&) = delete;

    void start(uv_loop_t* loop);
    std::shared_ptr<AuthAttempt> begin(const auth::ServerOptions& options, const std::string& mechanism,
                                       const std::optional<std::string>& initial, AuthDone done);
    void step(const std::shared_ptr<AuthAttempt>& attempt, const std::string& response, AuthDone done);
    void cancel(const std::shared_ptr<AuthAttempt>& attempt);
    void close();

private:
    void run();
    void push(std::function<void()> job);

    uv_async_t* m_async = nullptr;
    std::mutex m_mutex;
    std::condition_variable m_cv;
    std::deque<std::function<void()>> m_jobs;     // to the worker
    std::deque<std::function<void()>> m_results;  // back to the loop
    bool m_stop = false;
    std::thread m_thread;
};

}  // namespace gateway
