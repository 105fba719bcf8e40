// The control socket (`control.socket`, default QUEUE_DIR/control.sock, mode 0660): the queue
// commands reach the running gateway through it. One request per connection, one line:
//   flush [ID]        retry now (every message without ID)
//   delete ID         remove a message (after the attempt in flight, if one is)
//   delete --all
//   hold ID | --all   keep from being tried (after the attempt in flight, if one is)
//   release ID | --all
//   reload            read the configuration file again (as SIGHUP does)
// The answer is text lines; the first word of the last line is "ok" or "error". Changes to
// messages are answered once they are written to the spool.
#pragma once

#include <uv.h>

#include <functional>
#include <memory>
#include <set>
#include <string>

namespace gateway {

class ControlServer {
public:
    // `handle` gets a request line and gives the answer (lines ending in "\n") to `reply`, at
    // once or later (once what it asked for is on disk); a reply after the connection was
    // closed goes nowhere.
    using Reply = std::function<void(std::string answer)>;
    using Handler = std::function<void(const std::string& request, Reply reply)>;
    ControlServer(uv_loop_t* loop, std::string path, Handler handle);
    ~ControlServer();
    ControlServer(const ControlServer&) = delete;
    ControlServer& operator=(const ControlServer&) = delete;

    void start();  // throws with the reason when the socket cannot be made
    void close();
    const std::string& path() const { return m_path; }

private:
    struct Conn;
    static void on_connection(uv_stream_t* server, int status);

    uv_loop_t* m_loop;
    std::string m_path;
    Handler m_handle;
    uv_pipe_t* m_pipe = nullptr;
    std::set<Conn*> m_conns;
};

// The client side, for the queue commands: sends `request`, returns the answer; nothing when
// no gateway listens on `path` (`error` says why).
bool control_request(const std::string& path, const std::string& request, std::string& answer, std::string& error);

}  // namespace gateway
