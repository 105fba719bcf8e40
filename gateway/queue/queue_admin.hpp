// `smtpgw queue flush` and `queue delete` on a spool no gateway is running on: the command takes
// the spool's lock for as long as it works, so a gateway starting meanwhile waits its turn
// (it refuses to start, and says so) instead of reading half-done changes.
#pragma once

#include "gateway/queue/spool.hpp"

#include <ostream>
#include <string>

namespace gateway {

// "" flushes every message: each is tried as soon as the gateway starts.
int offline_flush(const SpoolLayout& layout, const std::string& id, std::ostream& out, std::ostream& err);
// "--all" deletes every message.
int offline_delete(const SpoolLayout& layout, const std::string& id, std::ostream& out, std::ostream& err);
// `queue hold` (hold) and `queue release`; "--all" for every message.
int offline_hold(const SpoolLayout& layout, const std::string& id, bool hold, std::ostream& out, std::ostream& err);

}  // namespace gateway
