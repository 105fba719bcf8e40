#include "gateway/smtp/https_post.hpp"

#include <curl/curl.h>

#include <map>
#include <memory>

namespace gateway {

namespace {

constexpr size_t k_max_answer = 64 * 1024;
constexpr long k_timeout_ms = 30000;
constexpr long k_connect_timeout_ms = 10000;

struct Request {
    CURL* easy = nullptr;
    std::string form;
    std::string url;
    HttpsReply reply;
    HttpsDone done;
    char error[CURL_ERROR_SIZE] = {};
    bool too_long = false;
};

// One multi handle for the loop; sockets are watched with uv_poll, curl's timer is a uv_timer.
struct Multi {
    uv_loop_t* loop = nullptr;
    CURLM* multi = nullptr;
    uv_timer_t* timer = nullptr;
    std::map<CURL*, std::unique_ptr<Request>> requests;
    bool stopped = false;
};

Multi& multi() {
    static Multi m;
    return m;
}

void finish(CURL* easy, CURLcode result);

void check_done() {
    auto& m = multi();
    int left = 0;
    while (CURLMsg* msg = curl_multi_info_read(m.multi, &left)) {
        if (msg->msg == CURLMSG_DONE) finish(msg->easy_handle, msg->data.result);
    }
}

void finish(CURL* easy, CURLcode result) {
    auto& m = multi();
    auto it = m.requests.find(easy);
    if (it == m.requests.end()) return;
    std::unique_ptr<Request> r = std::move(it->second);
    m.requests.erase(it);
    curl_multi_remove_handle(m.multi, easy);
    if (result == CURLE_OK) {
        r->reply.answered = true;
        curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &r->reply.status);
    } else if (result == CURLE_ABORTED_BY_CALLBACK) {
        r->reply.error = "the request to " + r->url + " was stopped: the gateway is stopping";
    } else if (r->too_long) {
        r->reply.error = "the answer from " + r->url + " is longer than 64 KiB";
    } else {
        std::string detail = r->error[0] ? r->error : curl_easy_strerror(result);
        r->reply.error = "cannot reach " + r->url + ": " + detail;
    }
    curl_easy_cleanup(easy);
    auto done = std::move(r->done);
    HttpsReply reply = std::move(r->reply);
    r.reset();
    done(reply);
}

void on_poll(uv_poll_t* handle, int status, int events) {
    auto& m = multi();
    int flags = 0;
    if (status < 0) flags = CURL_CSELECT_ERR;
    if (events & UV_READABLE) flags |= CURL_CSELECT_IN;
    if (events & UV_WRITABLE) flags |= CURL_CSELECT_OUT;
    int running = 0;
    auto fd = static_cast<curl_socket_t>(reinterpret_cast<intptr_t>(handle->data));
    curl_multi_socket_action(m.multi, fd, flags, &running);
    check_done();
}

int on_socket(CURL*, curl_socket_t s, int action, void*, void* socketp) {
    auto& m = multi();
    auto* poll = static_cast<uv_poll_t*>(socketp);
    if (action == CURL_POLL_REMOVE) {
        if (poll) {
            uv_poll_stop(poll);
            uv_close(reinterpret_cast<uv_handle_t*>(poll),
                     [](uv_handle_t* h) { delete reinterpret_cast<uv_poll_t*>(h); });
            curl_multi_assign(m.multi, s, nullptr);
        }
        return 0;
    }
    if (!poll) {
        poll = new uv_poll_t;
        if (uv_poll_init_socket(m.loop, poll, s) != 0) {
            delete poll;
            return -1;
        }
        poll->data = reinterpret_cast<void*>(intptr_t(s));
        curl_multi_assign(m.multi, s, poll);
    }
    int events = 0;
    if (action & CURL_POLL_IN) events |= UV_READABLE;
    if (action & CURL_POLL_OUT) events |= UV_WRITABLE;
    uv_poll_start(poll, events, on_poll);
    return 0;
}

int on_timer(CURLM*, long timeout_ms, void*) {
    auto& m = multi();
    if (timeout_ms < 0) {
        uv_timer_stop(m.timer);
        return 0;
    }
    // curl may not be called back from inside this function: act from the loop, even for 0 ms.
    uv_timer_start(
        m.timer,
        [](uv_timer_t*) {
            int running = 0;
            curl_multi_socket_action(multi().multi, CURL_SOCKET_TIMEOUT, 0, &running);
            check_done();
        },
        uint64_t(timeout_ms), 0);
    return 0;
}

size_t on_data(char* data, size_t size, size_t count, void* user) {
    auto* r = static_cast<Request*>(user);
    size_t n = size * count;
    if (r->reply.body.size() + n > k_max_answer) {
        r->too_long = true;
        return 0;  // curl stops the transfer: CURLE_WRITE_ERROR
    }
    r->reply.body.append(data, n);
    return n;
}

bool ensure_multi(uv_loop_t* loop) {
    auto& m = multi();
    if (m.multi) return true;
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) return false;
    m.loop = loop;
    m.multi = curl_multi_init();
    if (!m.multi) return false;
    m.timer = new uv_timer_t;
    uv_timer_init(loop, m.timer);
    curl_multi_setopt(m.multi, CURLMOPT_SOCKETFUNCTION, on_socket);
    curl_multi_setopt(m.multi, CURLMOPT_TIMERFUNCTION, on_timer);
    return true;
}

}  // namespace

std::string form_escape(const std::string& s) {
    static const char hex[] = "0123456789ABCDEF";
    std::string out;
    for (unsigned char c : s) {
        if (isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~') {
            out += char(c);
        } else {
            out += '%';
            out += hex[c >> 4];
            out += hex[c & 15];
        }
    }
    return out;
}

void https_post(uv_loop_t* loop, const std::string& url, const std::string& form, const std::string& ca_file,
                HttpsDone done) {
    if (url.compare(0, 8, "https://") != 0) {
        HttpsReply reply;
        reply.error = "not an https:// URL: " + url;
        return done(reply);
    }
    if (multi().stopped || !ensure_multi(loop)) {
        HttpsReply reply;
        reply.error = multi().stopped ? "the gateway is stopping" : "cannot start libcurl";
        return done(reply);
    }
    auto r = std::make_unique<Request>();
    r->form = form;
    r->url = url;
    r->done = std::move(done);
    CURL* e = curl_easy_init();
    r->easy = e;
    curl_easy_setopt(e, CURLOPT_URL, r->url.c_str());
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "https");
    curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, r->form.c_str());
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE, long(r->form.size()));
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, r.get());
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, r->error);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, k_timeout_ms);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, k_connect_timeout_ms);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_FORBID_REUSE, 1L);  // a token an hour: no idle connection is kept
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 2L);
    curl_easy_setopt(e, CURLOPT_USERAGENT, "smtpgw");
    if (!ca_file.empty()) curl_easy_setopt(e, CURLOPT_CAINFO, ca_file.c_str());
    auto& m = multi();
    m.requests.emplace(e, std::move(r));
    curl_multi_add_handle(m.multi, e);
}

void stop_https() {
    auto& m = multi();
    m.stopped = true;
    if (!m.multi) return;
    while (!m.requests.empty())
        finish(m.requests.begin()->first, CURLE_ABORTED_BY_CALLBACK);
    curl_multi_cleanup(m.multi);
    m.multi = nullptr;
    uv_close(reinterpret_cast<uv_handle_t*>(m.timer), [](uv_handle_t* h) { delete reinterpret_cast<uv_timer_t*>(h); });
    m.timer = nullptr;
}

}  // namespace gateway
