// Internationalized domain names (RFC 5890, IDNA2008 with libidn2): the A-label form a domain has
// in the DNS and, for a peer without SMTPUTF8, on the wire. The only place that includes <idn2.h>.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace gateway {

// "münchen.example" -> "xn--mnchen-3ya.example"; an ASCII domain is returned lower-cased; nothing
// for a name that is no valid IDN.
std::optional<std::string> ascii_domain(std::string_view domain);

// The address with its domain in A-label form, when that can be done; the local part is kept.
std::optional<std::string> ascii_address(std::string_view address);

// Octets above 127 in the local part of an address: only SMTPUTF8 carries it (RFC 6531).
bool utf8_local_part(std::string_view address);

}  // namespace gateway
