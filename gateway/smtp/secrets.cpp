#include "gateway/smtp/secrets.hpp"

#include "gateway/common/child_process.hpp"
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

// Runs "/bin/sh -c COMMAND" (common/child_process.hpp) and takes what it prints.
void run_command(uv_loop_t* loop, const std::string& command, SecretDone done) {
    ChildOptions o;
    o.argv = {"/bin/sh", "-c", command};
    o.timeout_ms = k_command_timeout_ms;
    o.max_output = k_max_secret;
    run_child(loop, std::move(o), [command, done = std::move(done)](const ChildResult& r) {
        if (!r.started)
            done(false, {}, "cannot run auth.token_command: " + r.error);
        else if (r.cancelled)
            done(false, {}, "auth.token_command was stopped: the gateway is stopping");
        else if (r.timed_out)
            done(false, {}, "auth.token_command did not finish within 30 s: " + command);
        else if (r.status != 0)
            done(false, {}, "auth.token_command exited with status " + std::to_string(r.status) + ": " + command);
        else if (trimmed(r.output).empty())
            done(false, {}, "auth.token_command printed nothing: " + command);
        else
            done(true, trimmed(r.output), {});
    });
}

}  // namespace

void stop_secret_commands() {
    stop_children();
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
