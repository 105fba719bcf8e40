#include "gateway/common/child_process.hpp"

#include <csignal>
#include <memory>
#include <set>

namespace gateway {

namespace {

constexpr uint64_t k_output_grace_ms = 200;  // after the exit, for the rest of the output

struct Child {
    uv_process_t process{};
    uv_pipe_t out{};
    uv_timer_t timer{};
    size_t max_output = 0;
    ChildResult result;
    int open_handles = 3;
    bool exited = false;
    bool eof = false;
    bool finished = false;
    std::function<void(const ChildResult&)> done;

    static std::set<Child*>& running() {  // loop thread only
        static std::set<Child*> all;
        return all;
    }
    static void closed(uv_handle_t* h) {
        auto* c = static_cast<Child*>(h->data);
        if (--c->open_handles == 0) delete c;
    }
    // Nothing the program started outlives its result. It was made a group leader; the group
    // may be empty by now (ESRCH).
    void kill_group() { uv_kill(-process.pid, SIGKILL); }
    void on_exit(int64_t exit_status) {
        exited = true;
        result.status = exit_status;
        if (finished) return uv_close(reinterpret_cast<uv_handle_t*>(&process), closed);
        if (eof) return finish();
        // A child of the program may still hold the pipe: what was printed arrives at once.
        uv_timer_start(
            &timer, [](uv_timer_t* t) { static_cast<Child*>(t->data)->finish(); }, k_output_grace_ms, 0);
    }
    void on_eof() {
        eof = true;
        if (exited) finish();
    }
    void on_timeout() {
        result.timed_out = !exited;
        finish();
    }
    void finish() {
        if (finished) return;
        finished = true;
        running().erase(this);
        kill_group();
        auto d = std::move(done);
        d(result);
        uv_close(reinterpret_cast<uv_handle_t*>(&out), closed);
        uv_close(reinterpret_cast<uv_handle_t*>(&timer), closed);
        if (exited) uv_close(reinterpret_cast<uv_handle_t*>(&process), closed);  // else once it has exited
    }
};

}  // namespace

void run_child(uv_loop_t* loop, ChildOptions options, std::function<void(const ChildResult&)> done) {
    auto* c = new Child;
    c->max_output = options.max_output;
    c->done = std::move(done);
    c->process.data = c->out.data = c->timer.data = c;
    uv_pipe_init(loop, &c->out, 0);
    uv_timer_init(loop, &c->timer);
    uv_stdio_container_t stdio[3];
    stdio[0].flags = UV_IGNORE;
    stdio[1].flags = static_cast<uv_stdio_flags>(UV_CREATE_PIPE | UV_WRITABLE_PIPE);
    stdio[1].data.stream = reinterpret_cast<uv_stream_t*>(&c->out);
    stdio[2].flags = UV_IGNORE;
    // Standard error into the same pipe: libuv cannot hand one pipe it creates to two descriptors,
    // so a shell does it, then becomes the program.
    if (options.with_stderr && !options.argv.empty())
        options.argv.insert(options.argv.begin(), {"/bin/sh", "-c", "exec \"$0\" \"$@\" 2>&1"});
    std::vector<char*> args;
    for (auto& a : options.argv)
        args.push_back(a.data());
    args.push_back(nullptr);
    uv_process_options_t o{};
    o.file = options.argv.empty() ? "" : options.argv[0].c_str();
    o.args = args.data();
    o.stdio = stdio;
    o.stdio_count = 3;
    o.flags = UV_PROCESS_DETACHED;  // setsid(): the program leads a process group of its own
    o.exit_cb = [](uv_process_t* p, int64_t status, int) { static_cast<Child*>(p->data)->on_exit(status); };
    int r = options.argv.empty() ? UV_EINVAL : uv_spawn(loop, &c->process, &o);
    if (r != 0) {
        auto d = std::move(c->done);
        c->open_handles = 2;
        c->result.error = uv_strerror(r);
        ChildResult result = c->result;
        uv_close(reinterpret_cast<uv_handle_t*>(&c->out), Child::closed);
        uv_close(reinterpret_cast<uv_handle_t*>(&c->timer), Child::closed);
        return d(result);
    }
    c->result.started = true;
    Child::running().insert(c);
    uv_read_start(
        reinterpret_cast<uv_stream_t*>(&c->out),
        [](uv_handle_t*, size_t size, uv_buf_t* buf) { *buf = uv_buf_init(new char[size], unsigned(size)); },
        [](uv_stream_t* s, ssize_t n, const uv_buf_t* buf) {
            auto* c = static_cast<Child*>(s->data);
            if (n > 0 && c->result.output.size() < c->max_output)
                c->result.output.append(buf->base, std::min(size_t(n), c->max_output - c->result.output.size()));
            delete[] buf->base;
            if (n < 0) c->on_eof();
        });
    uv_timer_start(
        &c->timer, [](uv_timer_t* t) { static_cast<Child*>(t->data)->on_timeout(); }, options.timeout_ms, 0);
}

void stop_children() {
    auto all = Child::running();
    for (Child* c : all) {
        c->result.cancelled = true;
        c->finish();
    }
}

}  // namespace gateway
