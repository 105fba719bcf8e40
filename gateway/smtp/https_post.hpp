// HTTPS POST on the loop, for OAuth 2.0 token endpoints: libcurl's multi interface driven by
// libuv (uv_poll per socket, one timer), so a slow or silent endpoint never blocks the loop.
// Only https:// URLs, no redirects, the server's certificate always verified (against `ca_file`
// or the system's bundle), at most 64 KiB of answer and 30 s per request.
#pragma once

#include <uv.h>

#include <functional>
#include <string>

namespace gateway {

struct HttpsReply {
    bool answered = false;  // an HTTP status came back; else `error` says why not
    long status = 0;
    std::string body;
    std::string error;
};

using HttpsDone = std::function<void(const HttpsReply&)>;

// POSTs `form` (application/x-www-form-urlencoded) to `url`.
void https_post(uv_loop_t* loop, const std::string& url, const std::string& form, const std::string& ca_file,
                HttpsDone done);

// The gateway is stopping: requests still running are dropped and their callers told.
void stop_https();

// application/x-www-form-urlencoded escaping of one name or value.
std::string form_escape(const std::string& s);

}  // namespace gateway
