#include "gateway/ops/admin_accounts.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

namespace gateway {

bool valid_admin_name(const std::string& name) {
    if (name.empty() || name.size() > 64) return false;
    for (char c : name)
        if (!isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '_' && c != '@' && c != '-') return false;
    return true;
}

bool read_admin_accounts(const std::string& path, std::map<std::string, std::string>& out, std::string& error) {
    out.clear();
    std::ifstream in(path);
    if (!in) {
        if (errno == ENOENT) return true;
        error = "cannot read " + path + ": " + std::strerror(errno);
        return false;
    }
    std::string line;
    size_t count = 0;
    while (std::getline(in, line) && ++count <= 10000) {
        auto colon = line.find(':');
        if (line.empty() || line[0] == '#' || colon == std::string::npos) continue;
        std::string name = line.substr(0, colon);
        if (valid_admin_name(name)) out.emplace(name, line.substr(colon + 1));
    }
    return true;
}

bool write_admin_accounts(const std::string& path, const std::map<std::string, std::string>& accounts,
                          std::string& error) {
    std::ostringstream text;
    text << "# smtpgw console accounts: NAME:HASH; managed by smtpgw admin add|delete|list\n";
    for (const auto& [name, hash] : accounts)
        text << name << ":" << hash << "\n";
    std::string data = text.str(), tmp = path + ".tmp";
    ::unlink(tmp.c_str());
    int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    bool ok = fd >= 0 && ::write(fd, data.data(), data.size()) == ssize_t(data.size()) && ::fsync(fd) == 0;
    int saved = errno;
    if (fd >= 0) ::close(fd);
    if (ok && ::rename(tmp.c_str(), path.c_str()) != 0) ok = false, saved = errno;
    if (!ok) {
        ::unlink(tmp.c_str());
        error = "cannot write " + path + ": " + std::strerror(saved);
    }
    return ok;
}

}  // namespace gateway
