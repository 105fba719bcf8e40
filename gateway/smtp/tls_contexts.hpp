// The TLS client contexts in use, one per (verify, ca_file): loading a CA bundle is costly, so
// each is loaded once and shared by every connection that needs it.
#pragma once

#include "conf/config.hpp"
#include "tls/tls_engine.hpp"

#include <map>
#include <memory>
#include <string>
#include <utility>

namespace gateway {

class TlsContexts {
public:
    // nullptr with `error` when the CA file cannot be loaded.
    std::shared_ptr<tls::Context> client(bool verify, const std::string& ca_file, std::string& error);
    // Loads what the configuration will use (direct delivery and each upstream), so that CA
    // bundles are read when the configuration is loaded rather than by the first delivery.
    void preload(const conf::Config& config);

private:
    std::map<std::pair<bool, std::string>, std::shared_ptr<tls::Context>> m_client;
};

}  // namespace gateway
