// Loading a configuration: YAML text -> conf::Config, validated once.
//
// Every problem is reported as a Diagnostic that formats as `FILE:LINE:COL: error: TEXT`
// (or `warning:`), naming the key at fault. A result with any error has no config.
#pragma once

#include "conf/config.hpp"

#include <optional>
#include <string>
#include <vector>

namespace conf {

struct Diagnostic {
    std::string file;
    int line = 0;  // 1-based; 0 for problems that are not tied to a place in the file
    int column = 0;
    bool error = true;
    std::string text;

    std::string format() const;
};

struct LoadResult {
    std::optional<Config> config;
    std::vector<Diagnostic> diagnostics;

    bool ok() const { return config.has_value(); }
    std::string first_error() const;
};

LoadResult load_file(const std::string& path);
LoadResult load_string(const std::string& yaml, const std::string& source);
// The embedded default: listen on 127.0.0.1:2525, clients 127.0.0.0/8 and ::1, direct MX
// delivery with opportunistic TLS, spool ./smtpgw-spool, log to standard error.
LoadResult load_default();

const std::string& default_config_text();

// The host name of this system, as the default for `hostname`.
std::string system_hostname();

}  // namespace conf
