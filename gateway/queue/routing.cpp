#include "gateway/queue/routing.hpp"

#include "gateway/common/address.hpp"

namespace gateway {

Router::Router(const conf::Config& config) {
    for (const auto& r : config.routes) {
        Compiled c;
        for (const auto& p : r.to)
            c.to.emplace_back(p);
        for (const auto& p : r.from)
            c.from.emplace_back(p);
        c.via = r.via;
        m_routes.push_back(std::move(c));
    }
}

const std::vector<std::string>& Router::via(std::string_view sender, std::string_view recipient) const {
    static const std::vector<std::string> nowhere;
    std::string domain = domain_of(recipient);
    for (const auto& r : m_routes) {
        bool to_ok = r.to.empty();
        for (const auto& p : r.to)
            to_ok = to_ok || p.matches(domain);
        bool from_ok = r.from.empty();
        for (const auto& p : r.from)
            from_ok = from_ok || p.matches(sender);
        if (to_ok && from_ok) return r.via;
    }
    return nowhere;
}

}  // namespace gateway
