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

// `queue import DIR`: moves the messages of another instance's spool (DIR, its queue.dir) into
// this one, each with its current envelope (held, attempts, recipients done), both spools
// locked: neither gateway may run meanwhile. A message keeps its ID unless this spool has it.
//
// Each message moves exactly once, whatever the moment a crash comes: it is copied into this
// spool as NEW.import and synced; then its file in DIR is renamed ID.exported.NEW (the commit:
// from here it is this spool's), then NEW.import is renamed NEW, then DIR's marker goes. Neither
// gateway loads an .import or .exported file (they log it); running the import again finishes
// every move a crash interrupted (or undoes the copy of one that had not committed) before it
// goes on.
int offline_import(const SpoolLayout& layout, const std::string& source, std::ostream& out, std::ostream& err);

}  // namespace gateway
