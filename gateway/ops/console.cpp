#include "gateway/ops/console.hpp"

#include "gateway/common/json.hpp"
#include "gateway/common/log.hpp"
#include "gateway/common/queue_id.hpp"
#include "gateway/common/text.hpp"
#include "gateway/ops/admin_accounts.hpp"
#include "gateway/queue/queue_view.hpp"
#include "gateway/smtp/https_post.hpp"
#include "tls/password_hash.hpp"

#include <algorithm>

namespace gateway {

namespace {

constexpr uint64_t k_idle_ms = 30 * 60 * 1000;
constexpr uint64_t k_session_ms = 12 * 3600 * 1000;
constexpr size_t k_max_sessions = 1000;
constexpr uint64_t k_lockout_window_ms = 10 * 60 * 1000;
constexpr size_t k_max_failures = 5;
constexpr size_t k_max_failed_clients = 10000;  // addresses with failures remembered
constexpr size_t k_page_rows = 500;
const char* const k_cookie = "smtpgw_session";
// The Email Queue's filter: every message, held ones, or the messages waiting for one kind of reason.
const char* const k_filters[] = {"",
                                 "held",
                                 "connection timed out",
                                 "connection refused",
                                 "lookup error",
                                 "permission denied",
                                 "TLS incompatibility",
                                 "AUTH incompatibility",
                                 "greylisted / temporary",
                                 "waiting"};

std::string hex(const std::string& bytes) {
    static const char digits[] = "0123456789abcdef";
    std::string out;
    for (unsigned char c : bytes) {
        out += digits[c >> 4];
        out += digits[c & 15];
    }
    return out;
}

bool contains(const std::string& text, const char* what) { return text.find(what) != std::string::npos; }

bool matches(const Envelope& e, const CaseFreeSearch& q) {
    if (q.empty()) return true;
    if (q.in(e.id) || q.in(e.sender) || q.in(e.orig_sender)) return true;
    return std::any_of(e.recipients.begin(), e.recipients.end(),
                       [&](const Recipient& r) { return q.in(r.address) || q.in(r.reason); });
}

// The last reason of the first recipient still waiting.
const Recipient* waiting(const Envelope& e) {
    for (const auto& r : e.recipients)
        if (r.status == RcptStatus::Deferred || r.status == RcptStatus::Pending) return &r;
    return nullptr;
}

// "page=": 1 when absent; 0 when it is no page number.
size_t queue_page_number(const WebRequest& r) {
    auto p = r.query.find("page");
    if (p == r.query.end() || p->second.empty()) return 1;
    if (p->second.size() > 6 || p->second.find_first_not_of("0123456789") != std::string::npos) return 0;
    return std::max<size_t>(1, std::stoul(p->second));
}

const char* const k_style = R"(body{font-family:sans-serif;margin:0;color:#222}
header{background:#234;color:#fff;padding:.5em 1em;display:flex;gap:1em;align-items:center}
header a{color:#fff}header form{margin-left:auto}main{padding:1em}
table{border-collapse:collapse;width:100%}td,th{border-bottom:1px solid #ccc;padding:.3em;text-align:left;vertical-align:top}
.info b{display:block}.note{background:#ffd;padding:.5em;border:1px solid #cc8}.held{color:#a50}
td form,.actions form{display:inline}.reason{color:#555;font-size:90%}
nav a{margin-right:.8em}.dead{color:#b00}.healthy{color:#070}svg.chart{max-width:760px;width:100%;display:block}
pre.log,pre.headers,pre.probe{background:#f4f4f4;padding:.5em;overflow-x:auto;white-space:pre-wrap;word-break:break-all}
table.fields{width:auto}table.fields th{padding-right:1em}tr.FAIL b{color:#b00}tr.WARN b{color:#a50}tr.PASS b{color:#070}
.pages a{margin-right:1em}
)";

}  // namespace

std::string queue_actions(const Envelope& e, const std::string& csrf) {
    auto button = [&](const char* action, const char* label) {
        return "<form method=\"post\" action=\"/queue/action\"><input type=\"hidden\" name=\"csrf\" value=\"" + csrf +
               "\"><input type=\"hidden\" name=\"id\" value=\"" + e.id +
               "\"><input type=\"hidden\" name=\"action\" value=\"" + action + "\"><button>" + label +
               "</button></form>";
    };
    std::string actions = e.held ? button("release", "Release") : button("retry", "Retry now") + button("hold", "Hold");
    return actions + button("delete", "Delete");
}

std::string html_escape(const std::string& s) {
    std::string out;
    for (char c : printable(s, 4096)) {
        switch (c) {
        case '&': out += "&amp;"; break;
        case '<': out += "&lt;"; break;
        case '>': out += "&gt;"; break;
        case '"': out += "&quot;"; break;
        case '\'': out += "&#39;"; break;
        default: out += c;
        }
    }
    return out;
}

std::string html_escape_lines(const std::string& s) {
    std::string out;
    size_t pos = 0;
    while (pos < s.size()) {
        size_t nl = s.find('\n', pos);
        if (nl == std::string::npos) nl = s.size();
        std::string line = s.substr(pos, nl - pos);
        if (!line.empty() && line.back() == '\r') line.pop_back();
        std::replace(line.begin(), line.end(), '\t', ' ');  // a folded header's tab
        out += html_escape(line) + (nl < s.size() ? "\n" : "");
        pos = nl + 1;
    }
    return out;
}

const WaitInfo& classify_wait(const std::string& dsn, const std::string& reason) {
    static const WaitInfo waiting{"waiting", "not tried yet; it goes at its next attempt"},
        timed_out{"connection timed out",
                  "nothing answered: check the firewall between the gateway and the server, and the host and port"},
        refused{"connection refused", "nothing listens there: check the port, and that the server runs"},
        lookup{"lookup error", "the DNS has no usable answer for the name: check the domain and dns.servers"},
        tls{"TLS incompatibility", "the two sides do not agree on TLS: the reason names the setting to change"},
        auth{"AUTH incompatibility", "the credentials or the mechanism do not fit: the reason names what to change"},
        denied{"permission denied", "the server refuses this gateway or this sender: the reason says which"},
        temporary{"greylisted / temporary", "the server asked to try again later, and the gateway does"};
    if (reason.empty()) return waiting;
    if (contains(reason, "timed out") || contains(reason, "Connection timed out")) return timed_out;
    if (contains(reason, "Connection refused")) return refused;
    if (contains(reason, "Host or domain name not found") || contains(reason, "Name service error") ||
        contains(reason, "lookup"))
        return lookup;
    if (contains(reason, "TLS") || contains(reason, "STARTTLS") || contains(reason, "certificate")) return tls;
    if (contains(reason, "SASL") || contains(reason, "AUTH") || contains(reason, "authenticat") ||
        contains(reason, "OAuth"))
        return auth;
    if (dsn.rfind("5.7", 0) == 0 || dsn.rfind("4.7", 0) == 0 || contains(reason, "denied") ||
        contains(reason, "not permitted"))
        return denied;
    return temporary;
}

Console::Console(uv_loop_t* loop, std::shared_ptr<const conf::Config> config, QueueManager& queue)
    : m_loop(loop), m_config(std::move(config)), m_queue(queue) {}

void Console::start() {
    sample_activity();
    m_server =
        std::make_unique<WebServer>(m_loop, m_config->admin.endpoint,
                                    [this](const WebRequest& r, WebRespond respond) { handle(r, std::move(respond)); });
    if (m_config->admin.https && m_config->tls) m_server->use_tls(m_config->tls->certificate, m_config->tls->key);
    m_server->start();
    log::info(log::Component::Console, std::string("console on ") + (m_config->admin.https ? "https://" : "http://") +
                                           m_config->admin.listen + "/");
}

void Console::close() {
    if (m_server) m_server->close();
    m_server.reset();
    if (m_activity_timer)
        uv_close(reinterpret_cast<uv_handle_t*>(m_activity_timer),
                 [](uv_handle_t* h) { delete reinterpret_cast<uv_timer_t*>(h); });
    m_activity_timer = nullptr;
}

void Console::log_access(const WebRequest& r, const std::string& user, int status) const {
    log::info(log::Component::Console, (user.empty() ? std::string("-") : user) + " from " + r.client + ": " +
                                           r.method + " " + printable(r.path, 200) + " " + std::to_string(status));
}

Console::Session* Console::session_of(const WebRequest& r) {
    auto c = r.cookies.find(k_cookie);
    if (c == r.cookies.end()) return nullptr;
    auto it = m_sessions.find(c->second);
    if (it == m_sessions.end()) return nullptr;
    uint64_t now = uv_now(m_loop);
    if (now - it->second.used_ms > k_idle_ms || now - it->second.created_ms > k_session_ms) {
        m_sessions.erase(it);
        return nullptr;
    }
    it->second.used_ms = now;
    return &it->second;
}

bool Console::locked_out(const std::string& client) {
    // Sign-ins still being checked count as failures: parallel guesses cannot pass the limit.
    size_t checking = m_checking.count(client) ? m_checking.at(client) : 0;
    auto it = m_failed_logins.find(client);
    if (it == m_failed_logins.end()) return checking >= k_max_failures;
    uint64_t now = uv_now(m_loop);
    while (!it->second.empty() && now - it->second.front() > k_lockout_window_ms)
        it->second.pop_front();
    if (it->second.empty()) {
        m_failed_logins.erase(it);
        return checking >= k_max_failures;
    }
    return it->second.size() + checking >= k_max_failures;
}

// Addresses whose failures are all older than the window are forgotten; if the table is still
// full, the address whose last failure is oldest goes.
void Console::forget_old_failures() {
    uint64_t now = uv_now(m_loop);
    for (auto it = m_failed_logins.begin(); it != m_failed_logins.end();)
        it = now - it->second.back() > k_lockout_window_ms ? m_failed_logins.erase(it) : std::next(it);
    if (m_failed_logins.size() < k_max_failed_clients) return;
    auto oldest = std::min_element(m_failed_logins.begin(), m_failed_logins.end(),
                                   [](auto& a, auto& b) { return a.second.back() < b.second.back(); });
    m_failed_logins.erase(oldest);
}

std::string Console::page(const std::string& title, const Session* s, const std::string& main,
                          const std::string& head) const {
    std::string nav;
    if (s)
        nav =
            "<nav><a href=\"/overview\">Overview</a><a href=\"/queue\">Email Queue</a><a href=\"/log\">Email "
            "Log</a><a href=\"/upstreams\">Upstreams</a><a href=\"/doctor\">Doctor</a></nav><form method=\"post\" "
            "action=\"/logout\">" +
            html_escape(s->user) + " <input type=\"hidden\" name=\"csrf\" value=\"" + s->csrf +
            "\"><button>Sign out</button></form>";
    return "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>" + html_escape(title) +
           " - smtpgw</title><link rel=\"stylesheet\" href=\"/style.css\">" + head +
           "</head><body><header><b>smtpgw</b> " + html_escape(m_config->hostname) + nav + "</header><main><h1>" +
           html_escape(title) + "</h1>" + main + "</main></body></html>\n";
}

void Console::handle(const WebRequest& r, WebRespond respond) {
    // Every answer: no framing, no script, nothing from elsewhere, nothing cached.
    auto send = [this, r, respond = std::move(respond)](WebResponse w, const std::string& user) {
        w.headers.emplace_back("Content-Security-Policy",
                               "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
                               "frame-ancestors 'none'; base-uri 'none'");
        w.headers.emplace_back("X-Frame-Options", "DENY");
        w.headers.emplace_back("X-Content-Type-Options", "nosniff");
        w.headers.emplace_back("Referrer-Policy", "no-referrer");
        w.headers.emplace_back("Cache-Control", "no-store");
        if (m_config->admin.https) w.headers.emplace_back("Strict-Transport-Security", "max-age=31536000");
        if (r.path != "/healthz" && r.path != "/readyz") log_access(r, user, w.status);
        respond(std::move(w));
    };
    auto redirect = [](const std::string& to) { return WebResponse{303, "text/plain", "", {{"Location", to}}}; };
    if (r.body_too_large) return send({413, "text/plain; charset=utf-8", "request too large\n", {}}, "");
    if (r.path == "/style.css" && r.method == "GET") return send({200, "text/css", k_style, {}}, "");
    // For load balancers and orchestrators, without sign-in, as on the metrics listener.
    if (r.path == "/healthz" && (r.method == "GET" || r.method == "HEAD"))
        return send({200, "text/plain; charset=utf-8", "ok\n", {}}, "");
    if (r.path == "/readyz" && (r.method == "GET" || r.method == "HEAD")) {
        std::string why = m_not_ready ? m_not_ready() : "";
        return send({why.empty() ? 200 : 503,
                     "text/plain; charset=utf-8",
                     why.empty() ? "ready\n" : "not ready: " + why + "\n",
                     {}},
                    "");
    }
    if (m_draining) return send({503, "text/plain; charset=utf-8", "the gateway is stopping\n", {}}, "");
    if (r.path == "/login") {
        if (r.method == "POST") return sign_in(r, [send](WebResponse w) { send(std::move(w), ""); });
        std::string form =
            "<form method=\"post\" action=\"/login\"><p><label>Name <input name=\"name\" "
            "autocomplete=\"username\" required></label></p><p><label>Password <input name=\"password\" "
            "type=\"password\" autocomplete=\"current-password\" required></label></p>"
            "<p><button>Sign in</button></p></form>";
        return send({200, "text/html; charset=utf-8", page("Sign in", nullptr, form), {}}, "");
    }
    Session* s = session_of(r);
    bool api = r.path.rfind("/api/", 0) == 0;
    if (!s) {
        if (api) return send({401, "application/json", "{\"error\":\"sign in first\"}\n", {}}, "");
        return send(redirect("/login"), "");
    }
    // A POST must carry the session's token: another site cannot make the browser send it.
    if (r.method == "POST") {
        auto t = r.form.find("csrf");
        if (t == r.form.end() || t->second != s->csrf)
            return send({403, "text/plain; charset=utf-8", "the form is out of date: reload the page\n", {}}, s->user);
    } else if (r.method != "GET" && r.method != "HEAD") {
        return send({405, "text/plain; charset=utf-8", "method not allowed\n", {{"Allow", "GET, POST"}}}, s->user);
    }
    std::string user = s->user;
    if (r.path == "/logout" && r.method == "POST") {
        log::info(log::Component::Console, user + " from " + r.client + ": signed out");
        m_sessions.erase(r.cookies.at(k_cookie));
        auto w = redirect("/login");
        w.headers.emplace_back("Set-Cookie", std::string(k_cookie) + "=; Max-Age=0; Path=/; HttpOnly; SameSite=Strict");
        return send(std::move(w), user);
    }
    auto later = [send, user](WebResponse w) { send(std::move(w), user); };
    bool get = r.method == "GET" || r.method == "HEAD", post = r.method == "POST";
    if (r.path == "/" && get) return send(redirect("/overview"), user);
    if (r.path == "/overview" && get) return send(overview_page(*s), user);
    if (r.path == "/api/overview" && get) return send(api_overview(), user);
    if (r.path == "/queue" && get) return send(queue_page(r, *s), user);
    if (r.path == "/queue/action" && post) return send(queue_action(r, *s), user);
    if (r.path == "/api/queue" && get) return send(api_queue(r), user);
    if ((r.path == "/message" || r.path == "/api/message") && get) return message_page(r, *s, later, api);
    if ((r.path == "/log" || r.path == "/api/log") && get) return log_page(r, *s, later, api);
    if (r.path == "/doctor" && get) return send(doctor_page(*s), user);
    if ((r.path == "/doctor" || r.path == "/api/doctor") && post)
        return run_report("doctor", {"doctor", "--json"}, user, [this, later, api, redirect] {
            if (!api) return later(redirect("/doctor"));
            later({200, "application/json", report_json(m_reports.at("doctor")) + "\n", {}});
        });
    if (r.path == "/api/doctor" && get) {
        auto it = m_reports.find("doctor");
        return send({200, "application/json", (it == m_reports.end() ? "null" : report_json(it->second)) + "\n", {}},
                    user);
    }
    if (r.path == "/upstreams" && get) return send(upstreams_page(*s), user);
    if ((r.path == "/upstreams/probe" || r.path == "/api/probe") && post) {
        std::string name = r.form.count("name") ? r.form.at("name") : "";
        bool known = std::any_of(m_config->upstreams.begin(), m_config->upstreams.end(),
                                 [&](const conf::Upstream& u) { return u.name == name; });
        if (!known) return send({404, "text/plain; charset=utf-8", "no such upstream\n", {}}, user);
        std::string what = "probe " + name;
        return run_report(what, {"probe", name}, user, [this, later, api, what, name, redirect] {
            if (!api) return later(redirect("/upstreams#probe-" + form_escape(name)));
            later({200, "application/json", report_json(m_reports.at(what)) + "\n", {}});
        });
    }
    if (r.path == "/api/upstreams" && get) {
        std::string out = "[";
        for (const auto& u : m_config->upstreams) {
            auto it = m_reports.find("probe " + u.name);
            out += std::string(out.size() > 1 ? "," : "") + "{\"name\":" + json_string(u.name) +
                   ",\"host\":" + json_string(u.host) + ",\"port\":" + std::to_string(u.port) +
                   ",\"security\":" + json_string(conf::to_string(u.security)) +
                   ",\"probe\":" + (it == m_reports.end() ? "null" : report_json(it->second)) + "}";
        }
        return send({200, "application/json", out + "]\n", {}}, user);
    }
    send({404, "text/plain; charset=utf-8", "no such page\n", {}}, user);
}

void Console::sign_in(const WebRequest& r, WebRespond respond) {
    std::string client = r.client;
    auto failed = [this](const std::string& note) {
        return WebResponse{
            401,
            "text/html; charset=utf-8",
            page("Sign in", nullptr,
                 "<p class=\"note\">" + html_escape(note) + "</p><p><a href=\"/login\">Try again</a></p>"),
            {}};
    };
    if (locked_out(client)) {
        log::warning(log::Component::Console, "sign-in from " + client + " refused: too many failures");
        auto w = failed("Too many failed sign-ins from this address: wait ten minutes.");
        w.status = 429;
        return respond(std::move(w));
    }
    auto name = r.form.find("name"), password = r.form.find("password");
    if (name == r.form.end() || password == r.form.end() || !valid_admin_name(name->second))
        return respond(failed("Give a name and a password."));
    // The file is read and the hash checked on libuv's thread pool: it takes tens of milliseconds.
    struct Work {
        uv_work_t req;
        Console* self;
        std::string path, name, password, client;
        bool ok = false;
        std::string error;
        WebRespond respond;
        std::function<WebResponse(const std::string&)> failed;
    };
    auto* w = new Work{{},    this, m_config->admin.accounts, name->second, password->second, client,
                       false, {},   std::move(respond),       failed};
    m_checking[client]++;
    w->req.data = w;
    uv_queue_work(
        m_loop, &w->req,
        [](uv_work_t* req) {
            auto* w = static_cast<Work*>(req->data);
            std::map<std::string, std::string> accounts;
            if (!read_admin_accounts(w->path, accounts, w->error)) return;
            auto it = accounts.find(w->name);
            // An unknown name costs the same time as a wrong password.
            static const std::string decoy = tls::hash_password("decoy password");
            w->ok =
                tls::verify_password(w->password, it == accounts.end() ? decoy : it->second) && it != accounts.end();
        },
        [](uv_work_t* req, int) {
            std::unique_ptr<Work> w(static_cast<Work*>(req->data));
            Console* self = w->self;
            if (--self->m_checking[w->client] == 0) self->m_checking.erase(w->client);
            if (!w->error.empty()) log::error(log::Component::Console, "admin.accounts: " + w->error);
            if (!w->ok) {
                if (self->m_failed_logins.size() >= k_max_failed_clients) self->forget_old_failures();
                self->m_failed_logins[w->client].push_back(uv_now(self->m_loop));
                log::warning(log::Component::Console, "failed sign-in as " + w->name + " from " + w->client);
                return w->respond(w->failed("Wrong name or password."));
            }
            self->m_failed_logins.erase(w->client);
            if (self->m_sessions.size() >= k_max_sessions) {  // the least recently used goes
                auto oldest = std::min_element(self->m_sessions.begin(), self->m_sessions.end(),
                                               [](auto& a, auto& b) { return a.second.used_ms < b.second.used_ms; });
                self->m_sessions.erase(oldest);
            }
            std::string token = hex(tls::random_bytes(32)), csrf = hex(tls::random_bytes(32));
            if (token.size() != 64 || csrf.size() != 64)
                return w->respond({500, "text/plain; charset=utf-8", "no random numbers\n", {}});
            uint64_t now = uv_now(self->m_loop);
            self->m_sessions[token] = Session{w->name, csrf, now, now};
            log::info(log::Component::Console, w->name + " from " + w->client + ": signed in");
            w->respond({303,
                        "text/plain",
                        "",
                        {{"Location", "/overview"},
                         {"Set-Cookie", std::string(k_cookie) + "=" + token + "; Path=/; HttpOnly; SameSite=Strict" +
                                            (self->m_config->admin.https ? "; Secure" : "")}}});
        });
}

QueueSelection Console::select_queue(const std::string& q, const std::string& show, size_t page_no) const {
    QueueSelection out;
    std::vector<const Envelope*> hits;
    CaseFreeSearch text(q);
    // After a mass deferral most messages wait for the same reason: the last one's kind is kept.
    const Recipient* last = nullptr;
    bool last_shown = false;
    for (const Envelope* e : m_queue.messages()) {
        if (!matches(*e, text)) continue;
        if (show == "held" && !e->held) continue;
        if (!show.empty() && show != "held") {
            if (e->held) continue;
            const Recipient* w = waiting(*e);
            static const Recipient none;
            if (!w) w = &none;
            if (!last || w->reason != last->reason || w->dsn != last->dsn)
                last = w, last_shown = classify_wait(w->dsn, w->reason).category == show;
            if (!last_shown) continue;
        }
        hits.push_back(e);
    }
    out.total = hits.size();
    out.first = std::min(hits.size(), (page_no - 1) * k_page_rows);
    auto older = [](const Envelope* a, const Envelope* b) {
        return a->arrival_us != b->arrival_us ? a->arrival_us < b->arrival_us : a->id < b->id;
    };
    auto from = hits.begin() + ptrdiff_t(out.first);
    auto to = hits.begin() + ptrdiff_t(std::min(hits.size(), out.first + k_page_rows));
    if (from != hits.begin()) std::nth_element(hits.begin(), from, hits.end(), older);
    std::partial_sort(from, to, hits.end(), older);
    out.rows.assign(from, to);
    return out;
}

WebResponse Console::queue_page(const WebRequest& r, const Session& s) {
    std::string q = r.query.count("q") ? r.query.at("q") : "";
    size_t page_no = queue_page_number(r);
    if (page_no == 0) return {400, "text/plain; charset=utf-8", "not a page number\n", {}};
    std::string main;
    if (auto note = r.query.find("note"); note != r.query.end())
        main += "<p class=\"note\">" + html_escape(note->second) + "</p>";
    // Filter: held messages, or those waiting for one kind of reason.
    std::string show = r.query.count("show") ? r.query.at("show") : "";
    main += "<form method=\"get\" action=\"/queue\"><input name=\"q\" value=\"" + html_escape(q) +
            "\" placeholder=\"queue ID, sender, recipient or reason\"> <select name=\"show\">";
    for (const char* option : k_filters)
        main += "<option value=\"" + std::string(option) + "\"" + (show == option ? " selected" : "") + ">" +
                (*option ? option : "every message") + "</option>";
    main += "</select> <button>Search</button></form>";
    auto selected = select_queue(q, show, page_no);
    std::string rows;
    for (const Envelope* e : selected.rows) {
        const Recipient* w = waiting(*e);
        const WaitInfo& info = classify_wait(w ? w->dsn : "", w ? w->reason : "");
        std::string recipients;
        for (const auto& rc : e->recipients)
            recipients += html_escape(rc.address) + " <small>(" + to_string(rc.status) + ")</small><br>";
        std::string sender = html_escape(e->sender.empty() ? "<>" : e->sender);
        if (!e->orig_sender.empty()) sender = html_escape(e->orig_sender) + " &rarr; " + sender;
        std::string actions = queue_actions(*e, s.csrf);
        rows += "<tr id=\"m-" + e->id + "\"><td><a href=\"/message?id=" + e->id + "\">" + e->id + "</a>" +
                (e->held ? " <span class=\"held\">held</span>" : "") + "</td><td>" + format_time(e->arrival_us) +
                "</td><td>" + sender + "</td><td>" + recipients + "</td><td>" + std::to_string(e->attempts) +
                "</td><td>" + (e->held ? std::string("-") : format_time(e->next_attempt_us)) +
                "</td><td class=\"info\"><b>" + html_escape(info.category) + "</b>" + html_escape(info.fix) +
                (w && !w->reason.empty() ? "<div class=\"reason\">" + html_escape(w->reason) + "</div>" : "") +
                "</td><td>" + actions + "</td></tr>";
    }
    size_t shown = selected.rows.size();
    main += "<p>" + std::to_string(selected.total) + " of " + std::to_string(m_queue.size()) + " message(s)";
    if (shown < selected.total)
        main += shown == 0 ? ", none on page " + std::to_string(page_no)
                           : (selected.first == 0 ? ", the first " + std::to_string(shown) + " shown"
                                                  : ", " + std::to_string(selected.first + 1) + " to " +
                                                        std::to_string(selected.first + shown) + " shown");
    main += ".</p>";
    auto link = [&](size_t n, const char* label) {
        return "<a href=\"/queue?q=" + form_escape(q) + "&amp;show=" + form_escape(show) +
               "&amp;page=" + std::to_string(n) + "\">" + label + "</a> ";
    };
    if (page_no > 1 || selected.first + shown < selected.total) {
        main += "<p class=\"pages\">";
        if (page_no > 1) main += link(page_no - 1, "Earlier");
        if (selected.first + shown < selected.total) main += link(page_no + 1, "Later");
        main += "</p>";
    }
    main +=
        "<table><thead><tr><th>Queue ID</th><th>Arrival</th><th>Sender</th><th>Recipients</th><th>Attempts</th>"
        "<th>Next attempt</th><th>Info</th><th></th></tr></thead><tbody>" +
        rows + "</tbody></table>";
    return {200, "text/html; charset=utf-8", page("Email Queue", &s, main), {}};
}

WebResponse Console::queue_action(const WebRequest& r, const Session& s) {
    auto field = [&](const char* name) { return r.form.count(name) ? r.form.at(name) : std::string(); };
    std::string id = field("id"), action = field("action"), note;
    if (!QueueIdGenerator::is_valid(id)) return {400, "text/plain; charset=utf-8", "not a queue ID\n", {}};
    bool known = true;
    if (action == "retry") {
        if (m_queue.held(id))
            note = id + " is on hold: release it first";
        else
            known = m_queue.flush(id), note = id + " is being tried now";
    } else if (action == "delete") {
        auto result = m_queue.remove(id);
        known = result != QueueManager::Removal::Unknown;
        note = id +
               (result == QueueManager::Removal::Later ? " is deleted when its delivery attempt ends" : " is deleted");
    } else if (action == "hold" || action == "release") {
        auto result = action == "hold" ? m_queue.hold(id) : m_queue.unhold(id);
        known = result != QueueManager::Hold::Unknown;
        note = id + (action == "hold" ? " is on hold" : " is released");
    } else {
        return {400, "text/plain; charset=utf-8", "no such action\n", {}};
    }
    if (!known) note = id + " is not in the queue (delivered or deleted meanwhile)";
    log::info(log::Component::Console, s.user + " from " + r.client + ": " + action + " " + id);
    return {303, "text/plain", "", {{"Location", "/queue?note=" + form_escape(note)}}};
}

// The Email Queue's JSON: the page's messages (500 at most, oldest first), the page number in
// the X-Page header, the messages matching in X-Total-Count, and a Link to the next page while
// there is one.
WebResponse Console::api_queue(const WebRequest& r) {
    std::string q = r.query.count("q") ? r.query.at("q") : "";
    std::string show = r.query.count("show") ? r.query.at("show") : "";
    size_t page_no = queue_page_number(r);
    if (page_no == 0) return {400, "text/plain; charset=utf-8", "not a page number\n", {}};
    auto selected = select_queue(q, show, page_no);
    std::string out = "[";
    bool first = true;
    for (const Envelope* e : selected.rows) {
        const Recipient* w = waiting(*e);
        const WaitInfo& info = classify_wait(w ? w->dsn : "", w ? w->reason : "");
        std::string j = envelope_json(*e);
        j.pop_back();  // the closing brace: the Info goes with it
        out += (first ? "" : ",") + j + ",\"info\":{\"category\":" + json_string(info.category) +
               ",\"fix\":" + json_string(info.fix) + "}}";
        first = false;
    }
    std::vector<std::pair<std::string, std::string>> headers{{"X-Page", std::to_string(page_no)},
                                                             {"X-Total-Count", std::to_string(selected.total)}};
    if (selected.first + selected.rows.size() < selected.total)
        headers.emplace_back("Link", "</api/queue?q=" + form_escape(q) + "&show=" + form_escape(show) +
                                         "&page=" + std::to_string(page_no + 1) + ">; rel=\"next\"");
    return {200, "application/json", out + "]\n", headers};
}

}  // namespace gateway
