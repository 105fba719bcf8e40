// The admin console (admin.listen): pages a browser shows, served by the gateway itself on the
// event loop (web_server.hpp). console.cpp: sign-in, sessions and the Email Queue with the Info
// column (why each message waits, as the seed's admins think of it, with the fix) and its
// actions (retry, hold, release, delete). console_pages.cpp: the Overview (activity charts,
// destination health), a Message (envelope, headers, its log lines), the Email Log (log_search.hpp),
// the Doctor and Upstreams pages (`smtpgw doctor --json` and `smtpgw probe NAME` run as child
// processes, the request waiting meanwhile). Every page's data is also JSON under /api/.
// /healthz and /readyz answer without sign-in, as on the metrics listener.
//
// Security: accounts from admin.accounts (salted PBKDF2, checked on libuv's thread pool);
// sessions in HttpOnly SameSite=Strict cookies, 30 minutes idle and 12 hours at most; every
// POST carries the session's CSRF token; five failed sign-ins from one address in ten minutes
// lock it out for the rest of them; every value from a message, a client or a server is
// HTML-escaped; responses forbid framing, inline script and caching. Each request is logged
// with the account and the client address.
#pragma once

#include "conf/config.hpp"
#include "gateway/ops/activity.hpp"
#include "gateway/ops/web_server.hpp"
#include "gateway/queue/queue_manager.hpp"

#include <uv.h>

#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace gateway {

// Why a message waits, in the words of the appliance pages: the category and what fixes it.
struct WaitInfo {
    std::string category;  // "connection timed out", "connection refused", "lookup error", ...
    std::string fix;       // one sentence
};
const WaitInfo& classify_wait(const std::string& dsn, const std::string& reason);

// The Retry now / Hold / Release / Delete buttons of a queued message.
std::string queue_actions(const Envelope& e, const std::string& csrf);

// Text for HTML: & < > " ' escaped.
std::string html_escape(const std::string& s);
// The same for text of many lines (a header section, a report), for <pre>: the line breaks stay.
std::string html_escape_lines(const std::string& s);

// One page of the Email Queue, oldest first: the messages matching the search and the filter,
// found in one pass with only the page's own put in order, so that a large queue holds the loop
// for a moment per request and not for a sort (or the JSON) of every message.
struct QueueSelection {
    std::vector<const Envelope*> rows;
    size_t total = 0;  // messages matching
    size_t first = 0;  // how many matching messages come before rows[0]
};

class Console {
public:
    Console(uv_loop_t* loop, std::shared_ptr<const conf::Config> config, QueueManager& queue);
    void start();  // throws with the reason
    void close();
    // The gateway is stopping: pages answer 503; /healthz and /readyz go on until close().
    void drain() { m_draining = true; }
    void reload(std::shared_ptr<const conf::Config> config) { m_config = std::move(config); }
    // Why the gateway takes no mail now ("" when it does): /readyz.
    void set_readiness(std::function<std::string()> not_ready) { m_not_ready = std::move(not_ready); }

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
    void forget_old_failures();
    WebResponse queue_page(const WebRequest& r, const Session& s);
    WebResponse queue_action(const WebRequest& r, const Session& s);
    WebResponse api_queue(const WebRequest& r);
    QueueSelection select_queue(const std::string& q, const std::string& show, size_t page_no) const;
    std::string page(const std::string& title, const Session* s, const std::string& main,
                     const std::string& head = "") const;
    void log_access(const WebRequest& r, const std::string& user, int status) const;

    // console_pages.cpp
    struct Report {  // the last run of the doctor, or of a probe
        int64_t when_us = 0;
        std::string user;
        bool ok = false;
        std::string output;  // the program's output (doctor: its JSON)
        std::string error;   // it could not run, or ran out of time
    };
    void sample_activity();
    std::vector<ActivityMinute> activity() const;
    std::string destinations_table(bool probe_buttons, const Session* s) const;
    WebResponse overview_page(const Session& s);
    WebResponse api_overview();
    void message_page(const WebRequest& r, const Session& s, WebRespond respond, bool api);
    void log_page(const WebRequest& r, const Session& s, WebRespond respond, bool api);
    void run_report(const std::string& what, std::vector<std::string> args, const std::string& user,
                    std::function<void()> then);
    WebResponse doctor_page(const Session& s);
    WebResponse upstreams_page(const Session& s);
    std::string report_json(const Report& r) const;
    std::vector<std::string> log_files() const;

    std::function<std::string()> m_not_ready;
    bool m_draining = false;
    Activity m_activity;
    uv_timer_t* m_activity_timer = nullptr;
    std::map<std::string, Report> m_reports;  // "doctor", "probe NAME"
    // Requests waiting for a run of the doctor or of a probe: one run serves them all.
    std::map<std::string, std::vector<std::function<void()>>> m_running;

    uv_loop_t* m_loop;
    std::shared_ptr<const conf::Config> m_config;
    QueueManager& m_queue;
    std::unique_ptr<WebServer> m_server;
    std::map<std::string, Session> m_sessions;                    // by cookie token
    std::map<std::string, std::deque<uint64_t>> m_failed_logins;  // by client address: when
    std::map<std::string, unsigned> m_checking;                   // by client address: sign-ins under way
};

}  // namespace gateway
