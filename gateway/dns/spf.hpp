// SPF (RFC 7208): check_host() for `smtpgw doctor`, which asks whether the sender domains of the
// rewrite policy authorize the address the gateway sends from. It runs in the command, not in the
// gateway, so its DNS interface is synchronous; the doctor answers it from c-ares on a private
// loop, the tests from the openspf suite's zone data.
#pragma once

#include "conf/cidr.hpp"

#include <string>
#include <vector>

namespace gateway::spf {

enum class Result { None, Neutral, Pass, Fail, SoftFail, TempError, PermError };
const char* to_string(Result r);  // "pass", "permerror", ...

struct Answer {
    enum class Status { Ok, NoData, NotFound, TempFail } status = Status::Ok;
    // TXT: each record with its strings joined; A and AAAA: addresses as text; MX: host names
    // by preference; PTR: names.
    std::vector<std::string> records;
};

class Dns {
public:
    virtual ~Dns() = default;
    virtual Answer txt(const std::string& name) = 0;
    virtual Answer a(const std::string& name) = 0;
    virtual Answer aaaa(const std::string& name) = 0;
    virtual Answer mx(const std::string& name) = 0;
    virtual Answer ptr(const std::string& name) = 0;  // "4.3.2.1.in-addr.arpa"
};

struct Outcome {
    Result result = Result::None;
    std::string record;       // the SPF record of the domain asked about, when there is one
    std::string mechanism;    // what decided: "ip4:192.0.2.0/24", "-all", "default", "include:..."
    std::string explanation;  // for fail: the domain's exp= text, or empty
    std::string problem;      // for temperror and permerror: why
    unsigned lookups = 0;     // DNS-querying terms evaluated (at most 10)
};

// `sender` is the MAIL FROM address ("" for the null sender, when `helo` is checked instead).
Outcome check_host(Dns& dns, const conf::IpAddress& ip, const std::string& sender, const std::string& helo);

// The reverse-lookup name of an address: "4.3.2.1.in-addr.arpa", or the nibbles under ip6.arpa.
std::string reverse_name(const conf::IpAddress& ip);

}  // namespace gateway::spf
