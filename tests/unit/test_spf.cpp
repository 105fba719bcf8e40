// The openspf.org RFC 7208 test suite (tests/data/rfc7208-tests.yml, BSD licence, see
// rfc7208-tests.LICENSE), run against gateway::spf with the suite's zone data as the DNS. The zone
// data follows the suite's driver conventions: an SPF (type 99) record doubles as a TXT record
// unless the name has TXT entries of its own ("TXT: NONE" meaning none), and TIMEOUT makes a
// query time out unless a record of the asked type came before it.
#include "gateway/dns/spf.hpp"

#include <yaml-cpp/yaml.h>
#include <catch2/catch.hpp>

#include <algorithm>
#include <map>

using namespace gateway::spf;

namespace {

struct Entry {
    std::string type;  // A, AAAA, MX, PTR, TXT, CNAME, or TIMEOUT
    std::string value;
};

std::string lower(std::string s) {
    std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return char(std::tolower(c)); });
    if (!s.empty() && s.back() == '.') s.pop_back();
    return s;
}

std::string joined(const YAML::Node& n) {
    if (n.IsScalar()) return n.as<std::string>();
    std::string out;
    for (const auto& piece : n)
        out += piece.as<std::string>();
    return out;
}

class ZoneDns : public Dns {
public:
    explicit ZoneDns(const YAML::Node& zonedata) {
        for (auto it = zonedata.begin(); it != zonedata.end(); ++it) {
            std::string name = lower(it->first.as<std::string>());
            std::vector<Entry> entries, generated;
            bool has_txt = false;
            YAML::Node list = it->second;
            for (const auto& item : list) {
                if (item.IsScalar()) {  // TIMEOUT
                    entries.push_back({item.as<std::string>(), ""});
                    continue;
                }
                for (auto f = item.begin(); f != item.end(); ++f) {
                    std::string type = f->first.as<std::string>();
                    YAML::Node v = f->second;
                    if (type == "TXT") has_txt = true;
                    if (v.IsScalar() && v.as<std::string>() == "NONE") continue;
                    if (type == "SPF") {
                        if (v.IsSequence() && v.size() == 0) continue;
                        generated.push_back({"TXT", joined(v)});
                        continue;
                    }
                    if (type == "TXT")
                        entries.push_back({type, joined(v)});
                    else if (type == "MX")
                        entries.push_back({type, v[1].as<std::string>()});
                    else
                        entries.push_back({type, v.as<std::string>()});
                }
            }
            if (!has_txt) entries.insert(entries.end(), generated.begin(), generated.end());
            m_zone[name] = entries;
        }
    }

    Answer txt(const std::string& name) override { return lookup(name, "TXT"); }
    Answer a(const std::string& name) override { return lookup(name, "A"); }
    Answer aaaa(const std::string& name) override { return lookup(name, "AAAA"); }
    Answer mx(const std::string& name) override { return lookup(name, "MX"); }
    Answer ptr(const std::string& name) override { return lookup(name, "PTR"); }

private:
    Answer lookup(const std::string& name, const std::string& type, int depth = 0) {
        Answer out;
        auto it = m_zone.find(lower(name));
        if (it == m_zone.end()) {
            out.status = Answer::Status::NotFound;
            return out;
        }
        bool timeout = true;
        for (const auto& e : it->second) {
            if (e.type == "TIMEOUT") {
                if (timeout) out.status = Answer::Status::TempFail;
                return out;
            }
            if (e.type == "CNAME" && type != "CNAME" && depth < 8) return lookup(e.value, type, depth + 1);
            if (e.type == type) {
                timeout = false;
                out.records.push_back(e.value);
            }
        }
        if (out.records.empty()) out.status = Answer::Status::NoData;
        return out;
    }

    std::map<std::string, std::vector<Entry>> m_zone;
};

}  // namespace

TEST_CASE("the openspf RFC 7208 test suite", "[spf]") {
    auto documents = YAML::LoadAllFromFile(std::string(SMTPGW_SOURCE_DIR) + "/tests/data/rfc7208-tests.yml");
    REQUIRE(documents.size() == 16);
    size_t count = 0;
    for (const auto& doc : documents) {
        ZoneDns dns(doc["zonedata"]);
        std::string section = doc["description"].as<std::string>();
        YAML::Node tests = doc["tests"];
        for (auto t = tests.begin(); t != tests.end(); ++t) {
            YAML::Node test = t->second;
            std::string name = t->first.as<std::string>();
            auto ip = conf::IpAddress::parse(test["host"].as<std::string>());
            REQUIRE(ip);
            std::string mailfrom = test["mailfrom"].as<std::string>();
            std::string helo = test["helo"].as<std::string>();
            std::vector<std::string> expected;
            if (test["result"].IsSequence())
                expected = test["result"].as<std::vector<std::string>>();
            else
                expected.push_back(test["result"].as<std::string>());
            Outcome o = check_host(dns, *ip, mailfrom, helo);
            INFO(section << " / " << name << ": got " << to_string(o.result) << " (" << o.mechanism << o.problem
                         << ")");
            CHECK(std::find(expected.begin(), expected.end(), to_string(o.result)) != expected.end());
            // Compared ignoring case: the suite writes %{i} nibbles of IPv6 in capitals, RFC 7208's
            // own example in small letters; DNS does not tell them apart.
            if (test["explanation"] && test["explanation"].as<std::string>() != "DEFAULT" && o.result == Result::Fail)
                CHECK(lower(o.explanation) == lower(test["explanation"].as<std::string>()));
            ++count;
        }
    }
    CHECK(count > 150);
}

TEST_CASE("SPF helpers", "[spf]") {
    CHECK(reverse_name(*conf::IpAddress::parse("192.0.2.25")) == "25.2.0.192.in-addr.arpa");
    CHECK(reverse_name(*conf::IpAddress::parse("2001:db8::1")) ==
          "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa");
    CHECK(std::string(to_string(Result::SoftFail)) == "softfail");
}
