#include "gateway/ops/privileges.hpp"

#include "gateway/common/log.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cerrno>
#include <cstring>

namespace gateway {

namespace {

std::string errno_text() { return std::strerror(errno); }

// `name` in the directory `at` and, if it is a directory, everything in it, to uid:gid. No link
// is followed: the service account may have put one anywhere in these folders, and root must
// not give away what it points to.
bool chown_at(int at, const char* name, const std::string& shown, uid_t uid, gid_t gid, std::string& error) {
    struct stat st {};
    if (fstatat(at, name, &st, AT_SYMLINK_NOFOLLOW) != 0) return true;  // not there yet
    if ((st.st_uid != uid || st.st_gid != gid) && fchownat(at, name, uid, gid, AT_SYMLINK_NOFOLLOW) != 0) {
        error = "cannot give " + shown + " to the gateway's account: " + errno_text();
        return false;
    }
    if (!S_ISDIR(st.st_mode)) return true;
    int fd = openat(at, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) return true;
    DIR* dir = fdopendir(fd);
    if (!dir) {
        ::close(fd);
        return true;
    }
    bool ok = true;
    while (struct dirent* d = readdir(dir)) {
        std::string entry = d->d_name;
        if (entry == "." || entry == "..") continue;
        if (!(ok = chown_at(dirfd(dir), d->d_name, shown + "/" + entry, uid, gid, error))) break;
    }
    closedir(dir);
    return ok;
}

// The spool directory belongs to the account the gateway runs as, everything in it included.
// Its path comes from the configuration, which only root writes, and may lead through links;
// inside it nothing is followed.
bool chown_spool(const std::string& path, uid_t uid, gid_t gid, std::string& error) {
    int fd = ::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return true;  // not there yet
    bool ok = chown_at(fd, ".", path, uid, gid, error);
    ::close(fd);
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
    if (!chown_spool(c.queue.dir, uid, gid, error)) return error;
    if (!chown_at(AT_FDCWD, c.control_socket().c_str(), c.control_socket(), uid, gid, error)) return error;
    if (!c.log.file.empty() && !chown_at(AT_FDCWD, c.log.file.c_str(), c.log.file, uid, gid, error)) return error;
    if (initgroups(c.user.c_str(), gid) != 0 || setgid(gid) != 0 || setuid(uid) != 0)
        return "cannot become " + c.user + ": " + errno_text();
    if (setuid(0) == 0) return "root could be regained after becoming " + c.user;
    log::info(log::Component::Master, "running as " + c.user + " (uid " + std::to_string(uid) + ")");
    return {};
}

}  // namespace gateway
