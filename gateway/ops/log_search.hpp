// The console's Email Log: the lines of log.file (and of its first rotation, log.file.1) that
// match a search, newest first, a page at a time, exactly as they were logged. The files are
// read backwards in blocks, so the newest lines come first and memory holds one block and one
// page whatever the size of the log. Blocking: it runs on libuv's thread pool.
#pragma once

#include "gateway/common/text.hpp"

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace gateway {

struct LogQuery {
    std::string text;    // a queue ID, an address, any words of the line; case does not matter
    std::string status;  // "", "sent", "deferred", "bounced" (with expired) or "rejected"
    size_t skip = 0;     // matching lines passed over (earlier pages)
    size_t limit = 100;  // lines wanted
};

struct LogPage {
    std::vector<std::string> lines;  // newest first
    bool more = false;               // further matching lines follow
    bool cut = false;                // the search stopped at k_max_scan: older lines were not read
    std::string error;               // the file cannot be read
};

// The status names a query may filter on.
bool valid_log_status(const std::string& status);
bool log_line_matches(const std::string& line, const LogQuery& q);
bool log_line_matches(const std::string& line, const LogQuery& q, const CaseFreeSearch& text);  // with q.text
LogPage search_log(const std::vector<std::string>& files, const LogQuery& q);

constexpr uint64_t k_max_log_scan = 1ull << 30;  // bytes read for one search at most

}  // namespace gateway
