// SPF (RFC 7208): record parsing, macro expansion, include/redirect/exp, the lookup limits. The
// input is the zone: its lines are the TXT records, handed out by name, so that include: and
// redirect= reach other fuzzed records.
#include "fuzz.hpp"
#include "gateway/dns/spf.hpp"

#include <cstdlib>
#include <string>
#include <vector>

using namespace gateway;

namespace {

class FuzzDns : public spf::Dns {
public:
    explicit FuzzDns(std::string_view zone) {
        size_t pos = 0;
        while (pos <= zone.size() && m_lines.size() < 64) {
            size_t nl = zone.find('\n', pos);
            if (nl == std::string_view::npos) nl = zone.size();
            m_lines.emplace_back(zone.substr(pos, nl - pos));
            pos = nl + 1;
        }
    }
    spf::Answer txt(const std::string& name) override {
        if (++m_queries > 200) std::abort();  // the limits of RFC 7208 4.6.4 are not kept
        size_t h = 0;
        for (char c : name)
            h = h * 31 + static_cast<unsigned char>(c);
        spf::Answer a;
        if (name == "example.com")
            a.records = {m_lines[0]};
        else if (h % 5 == 0)
            a.status = spf::Answer::Status::NotFound;
        else
            a.records = {m_lines[h % m_lines.size()]};
        return a;
    }
    spf::Answer a(const std::string&) override { return {spf::Answer::Status::Ok, {"192.0.2.1"}}; }
    spf::Answer aaaa(const std::string&) override { return {spf::Answer::Status::NoData, {}}; }
    spf::Answer mx(const std::string&) override { return {spf::Answer::Status::Ok, {"mx.example.com"}}; }
    spf::Answer ptr(const std::string&) override { return {spf::Answer::Status::Ok, {"host.example.com"}}; }

private:
    std::vector<std::string> m_lines;
    unsigned m_queries = 0;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    FuzzDns dns(fuzz::bytes(data, size));
    auto ip = *conf::IpAddress::parse(size % 2 ? "192.0.2.1" : "2001:db8::1");
    auto out = spf::check_host(dns, ip, "sender@example.com", "helo.example.com");
    // The term past the tenth is counted, not looked up, and ends the evaluation (RFC 7208 4.6.4).
    if (out.lookups > 11 || (out.lookups > 10 && out.result != spf::Result::PermError)) std::abort();
    (void)spf::to_string(out.result);
    return 0;
}
