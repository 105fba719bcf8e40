#include "gateway/ops/log_search.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace gateway {

namespace {

constexpr size_t k_block = 1 << 20;
constexpr size_t k_max_line = 64 * 1024;  // a longer line is cut (the gateway writes none)

bool has(const std::string& line, const char* what) { return line.find(what) != std::string::npos; }

}  // namespace

bool valid_log_status(const std::string& status) {
    return status.empty() || status == "sent" || status == "deferred" || status == "bounced" || status == "rejected";
}

bool log_line_matches(const std::string& line, const LogQuery& q) {
    return log_line_matches(line, q, CaseFreeSearch(q.text));
}

bool log_line_matches(const std::string& line, const LogQuery& q, const CaseFreeSearch& text) {
    if (q.status == "sent" && !has(line, "status=sent")) return false;
    if (q.status == "deferred" && !has(line, "status=deferred")) return false;
    if (q.status == "bounced" && !has(line, "status=bounced") && !has(line, "status=expired")) return false;
    if (q.status == "rejected" && !has(line, ": reject: ")) return false;
    return text.in(line);
}

LogPage search_log(const std::vector<std::string>& files, const LogQuery& q) {
    LogPage page;
    size_t matched = 0;
    uint64_t scanned = 0;
    CaseFreeSearch text(q.text);
    auto take = [&](std::string line) {  // false: the page is full and one more was seen
        if (!line.empty() && line.back() == '\r') line.pop_back();
        if (line.empty() || !log_line_matches(line, q, text)) return true;
        if (matched++ < q.skip) return true;
        if (page.lines.size() == q.limit) {
            page.more = true;
            return false;
        }
        page.lines.push_back(std::move(line));
        return true;
    };
    for (size_t f = 0; f < files.size(); ++f) {
        int fd = ::open(files[f].c_str(), O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
            if (f == 0) page.error = "cannot read " + files[f] + ": " + std::strerror(errno);
            continue;
        }
        struct stat st {};
        ::fstat(fd, &st);
        uint64_t end = uint64_t(st.st_size);
        std::string tail;  // the start of a line whose beginning is in an earlier block
        std::string block;
        bool stop = false;
        while (end > 0 && !stop) {
            if (scanned >= k_max_log_scan) {
                page.cut = true;
                break;
            }
            size_t n = size_t(std::min<uint64_t>(k_block, end));
            end -= n;
            block.resize(n);
            ssize_t got = ::pread(fd, block.data(), n, off_t(end));
            if (got != ssize_t(n)) {
                page.error = "cannot read " + files[f] + ": " + std::strerror(got < 0 ? errno : EIO);
                break;
            }
            scanned += n;
            block += tail;
            // Lines from the last to the first; the first piece may continue in the block before.
            size_t stop_at = block.size();
            if (!block.empty() && block.back() == '\n') stop_at--;
            while (true) {
                size_t nl = block.rfind('\n', stop_at == 0 ? 0 : stop_at - 1);
                if (stop_at == 0 || nl == std::string::npos) break;
                std::string line = block.substr(nl + 1, std::min(stop_at - nl - 1, k_max_line));
                if (!take(std::move(line))) {
                    stop = true;
                    break;
                }
                stop_at = nl;
            }
            tail = stop_at > k_max_line ? block.substr(stop_at - k_max_line, k_max_line) : block.substr(0, stop_at);
        }
        if (!stop && end == 0 && !tail.empty() && !take(tail)) stop = true;
        ::close(fd);
        if (stop || page.cut) break;
    }
    return page;
}

}  // namespace gateway
