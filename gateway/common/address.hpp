// Mailbox and path syntax (RFC 5321 4.1.2, RFC 6531 3.3), as free functions returning a
// result with an error field. Parsing is lenient where appliances are sloppy and Postfix is
// lenient too (a path without angle brackets, spaces after the colon) and strict where a
// mistake would change the meaning of an address.
#pragma once

#include <string>
#include <string_view>

namespace gateway {

enum class AddressError {
    None,
    Syntax,     // not a path at all: 501 5.1.3
    NoDomain,   // "user" or "user@": 553 5.1.3 need fully-qualified address
    BadDomain,  // the part after @ is not a domain or address literal: 553 5.1.3
    BadLocal,   // the local part is neither a dot-string nor a quoted string: 553 5.1.3
    NeedsUtf8,  // non-ASCII without SMTPUTF8: 553 5.6.7 (RFC 6531 3.5)
    TooLong,    // RFC 5321 4.5.3.1.3: path over 256 octets: 553 5.1.3
};

struct PathResult {
    AddressError error = AddressError::None;
    std::string address;    // "local@domain" as given (source route dropped); empty for <>
    bool null = false;      // the null reverse-path <>
    bool utf8 = false;      // contains non-ASCII octets
    std::string_view rest;  // text after the path: the ESMTP parameters
};

// Parses the argument after "FROM:" or "TO:": optional spaces, then <path> or a bare address.
PathResult parse_path(std::string_view text, bool allow_null, bool smtputf8);

// The domain part of an address, lower-cased (ASCII only); empty if there is none.
std::string domain_of(std::string_view address);

// True for a syntactically valid domain or address literal ([1.2.3.4], [IPv6:...]).
bool is_valid_domain(std::string_view domain, bool allow_utf8);

}  // namespace gateway
