#include "gateway/smtp/secrets.hpp"

#include "gateway/smtp/oauth2.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstring>
#include <memory>
#include <set>

namespace gateway {

namespace {

constexpr size_t k_max_secret = 64 * 1024;
constexpr uint64_t k_command_timeout_ms = 30000;
constexpr uint64_t k_output_grace_ms = 200;  // after the shell's exit, for the rest of its output

std::string trimmed(std::string s) {
    while (!s.empty() && (s.back() == '\n' || s.back() == '\r' || s.back() == ' ' || s.back() == '\t'))
        s.pop_back();
    return s;
}

}  // namespace

bool read_secret_file(const std::string& path, std::string& secret, std::string& error) {
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        error = "cannot read " + path + ": " + std::strerror(errno);
        return false;
    }
    std::string data;
    char buf[4096];
    ssize_t n;
    while ((n = ::read(fd, buf, sizeof buf)) > 0 && data.size() < k_max_secret)
        data.append(buf, size_t(n));
    int err = n < 0 ? errno : 0;
    ::close(fd);
    if (err) {
        error = "cannot read " + path + ": " + std::strerror(err);
        return false;
    }
    secret = trimmed(std::move(data));
    if (secret.empty()) {
        error = path + " is empty";
        return false;
    }
    return true;
}

namespace {

void read_file(uv_loop_t* loop, const std::string& path, SecretDone done) {
    struct Work {
        uv_work_t req;
        std::string path;
        std::string secret, error;
        SecretDone done;
    };
    auto* w = new Work{{}, path, {}, {}, std::move(done)};
    w->req.data = w;
    uv_queue_work(
        loop, &w->req,
        [](uv_work_t* req) {
            auto* w = static_cast<Work*>(req->data);
            read_secret_file(w->path, w->secret, w->error);
        },
        [](uv_work_t* req, int) {
            std::unique_ptr<Work> w(static_cast<Work*>(req->data));
            w->done(w->error.empty(), w->secret, w->error);
        });
}

// Runs "/bin/sh -c COMMAND" in a process group of its own and takes what it prints. The result
// comes at the latest k_command_timeout_ms after the start, and soon after the shell exits even
// when something it started still holds its output open; whatever is left of the group is
// killed then.
struct Command {
    uv_process_t process{};
    uv_pipe_t out{};
    uv_timer_t timer{};
    std::string command;
    std::string output;
    int64_t status = -1;
    int open_handles = 3;
    bool timed_out = false;
    bool exited = false;
    bool eof = false;
    bool finished = false;
    bool cancelled = false;
    SecretDone done;

    static std::set<Command*>& running() {  // loop thread only
        static std::set<Command*> all;
        return all;
    }

    static void closed(uv_handle_t* h) {
        auto* c = static_cast<Command*>(h->data);
        if (--c->open_handles == 0) delete c;
    }
    // Nothing the command started outlives its result. The shell was made a group leader; the
    // group may be empty by now (ESRCH).
    void kill_group() { uv_kill(-process.pid, SIGKILL); }
    void on_exit(int64_t exit_status) {
        exited = true;
        status = exit_status;
        if (finished) return uv_close(reinterpret_cast<uv_handle_t*>(&process), closed);
        if (eof) return finish();
        // A child of the shell may still hold the pipe: what was printed arrives at once.
        uv_timer_start(
            &timer, [](uv_timer_t* t) { static_cast<Command*>(t->data)->finish(); }, k_output_grace_ms, 0);
    }
    void on_eof() {
        eof = true;
        if (exited) finish();
    }
    void on_timeout() {
        timed_out = !exited;
        finish();
    }
    void finish() {
        if (finished) return;
        finished = true;
        running().erase(this);
        kill_group();
        auto d = std::move(done);
        if (cancelled)
            d(false, {}, "auth.token_command was stopped: the gateway is stopping");
        else if (timed_out)
            d(false, {}, "auth.token_command did not finish within 30 s: " + command);
        else if (status != 0)
            d(false, {}, "auth.token_command exited with status " + std::to_string(status) + ": " + command);
        else if (trimmed(output).empty())
            d(false, {}, "auth.token_command printed nothing: " + command);
        else
            d(true, trimmed(output), {});
        uv_close(reinterpret_cast<uv_handle_t*>(&out), closed);
        uv_close(reinterpret_cast<uv_handle_t*>(&timer), closed);
        if (exited) uv_close(reinterpret_cast<uv_handle_t*>(&process), closed);  // else once it has exited
    }
};

void run_command(uv_loop_t* loop, const std::string& command, SecretDone done) {
    auto* c = new Command;
    c->command = command;
    c->done = std::move(done);
    c->process.data = c->out.data = c->timer.data = c;
    uv_pipe_init(loop, &c->out, 0);
    uv_timer_init(loop, &c->timer);
    uv_stdio_container_t stdio[3];
    stdio[0].flags = UV_IGNORE;
    stdio[1].flags = static_cast<uv_stdio_flags>(UV_CREATE_PIPE | UV_WRITABLE_PIPE);
    stdio[1].data.stream = reinterpret_cast<uv_stream_t*>(&c->out);
    stdio[2].flags = UV_IGNORE;
    std::string shell = "/bin/sh", dash_c = "-c";
    char* args[] = {shell.data(), dash_c.data(), c->command.data(), nullptr};
    uv_process_options_t options{};
    options.file = "/bin/sh";
    options.args = args;
    options.stdio = stdio;
    options.stdio_count = 3;
    options.flags = UV_PROCESS_DETACHED;  // setsid(): the shell leads a process group of its own
    options.exit_cb = [](uv_process_t* p, int64_t status, int) { static_cast<Command*>(p->data)->on_exit(status); };
    int r = uv_spawn(loop, &c->process, &options);
    if (r != 0) {
        auto d = std::move(c->done);
        c->open_handles = 2;
        uv_close(reinterpret_cast<uv_handle_t*>(&c->out), Command::closed);
        uv_close(reinterpret_cast<uv_handle_t*>(&c->timer), Command::closed);
        return d(false, {}, std::string("cannot run auth.token_command: ") + uv_strerror(r));
    }
    Command::running().insert(c);
    uv_read_start(
        reinterpret_cast<uv_stream_t*>(&c->out),
        [](uv_handle_t*, size_t size, uv_buf_t* buf) { *buf = uv_buf_init(new char[size], unsigned(size)); },
        [](uv_stream_t* s, ssize_t n, const uv_buf_t* buf) {
            auto* c = static_cast<Command*>(s->data);
            if (n > 0 && c->output.size() < k_max_secret) c->output.append(buf->base, size_t(n));
            delete[] buf->base;
            if (n < 0) c->on_eof();
        });
    uv_timer_start(
        &c->timer, [](uv_timer_t* t) { static_cast<Command*>(t->data)->on_timeout(); }, k_command_timeout_ms, 0);
}

}  // namespace

void stop_secret_commands() {
    auto all = Command::running();
    for (Command* c : all) {
        c->cancelled = true;
        c->finish();
    }
    oauth2::stop();
}

void fetch_secret(uv_loop_t* loop, const conf::UpstreamAuth& auth, SecretDone done) {
    if (auth.oauth2)
        return oauth2::get_token(loop, *auth.oauth2, [done = std::move(done)](const oauth2::Token& t) {
            done(t.ok, t.access_token, t.error);
        });
    if (!auth.token_command.empty()) return run_command(loop, auth.token_command, std::move(done));
    read_file(loop, auth.token_file.empty() ? auth.password_file : auth.token_file, std::move(done));
}

void secret_refused(const conf::UpstreamAuth& auth, const std::string& secret) {
    if (auth.oauth2) oauth2::token_refused(*auth.oauth2, secret);
}

}  // namespace gateway
