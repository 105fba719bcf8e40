#include "tls/tls_library.hpp"

#include <mbedtls/version.h>

namespace tls {

std::string library_version() {
    char buf[32] = {};
    mbedtls_version_get_string_full(buf);
    return buf;
}

}  // namespace tls
