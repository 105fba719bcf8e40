#include "gateway/smtp/tls_contexts.hpp"

namespace gateway {

std::shared_ptr<tls::Context> TlsContexts::client(bool verify, const std::string& ca_file, std::string& error) {
    auto key = std::make_pair(verify, ca_file);
    auto it = m_client.find(key);
    if (it != m_client.end()) return it->second;
    auto ctx = tls::client_context({verify, ca_file}, error);
    if (ctx) m_client[key] = ctx;
    return ctx;
}

void TlsContexts::preload(const conf::Config& config) {
    std::string ignored;  // a CA file that does not load is reported by the delivery that needs it
    if (config.direct.security != conf::Security::None) client(false, "", ignored);
    for (const auto& u : config.upstreams)
        if (u.security != conf::Security::None) client(u.verify, u.ca_file, ignored);
}

}  // namespace gateway
