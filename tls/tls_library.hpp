// tls/: everything that touches mbedTLS lives in this folder.
#pragma once

#include <string>

namespace tls {

// "mbedTLS 2.28.3": the library the gateway runs with.
std::string library_version();

}  // namespace tls
