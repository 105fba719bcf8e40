#include "gateway/common/json.hpp"

#include "gateway/common/text.hpp"

#include <cstdio>

namespace gateway {

std::string json_string(std::string_view s) {
    std::string out = "\"";
    for (size_t i = 0; i < s.size();) {
        auto c = static_cast<unsigned char>(s[i]);
        if (size_t n = printable_char(s, i)) {
            if (c == '"' || c == '\\') out += '\\';
            out.append(s.substr(i, n));
            i += n;
            continue;
        }
        i++;
        int control = c;  // a C0 control or DEL; a C1 control is U+0080..U+009F in two octets
        if (c == 0xc2 && i < s.size() && static_cast<unsigned char>(s[i]) >= 0x80 &&
            static_cast<unsigned char>(s[i]) <= 0x9f)
            control = static_cast<unsigned char>(s[i++]);
        else if (c >= 0x80)
            control = -1;  // not UTF-8
        switch (control) {
        case -1: out += "\\ufffd"; break;
        case '\n': out += "\\n"; break;
        case '\r': out += "\\r"; break;
        case '\t': out += "\\t"; break;
        default: {
            char buf[8];
            std::snprintf(buf, sizeof buf, "\\u%04x", control);
            out += buf;
        }
        }
    }
    return out + "\"";
}

}  // namespace gateway
