// `policy:` compiled: which senders and recipients a session may use, how large its messages may
// be and how fast it may send, by the first rule that matches its listener, client address and
// AUTH user (Postfix's smtpd_sender_login_maps with reject_sender_login_mismatch, check_sender_access
// and check_recipient_access, and anvil's rate limits, in one list). No rule: no restriction
// beyond `clients` and AUTH.
#pragma once

#include "conf/config.hpp"
#include "gateway/common/patterns.hpp"

#include <memory>
#include <string>
#include <vector>

namespace gateway {

struct AccessRule {
    size_t index = 0;  // policy[index]
    conf::PolicyRule conf;
    std::vector<SenderPattern> senders;
    std::vector<SenderPattern> recipients;

    bool sender_allowed(const std::string& address) const;  // "" is the null sender
    bool recipient_allowed(const std::string& address) const;
};

class AccessPolicy {
public:
    explicit AccessPolicy(const std::vector<conf::PolicyRule>& rules);
    bool empty() const { return m_rules.empty(); }
    // The first rule for a session on `listener` (its address as written in listen:) from `ip`,
    // authenticated as `user` ("" without AUTH); null when none matches.
    const AccessRule* find(const std::string& listener, const std::string& ip, const std::string& user) const;
    // Whether `user` may send as any sender from somewhere: the first rule that applies to it
    // wherever it connects from (no clients or listener condition) has no senders list.
    bool may_send_as_anyone(const std::string& user) const;

private:
    std::vector<AccessRule> m_rules;
};

// "minute" for 60, "2 minutes" for 120, "90 seconds" for 90: the period of a rate in words.
std::string period_words(unsigned seconds);

}  // namespace gateway
