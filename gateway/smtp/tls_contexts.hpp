// The TLS client contexts in use, one per (verify, ca_file, client certificate): loading a CA
// bundle is costly, so each is loaded once and shared by every connection that needs it.
#pragma once

#include "conf/config.hpp"
#include "tls/tls_engine.hpp"

#include <map>
#include <memory>
#include <string>
#include <tuple>

namespace gateway {

class TlsContexts {
public:
    // nullptr with `error` when the CA file cannot be loaded.
    std::shared_ptr<tls::Context> client(const tls::ClientOptions& options, std::string& error);
    static tls::ClientOptions options_for(const conf::Upstream& upstream);
    // Loads what the configuration will use (direct delivery and each upstream), so that CA
    // bundles are read when the configuration is loaded rather than by the first delivery.
    void preload(const conf::Config& config);

private:
    std::map<std::tuple<bool, std::string, std::string, std::string>, std::shared_ptr<tls::Context>> m_client;
};

}  // namespace gateway
