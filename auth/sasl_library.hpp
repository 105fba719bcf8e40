// auth/: everything that touches Cyrus SASL lives in this folder.
#pragma once

#include <string>

namespace auth {

// "Cyrus SASL 2.1.28": the library the gateway runs with.
std::string library_version();

}  // namespace auth
