// The SMTP server session fed arbitrary bytes: commands, DATA, AUTH, STARTTLS, pipelining. The
// first octet chooses the listener's policy; the rest arrives in pieces, and every request the
// session makes (commit, AUTH step, TLS) is answered as the octets say.
#include "conf/config_load.hpp"
#include "fuzz.hpp"
#include "gateway/common/log.hpp"
#include "gateway/smtpd/smtp_session.hpp"

#include <memory>
#include <optional>
#include <string>

using namespace gateway;

namespace {

struct Hooks : SessionHooks {
    std::optional<Envelope> committed;
    bool tls = false, auth = false, blocked = false;
    int ids = 0;
    std::string content;
    std::string new_queue_id() override { return "FUZZ" + std::to_string(++ids); }
    int64_t now_us() override { return 1795803759000000; }
    bool storage_low() override { return false; }
    void message_write(std::string&& c) override {
        if (content.size() < 1 << 20) content += c;
    }
    void message_commit(Envelope&& e) override { committed = std::move(e); }
    void message_abort() override { content.clear(); }
    void start_tls() override { tls = true; }
    void auth_start(const std::string&, const std::optional<std::string>&) override { auth = true; }
    void auth_step(const std::string&) override { auth = true; }
    void auth_cancel() override { auth = false; }
    bool auth_blocked() override { return blocked; }
};

const std::shared_ptr<const SenderRewriter>& rewriter() {
    static auto r = [] {
        auto loaded = conf::load_string(
            "sender:\n  rewrite:\n    - { from: \"*@*.local\", to: noreply@example.com }\n"
            "    - { from: \"/^(.+)@old\\\\.example$/\", to: \"$1@example.com\" }\n  header_from: rewrite\n",
            "fuzz.yaml");
        return std::make_shared<const SenderRewriter>(loaded.config->sender);
    }();
    return r;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    static bool quiet = (log::set_level(conf::LogLevel::Error), true);
    (void)quiet;
    if (size == 0) return 0;
    uint8_t flags = data[0];
    std::string_view in = fuzz::bytes(data + 1, size - 1);
    SessionPolicy p;
    p.hostname = "gw.fuzz";
    p.starttls = flags & 1;
    p.auth = flags & 2 ? conf::ListenAuth::Optional : (flags & 4 ? conf::ListenAuth::Required : conf::ListenAuth::None);
    p.mechanisms = {"PLAIN", "LOGIN", "SCRAM-SHA-256"};
    p.auth_without_tls = flags & 8;
    p.message_size = 4096;
    p.max_recipients = 5;
    p.max_errors = 50;
    p.line_length = 1000;
    p.reject_bare_lf = flags & 16;
    p.address_literals = flags & 32;
    if (flags & 64) p.rewriter = rewriter();
    ClientInfo client;
    client.ip = "192.0.2.7";
    client.may_relay = flags & 128;
    Hooks hooks;
    SmtpSession s(p, client, hooks);
    s.start();
    size_t pos = 0, chunk = 1 + (flags % 61);
    uint8_t answer = flags;
    while (pos < in.size() && !s.closing()) {
        s.feed(in.substr(pos, chunk));
        pos += chunk;
        s.take_output();
        for (int round = 0; round < 64 && (s.waiting() || s.can_resume()); ++round) {
            answer = uint8_t(answer * 31 + 7);
            if (hooks.committed) {
                hooks.committed.reset();
                s.on_commit_result(answer & 1 ? CommitResult::Stored : CommitResult::Failed);
            } else if (hooks.auth) {
                hooks.auth = false;
                auto outcome = static_cast<AuthOutcome>(answer % 6);
                s.on_auth_result(outcome, "challenge", "user", "detail");
            } else if (hooks.tls) {
                hooks.tls = false;
                s.on_tls_started("TLSv1.2 with cipher FUZZ");
            } else if (s.can_resume()) {
                s.resume();
            } else {
                break;
            }
            s.take_output();
        }
    }
    s.on_timeout();
    s.on_disconnect("lost connection");
    return 0;
}
