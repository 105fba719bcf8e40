// The configuration loader: any text is a configuration or a list of problems, never a crash.
#include "conf/config_load.hpp"
#include "fuzz.hpp"

#include <cstdlib>
#include <string>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    auto r = conf::load_string(std::string(fuzz::bytes(data, size)), "fuzz.yaml");
    if (!r.ok() && r.first_error().empty()) std::abort();
    for (const auto& d : r.diagnostics)
        (void)d.format();
    return 0;
}
