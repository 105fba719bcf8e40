// The console's pages beyond sign-in and the Email Queue: see console.hpp.
#include "gateway/common/child_process.hpp"
#include "gateway/common/json.hpp"
#include "gateway/common/log.hpp"
#include "gateway/common/queue_id.hpp"
#include "gateway/common/text.hpp"
#include "gateway/ops/console.hpp"
#include "gateway/ops/log_search.hpp"
#include "gateway/queue/queue_view.hpp"
#include "gateway/smtp/https_post.hpp"

#include <chrono>
#include <ctime>

namespace gateway {

namespace {

constexpr size_t k_log_page = 100;
constexpr size_t k_max_log_pages = 10000;
constexpr size_t k_header_bytes = 64 * 1024;     // of a message's content, for its header section
constexpr size_t k_message_log_lines = 500;      // a message's log lines shown at most
constexpr size_t k_report_output = 1024 * 1024;  // of a doctor's or a probe's output
constexpr uint64_t k_doctor_timeout_ms = 120000;
constexpr uint64_t k_probe_timeout_ms = 90000;

int64_t wall_us() {
    using namespace std::chrono;
    return duration_cast<microseconds>(system_clock::now().time_since_epoch()).count();
}
int64_t wall_minute() { return wall_us() / 60000000; }

std::string self_executable() {
    char buf[4096];
    size_t n = sizeof buf;
    if (uv_exepath(buf, &n) != 0) return "/proc/self/exe";
    return std::string(buf, n);
}

std::string param(const std::map<std::string, std::string>& m, const char* name) {
    auto it = m.find(name);
    return it == m.end() ? std::string() : it->second;
}

// The header section of a message's first bytes.
std::string header_section(const std::string& data, bool& cut) {
    size_t end = data.find("\r\n\r\n");
    if (end == std::string::npos) end = data.find("\n\n");
    cut = end == std::string::npos;
    return cut ? data : data.substr(0, end);
}

std::string json_lines(const std::vector<std::string>& lines) {
    std::string out = "[";
    for (size_t i = 0; i < lines.size(); ++i)
        out += (i ? "," : "") + json_string(lines[i]);
    return out + "]";
}

std::string pre_lines(const std::vector<std::string>& lines) {
    std::string out = "<pre class=\"log\">";
    for (const auto& l : lines)
        out += html_escape(l) + "\n";
    return out + "</pre>";
}

const char* const k_doctor = "doctor";

bool readable_json(const std::string& text) {
    JsonValue j;
    std::string error;
    return json_parse(text, j, error);
}

}  // namespace

std::vector<std::string> Console::log_files() const {
    if (m_config->log.file.empty()) return {};
    return {m_config->log.file, m_config->log.file + ".1"};
}

// --- Overview ------------------------------------------------------------------------------------

void Console::sample_activity() {
    m_activity.sample(wall_minute(), activity_totals(), m_queue.size());
    if (!m_activity_timer) {
        m_activity_timer = new uv_timer_t;
        uv_timer_init(m_loop, m_activity_timer);
        uv_unref(reinterpret_cast<uv_handle_t*>(m_activity_timer));
        m_activity_timer->data = this;
    }
    // Again at the next minute's start.
    uint64_t ms = 60000 - uint64_t(wall_us() / 1000 % 60000) + 20;
    uv_timer_start(
        m_activity_timer, [](uv_timer_t* t) { static_cast<Console*>(t->data)->sample_activity(); }, ms, 0);
}

std::vector<ActivityMinute> Console::activity() const {
    return m_activity.minutes(wall_minute(), activity_totals(), m_queue.size());
}

std::string Console::destinations_table(bool probe_buttons, const Session* s) const {
    auto states = m_queue.destination_states();
    std::map<std::string, const QueueManager::DestinationState*> by_key;
    for (const auto& d : states)
        by_key[d.key] = &d;
    std::string rows;
    auto row = [&](const std::string& name, const std::string& where, const QueueManager::DestinationState* d,
                   const std::string& probe) {
        std::string state = "idle", error;
        if (d) {
            state = d->dead_until_us ? "<b class=\"dead\">dead</b> until " + format_time(d->dead_until_us)
                                     : std::string("<span class=\"healthy\">healthy</span>");
            if (!d->reason.empty()) {
                const WaitInfo& info = classify_wait(d->dsn, d->reason);
                error = "<b>" + html_escape(info.category) + "</b> <span class=\"reason\">" + html_escape(d->reason) +
                        "</span>";
            }
        }
        rows += "<tr><td>" + html_escape(name) + "</td><td>" + html_escape(where) + "</td><td>" +
                (d ? std::to_string(d->sessions) + " of " + std::to_string(d->limit) : std::string("0")) + "</td><td>" +
                (d ? std::to_string(d->jobs) : std::string("0")) + "</td><td>" + state + "</td><td>" + error + "</td>" +
                (probe_buttons ? "<td>" + probe + "</td>" : "") + "</tr>";
    };
    for (const auto& u : m_config->upstreams) {
        std::string probe;
        if (probe_buttons && s)
            probe = "<form method=\"post\" action=\"/upstreams/probe\"><input type=\"hidden\" name=\"csrf\" value=\"" +
                    s->csrf + "\"><input type=\"hidden\" name=\"name\" value=\"" + html_escape(u.name) +
                    "\"><button>Probe</button></form>";
        auto it = by_key.find("upstream:" + u.name);
        row(u.name, u.host + ":" + std::to_string(u.port) + " (" + conf::to_string(u.security) + ")",
            it == by_key.end() ? nullptr : it->second, probe);
        if (it != by_key.end()) by_key.erase(it);
    }
    for (const auto& [key, d] : by_key)
        row(key.rfind("direct:", 0) == 0 ? key.substr(7) : key, "MX hosts", d, "");
    if (rows.empty()) return "<p>No destination has mail or a connection.</p>";
    return "<table class=\"dest\"><thead><tr><th>Destination</th><th>Server</th><th>Sessions</th><th>Waiting</th>"
           "<th>State</th><th>Last error</th>" +
           std::string(probe_buttons ? "<th></th>" : "") + "</tr></thead><tbody>" + rows + "</tbody></table>";
}

WebResponse Console::overview_page(const Session& s) {
    auto minutes = activity();
    std::vector<int64_t> xs;
    ChartSeries received{"received", "#1f77b4", {}}, delivered{"delivered", "#2ca02c", {}},
        deferred{"deferred", "#ff7f0e", {}}, bounced{"bounced", "#d62728", {}}, rejected{"rejected", "#9467bd", {}},
        queue{"in the queue", "#444", {}, false};
    for (const auto& m : minutes) {
        xs.push_back(m.minute);
        received.values.push_back(m.received);
        delivered.values.push_back(m.delivered);
        deferred.values.push_back(m.deferred);
        bounced.values.push_back(m.bounced);
        rejected.values.push_back(m.rejected);
        queue.values.push_back(m.queue);
    }
    // Counted, not listed: the page refreshes every minute, however large the queue.
    size_t messages = m_queue.size(), held = m_queue.held_count();
    int64_t oldest = m_queue.oldest_arrival_us();
    std::string main = "<p id=\"summary\">" + std::to_string(messages) + " message(s) in the queue, " +
                       std::to_string(held) + " held" +
                       (messages == 0 ? std::string(".") : "; the oldest arrived " + format_time(oldest) + ".") +
                       " <a href=\"/queue\">Email Queue</a></p>";
    main += "<h2>Messages per minute</h2>" +
            svg_chart("Messages per minute", xs, {received, delivered, deferred, bounced, rejected}, wall_minute());
    main += "<h2>Queue size</h2>" + svg_chart("Messages in the queue", xs, {queue}, wall_minute());
    main += "<p class=\"reason\">Per minute, UTC, since the gateway started (at most the last 24 hours).</p>";
    main += "<h2>Destinations</h2>" + destinations_table(false, &s);
    return {200,
            "text/html; charset=utf-8",
            page("Overview", &s, main, "<meta http-equiv=\"refresh\" content=\"60\">"),
            {}};
}

WebResponse Console::api_overview() {
    std::string out = "{\"minutes\":[";
    bool first = true;
    for (const auto& m : activity()) {
        out += std::string(first ? "" : ",") + "{\"minute\":" + std::to_string(m.minute * 60) +
               ",\"received\":" + std::to_string(m.received) + ",\"delivered\":" + std::to_string(m.delivered) +
               ",\"deferred\":" + std::to_string(m.deferred) + ",\"bounced\":" + std::to_string(m.bounced) +
               ",\"rejected\":" + std::to_string(m.rejected) + ",\"queue\":" + std::to_string(m.queue) + "}";
        first = false;
    }
    out += "],\"destinations\":[";
    first = true;
    for (const auto& d : m_queue.destination_states()) {
        out += std::string(first ? "" : ",") + "{\"destination\":" + json_string(d.key) +
               ",\"sessions\":" + std::to_string(d.sessions) + ",\"limit\":" + std::to_string(d.limit) +
               ",\"waiting\":" + std::to_string(d.jobs) + ",\"dead\":" + (d.dead_until_us ? "true" : "false") +
               ",\"dead_until\":" + std::to_string(d.dead_until_us / 1000000) + ",\"dsn\":" + json_string(d.dsn) +
               ",\"reason\":" + json_string(d.reason) + "}";
        first = false;
    }
    return {200, "application/json", out + "],\"queue\":" + std::to_string(m_queue.size()) + "}\n", {}};
}

// --- Message -------------------------------------------------------------------------------------

void Console::message_page(const WebRequest& r, const Session& s, WebRespond respond, bool api) {
    std::string id = param(r.query, "id");
    if (!QueueIdGenerator::is_valid(id)) return respond({400, "text/plain; charset=utf-8", "not a queue ID\n", {}});
    struct State {
        Session session;  // a copy: the answer may come after the session ends
        std::string id, csrf, headers;
        bool headers_cut = false;
        std::optional<Envelope> envelope;
        LogPage log;
        std::vector<std::string> files;
        WebRespond respond;
    };
    auto st = std::make_shared<State>();
    st->id = id;
    st->csrf = s.csrf;
    st->session = s;
    st->files = log_files();
    st->respond = std::move(respond);
    if (const Envelope* e = m_queue.envelope(id)) st->envelope = *e;
    auto render = [this, st, api] {
        std::vector<std::string> lines(st->log.lines.rbegin(), st->log.lines.rend());  // oldest first
        if (api) {
            std::string out = "{\"id\":" + json_string(st->id) + ",\"queued\":" + (st->envelope ? "true" : "false") +
                              ",\"envelope\":" + (st->envelope ? envelope_json(*st->envelope) : "null") +
                              ",\"headers\":" + json_string(st->headers) + ",\"log\":" + json_lines(lines) +
                              ",\"log_error\":" + json_string(st->log.error) + "}\n";
            return st->respond({200, "application/json", out, {}});
        }
        std::string main;
        if (const auto& e = st->envelope) {
            std::string sender = html_escape(e->sender.empty() ? "<>" : e->sender);
            if (!e->orig_sender.empty()) sender = html_escape(e->orig_sender) + " &rarr; " + sender;
            auto tr = [](const char* k, const std::string& v) {
                return "<tr><th>" + std::string(k) + "</th><td>" + v + "</td></tr>";
            };
            main += "<table class=\"fields\">" +
                    tr("Queue ID", e->id + (e->held ? " <span class=\"held\">held</span>" : "")) +
                    tr("Arrival", format_time(e->arrival_us)) + tr("Size", std::to_string(e->size) + " bytes") +
                    tr("Client", html_escape(e->client_name + " [" + e->client_ip + "]") +
                                     (e->sasl_username.empty() ? "" : ", AUTH " + html_escape(e->sasl_username))) +
                    tr("Sender", sender) + tr("Message-ID", html_escape(e->message_id)) +
                    tr("Attempts", std::to_string(e->attempts)) +
                    tr("Next attempt", e->held ? std::string("- (held)") : format_time(e->next_attempt_us)) +
                    "</table>";
            main += "<p class=\"actions\">" + queue_actions(*e, st->csrf) +
                    "</p><h2>Recipients</h2><table><thead><tr><th>Recipient</th>"
                    "<th>Status</th><th>Info</th></tr></thead><tbody>";
            for (const auto& rc : e->recipients) {
                std::string info;
                if (rc.status == RcptStatus::Deferred || rc.status == RcptStatus::Pending) {
                    const WaitInfo& w = classify_wait(rc.dsn, rc.reason);
                    info = "<b>" + html_escape(w.category) + "</b> " + html_escape(w.fix);
                }
                main += "<tr><td>" + html_escape(rc.address) + "</td><td>" + to_string(rc.status) +
                        (rc.dsn.empty() ? "" : " " + html_escape(rc.dsn)) + "</td><td class=\"info\">" + info +
                        (rc.reason.empty() ? "" : "<div class=\"reason\">" + html_escape(rc.reason) + "</div>") +
                        "</td></tr>";
            }
            main += "</tbody></table><h2>Headers</h2><pre class=\"headers\">" + html_escape_lines(st->headers) +
                    (st->headers_cut ? "\n[the header section goes on beyond 64 KiB]" : "") + "</pre>";
        } else {
            main += "<p class=\"note\">" + st->id +
                    " is not in the queue: it was delivered, returned or deleted. "
                    "Its log lines tell what became of it.</p>";
        }
        main += "<h2>Delivery attempts and log lines</h2>";
        if (st->files.empty())
            main += "<p>log.file is not set: the log goes to standard error. Set log.file to see the lines here.</p>";
        else if (!st->log.error.empty())
            main += "<p class=\"note\">" + html_escape(st->log.error) + "</p>";
        else if (lines.empty())
            main += "<p>No line in " + html_escape(st->files[0]) + " names " + st->id + ".</p>";
        main += pre_lines(lines);
        st->respond({200, "text/html; charset=utf-8", page("Message " + st->id, &st->session, main), {}});
    };
    // The log lines, on the thread pool.
    auto search = [this, st, render] {
        if (st->files.empty()) return render();
        struct Work {
            uv_work_t req;
            std::shared_ptr<State> st;
            std::function<void()> render;
        };
        auto* w = new Work{{}, st, render};
        w->req.data = w;
        uv_queue_work(
            m_loop, &w->req,
            [](uv_work_t* req) {
                auto* w = static_cast<Work*>(req->data);
                w->st->log = search_log(w->st->files, LogQuery{w->st->id, "", 0, k_message_log_lines});
            },
            [](uv_work_t* req, int) {
                std::unique_ptr<Work> w(static_cast<Work*>(req->data));
                w->render();
            });
    };
    if (!st->envelope) return search();
    m_queue.read_content(id, 0, k_header_bytes, [st, search](int err, const std::string& data) {
        if (err == 0)
            st->headers = header_section(data, st->headers_cut);
        else
            st->headers = "[the message's content cannot be read: " + std::string(uv_strerror(err)) + "]";
        if (err == 0 && data.size() < k_header_bytes) st->headers_cut = false;
        search();
    });
}

// --- Email Log -----------------------------------------------------------------------------------

void Console::log_page(const WebRequest& r, const Session& s, WebRespond respond, bool api) {
    LogQuery q;
    q.text = printable(param(r.query, "q"), 200);
    q.status = param(r.query, "status");
    if (!valid_log_status(q.status)) return respond({400, "text/plain; charset=utf-8", "no such status\n", {}});
    size_t page_no = 1;
    std::string p = param(r.query, "page");
    if (!p.empty()) {
        if (p.size() > 6 || p.find_first_not_of("0123456789") != std::string::npos)
            return respond({400, "text/plain; charset=utf-8", "not a page number\n", {}});
        page_no = std::clamp<size_t>(std::stoul(p), 1, k_max_log_pages);
    }
    q.skip = (page_no - 1) * k_log_page;
    q.limit = k_log_page;
    auto files = log_files();
    auto render = [this, q, page_no, files, api, session = s, respond = std::move(respond)](const LogPage& result) {
        if (api)
            return respond({200,
                            "application/json",
                            "{\"page\":" + std::to_string(page_no) + ",\"lines\":" + json_lines(result.lines) +
                                ",\"more\":" + (result.more ? "true" : "false") + ",\"cut\":" +
                                (result.cut ? "true" : "false") + ",\"error\":" + json_string(result.error) + "}\n",
                            {}});
        std::string main = "<form method=\"get\" action=\"/log\"><input name=\"q\" value=\"" + html_escape(q.text) +
                           "\" placeholder=\"recipient, sender or queue ID\"> <select name=\"status\">";
        for (const char* st : {"", "sent", "deferred", "bounced", "rejected"})
            main += "<option value=\"" + std::string(st) + "\"" + (q.status == st ? " selected" : "") + ">" +
                    (*st ? st : "any status") + "</option>";
        main += "</select> <button>Search</button></form>";
        if (files.empty()) {
            main +=
                "<p class=\"note\">log.file is not set: the log goes to standard error (the journal under "
                "systemd). Set log.file to search it here.</p>";
        } else {
            if (!result.error.empty()) main += "<p class=\"note\">" + html_escape(result.error) + "</p>";
            main += "<p>" + std::to_string(result.lines.size()) + " line(s) of " + html_escape(files[0]) + " and " +
                    html_escape(files[1]) + ", newest first, page " + std::to_string(page_no) + ".";
            if (result.cut) main += " The search stopped after 1 GiB: narrow it to see older lines.";
            main += "</p>" + pre_lines(result.lines);
            auto link = [&](size_t n, const char* label) {
                return "<a href=\"/log?q=" + form_escape(q.text) + "&amp;status=" + q.status +
                       "&amp;page=" + std::to_string(n) + "\">" + label + "</a> ";
            };
            main += "<p class=\"pages\">";
            if (page_no > 1) main += link(page_no - 1, "Newer");
            if (result.more) main += link(page_no + 1, "Older");
            main += "</p>";
        }
        respond({200, "text/html; charset=utf-8", page("Email Log", &session, main), {}});
    };
    if (files.empty()) return render(LogPage{});
    struct Work {
        uv_work_t req;
        std::vector<std::string> files;
        LogQuery q;
        LogPage result;
        std::function<void(const LogPage&)> render;
    };
    auto* w = new Work{{}, files, q, {}, std::move(render)};
    w->req.data = w;
    uv_queue_work(
        m_loop, &w->req,
        [](uv_work_t* req) {
            auto* w = static_cast<Work*>(req->data);
            w->result = search_log(w->files, w->q);
        },
        [](uv_work_t* req, int) {
            std::unique_ptr<Work> w(static_cast<Work*>(req->data));
            w->render(w->result);
        });
}

// --- Doctor and Upstreams ------------------------------------------------------------------------

void Console::run_report(const std::string& what, std::vector<std::string> args, const std::string& user,
                         std::function<void()> then) {
    auto running = m_running.find(what);
    if (running != m_running.end()) return running->second.push_back(std::move(then));
    m_running[what].push_back(std::move(then));
    ChildOptions o;
    o.argv = {self_executable()};
    o.argv.insert(o.argv.end(), args.begin(), args.end());
    if (m_config->source != "(default)") {
        o.argv.push_back("-c");
        o.argv.push_back(m_config->source);
    }
    bool doctor = what == k_doctor;
    o.timeout_ms = doctor ? k_doctor_timeout_ms : k_probe_timeout_ms;
    o.max_output = k_report_output;
    o.with_stderr = !doctor;  // the doctor's JSON is its standard output alone
    log::info(log::Component::Console, user + ": " + what + " started");
    run_child(m_loop, std::move(o), [this, what, user, doctor](const ChildResult& r) {
        Report rep;
        rep.when_us = wall_us();
        rep.user = user;
        rep.output = r.output;
        if (!r.started)
            rep.error = "cannot run " + what + ": " + r.error;
        else if (r.cancelled)
            rep.error = what + " was stopped: the gateway is stopping";
        else if (r.timed_out)
            rep.error = what + " did not finish within " +
                        std::to_string((doctor ? k_doctor_timeout_ms : k_probe_timeout_ms) / 1000) + " s";
        else if (doctor && !readable_json(r.output))
            rep.error = "the doctor's report cannot be read (exit status " + std::to_string(r.status) + ")";
        rep.ok = rep.error.empty() && r.status == 0;
        log::info(log::Component::Console,
                  user + ": " + what +
                      " finished: " + (rep.error.empty() ? "exit status " + std::to_string(r.status) : rep.error));
        m_reports[what] = std::move(rep);
        auto waiting = std::move(m_running[what]);
        m_running.erase(what);
        for (auto& w : waiting)
            w();
    });
}

std::string Console::report_json(const Report& r) const {
    return "{\"when\":" + std::to_string(r.when_us / 1000000) + ",\"by\":" + json_string(r.user) +
           ",\"ok\":" + (r.ok ? "true" : "false") + ",\"error\":" + json_string(r.error) +
           ",\"output\":" + json_string(r.output) + "}";
}

WebResponse Console::doctor_page(const Session& s) {
    std::string main =
        "<p>The doctor checks what decides whether mail from this gateway is accepted: the "
        "host name, its reverse DNS, SPF for the senders, blocklists, the upstreams.</p>"
        "<form method=\"post\" action=\"/doctor\"><input type=\"hidden\" name=\"csrf\" value=\"" +
        s.csrf + "\"><button>Run the doctor</button></form>";
    auto it = m_reports.find(k_doctor);
    if (it == m_reports.end())
        return {200, "text/html; charset=utf-8", page("Doctor", &s, main + "<p>Not run yet.</p>"), {}};
    const Report& rep = it->second;
    main += "<p>Run " + format_time(rep.when_us) + " by " + html_escape(rep.user) + ".</p>";
    if (!rep.error.empty()) main += "<p class=\"note\">" + html_escape(rep.error) + "</p>";
    JsonValue j;
    std::string error;
    if (json_parse(rep.output, j, error) && j.type == JsonValue::Type::Object) {
        main += "<p id=\"doctor-summary\">" + html_escape(j.text("hostname")) + " [" + html_escape(j.text("address")) +
                "]: " + html_escape(j.text("fail")) + " FAIL, " + html_escape(j.text("warn")) + " WARN, " +
                html_escape(j.text("pass")) + " PASS</p><table class=\"doctor\"><tbody>";
        if (const JsonValue* checks = j.get("checks"))
            for (const auto& c : checks->items) {
                std::string level = c.text("level");
                main += "<tr class=\"" + html_escape(level) + "\"><td><b>" + html_escape(level) + "</b></td><td>" +
                        html_escape(c.text("check")) + "</td><td>" + html_escape(c.text("text")) + "</td></tr>";
            }
        main += "</tbody></table>";
    } else if (!rep.output.empty()) {
        main += "<pre>" + html_escape_lines(rep.output) + "</pre>";
    }
    return {200, "text/html; charset=utf-8", page("Doctor", &s, main), {}};
}

WebResponse Console::upstreams_page(const Session& s) {
    std::string main = destinations_table(true, &s);
    for (const auto& u : m_config->upstreams) {
        auto it = m_reports.find("probe " + u.name);
        if (it == m_reports.end()) continue;
        const Report& rep = it->second;
        main += "<h2 id=\"probe-" + html_escape(u.name) + "\">Probe of " + html_escape(u.name) + "</h2><p>Run " +
                format_time(rep.when_us) + " by " + html_escape(rep.user) + ": " +
                (rep.ok ? "<b class=\"healthy\">passed</b>" : "<b class=\"dead\">failed</b>") + "</p>";
        if (!rep.error.empty()) main += "<p class=\"note\">" + html_escape(rep.error) + "</p>";
        main += "<pre class=\"probe\">" + html_escape_lines(rep.output) + "</pre>";
    }
    return {200, "text/html; charset=utf-8", page("Upstreams", &s, main), {}};
}

}  // namespace gateway
