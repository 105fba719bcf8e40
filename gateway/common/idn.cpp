#include "gateway/common/idn.hpp"

#include <idn2.h>

#include <algorithm>
#include <cstdlib>

namespace gateway {

namespace {

bool ascii(std::string_view s) {
    return std::none_of(s.begin(), s.end(), [](char c) { return c & 0x80; });
}

}  // namespace

std::optional<std::string> ascii_domain(std::string_view domain) {
    if (ascii(domain)) {
        std::string out(domain);
        std::transform(out.begin(), out.end(), out.begin(), [](unsigned char c) { return char(std::tolower(c)); });
        return out;
    }
    char* out = nullptr;
    std::string in(domain);
    int r = idn2_to_ascii_8z(in.c_str(), &out, IDN2_NFC_INPUT | IDN2_NONTRANSITIONAL);
    if (r != IDN2_OK) {
        if (out) idn2_free(out);
        return std::nullopt;
    }
    std::string result = out;
    idn2_free(out);
    return result;
}

std::optional<std::string> ascii_address(std::string_view address) {
    auto at = address.rfind('@');
    if (at == std::string_view::npos) return std::string(address);
    auto domain = ascii_domain(address.substr(at + 1));
    if (!domain) return std::nullopt;
    return std::string(address.substr(0, at + 1)) + *domain;
}

bool utf8_local_part(std::string_view address) { return !ascii(address.substr(0, address.rfind('@'))); }

}  // namespace gateway
