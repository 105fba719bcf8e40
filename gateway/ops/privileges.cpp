#include "gateway/ops/privileges.hpp"

#include "gateway/common/log.hpp"

#include <dirent.h>
#include <grp.h>
#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cerrno>
#include <cstring>

namespace gateway {

namespace {

std::string errno_text() { return std::strerror(errno); }

// The spool belongs to the account the gateway runs as, every file in it included.
bool chown_tree(const std::string& path, uid_t uid, gid_t gid, std::string& error) {
    struct stat st {};
    if (lstat(path.c_str(), &st) != 0) return true;  // not there yet
    if (S_ISLNK(st.st_mode)) return true;
    if ((st.st_uid != uid || st.st_gid != gid) && lchown(path.c_str(), uid, gid) != 0) {
        error = "cannot give " + path + " to the gateway's account: " + errno_text();
        return false;
    }
    if (!S_ISDIR(st.st_mode)) return true;
    DIR* dir = opendir(path.c_str());
    if (!dir) return true;
    bool ok = true;
    while (struct dirent* d = readdir(dir)) {
        std::string name = d->d_name;
        if (name == "." || name == "..") continue;
        if (!(ok = chown_tree(path + "/" + name, uid, gid, error))) break;
    }
    closedir(dir);
    return ok;
}

}  // namespace

std::string root_problem(const conf::Config& c) {
    if (geteuid() != 0 || !c.user.empty() || c.source == "(default)") return {};
    return "smtpgw would run as root: set user: to the account it should run as once its ports are bound (the "
           "Debian package creates smtpgw), or user: root to keep root";
}

std::string drop_privileges(const conf::Config& c) {
    if (geteuid() != 0) {
        struct passwd* me = getpwuid(geteuid());
        if (!c.user.empty() && (!me || c.user != me->pw_name))
            log::warning(log::Component::Master, "user: " + c.user + " is not used: smtpgw was not started as root");
        return {};
    }
    if (c.user.empty() || c.user == "root") {
        log::info(log::Component::Master, "running as root" + std::string(c.user.empty() ? " (no user: set)" : ""));
        return {};
    }
    struct passwd* pw = getpwnam(c.user.c_str());
    if (!pw) return "user: no account named " + c.user;
    uid_t uid = pw->pw_uid;
    gid_t gid = pw->pw_gid;
    std::string error;
    if (!chown_tree(c.queue.dir, uid, gid, error)) return error;
    if (!chown_tree(c.control_socket(), uid, gid, error)) return error;
    if (!c.log.file.empty() && !chown_tree(c.log.file, uid, gid, error)) return error;
    if (initgroups(c.user.c_str(), gid) != 0 || setgid(gid) != 0 || setuid(uid) != 0)
        return "cannot become " + c.user + ": " + errno_text();
    if (setuid(0) == 0) return "root could be regained after becoming " + c.user;
    log::info(log::Component::Master, "running as " + c.user + " (uid " + std::to_string(uid) + ")");
    return {};
}

}  // namespace gateway
