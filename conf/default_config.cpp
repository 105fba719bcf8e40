#include "conf/config_load.hpp"

namespace conf {

const std::string& default_config_text() {
    static const std::string text = R"(# smtpgw embedded default configuration
listen:
  - address: 127.0.0.1:2525
    tls: none
    auth: none
clients: [127.0.0.0/8, "::1/128"]
routes:
  - { to: "*", via: direct }
direct: { security: opportunistic, port: 25 }
queue: { dir: ./smtpgw-spool }
log: { level: info }
)";
    return text;
}

LoadResult load_default() { return load_string(default_config_text(), "(default)"); }

}  // namespace conf
