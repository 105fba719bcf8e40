// `smtpgw queue list` and `queue show`, read straight from the spool. Reading is safe while
// the gateway runs: envelopes are only ever replaced by an atomic rename.
#pragma once

#include "gateway/queue/spool.hpp"

#include <ostream>
#include <string>

namespace gateway {

int queue_list(const SpoolLayout& layout, bool json, std::ostream& out);
int queue_show(const SpoolLayout& layout, const std::string& id, bool json, std::ostream& out, std::ostream& err);

// "2026-11-27 18:11:30" in local time; "-" for 0.
std::string format_time(int64_t us);

// One message as `queue list --json` shows it.
std::string envelope_json(const Envelope& e);

}  // namespace gateway
