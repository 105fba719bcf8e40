// The YAML walker of the configuration loader: shapes and types of values, with each problem
// recorded at the position of the node at fault. Internal to conf/.
#pragma once

#include "conf/config.hpp"
#include "conf/config_load.hpp"
#include "conf/units.hpp"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <map>
#include <string>
#include <vector>

namespace conf {

struct Field {
    YAML::Node key;
    YAML::Node value;
};
using Fields = std::map<std::string, Field>;

class Walker {
public:
    Walker(std::string file, std::vector<Diagnostic>& diags) : m_file(std::move(file)), m_diags(diags) {}

    Mark mark(const YAML::Node& n) const {
        auto m = n.Mark();
        if (m.is_null()) return {};
        return {m.line + 1, m.column + 1};
    }

    void error(const YAML::Node& n, const std::string& path, const std::string& text) {
        auto m = mark(n);
        m_diags.push_back({m_file, m.line, m.column, true, path + ": " + text});
    }
    void warning(const YAML::Node& n, const std::string& path, const std::string& text) {
        auto m = mark(n);
        m_diags.push_back({m_file, m.line, m.column, false, path + ": " + text});
    }

    // A mapping whose keys must all be in `allowed`; unknown and repeated keys are errors.
    std::optional<Fields> mapping(const YAML::Node& n, const std::string& path,
                                  std::initializer_list<const char*> allowed) {
        if (!n.IsMap()) {
            error(n, path, "expected a mapping of keys");
            return std::nullopt;
        }
        Fields fields;
        for (auto it = n.begin(); it != n.end(); ++it) {
            if (!it->first.IsScalar()) {
                error(it->first, path, "keys must be plain names");
                continue;
            }
            auto key = it->first.Scalar();
            std::string where = path.empty() ? key : path + "." + key;
            bool known = false;
            for (const char* a : allowed)
                known = known || key == a;
            if (!known) {
                error(it->first, where, "unknown key" + suggestion(key, allowed));
                continue;
            }
            if (fields.count(key)) {
                error(it->first, where, "key given more than once");
                continue;
            }
            fields[key] = {it->first, it->second};
        }
        return fields;
    }

    bool scalar(const YAML::Node& n, const std::string& path, std::string& out) {
        if (!n.IsScalar()) {
            error(n, path, n.IsNull() ? "expected a value" : "expected a single value, not a list or mapping");
            return false;
        }
        out = n.Scalar();
        return true;
    }

    void string(const Fields& f, const char* key, const std::string& path, std::string& out) {
        if (auto* n = find(f, key)) scalar(*n, join(path, key), out);
    }

    void boolean(const Fields& f, const char* key, const std::string& path, bool& out) {
        auto* n = find(f, key);
        std::string s;
        if (!n || !scalar(*n, join(path, key), s)) return;
        if (s == "true" || s == "yes" || s == "on")
            out = true;
        else if (s == "false" || s == "no" || s == "off")
            out = false;
        else
            error(*n, join(path, key), "\"" + s + "\" is not true or false");
    }

    template <typename T>
    void number(const Fields& f, const char* key, const std::string& path, T& out, uint64_t min, uint64_t max) {
        auto* n = find(f, key);
        std::string s;
        if (!n || !scalar(*n, join(path, key), s)) return;
        uint64_t v = 0;
        bool ok = !s.empty() && s.size() <= 19;
        for (char c : s) {
            ok = ok && c >= '0' && c <= '9';
            v = v * 10 + uint64_t(c - '0');
        }
        if (!ok || v < min || v > max) {
            error(*n, join(path, key),
                  "\"" + s + "\" is not a whole number from " + std::to_string(min) + " to " + std::to_string(max));
            return;
        }
        out = T(v);
    }

    void duration(const Fields& f, const char* key, const std::string& path, Seconds& out) {
        auto* n = find(f, key);
        std::string s;
        if (!n || !scalar(*n, join(path, key), s)) return;
        if (auto d = parse_duration(s))
            out = *d;
        else
            error(*n, join(path, key), "\"" + s + "\" is not a duration (a number with s, m, h or d)");
    }

    void size(const Fields& f, const char* key, const std::string& path, uint64_t& out) {
        auto* n = find(f, key);
        std::string s;
        if (!n || !scalar(*n, join(path, key), s)) return;
        if (auto v = parse_size(s))
            out = *v;
        else
            error(*n, join(path, key), "\"" + s + "\" is not a size (a number of bytes, or with k, M or G)");
    }

    template <typename E>
    void choice(const Fields& f, const char* key, const std::string& path, E& out,
                std::initializer_list<std::pair<const char*, E>> options) {
        auto* n = find(f, key);
        std::string s;
        if (!n || !scalar(*n, join(path, key), s)) return;
        std::string names;
        for (auto& [name, value] : options) {
            if (s == name) {
                out = value;
                return;
            }
            names += names.empty() ? name : std::string(" | ") + name;
        }
        error(*n, join(path, key), "\"" + s + "\" is not one of " + names);
    }

    // A list of strings; a single string is taken as a list of one.
    bool strings(const YAML::Node& n, const std::string& path, std::vector<std::string>& out) {
        out.clear();
        if (n.IsScalar()) {
            out.push_back(n.Scalar());
            return true;
        }
        if (!n.IsSequence()) {
            error(n, path, "expected a list of values");
            return false;
        }
        bool ok = true;
        for (const auto& item : n) {
            std::string s;
            if (scalar(item, path, s))
                out.push_back(s);
            else
                ok = false;
        }
        return ok;
    }

    static const YAML::Node* find(const Fields& f, const char* key) {
        auto it = f.find(key);
        return it == f.end() ? nullptr : &it->second.value;
    }
    static std::string join(const std::string& path, const char* key) { return path.empty() ? key : path + "." + key; }

    const std::string& file() const { return m_file; }

private:
    static size_t distance(const std::string& a, const std::string& b) {
        std::vector<size_t> row(b.size() + 1);
        for (size_t j = 0; j <= b.size(); ++j)
            row[j] = j;
        for (size_t i = 1; i <= a.size(); ++i) {
            size_t diagonal = row[0];
            row[0] = i;
            for (size_t j = 1; j <= b.size(); ++j) {
                size_t up = row[j];
                row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] == b[j - 1] ? 0 : 1)});
                diagonal = up;
            }
        }
        return row[b.size()];
    }

    static std::string suggestion(const std::string& key, std::initializer_list<const char*> allowed) {
        for (const char* a : allowed)
            if (distance(key, a) <= 2) return " (did you mean " + std::string(a) + "?)";
        std::string list;
        for (const char* a : allowed)
            list += list.empty() ? a : std::string(", ") + a;
        return " (expected one of: " + list + ")";
    }

    std::string m_file;
    std::vector<Diagnostic>& m_diags;
};

extern const std::initializer_list<std::pair<const char*, Security>> k_security;

// Sections loaded in config_sections.cpp.
void load_sender(Walker& w, const YAML::Node& n, Config& c);
void load_routes(Walker& w, const YAML::Node& n, Config& c);
void load_upstreams(Walker& w, const YAML::Node& n, Config& c);
void load_policy(Walker& w, const YAML::Node& n, Config& c);
void load_dkim(Walker& w, const YAML::Node& n, Config& c);
// A rate like "30/m" (per s, m, h or d) at f[key].
void load_rate(Walker& w, const Fields& f, const char* key, const std::string& path, Rate& out);
// A list of networks (config_load.cpp).
void load_networks(Walker& w, const YAML::Node& n, const std::string& path, std::vector<Cidr>& out);

}  // namespace conf
