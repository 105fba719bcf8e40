#include "gateway/smtpd/access_policy.hpp"

#include <algorithm>

namespace gateway {

namespace {

bool any_matches(const std::vector<SenderPattern>& patterns, const std::string& address) {
    return std::any_of(patterns.begin(), patterns.end(), [&](const SenderPattern& p) { return p.matches(address); });
}

}  // namespace

bool AccessRule::sender_allowed(const std::string& address) const {
    return senders.empty() || any_matches(senders, address);
}

bool AccessRule::recipient_allowed(const std::string& address) const {
    return recipients.empty() || any_matches(recipients, address);
}

AccessPolicy::AccessPolicy(const std::vector<conf::PolicyRule>& rules) {
    for (size_t i = 0; i < rules.size(); i++) {
        AccessRule r;
        r.index = i;
        r.conf = rules[i];
        for (const auto& p : rules[i].senders)
            r.senders.emplace_back(p);
        for (const auto& p : rules[i].recipients)
            r.recipients.emplace_back(p);
        m_rules.push_back(std::move(r));
    }
}

const AccessRule* AccessPolicy::find(const std::string& listener, const std::string& ip,
                                     const std::string& user) const {
    auto address = conf::IpAddress::parse(ip);
    for (const auto& r : m_rules) {
        const auto& c = r.conf;
        if (!c.users.empty() && (user.empty() || std::none_of(c.users.begin(), c.users.end(),
                                                              [&](const auto& u) { return glob_match(u, user); })))
            continue;
        if (!c.clients.empty() && (!address || std::none_of(c.clients.begin(), c.clients.end(),
                                                            [&](const auto& n) { return n.contains(*address); })))
            continue;
        if (!c.listeners.empty() && std::find(c.listeners.begin(), c.listeners.end(), listener) == c.listeners.end())
            continue;
        return &r;
    }
    return nullptr;
}

bool AccessPolicy::may_send_as_anyone(const std::string& user) const {
    for (const auto& r : m_rules) {
        const auto& c = r.conf;
        if (!c.clients.empty() || !c.listeners.empty()) continue;
        if (!c.users.empty() &&
            std::none_of(c.users.begin(), c.users.end(), [&](const auto& u) { return glob_match(u, user); }))
            continue;
        return r.senders.empty();
    }
    return true;
}

std::string period_words(unsigned seconds) {
    for (auto [unit, length] : {std::pair{"day", 86400u}, {"hour", 3600u}, {"minute", 60u}, {"second", 1u}}) {
        if (seconds % length != 0) continue;
        unsigned n = seconds / length;
        return n == 1 ? std::string(unit) : std::to_string(n) + " " + unit + "s";
    }
    return std::to_string(seconds) + " seconds";
}

}  // namespace gateway
