#include "gateway/serve.hpp"

#include "conf/config_load.hpp"
#include "gateway/common/log.hpp"
#include "gateway/common/queue_id.hpp"
#include "gateway/common/text.hpp"
#include "gateway/dns/dns.hpp"
#include "gateway/ops/console.hpp"
#include "gateway/ops/control.hpp"
#include "gateway/ops/metrics_http.hpp"
#include "gateway/ops/privileges.hpp"
#include "gateway/queue/queue_manager.hpp"
#include "gateway/queue/spool.hpp"
#include "gateway/smtpd/server.hpp"
#include "gateway/smtpd/smtp_syntax.hpp"

#include <uv.h>

#include <sys/resource.h>
#include <chrono>
#include <csignal>
#include <functional>
#include <iostream>

namespace gateway {

namespace {

using log::Component;

conf::LoadResult load(const std::string& file) { return file.empty() ? conf::load_default() : conf::load_file(file); }

void raise_file_limit() {
    struct rlimit rl {};
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

// Is ADDRESS:PORT one of our own listeners? Then an MX pointing there is a mail loop.
SelfTest self_test(const conf::Config& c) {
    std::vector<conf::IpAddress> local;
    uv_interface_address_t* ifs = nullptr;
    int count = 0;
    if (uv_interface_addresses(&ifs, &count) == 0) {
        for (int i = 0; i < count; ++i)
            if (auto a = conf::IpAddress::from_sockaddr(reinterpret_cast<const sockaddr*>(&ifs[i].address)))
                local.push_back(*a);
        uv_free_interface_addresses(ifs, count);
    }
    auto loopback = *conf::Cidr::parse("127.0.0.0/8");
    std::vector<conf::HostPort> listen;
    for (const auto& l : c.listen)
        listen.push_back(l.endpoint);
    return [local, loopback, listen](const conf::IpAddress& a, uint16_t port) {
        bool is_local = loopback.contains(a) || std::find(local.begin(), local.end(), a) != local.end();
        for (const auto& l : listen) {
            if (l.port != port) continue;
            auto la = conf::IpAddress::parse(l.host);
            bool any = la && std::all_of(la->bytes.begin(), la->bytes.end(), [](uint8_t b) { return b == 0; });
            if ((la && *la == a) || (any && is_local)) return true;
        }
        return false;
    };
}

struct Signals {
    uv_signal_t term{}, interrupt{}, hangup{}, usr1{};
    std::function<void(int)> handler;

    void start(uv_loop_t* loop) {
        for (auto [h, signum] :
             {std::pair{&term, SIGTERM}, {&interrupt, SIGINT}, {&hangup, SIGHUP}, {&usr1, SIGUSR1}}) {
            uv_signal_init(loop, h);
            h->data = &handler;
            uv_signal_start(
                h, [](uv_signal_t* s, int n) { (*static_cast<std::function<void(int)>*>(s->data))(n); }, signum);
        }
    }
    void close() {
        for (auto* h : {&term, &interrupt, &hangup, &usr1})
            uv_close(reinterpret_cast<uv_handle_t*>(h), nullptr);
    }
};

int64_t wall_clock_us() {
    using namespace std::chrono;
    return duration_cast<microseconds>(system_clock::now().time_since_epoch()).count();
}

// An ID the queue manager does not know: not in the queue, or not read from the spool yet.
std::string not_found(const QueueManager& queue) {
    return queue.loading() ? ": not loaded yet: the queue is still being read from the spool; try again in a moment\n"
                           : ": no such message in the queue\n";
}

// The answer to a request about many messages, given once every change it made is on disk
// (so that `smtpgw queue hold` has returned only when a restart keeps the hold), and saying
// which could not be written.
struct PendingAnswer {
    ControlServer::Reply reply;
    std::string out;     // a line per message
    std::string last;    // "ok: ...", once every message has been asked
    size_t waiting = 1;  // the messages whose change is not on disk yet, and the request itself
    std::vector<std::string> failed;

    std::function<void(bool)> written(std::shared_ptr<PendingAnswer> self, const std::string& id) {
        waiting++;
        return [self = std::move(self), id](bool ok) {
            if (!ok) self->failed.push_back(id);
            self->done();
        };
    }
    void done() {
        if (--waiting > 0 || !reply) return;
        auto answer = std::move(reply);
        reply = nullptr;
        if (failed.empty()) return answer(out + last);
        for (const auto& id : failed)
            out += id + ": the change could not be written to the spool (see the log)\n";
        answer(out + "error: " + std::to_string(failed.size()) + " change(s) could not be written to the spool\n");
    }
    void error(const std::string& line) {  // at once, whatever is still being written
        if (!reply) return;
        auto answer = std::move(reply);
        reply = nullptr;
        answer(line);
    }
};

// The answers to the control socket's requests (see control.hpp); `reload` reads the
// configuration file again and says how that went.
void control_answer(QueueManager& queue, const std::function<std::string()>& reload, const std::string& request,
                    ControlServer::Reply reply) {
    std::vector<std::string> w;
    size_t pos = 0;
    while (pos < request.size()) {
        size_t end = request.find(' ', pos);
        if (end == std::string::npos) end = request.size();
        if (end > pos) w.push_back(request.substr(pos, end - pos));
        pos = end + 1;
    }
    if (w.empty()) return reply("error: empty request\n");
    log::info(Component::Control, "request: " + printable(request));
    if (w[0] == "reload" && w.size() == 1) return reply(reload());
    // The socket's group may write to it: IDs are checked as the command line checks them.
    for (size_t i = 1; i < w.size(); ++i)
        if (w[i] != "--all" && !QueueIdGenerator::is_valid(w[i]))
            return reply("error: " + printable(w[i]) + ": not a queue ID\n");
    if (w[0] == "flush" && w.size() <= 2) {
        std::string id = w.size() == 2 ? w[1] : "";
        if (!id.empty() && queue.held(id))
            return reply("error: " + id + " is on hold; smtpgw queue release " + id + "\n");
        if (!queue.flush(id)) return reply("error: " + id + not_found(queue));
        if (!id.empty()) return reply("ok: " + id + " is being tried now\n");
        return reply(queue.loading() ? "ok: every message is being tried now, those still being read from the spool "
                                       "as they are read\n"
                                     : "ok: every message is being tried now\n");
    }
    // `--all` while the spool is still being read: the messages read after it too.
    bool all = w.size() == 2 && w[1] == "--all";
    std::string later = all && queue.loading() ? "; those still being read from the spool are " : "";
    auto pending = std::make_shared<PendingAnswer>();
    pending->reply = std::move(reply);
    if (w[0] == "delete" && w.size() == 2) {
        std::vector<std::string> ids = all ? queue.ids() : std::vector<std::string>{w[1]};
        for (const auto& id : ids) {
            switch (queue.remove(id, pending->written(pending, id))) {
            case QueueManager::Removal::Unknown: return pending->error("error: " + id + not_found(queue));
            case QueueManager::Removal::Removed: pending->out += id + ": removed\n"; break;
            case QueueManager::Removal::Later:
                pending->out += id + ": removed as soon as its delivery attempt ends\n";
                break;
            }
        }
        if (all) queue.also_when_loaded(QueueManager::AllAction::Delete);
        pending->last = "ok: " + std::to_string(ids.size()) + " message(s) deleted" +
                        (later.empty() ? "" : later + "deleted as they are read") + "\n";
        return pending->done();
    }
    if ((w[0] == "hold" || w[0] == "release") && w.size() == 2) {
        bool hold = w[0] == "hold";
        std::vector<std::string> ids = all ? queue.ids() : std::vector<std::string>{w[1]};
        size_t changed = 0;
        for (const auto& id : ids) {
            auto written = pending->written(pending, id);
            switch (hold ? queue.hold(id, std::move(written)) : queue.unhold(id, std::move(written))) {
            case QueueManager::Hold::Unknown: return pending->error("error: " + id + not_found(queue));
            case QueueManager::Hold::Done:
                pending->out += id + (hold ? ": placed on hold\n" : ": released\n"), changed++;
                break;
            case QueueManager::Hold::Later:
                pending->out += id + ": placed on hold as soon as its delivery attempt ends\n", changed++;
                break;
            case QueueManager::Hold::Already:
                if (!all) pending->out += id + (hold ? ": already on hold\n" : ": not on hold\n");
                break;
            }
        }
        std::string done = hold ? "placed on hold" : "released";
        if (all) queue.also_when_loaded(hold ? QueueManager::AllAction::Hold : QueueManager::AllAction::Release);
        pending->last = "ok: " + std::to_string(changed) + " message(s) " + done +
                        (later.empty() ? "" : later + done + " as they are read") + "\n";
        return pending->done();
    }
    pending->error("error: unknown request: " + printable(request) + "\n");
}

// "warning: /etc/smtpgw/smtpgw.yaml:12:5: upstreams.o365: ..."
void log_warnings(const std::vector<conf::Diagnostic>& diagnostics) {
    for (const auto& d : diagnostics) {
        if (d.error) continue;
        std::string where = d.file;
        if (d.line > 0) where += ":" + std::to_string(d.line) + ":" + std::to_string(d.column);
        log::warning(Component::Master, where + ": " + d.text);
    }
}

}  // namespace

int serve(const std::string& config_file) {
    auto loaded = load(config_file);
    for (const auto& d : loaded.diagnostics)  // warnings go to the log, once it is open
        if (d.error) std::cerr << d.format() << "\n";
    if (!loaded.ok()) return 1;
    auto config = std::make_shared<const conf::Config>(std::move(*loaded.config));
    if (auto problem = root_problem(*config); !problem.empty()) {
        std::cerr << "smtpgw: error: " << problem << "\n";
        return 1;
    }
    // Keys are read now, as root when started as root; a key the gateway cannot sign with stops it
    // here rather than deferring every message later.
    std::string dkim_error;
    auto dkim_keys = dkim::Keys::load(*config, dkim_error);
    if (!dkim_keys) {
        std::cerr << "smtpgw: error: " << dkim_error << "\n";
        return 1;
    }
    log::init(config->log, config->hostname);
    log_warnings(loaded.diagnostics);
    raise_file_limit();
    std::signal(SIGPIPE, SIG_IGN);

    uv_loop_t loop;
    uv_loop_init(&loop);
    Spool spool(config->queue.dir);
    Server server(&loop, config, spool);
    std::unique_ptr<dns::Resolver> resolver;
    std::unique_ptr<QueueManager> queue;
    std::unique_ptr<ControlServer> control;
    std::unique_ptr<metrics::HttpServer> scrape;
    std::unique_ptr<Console> console;
    Signals signals;
    bool stopping = false, listening = false;
    auto stop = [&] {
        if (stopping) return;
        stopping = true;
        log::info(Component::Master, "stopping: no new connections; deliveries in progress stay queued");
        signals.close();
        if (control) control->close();
        if (console) console->drain();
        if (queue) queue->stop();
        // /readyz says "draining" while messages in transfer finish, so balancers look elsewhere.
        server.stop([&] {
            if (scrape) scrape->close();
            if (console) console->close();
            if (resolver) resolver->close();
            spool.close();
        });
    };
    // SIGHUP and `smtpgw reload`: the answer for the control socket's client.
    auto reload = [&]() -> std::string {
        auto r = load(config_file);
        if (!r.ok()) {
            std::string why = "reload refused, keeping the running configuration: " + r.first_error();
            log::error(Component::Master, why);
            return "error: " + why + "\n";
        }
        std::string key_error;
        auto keys = dkim::Keys::load(*r.config, key_error);
        if (!keys) {
            std::string why = "reload refused, keeping the running configuration: " + key_error;
            log::error(Component::Master, why);
            return "error: " + why + "\n";
        }
        log_warnings(r.diagnostics);
        auto next = std::make_shared<const conf::Config>(std::move(*r.config));
        queue->set_dkim(keys);
        server.reload(next);
        queue->reload(next);
        if (console) console->reload(next);
        log::info(Component::Master, "configuration reloaded from " + next->source);
        return "ok: configuration reloaded from " + next->source + "\n";
    };
    // Why /readyz says 503; empty: ready. (Used by the endpoints until the loop ends.)
    auto not_ready = [&]() -> std::string {
        if (stopping) return "draining: the gateway is stopping";
        if (!listening) return "starting";
        if (spool.storage_low(0)) return "the spool's file system is nearly full: new mail gets 452 4.3.1";
        return "";
    };
    signals.handler = [&](int signum) {
        if (signum == SIGUSR1) return log::reopen();  // logrotate's postrotate
        if (signum == SIGHUP) return (void)reload();
        stop();
    };
    int status = 0;
    try {
        // The queue is listed now and read in the background: the listener opens at once,
        // however many messages wait.
        auto listed = spool.open(&loop);
        for (const auto& id : listed)
            server.observe_queue_id(id);
        resolver = std::make_unique<dns::Resolver>(&loop, config->dns);
        server.set_resolver(resolver.get());
        queue = std::make_unique<QueueManager>(&loop, config, spool, *resolver, self_test(*config),
                                               [&server] { return server.next_queue_id(); });
        queue->set_dkim(dkim_keys);
        server.on_stored(
            [&](const Envelope& e, std::shared_ptr<const std::string> content) { queue->add(e, std::move(content)); });
        server.start();
        control = std::make_unique<ControlServer>(&loop, config->control_socket(),
                                                  [&](const std::string& r, ControlServer::Reply reply) {
                                                      control_answer(*queue, reload, r, std::move(reply));
                                                  });
        control->start();
        if (!config->metrics.listen.empty()) {
            scrape = std::make_unique<metrics::HttpServer>(&loop, config->metrics.endpoint, [&] {
                metrics::QueueState q;
                q.messages = queue->size();
                q.destinations = queue->destinations();
                if (int64_t oldest = queue->oldest_arrival_us())
                    q.oldest_age_seconds = double(wall_clock_us() - oldest) / 1e6;
                q.not_ready = not_ready();
                return q;
            });
            scrape->start();
            log::info(Component::Master, "metrics on http://" + config->metrics.listen + "/metrics");
        }
        if (!config->admin.listen.empty()) {
            console = std::make_unique<Console>(&loop, config, *queue);
            console->set_readiness(not_ready);
            console->start();
        }
        if (auto problem = drop_privileges(*config); !problem.empty()) throw std::runtime_error(problem);
        server.check_files();
        listening = true;
        log::info(Component::Master, std::string("smtpgw ") + SMTPGW_VERSION + " started, " +
                                         std::to_string(listed.size()) + " message(s) in the queue, spool " +
                                         config->queue.dir);
        queue->start();
        spool.load([&](std::vector<Envelope> chunk) { queue->load(std::move(chunk)); },
                   [&](const Spool::LoadSummary& s) { queue->loaded(s.messages, s.damaged, s.seconds); });
        signals.start(&loop);
    } catch (const std::exception& e) {
        std::cerr << "smtpgw: error: " << e.what() << "\n";
        log::error(Component::Master, e.what());
        if (control) control->close();
        if (scrape) scrape->close();
        if (console) console->close();
        if (queue) queue->stop();
        if (resolver) resolver->close();
        server.stop([&] { spool.close(); });
        status = 1;
    }
    uv_run(&loop, UV_RUN_DEFAULT);
    if (uv_loop_close(&loop) != 0) log::warning(Component::Master, "event loop closed with open handles");
    if (status == 0) log::info(Component::Master, "stopped");
    log::shutdown();
    return status;
}

}  // namespace gateway
