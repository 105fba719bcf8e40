// smtpgw: command-line entry point. Start-up errors are caught here, printed as one line,
// and end the program with exit status 1.
#include "auth/sasl_library.hpp"
#include "conf/config_load.hpp"
#include "gateway/dns.hpp"
#include "gateway/log.hpp"
#include "gateway/queue_view.hpp"
#include "gateway/serve.hpp"
#include "gateway/spool.hpp"
#include "tls/tls_library.hpp"

#include <spdlog/version.h>
#include <uv.h>

#include <iostream>
#include <optional>
#include <string>
#include <vector>

namespace {

struct Arguments {
    std::vector<std::string> words;
    std::string config_file;
    bool json = false;
};

void usage(std::ostream& out) {
    out << "usage: smtpgw COMMAND [-c FILE]\n"
           "  serve                 run the gateway in the foreground\n"
           "  check-config          validate the configuration\n"
           "  queue list [--json]   list queued messages\n"
           "  queue show ID         show one queued message\n"
           "  version               print versions\n"
           "Without -c, the embedded default configuration is used.\n";
}

std::optional<Arguments> parse_arguments(int argc, char** argv) {
    Arguments a;
    for (int i = 1; i < argc; ++i) {
        std::string arg = argv[i];
        if (arg == "-c" || arg == "--config") {
            if (i + 1 >= argc) return std::nullopt;
            a.config_file = argv[++i];
        } else if (arg == "--json") {
            a.json = true;
        } else if (!arg.empty() && arg[0] == '-') {
            return std::nullopt;
        } else {
            a.words.push_back(arg);
        }
    }
    if (a.words.empty()) return std::nullopt;
    return a;
}

conf::LoadResult load(const Arguments& a) {
    return a.config_file.empty() ? conf::load_default() : conf::load_file(a.config_file);
}

// Prints diagnostics; returns the configuration, or nothing after printing why there is none.
std::optional<conf::Config> load_or_report(const Arguments& a) {
    auto r = load(a);
    for (const auto& d : r.diagnostics)
        std::cerr << d.format() << "\n";
    return r.config;
}

int cmd_check_config(const Arguments& a) {
    auto r = load(a);
    for (const auto& d : r.diagnostics)
        std::cout << d.format() << "\n";
    if (!r.ok()) return 1;
    std::cout << r.config->source << ": configuration is valid\n";
    return 0;
}

int cmd_version() {
    std::cout << "smtpgw " << SMTPGW_VERSION << "\n"
              << "libuv " << uv_version_string() << "\n"
              << tls::library_version() << "\n"
              << auth::library_version() << "\n"
              << "c-ares " << gateway::dns::library_version() << "\n"
              << "spdlog " << SPDLOG_VER_MAJOR << "." << SPDLOG_VER_MINOR << "." << SPDLOG_VER_PATCH << "\n";
    return 0;
}

int cmd_queue(const Arguments& a) {
    auto config = load_or_report(a);
    if (!config) return 1;
    gateway::SpoolLayout layout{config->queue.dir};
    const auto& w = a.words;
    if (w.size() == 2 && w[1] == "list") return gateway::queue_list(layout, a.json, std::cout);
    if (w.size() == 3 && w[1] == "show") return gateway::queue_show(layout, w[2], a.json, std::cout, std::cerr);
    usage(std::cerr);
    return 2;
}

}  // namespace

int main(int argc, char** argv) {
    auto args = parse_arguments(argc, argv);
    if (!args) {
        usage(std::cerr);
        return 2;
    }
    const std::string& command = args->words.front();
    try {
        if (command == "serve" && args->words.size() == 1) return gateway::serve(args->config_file);
        if (command == "check-config" && args->words.size() == 1) return cmd_check_config(*args);
        if (command == "version") return cmd_version();
        if (command == "queue") return cmd_queue(*args);
        if (command == "help") {
            usage(std::cout);
            return 0;
        }
    } catch (const std::exception& e) {
        std::cerr << "smtpgw: error: " << e.what() << "\n";
        return 1;
    }
    usage(std::cerr);
    return 2;
}
