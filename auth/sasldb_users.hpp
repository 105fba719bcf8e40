// The users in a Cyrus sasldb, for `smtpgw user list`. Passwords are set and removed through
// Cyrus's API (auth::set_password, auth::delete_user); Cyrus has no call to enumerate users, so
// the database (Berkeley DB, as Debian's Cyrus uses) is read directly, keys only.
#pragma once

#include <string>
#include <vector>

namespace auth {

struct SasldbUser {
    std::string name;
    std::string realm;
};

// false with `error` when the file cannot be read.
bool list_users(const std::string& sasldb, std::vector<SasldbUser>& out, std::string& error);

}  // namespace auth
