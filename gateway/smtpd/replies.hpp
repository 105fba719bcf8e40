// The catalogue of every reply the listener sends, with its enhanced status code (RFC 3463,
// RFC 2034). Texts are plain; they end up in users' bounce messages and in the log.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace gateway {

struct Reply {
    int code = 0;
    std::string status;              // enhanced status "5.7.1"; empty for 220 and 354
    std::vector<std::string> lines;  // text after code and status; more than one for multi-line

    // The bytes on the wire: every line carries the code and, when there is one, the status.
    std::string wire() const;
    // "554 5.7.1 <x@y>: Relay access denied": the first line, as logged.
    std::string text() const;
    bool is_error() const { return code >= 400; }
};

namespace replies {

Reply greeting(const std::string& hostname);
Reply ehlo(const std::string& hostname, const std::vector<std::string>& capabilities);
Reply helo(const std::string& hostname);
Reply ok();            // RSET, NOOP
Reply sender_ok();     // MAIL
Reply recipient_ok();  // RCPT
Reply start_data();    // 354
Reply queued(const std::string& queue_id);
Reply bye();
Reply vrfy();
Reply help();

// Sequence and syntax (RFC 5321 4.2.4, 4.3.2)
Reply need_helo();
Reply need_mail();
Reply need_rcpt();
Reply nested_mail();
Reply no_valid_recipients();
Reply unknown_command();
Reply syntax(std::string_view usage);  // 501 5.5.4 Syntax: USAGE
Reply line_too_long();
Reply unsupported_parameter(std::string_view parameter);
Reply bad_parameter_value(std::string_view parameter);
Reply bad_sender_syntax();
Reply bad_recipient_syntax();
Reply sender_not_fqdn(std::string_view address);
Reply recipient_not_fqdn(std::string_view address);
Reply bad_address(std::string_view address, bool sender);
Reply needs_smtputf8(std::string_view address);
Reply non_smtp_command();

// Policy and limits
Reply relay_denied(std::string_view recipient);
Reply address_literal_denied(std::string_view recipient);
// policy: (Postfix's reject_sender_login_mismatch, check_sender_access, check_recipient_access)
Reply sender_not_owned(std::string_view sender, const std::string& user);
Reply sender_access_denied(std::string_view sender);
Reply recipient_access_denied(std::string_view recipient);
// policy rates: `what` says which limit, e.g. "60 messages per minute for user scanner1"
Reply sender_rate_exceeded(std::string_view sender, const std::string& what);
Reply recipient_rate_exceeded(std::string_view recipient, const std::string& what);
Reply too_many_hops();
Reply size_exceeded_at_mail();  // RFC 1870 6.1: SIZE= above the limit
Reply size_exceeded();          // at the end of DATA
Reply too_many_recipients();
Reply too_many_connections(const std::string& hostname);
Reply too_many_connections_from(const std::string& hostname, std::string_view client);
Reply too_many_errors(const std::string& hostname);
Reply timeout(const std::string& hostname);
Reply shutting_down(const std::string& hostname);

// Message content (RFC 5321 2.3.8 and 4.1.1.4)
Reply bare_lf();
Reply bare_cr();
Reply content_line_too_long(uint64_t limit);

// STARTTLS (RFC 3207) and AUTH (RFC 4954)
Reply starttls_ready();
Reply starttls_unavailable();
Reply tls_already_active();
Reply auth_not_enabled();
Reply already_authenticated();
Reply auth_in_transaction();
Reply encryption_required();
Reply unknown_mechanism();
Reply auth_challenge(const std::string& base64);
Reply auth_succeeded();
Reply auth_failed();
Reply auth_temporary();  // the reason goes to the log only
Reply auth_aborted();
Reply cannot_decode();
Reply auth_required();
Reply too_many_auth_failures(const std::string& hostname, std::string_view client);

// Storage
Reply insufficient_storage();
Reply queue_write_error();

}  // namespace replies
}  // namespace gateway
