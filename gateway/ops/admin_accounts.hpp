// The console's accounts: a file of "NAME:HASH" lines (tls/password_hash.hpp), managed by
// `smtpgw admin add|delete|list` and read by the console at each sign-in. Written whole to a
// temporary file and renamed, so a reader never sees half of it.
#pragma once

#include <map>
#include <string>

namespace gateway {

// Names and hashes; false with `error` when the file cannot be read (a missing file is empty).
bool read_admin_accounts(const std::string& path, std::map<std::string, std::string>& out, std::string& error);
bool write_admin_accounts(const std::string& path, const std::map<std::string, std::string>& accounts,
                          std::string& error);

// A name the file can hold: letters, digits and . _ @ -, at most 64.
bool valid_admin_name(const std::string& name);

}  // namespace gateway
