#include "gateway/common/envelope.hpp"

#include <charconv>
#include <cstdio>

namespace gateway {

namespace {

constexpr std::string_view k_magic = "smtpgw-envelope 1";

uint64_t fnv1a(std::string_view s) {
    uint64_t h = 1469598103934665603ull;
    for (unsigned char c : s) {
        h ^= c;
        h *= 1099511628211ull;
    }
    return h;
}

std::string escape(std::string_view v) {
    std::string out;
    out.reserve(v.size());
    for (unsigned char c : v) {
        if (c < 0x20 || c == 0x7f || c == '%') {
            char buf[4];
            std::snprintf(buf, sizeof buf, "%%%02X", c);
            out += buf;
        } else {
            out += char(c);
        }
    }
    return out;
}

std::optional<std::string> unescape(std::string_view v) {
    std::string out;
    out.reserve(v.size());
    for (size_t i = 0; i < v.size(); ++i) {
        if (v[i] != '%') {
            out += v[i];
            continue;
        }
        unsigned value = 0;
        if (i + 2 >= v.size() || std::from_chars(v.data() + i + 1, v.data() + i + 3, value, 16).ptr != v.data() + i + 3)
            return std::nullopt;
        out += char(value);
        i += 2;
    }
    return out;
}

template <typename T>
bool number(std::string_view v, T& out) {
    auto r = std::from_chars(v.data(), v.data() + v.size(), out);
    return r.ec == std::errc() && r.ptr == v.data() + v.size();
}

void put(std::string& out, std::string_view key, std::string_view value) {
    out.append(key).append(" ").append(escape(value)).append("\n");
}

std::optional<RcptStatus> status_from(std::string_view s) {
    for (auto st : {RcptStatus::Pending, RcptStatus::Deferred, RcptStatus::Sent, RcptStatus::Bounced})
        if (s == to_string(st)) return st;
    return std::nullopt;
}

// Applies one "key value" line; false when the key is unknown or the value malformed.
bool apply(Envelope& e, std::string_view key, const std::string& v) {
    Recipient* r = e.recipients.empty() ? nullptr : &e.recipients.back();
    if (key == "id")
        e.id = v;
    else if (key == "arrival")
        return number(v, e.arrival_us);
    else if (key == "size")
        return number(v, e.size);
    else if (key == "sender")
        e.sender = v;
    else if (key == "orig_sender")
        e.orig_sender = v;
    else if (key == "client_name")
        e.client_name = v;
    else if (key == "client_ip")
        e.client_ip = v;
    else if (key == "helo")
        e.helo = v;
    else if (key == "protocol")
        e.protocol = v;
    else if (key == "sasl_username")
        e.sasl_username = v;
    else if (key == "body")
        e.body = v;
    else if (key == "smtputf8")
        e.smtputf8 = v == "1";
    else if (key == "utf8_headers")
        e.utf8_headers = v == "1";
    else if (key == "eight_bit")
        e.eight_bit = v == "1";
    else if (key == "message_id")
        e.message_id = v;
    else if (key == "attempts")
        return number(v, e.attempts);
    else if (key == "next_attempt")
        return number(v, e.next_attempt_us);
    else if (key == "delay_warned")
        e.delay_warned = v == "1";
    else if (key == "held")
        e.held = v == "1";
    else if (key == "rcpt")
        e.recipients.push_back(Recipient{v});
    else if (!r)
        return false;
    else if (key == "rcpt.status") {
        auto s = status_from(v);
        if (!s) return false;
        r->status = *s;
    } else if (key == "rcpt.dsn")
        r->dsn = v;
    else if (key == "rcpt.reason")
        r->reason = v;
    else if (key == "rcpt.relay")
        r->relay = v;
    else if (key == "rcpt.last_attempt")
        return number(v, r->last_attempt_us);
    else
        return false;
    return true;
}

}  // namespace

const char* to_string(RcptStatus s) {
    switch (s) {
    case RcptStatus::Pending: return "pending";
    case RcptStatus::Deferred: return "deferred";
    case RcptStatus::Sent: return "sent";
    case RcptStatus::Bounced: return "bounced";
    }
    return "?";
}

std::string serialize(const Envelope& e) {
    std::string out;
    out.reserve(512 + e.recipients.size() * 64);
    out.append(k_magic).append("\n");
    put(out, "id", e.id);
    put(out, "arrival", std::to_string(e.arrival_us));
    put(out, "size", std::to_string(e.size));
    put(out, "sender", e.sender);
    if (!e.orig_sender.empty()) put(out, "orig_sender", e.orig_sender);
    put(out, "client_name", e.client_name);
    put(out, "client_ip", e.client_ip);
    put(out, "helo", e.helo);
    put(out, "protocol", e.protocol);
    if (!e.sasl_username.empty()) put(out, "sasl_username", e.sasl_username);
    if (!e.body.empty()) put(out, "body", e.body);
    put(out, "smtputf8", e.smtputf8 ? "1" : "0");
    if (e.utf8_headers) put(out, "utf8_headers", "1");
    if (e.eight_bit) put(out, "eight_bit", "1");
    if (!e.message_id.empty()) put(out, "message_id", e.message_id);
    put(out, "attempts", std::to_string(e.attempts));
    put(out, "next_attempt", std::to_string(e.next_attempt_us));
    if (e.delay_warned) put(out, "delay_warned", "1");
    if (e.held) put(out, "held", "1");
    for (const auto& r : e.recipients) {
        put(out, "rcpt", r.address);
        put(out, "rcpt.status", to_string(r.status));
        if (!r.dsn.empty()) put(out, "rcpt.dsn", r.dsn);
        if (!r.reason.empty()) put(out, "rcpt.reason", r.reason);
        if (!r.relay.empty()) put(out, "rcpt.relay", r.relay);
        if (r.last_attempt_us) put(out, "rcpt.last_attempt", std::to_string(r.last_attempt_us));
    }
    char sum[32];
    std::snprintf(sum, sizeof sum, "end %016llx\n", static_cast<unsigned long long>(fnv1a(out)));
    out += sum;
    return out;
}

EnvelopeParse parse_envelope(std::string_view text) {
    auto fail = [](std::string why) { return EnvelopeParse{std::nullopt, std::move(why)}; };
    if (text.substr(0, k_magic.size() + 1) != std::string(k_magic) + "\n") return fail("not an smtpgw envelope");
    auto end = text.rfind("end ");
    if (end == std::string_view::npos || (end > 0 && text[end - 1] != '\n')) return fail("truncated: no end line");
    auto trailer = text.substr(end + 4);
    uint64_t sum = 0;
    if (trailer.size() != 17 || trailer.back() != '\n') return fail("truncated: damaged end line");
    auto hex = std::from_chars(trailer.data(), trailer.data() + 16, sum, 16);
    if (hex.ec != std::errc() || hex.ptr != trailer.data() + 16) return fail("truncated: damaged end line");
    if (sum != fnv1a(text.substr(0, end))) return fail("checksum mismatch");
    Envelope e;
    size_t pos = k_magic.size() + 1;
    while (pos < end) {
        size_t nl = text.find('\n', pos);
        auto line = text.substr(pos, nl - pos);
        pos = nl + 1;
        auto space = line.find(' ');
        if (space == std::string_view::npos) return fail("malformed line: " + std::string(line));
        auto value = unescape(line.substr(space + 1));
        if (!value || !apply(e, line.substr(0, space), *value)) return fail("bad field: " + std::string(line));
    }
    if (e.id.empty() || e.recipients.empty()) return fail("no id or no recipients");
    return {std::move(e), {}};
}

}  // namespace gateway
