// SmtpSession: STARTTLS (RFC 3207) and AUTH (RFC 4954), and the EHLO keywords that offer them.
#include "auth/sasl_client.hpp"
#include "gateway/common/log.hpp"
#include "gateway/common/metrics.hpp"
#include "gateway/common/text.hpp"
#include "gateway/smtpd/smtp_session.hpp"
#include "gateway/smtpd/smtp_syntax.hpp"

#include <strings.h>
#include <algorithm>

namespace gateway {

using log::Component;

std::vector<std::string> SmtpSession::capabilities() const {
    std::vector<std::string> c{"PIPELINING", "SIZE " + std::to_string(m_policy.message_size)};
    if (m_policy.starttls && !m_tls) c.push_back("STARTTLS");
    // AUTH only where it may be used: on TLS, unless the configuration allows it in plaintext.
    if (m_policy.auth != conf::ListenAuth::None && !m_policy.mechanisms.empty() &&
        (m_tls || m_policy.auth_without_tls)) {
        std::string mechs = "AUTH";
        for (const auto& m : m_policy.mechanisms)
            mechs += " " + m;
        c.push_back(mechs);
    }
    c.insert(c.end(), {"8BITMIME", "ENHANCEDSTATUSCODES", "SMTPUTF8"});
    return c;
}

void SmtpSession::cmd_starttls(std::string_view args) {
    if (!trim_spaces(args).empty()) return reply(replies::syntax("STARTTLS"));
    if (m_tls) return reply(replies::tls_already_active());
    if (!m_policy.starttls) return reply(replies::starttls_unavailable());
    reply(replies::starttls_ready());
    // RFC 3207 4: nothing the client sent after STARTTLS in plaintext is acted on.
    set_state(State::StartingTls);
    m_hooks.start_tls();
}

void SmtpSession::on_tls_started(const std::string& description) {
    // RFC 3207 4.2: all knowledge from before TLS is discarded; the client starts with EHLO.
    m_tls = true;
    m_tls_description = description;
    std::string().swap(m_in);
    m_discarding = false;
    reset_transaction();
    m_helo.clear();
    m_esmtp = false;
    set_state(State::Connected);
}

void SmtpSession::cmd_auth(std::string_view args) {
    if (m_policy.auth == conf::ListenAuth::None) return reply(replies::auth_not_enabled());
    if (m_state == State::Connected || !m_esmtp) return reply(replies::need_helo());
    if (!m_user.empty()) return reply(replies::already_authenticated());
    if (m_state != State::Ready) return reply(replies::auth_in_transaction());
    if (!m_tls && !m_policy.auth_without_tls) return reply(replies::encryption_required());  // RFC 4954 6
    auto parts = split_command(trim_spaces(args));
    std::string mechanism(parts.verb);
    std::transform(mechanism.begin(), mechanism.end(), mechanism.begin(), [](unsigned char c) { return toupper(c); });
    if (mechanism.empty()) return reply(replies::syntax("AUTH mechanism"));
    if (std::find(m_policy.mechanisms.begin(), m_policy.mechanisms.end(), mechanism) == m_policy.mechanisms.end())
        return reply(replies::unknown_mechanism());
    if (m_hooks.auth_blocked()) return refuse_auth_blocked();
    std::optional<std::string> initial;
    std::string_view given = trim_spaces(parts.args);
    if (!given.empty()) {
        std::string decoded;
        if (given != "=" && !auth::base64_decode(given, decoded)) return reply(replies::cannot_decode());
        initial = decoded;  // RFC 4954 4: "=" is an empty initial response
    }
    m_auth_mechanism = mechanism;
    set_state(State::AuthWait);
    m_hooks.auth_start(mechanism, initial);
}

void SmtpSession::refuse_auth_blocked() {
    log::warning(Component::Smtpd, m_client.label() + ": too many AUTH failures from this address");
    close_with(replies::too_many_auth_failures(m_policy.hostname, m_client.ip));
}

void SmtpSession::process_auth_line(std::string_view line) {
    if (line == "*") {  // RFC 4954 4: the client cancels
        log::warning(Component::Smtpd, m_client.label() + ": SASL " + m_auth_mechanism + " authentication aborted");
        m_hooks.auth_cancel();
        set_state(State::Ready);
        return reply(replies::auth_aborted());
    }
    std::string decoded;
    if (!auth::base64_decode(trim_spaces(line), decoded)) {
        m_hooks.auth_cancel();
        set_state(State::Ready);
        return reply(replies::cannot_decode());
    }
    set_state(State::AuthWait);
    m_hooks.auth_step(decoded);
}

void SmtpSession::on_auth_result(AuthOutcome outcome, const std::string& challenge, const std::string& username,
                                 const std::string& detail) {
    if (m_state != State::AuthWait) return;
    switch (outcome) {
    case AuthOutcome::Continue:
        set_state(State::AuthLine);
        reply(replies::auth_challenge(auth::base64_encode(challenge)));
        break;
    case AuthOutcome::Success:
        m_user = username;
        m_counts[Auth][0]++;
        set_state(State::Ready);
        reply(replies::auth_succeeded());
        break;
    case AuthOutcome::Failure:
        metrics::auth_failure("in");
        // Postfix's wording (fail2ban's postfix-sasl filter matches it). The user name is logged;
        // what was typed as a password never is.
        log::warning(Component::Smtpd,
                     m_client.label() + ": SASL " + m_auth_mechanism +
                         " authentication failed: " + (detail.empty() ? "authentication failure" : detail) +
                         (username.empty() ? std::string() : ", sasl_username=" + printable(username)));
        set_state(State::Ready);
        reply(replies::auth_failed());
        break;
    case AuthOutcome::TempFailure:
        log::warning(Component::Smtpd,
                     m_client.label() + ": SASL " + m_auth_mechanism + " authentication problem: " + detail);
        set_state(State::Ready);
        reply(replies::auth_temporary());
        break;
    case AuthOutcome::Invalid:
        set_state(State::Ready);
        reply(replies::cannot_decode());
        break;
    case AuthOutcome::Blocked: refuse_auth_blocked(); break;
    }
    if (!m_disconnected) resume();
}

}  // namespace gateway
