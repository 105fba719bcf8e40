#include "gateway/smtp/delivery.hpp"

#include <cmath>
#include <cstdio>

namespace gateway {

std::string said_reason(const std::string& host_label, const ServerReply& reply, const char* in_reply_to) {
    return "host " + host_label + " said: " + reply.text() + " (in reply to " + in_reply_to + ")";
}

std::string reply_dsn(const ServerReply& reply) { return reply.status(); }

bool thread_limit(const ServerReply& reply) {
    return reply.code == 432 ||
           (reply.transient() && reply.status() == "4.3.2" && reply.text().find("thread limit") != std::string::npos);
}

bool submission_quota(const ServerReply& reply) {
    return reply.text().find("SubmissionQuotaExceeded") != std::string::npos;
}

std::string format_delay(double s) {
    if (s < 0) s = 0;
    char buf[32];
    if (s >= 10)
        std::snprintf(buf, sizeof buf, "%.0f", std::floor(s));
    else if (s >= 1)
        std::snprintf(buf, sizeof buf, "%.1f", std::floor(s * 10) / 10);
    else
        std::snprintf(buf, sizeof buf, "%.2f", s);
    std::string out = buf;
    // "0.00" -> "0", "0.10" -> "0.1", "1.0" -> "1"
    if (out.find('.') != std::string::npos) {
        while (out.back() == '0')
            out.pop_back();
        if (out.back() == '.') out.pop_back();
    }
    return out;
}

}  // namespace gateway
