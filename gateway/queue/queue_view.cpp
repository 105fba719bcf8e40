#include "gateway/queue/queue_view.hpp"

#include "gateway/common/json.hpp"
#include "gateway/common/text.hpp"

#include <algorithm>
#include <cstdio>
#include <ctime>

namespace gateway {

std::string format_time(int64_t us) {
    if (us <= 0) return "-";
    std::time_t t = std::time_t(us / 1000000);
    struct tm tm {};
    localtime_r(&t, &tm);
    char buf[32];
    std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S", &tm);
    return buf;
}

std::string envelope_json(const Envelope& e) {
    std::string o = "{\"id\":" + json_string(e.id) + ",\"arrival\":" + json_string(format_time(e.arrival_us)) +
                    ",\"size\":" + std::to_string(e.size) + ",\"sender\":" + json_string(e.sender);
    if (!e.orig_sender.empty()) o += ",\"orig_sender\":" + json_string(e.orig_sender);
    o += ",\"client\":" + json_string(e.client_name + "[" + e.client_ip + "]");
    o += ",\"message_id\":" + json_string(e.message_id);
    o += ",\"held\":" + std::string(e.held ? "true" : "false");
    o += ",\"attempts\":" + std::to_string(e.attempts) +
         ",\"next_attempt\":" + json_string(format_time(e.next_attempt_us));
    o += ",\"recipients\":[";
    for (size_t i = 0; i < e.recipients.size(); ++i) {
        const auto& r = e.recipients[i];
        if (i) o += ",";
        o += "{\"address\":" + json_string(r.address) + ",\"status\":" + json_string(to_string(r.status)) +
             ",\"dsn\":" + json_string(r.dsn) + ",\"relay\":" + json_string(r.relay) +
             ",\"reason\":" + json_string(r.reason) + "}";
    }
    return o + "]}";
}

namespace {

// Every value printed as printable(): it came from a client, a server or the DNS.
void to_text(const Envelope& e, std::ostream& out) {
    auto p = [](const std::string& v) { return printable(v, 4096); };
    out << e.id << (e.held ? "!" : "") << "  " << format_time(e.arrival_us) << "  " << e.size << "  <" << p(e.sender)
        << ">";
    if (!e.orig_sender.empty()) out << " (was <" << p(e.orig_sender) << ">)";
    out << "\n    attempts=" << e.attempts
        << (e.held ? std::string(" held (smtpgw queue release " + e.id + ")")
                   : " next=" + format_time(e.next_attempt_us))
        << "\n";
    for (const auto& r : e.recipients) {
        out << "    <" << p(r.address) << "> " << to_string(r.status);
        if (!r.dsn.empty()) out << " dsn=" << p(r.dsn);
        if (!r.reason.empty()) out << " (" << p(r.reason) << ")";
        out << "\n";
    }
}

std::vector<Envelope> sorted_messages(const SpoolLayout& layout) {
    auto scan = scan_spool(layout);
    std::sort(scan.messages.begin(), scan.messages.end(),
              [](const Envelope& a, const Envelope& b) { return a.arrival_us < b.arrival_us; });
    return std::move(scan.messages);
}

}  // namespace

int queue_list(const SpoolLayout& layout, bool json, std::ostream& out) {
    auto messages = sorted_messages(layout);
    if (json) {
        out << "[";
        for (size_t i = 0; i < messages.size(); ++i)
            out << (i ? ",\n" : "\n") << envelope_json(messages[i]);
        out << "\n]\n";
        return 0;
    }
    if (messages.empty()) {
        out << "Mail queue is empty\n";
        return 0;
    }
    for (const auto& e : messages)
        to_text(e, out);
    out << "-- " << messages.size() << " message(s)\n";
    return 0;
}

int queue_show(const SpoolLayout& layout, const std::string& id, bool json, std::ostream& out, std::ostream& err) {
    for (const auto& e : sorted_messages(layout)) {
        if (e.id != id) continue;
        if (json) {
            out << envelope_json(e) << "\n";
            return 0;
        }
        to_text(e, out);
        out << "    client=" << printable(e.client_name) << "[" << printable(e.client_ip) << "] helo=<"
            << printable(e.helo) << "> protocol=" << printable(e.protocol)
            << "\n    message-id=" << printable(e.message_id) << "\n    file=" << layout.message(e.id)
            << " (content: the first " << e.size << " octets)\n";
        return 0;
    }
    err << "smtpgw: no queued message with ID " << id << "\n";
    return 1;
}

}  // namespace gateway
