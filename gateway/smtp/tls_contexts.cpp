#include "gateway/smtp/tls_contexts.hpp"

namespace gateway {

std::shared_ptr<tls::Context> TlsContexts::client(const tls::ClientOptions& options, std::string& error) {
    auto key = std::make_tuple(options.verify, options.ca_file, options.certificate_file, options.key_file);
    auto it = m_client.find(key);
    if (it != m_client.end()) return it->second;
    auto ctx = tls::client_context(options, error);
    if (ctx) m_client[key] = ctx;
    return ctx;
}

tls::ClientOptions TlsContexts::options_for(const conf::Upstream& u) {
    return {u.verify, u.ca_file, u.tls_certificate, u.tls_key};
}

void TlsContexts::preload(const conf::Config& config) {
    // Read afresh (at start and on reload), so that a renewed certificate is taken up; sessions
    // keep the context they started with.
    m_client.clear();
    std::string ignored;  // a file that does not load is reported by the delivery that needs it
    if (config.direct.security != conf::Security::None) client({}, ignored);
    for (const auto& u : config.upstreams)
        if (u.security != conf::Security::None) client(options_for(u), ignored);
}

}  // namespace gateway
