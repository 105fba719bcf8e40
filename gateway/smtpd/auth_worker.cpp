#include "gateway/smtpd/auth_worker.hpp"

namespace gateway {

struct AuthAttempt {
    std::unique_ptr<auth::SaslServer> server;  // worker thread only
};

namespace {

AuthOutcome convert(auth::Outcome o) {
    switch (o) {
    case auth::Outcome::Continue: return AuthOutcome::Continue;
    case auth::Outcome::Success: return AuthOutcome::Success;
    case auth::Outcome::Failure: return AuthOutcome::Failure;
    case auth::Outcome::TempFailure: return AuthOutcome::TempFailure;
    case auth::Outcome::Invalid: return AuthOutcome::Invalid;
    }
    return AuthOutcome::TempFailure;
}

}  // namespace

AuthWorker::~AuthWorker() {
    if (m_thread.joinable()) {
        {
            std::lock_guard<std::mutex> lock(m_mutex);
            m_stop = true;
        }
        m_cv.notify_all();
        m_thread.join();
    }
}

void AuthWorker::start(uv_loop_t* loop) {
    m_async = new uv_async_t;
    m_async->data = this;
    uv_async_init(loop, m_async, [](uv_async_t* h) {
        auto* self = static_cast<AuthWorker*>(h->data);
        std::deque<std::function<void()>> results;
        {
            std::lock_guard<std::mutex> lock(self->m_mutex);
            results.swap(self->m_results);
        }
        for (auto& r : results)
            r();
    });
    m_thread = std::thread([this] { run(); });
}

void AuthWorker::run() {
    std::unique_lock<std::mutex> lock(m_mutex);
    for (;;) {
        m_cv.wait(lock, [this] { return m_stop || !m_jobs.empty(); });
        if (m_jobs.empty()) return;
        auto job = std::move(m_jobs.front());
        m_jobs.pop_front();
        lock.unlock();
        job();
        lock.lock();
    }
}

void AuthWorker::push(std::function<void()> job) {
    {
        std::lock_guard<std::mutex> lock(m_mutex);
        m_jobs.push_back(std::move(job));
    }
    m_cv.notify_one();
}

std::shared_ptr<AuthAttempt> AuthWorker::begin(const auth::ServerOptions& options, const std::string& mechanism,
                                               const std::optional<std::string>& initial, AuthDone done) {
    auto attempt = std::make_shared<AuthAttempt>();
    push([this, attempt, options, mechanism, initial, done = std::move(done)] {
        std::string challenge, detail;
        auth::Outcome outcome = auth::Outcome::TempFailure;
        attempt->server = auth::SaslServer::start(options, mechanism, initial, challenge, outcome, detail);
        std::string user = attempt->server ? attempt->server->username() : std::string();
        std::lock_guard<std::mutex> lock(m_mutex);
        m_results.push_back(
            [done, outcome, challenge, user, detail] { done(convert(outcome), challenge, user, detail); });
        uv_async_send(m_async);
    });
    return attempt;
}

void AuthWorker::step(const std::shared_ptr<AuthAttempt>& attempt, const std::string& response, AuthDone done) {
    push([this, attempt, response, done = std::move(done)] {
        std::string challenge, detail;
        auth::Outcome outcome = auth::Outcome::Invalid;
        if (attempt->server) outcome = attempt->server->step(response, challenge, detail);
        std::string user = attempt->server ? attempt->server->username() : std::string();
        std::lock_guard<std::mutex> lock(m_mutex);
        m_results.push_back(
            [done, outcome, challenge, user, detail] { done(convert(outcome), challenge, user, detail); });
        uv_async_send(m_async);
    });
}

void AuthWorker::cancel(const std::shared_ptr<AuthAttempt>& attempt) {
    push([attempt] { attempt->server.reset(); });  // disposed of where it was used
}

void AuthWorker::close() {
    if (m_thread.joinable()) {
        {
            std::lock_guard<std::mutex> lock(m_mutex);
            m_stop = true;
        }
        m_cv.notify_all();
        m_thread.join();
    }
    if (m_async) {
        uv_close(reinterpret_cast<uv_handle_t*>(m_async),
                 [](uv_handle_t* h) { delete reinterpret_cast<uv_async_t*>(h); });
        m_async = nullptr;
    }
}

}  // namespace gateway
