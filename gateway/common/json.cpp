#include "gateway/common/json.hpp"

#include "gateway/common/text.hpp"

#include <cstdio>
#include <cstdlib>

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

namespace {

constexpr size_t k_max_json = 1 << 20;
constexpr int k_max_depth = 32;

class JsonParser {
public:
    explicit JsonParser(std::string_view t) : m_t(t) {}

    bool document(JsonValue& out, std::string& error) {
        if (!value(out, 0)) {
            error = m_error + " at offset " + std::to_string(m_i);
            return false;
        }
        space();
        if (m_i != m_t.size()) {
            error = "text after the value at offset " + std::to_string(m_i);
            return false;
        }
        return true;
    }

private:
    std::string_view m_t;
    size_t m_i = 0;
    std::string m_error;

    bool fail(const char* why) {
        m_error = why;
        return false;
    }
    void space() {
        while (m_i < m_t.size() && (m_t[m_i] == ' ' || m_t[m_i] == '\t' || m_t[m_i] == '\n' || m_t[m_i] == '\r'))
            m_i++;
    }
    bool literal(std::string_view word) {
        if (m_t.substr(m_i, word.size()) != word) return fail("unexpected character");
        m_i += word.size();
        return true;
    }

    bool value(JsonValue& v, int depth) {
        if (depth >= k_max_depth) return fail("nested too deep");
        space();
        if (m_i >= m_t.size()) return fail("unexpected end");
        char c = m_t[m_i];
        switch (c) {
        case '{': return object(v, depth);
        case '[': return array(v, depth);
        case '"': v.type = JsonValue::Type::String; return string(v.string);
        case 't':
            v.type = JsonValue::Type::Boolean;
            v.boolean = true;
            return literal("true");
        case 'f': v.type = JsonValue::Type::Boolean; return literal("false");
        case 'n': v.type = JsonValue::Type::Null; return literal("null");
        default: return number(v);
        }
    }

    bool object(JsonValue& v, int depth) {
        v.type = JsonValue::Type::Object;
        m_i++;
        space();
        if (m_i < m_t.size() && m_t[m_i] == '}') return ++m_i, true;
        for (;;) {
            space();
            if (m_i >= m_t.size() || m_t[m_i] != '"') return fail("expected a member name");
            std::string name;
            if (!string(name)) return false;
            space();
            if (m_i >= m_t.size() || m_t[m_i] != ':') return fail("expected ':'");
            m_i++;
            JsonValue member;
            if (!value(member, depth + 1)) return false;
            if (!v.get(name)) v.members.emplace_back(std::move(name), std::move(member));
            space();
            if (m_i < m_t.size() && m_t[m_i] == ',') {
                m_i++;
                continue;
            }
            if (m_i < m_t.size() && m_t[m_i] == '}') return ++m_i, true;
            return fail("expected ',' or '}'");
        }
    }

    bool array(JsonValue& v, int depth) {
        v.type = JsonValue::Type::Array;
        m_i++;
        space();
        if (m_i < m_t.size() && m_t[m_i] == ']') return ++m_i, true;
        for (;;) {
            v.items.emplace_back();
            if (!value(v.items.back(), depth + 1)) return false;
            space();
            if (m_i < m_t.size() && m_t[m_i] == ',') {
                m_i++;
                continue;
            }
            if (m_i < m_t.size() && m_t[m_i] == ']') return ++m_i, true;
            return fail("expected ',' or ']'");
        }
    }

    bool number(JsonValue& v) {
        size_t start = m_i;
        if (m_i < m_t.size() && m_t[m_i] == '-') m_i++;
        size_t digits = m_i;
        auto run = [&] {
            size_t from = m_i;
            while (m_i < m_t.size() && m_t[m_i] >= '0' && m_t[m_i] <= '9')
                m_i++;
            return m_i > from;
        };
        if (!run()) return fail("unexpected character");
        if (m_t[digits] == '0' && m_i - digits > 1) return fail("leading zero");
        if (m_i < m_t.size() && m_t[m_i] == '.') {
            m_i++;
            if (!run()) return fail("expected a digit");
        }
        if (m_i < m_t.size() && (m_t[m_i] == 'e' || m_t[m_i] == 'E')) {
            m_i++;
            if (m_i < m_t.size() && (m_t[m_i] == '+' || m_t[m_i] == '-')) m_i++;
            if (!run()) return fail("expected a digit");
        }
        v.type = JsonValue::Type::Number;
        v.number = std::strtod(std::string(m_t.substr(start, m_i - start)).c_str(), nullptr);
        return true;
    }

    static void utf8(std::string& out, unsigned cp) {
        if (cp < 0x80) {
            out += char(cp);
        } else if (cp < 0x800) {
            out += char(0xc0 | (cp >> 6));
            out += char(0x80 | (cp & 0x3f));
        } else if (cp < 0x10000) {
            out += char(0xe0 | (cp >> 12));
            out += char(0x80 | ((cp >> 6) & 0x3f));
            out += char(0x80 | (cp & 0x3f));
        } else {
            out += char(0xf0 | (cp >> 18));
            out += char(0x80 | ((cp >> 12) & 0x3f));
            out += char(0x80 | ((cp >> 6) & 0x3f));
            out += char(0x80 | (cp & 0x3f));
        }
    }

    bool hex4(unsigned& cp) {
        if (m_i + 4 > m_t.size()) return fail("short \\u escape");
        cp = 0;
        for (int k = 0; k < 4; k++) {
            char h = m_t[m_i++];
            cp <<= 4;
            if (h >= '0' && h <= '9')
                cp |= unsigned(h - '0');
            else if (h >= 'a' && h <= 'f')
                cp |= unsigned(h - 'a' + 10);
            else if (h >= 'A' && h <= 'F')
                cp |= unsigned(h - 'A' + 10);
            else
                return fail("bad \\u escape");
        }
        return true;
    }

    bool string(std::string& out) {
        m_i++;  // the opening quote
        while (m_i < m_t.size()) {
            char c = m_t[m_i++];
            if (c == '"') return true;
            if (static_cast<unsigned char>(c) < 0x20) return fail("control character in a string");
            if (c != '\\') {
                out += c;
                continue;
            }
            if (m_i >= m_t.size()) break;
            char e = m_t[m_i++];
            switch (e) {
            case '"':
            case '\\':
            case '/': out += e; break;
            case 'b': out += '\b'; break;
            case 'f': out += '\f'; break;
            case 'n': out += '\n'; break;
            case 'r': out += '\r'; break;
            case 't': out += '\t'; break;
            case 'u': {
                unsigned cp;
                if (!hex4(cp)) return false;
                if (cp >= 0xd800 && cp < 0xdc00 && m_t.substr(m_i, 2) == "\\u") {
                    m_i += 2;
                    unsigned low;
                    if (!hex4(low)) return false;
                    if (low >= 0xdc00 && low < 0xe000)
                        cp = 0x10000 + ((cp - 0xd800) << 10) + (low - 0xdc00);
                    else
                        cp = 0xfffd;
                } else if (cp >= 0xd800 && cp < 0xe000) {
                    cp = 0xfffd;
                }
                utf8(out, cp);
                break;
            }
            default: return fail("bad escape");
            }
        }
        return fail("unterminated string");
    }
};

}  // namespace

const JsonValue* JsonValue::get(std::string_view name) const {
    if (type != Type::Object) return nullptr;
    for (const auto& [n, v] : members)
        if (n == name) return &v;
    return nullptr;
}

std::string JsonValue::text(std::string_view name) const {
    const JsonValue* v = get(name);
    if (!v) return {};
    if (v->type == Type::String) return v->string;
    if (v->type == Type::Number && v->number >= -9.0e15 && v->number <= 9.0e15) {
        char buf[32];
        std::snprintf(buf, sizeof buf, "%.0f", v->number);
        return buf;
    }
    return {};
}

bool json_parse(std::string_view text, JsonValue& out, std::string& error) {
    out = JsonValue{};
    if (text.size() > k_max_json) {
        error = "longer than 1 MiB";
        return false;
    }
    return JsonParser(text).document(out, error);
}

}  // namespace gateway
