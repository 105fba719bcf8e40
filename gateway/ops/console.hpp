// The admin console (admin.listen): pages a browser shows, served by the gateway itself on the
// event loop (web_server.hpp). This part: sign-in, the Email Queue with the Info column (why
// each message waits, as the seed's admins think of it, with the fix) and its actions (retry,
// hold, release, delete), and the same data as JSON under /api/.
//
// Security: accounts from admin.accounts (salted PBKDF2, checked on libuv's thread pool);
// sessions in HttpOnly SameSite=Strict cookies, 30 minutes idle and 12 hours at most; every
// POST carries the session's CSRF token; five failed sign-ins from one address in ten minutes
// lock it out for the rest of them; every value from a message, a client or a server is
// HTML-escaped; responses forbid framing, inline script and caching. Each request is logged
// with the account and the client address.
#pragma once

#include "conf/config.hpp"
#include "gateway/ops/web_server.hpp"
#include "gateway/queue/queue_manager.hpp"

#include <uv.h>

#include <deque>
#include <map>
#include <memory>
#include <string>

namespace gateway {

// Why a message waits, in the words of the appliance pages: the category and what fixes it.
struct WaitInfo {
    std::string category;  // "connection timed out", "connection refused", "lookup error", ...
    std::string fix;       // one sentence
};
WaitInfo classify_wait(const std::string& dsn, const std::string& reason);

// Text for HTML: & < > " ' escaped.
std::string html_escape(const std::string& s);

class Console {
public:
    Console(uv_loop_t* loop, std::shared_ptr<const conf::Config> config, QueueManager& queue);
    void start();  // throws with the reason
    void close();
    void reload(std::shared_ptr<const conf::Config> config) { m_config = std::move(config); }

private:
    struct Session {
        std::string user;
        std::string csrf;
        uint64_t created_ms = 0;
        uint64_t used_ms = 0;
    };
    void handle(const WebRequest& r, WebRespond respond);
    void sign_in(const WebRequest& r, WebRespond respond);
    Session* session_of(const WebRequest& r);
    bool locked_out(const std::string& client);
    WebResponse queue_page(const WebRequest& r, const Session& s);
    WebResponse queue_action(const WebRequest& r, const Session& s);
    WebResponse api_queue(const WebRequest& r);
    std::string page(const std::string& title, const Session* s, const std::string& main) const;
    void log_access(const WebRequest& r, const std::string& user, int status) const;

    uv_loop_t* m_loop;
    std::shared_ptr<const conf::Config> m_config;
    QueueManager& m_queue;
    std::unique_ptr<WebServer> m_server;
    std::map<std::string, Session> m_sessions;                    // by cookie token
    std::map<std::string, std::deque<uint64_t>> m_failed_logins;  // by client address: when
};

}  // namespace gateway
