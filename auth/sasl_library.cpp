#include "auth/sasl_library.hpp"

#include <sasl/sasl.h>

namespace auth {

std::string library_version() {
    const char* implementation = nullptr;
    const char* version = nullptr;
    sasl_version_info(&implementation, &version, nullptr, nullptr, nullptr, nullptr);
    return std::string(implementation ? implementation : "Cyrus SASL") + " " + (version ? version : "?");
}

}  // namespace auth
