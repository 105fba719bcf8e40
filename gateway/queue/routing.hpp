// Routes (`routes:` in the configuration): which way mail for a recipient goes, chosen at
// delivery time so that a changed configuration applies to mail already queued.
#pragma once

#include "conf/config.hpp"
#include "gateway/common/patterns.hpp"

#include <string>
#include <string_view>
#include <vector>

namespace gateway {

class Router {
public:
    explicit Router(const conf::Config& config);
    // The `via` list of the first route matching the recipient's domain and the original sender;
    // empty when no route matches (the mail then has nowhere to go).
    const std::vector<std::string>& via(std::string_view sender, std::string_view recipient) const;

private:
    struct Compiled {
        std::vector<DomainPattern> to;
        std::vector<SenderPattern> from;
        std::vector<std::string> via;
    };
    std::vector<Compiled> m_routes;
};

}  // namespace gateway
