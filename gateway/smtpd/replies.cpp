#include "gateway/smtpd/replies.hpp"

namespace gateway {

std::string Reply::wire() const {
    std::string out;
    std::string code_text = std::to_string(code);
    for (size_t i = 0; i < lines.size(); ++i) {
        out += code_text;
        out += i + 1 < lines.size() ? '-' : ' ';
        if (!status.empty()) out += status + ' ';
        out += lines[i];
        out += "\r\n";
    }
    return out;
}

std::string Reply::text() const {
    std::string out = std::to_string(code);
    if (!status.empty()) out += ' ' + status;
    if (!lines.empty()) out += ' ' + lines.front();
    return out;
}

namespace replies {

namespace {

Reply make(int code, const char* status, std::string text) { return Reply{code, status, {std::move(text)}}; }

std::string bracketed(std::string_view a) { return "<" + std::string(a) + ">"; }

}  // namespace

Reply greeting(const std::string& hostname) { return make(220, "", hostname + " ESMTP"); }

Reply ehlo(const std::string& hostname, const std::vector<std::string>& capabilities) {
    // RFC 2034 3: EHLO keyword lines carry no enhanced status code.
    Reply r{250, "", {hostname}};
    r.lines.insert(r.lines.end(), capabilities.begin(), capabilities.end());
    return r;
}

Reply helo(const std::string& hostname) { return make(250, "", hostname); }
Reply ok() { return make(250, "2.0.0", "Ok"); }
Reply sender_ok() { return make(250, "2.1.0", "Ok"); }
Reply recipient_ok() { return make(250, "2.1.5", "Ok"); }
Reply start_data() { return make(354, "", "End data with <CR><LF>.<CR><LF>"); }
Reply queued(const std::string& queue_id) { return make(250, "2.0.0", "Ok: queued as " + queue_id); }
Reply bye() { return make(221, "2.0.0", "Bye"); }
Reply vrfy() { return make(252, "2.0.0", "Cannot VRFY user; send mail and delivery will be attempted"); }

Reply help() { return make(214, "2.0.0", "Commands: EHLO HELO MAIL RCPT DATA RSET NOOP QUIT VRFY HELP"); }

Reply need_helo() { return make(503, "5.5.1", "Error: send HELO/EHLO first"); }
Reply need_mail() { return make(503, "5.5.1", "Error: need MAIL command"); }
Reply need_rcpt() { return make(503, "5.5.1", "Error: need RCPT command"); }
Reply nested_mail() { return make(503, "5.5.1", "Error: nested MAIL command"); }
Reply no_valid_recipients() { return make(554, "5.5.1", "Error: no valid recipients"); }
Reply unknown_command() { return make(502, "5.5.2", "Error: command not recognized"); }
Reply syntax(std::string_view usage) { return make(501, "5.5.4", "Syntax: " + std::string(usage)); }
Reply line_too_long() { return make(500, "5.5.2", "Line too long"); }

Reply unsupported_parameter(std::string_view p) { return make(555, "5.5.4", "Unsupported option: " + std::string(p)); }

Reply bad_parameter_value(std::string_view p) { return make(501, "5.5.4", "Bad parameter value: " + std::string(p)); }
Reply bad_sender_syntax() { return make(501, "5.1.7", "Bad sender address syntax"); }
Reply bad_recipient_syntax() { return make(501, "5.1.3", "Bad recipient address syntax"); }

Reply sender_not_fqdn(std::string_view a) {
    return make(553, "5.1.7", bracketed(a) + ": Sender address rejected: need fully-qualified address");
}

Reply recipient_not_fqdn(std::string_view a) {
    return make(553, "5.1.3", bracketed(a) + ": Recipient address rejected: need fully-qualified address");
}

Reply bad_address(std::string_view a, bool sender) {
    return sender ? make(553, "5.1.7", bracketed(a) + ": Sender address rejected: invalid address syntax")
                  : make(553, "5.1.3", bracketed(a) + ": Recipient address rejected: invalid address syntax");
}

Reply needs_smtputf8(std::string_view a) {
    return make(553, "5.6.7", bracketed(a) + ": non-ASCII address requires the SMTPUTF8 parameter");
}

Reply non_smtp_command() { return make(221, "2.7.0", "Error: non-SMTP command received; closing connection"); }

Reply relay_denied(std::string_view r) { return make(554, "5.7.1", bracketed(r) + ": Relay access denied"); }
Reply sender_not_owned(std::string_view s, const std::string& user) {
    return make(553, "5.7.1", bracketed(s) + ": Sender address rejected: not owned by user " + user);
}
Reply sender_access_denied(std::string_view s) {
    return make(553, "5.7.1", bracketed(s) + ": Sender address rejected: Access denied");
}
Reply recipient_access_denied(std::string_view r) {
    return make(550, "5.7.1", bracketed(r) + ": Recipient address rejected: Access denied");
}
Reply sender_rate_exceeded(std::string_view s, const std::string& what) {
    return make(450, "4.7.1", bracketed(s) + ": Sender address rejected: rate limit exceeded (" + what + ")");
}
Reply recipient_rate_exceeded(std::string_view r, const std::string& what) {
    return make(450, "4.7.1", bracketed(r) + ": Recipient address rejected: rate limit exceeded (" + what + ")");
}
Reply too_many_hops() { return make(554, "5.4.0", "Error: too many hops"); }
Reply address_literal_denied(std::string_view r) {
    return make(550, "5.7.1", bracketed(r) + ": Recipient address rejected: Address literals are not accepted");
}
Reply size_exceeded_at_mail() { return make(552, "5.3.4", "Message size exceeds fixed limit"); }
Reply size_exceeded() { return make(552, "5.3.4", "Error: message file too big"); }
Reply too_many_recipients() { return make(452, "4.5.3", "Error: too many recipients"); }

Reply too_many_connections(const std::string& hostname) {
    return make(421, "4.7.0", hostname + " Error: too many connections");
}

Reply too_many_connections_from(const std::string& hostname, std::string_view client) {
    return make(421, "4.7.0", hostname + " Error: too many connections from " + std::string(client));
}

Reply too_many_errors(const std::string& hostname) { return make(421, "4.7.0", hostname + " Error: too many errors"); }
Reply timeout(const std::string& hostname) { return make(421, "4.4.2", hostname + " Error: timeout exceeded"); }

Reply shutting_down(const std::string& hostname) {
    return make(421, "4.3.2", hostname + " Service shutting down, closing transmission channel");
}

Reply bare_lf() {
    return make(550, "5.5.2", "Message contains a bare <LF> (line feed without carriage return); see RFC 5321 2.3.8");
}

Reply bare_cr() {
    return make(550, "5.5.2", "Message contains a bare <CR> (carriage return without line feed); see RFC 5321 2.3.8");
}

Reply content_line_too_long(uint64_t limit) {
    return make(552, "5.3.4", "Message has a line longer than " + std::to_string(limit) + " octets");
}

Reply starttls_ready() { return make(220, "2.0.0", "Ready to start TLS"); }
Reply starttls_unavailable() { return make(502, "5.5.1", "Error: command not implemented"); }
Reply tls_already_active() { return make(554, "5.5.1", "Error: TLS already active"); }
Reply auth_not_enabled() { return make(503, "5.5.1", "Error: authentication not enabled"); }
Reply already_authenticated() { return make(503, "5.5.1", "Error: already authenticated"); }
Reply auth_in_transaction() { return make(503, "5.5.1", "Error: MAIL transaction in progress"); }

Reply encryption_required() {
    return make(538, "5.7.11", "Encryption required for requested authentication mechanism");
}

Reply unknown_mechanism() { return make(504, "5.5.4", "Unrecognized authentication type"); }
Reply auth_challenge(const std::string& base64) { return make(334, "", base64); }  // RFC 4954 4: text only
Reply auth_succeeded() { return make(235, "2.7.0", "Authentication successful"); }
Reply auth_failed() { return make(535, "5.7.8", "Error: authentication failed: authentication failure"); }

Reply auth_temporary() { return make(454, "4.7.0", "Temporary authentication failure"); }

Reply auth_aborted() { return make(501, "5.7.0", "Authentication aborted"); }
Reply cannot_decode() { return make(501, "5.5.2", "Cannot decode response"); }
Reply auth_required() { return make(530, "5.7.0", "Authentication required"); }

Reply too_many_auth_failures(const std::string& hostname, std::string_view client) {
    return make(421, "4.7.0", hostname + " Error: too many AUTH failures from " + std::string(client));
}

Reply insufficient_storage() { return make(452, "4.3.1", "Insufficient system storage"); }
Reply queue_write_error() { return make(451, "4.3.0", "Error: queue file write error"); }

}  // namespace replies
}  // namespace gateway
