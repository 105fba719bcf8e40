#include "auth/sasldb_users.hpp"

#include <db.h>

#include <algorithm>
#include <cstring>

namespace auth {

bool list_users(const std::string& sasldb, std::vector<SasldbUser>& out, std::string& error) {
    DB* db = nullptr;
    int r = db_create(&db, nullptr, 0);
    if (r == 0) r = db->open(db, nullptr, sasldb.c_str(), nullptr, DB_UNKNOWN, DB_RDONLY, 0);
    if (r != 0) {
        error = "cannot read " + sasldb + ": " + db_strerror(r);
        if (db) db->close(db, 0);
        return false;
    }
    DBC* cursor = nullptr;
    db->cursor(db, nullptr, &cursor, 0);
    DBT key{}, data{};
    // Keys are "user\0realm\0property"; one entry per user and realm.
    while (cursor && cursor->get(cursor, &key, &data, DB_NEXT) == 0) {
        const char* p = static_cast<const char*>(key.data);
        size_t n = key.size;
        const char* end = p + n;
        const char* user_end = static_cast<const char*>(std::memchr(p, '\0', n));
        if (!user_end) continue;
        const char* realm = user_end + 1;
        const char* realm_end = static_cast<const char*>(std::memchr(realm, '\0', size_t(end - realm)));
        if (!realm_end) continue;
        SasldbUser u{std::string(p, user_end), std::string(realm, realm_end)};
        bool seen = std::any_of(out.begin(), out.end(),
                                [&](const SasldbUser& x) { return x.name == u.name && x.realm == u.realm; });
        if (!seen) out.push_back(u);
    }
    if (cursor) cursor->close(cursor);
    db->close(db, 0);
    std::sort(out.begin(), out.end(), [](const SasldbUser& a, const SasldbUser& b) { return a.name < b.name; });
    return true;
}

}  // namespace auth
