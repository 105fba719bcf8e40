// Child processes on the event loop: a token command (smtp/secrets.hpp), the doctor and probe
// the console runs. The program runs in a process group of its own; what it prints to standard
// output (and standard error, when asked) is collected up to a bound. The result comes at the
// latest `timeout_ms` after the start, and soon after the program exits even when something it
// started still holds its output open; whatever is left of the group is killed then.
#pragma once

#include <uv.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace gateway {

struct ChildResult {
    bool started = false;    // false: `error` says why it could not run
    bool timed_out = false;  // killed at the timeout
    bool cancelled = false;  // stop_children()
    int64_t status = -1;     // its exit status
    std::string output;      // at most max_output bytes
    std::string error;
};

struct ChildOptions {
    std::vector<std::string> argv;  // argv[0] is the program's path
    uint64_t timeout_ms = 30000;
    size_t max_output = 64 * 1024;
    bool with_stderr = false;  // standard error into the same output
};

void run_child(uv_loop_t* loop, ChildOptions options, std::function<void(const ChildResult&)> done);

// The gateway is stopping: children still running are killed and their callers told (cancelled).
void stop_children();

}  // namespace gateway
