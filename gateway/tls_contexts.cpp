#include "gateway/tls_contexts.hpp"

namespace gateway {

std::shared_ptr<tls::Context> TlsContexts::client(bool verify, const std::string& ca_file, std::string& error) {
    auto key = std::make_pair(verify, ca_file);
    auto it = m_client.find(key);
    if (it != m_client.end()) return it->second;
    // XXX: the first use loads the CA bundle on the event loop (a few milliseconds, once).
    auto ctx = tls::client_context({verify, ca_file}, error);
    if (ctx) m_client[key] = ctx;
    return ctx;
}

}  // namespace gateway
