#include "gateway/smtpd/sender_rewrite.hpp"

#include <catch2/catch.hpp>

using namespace gateway;

namespace {

conf::SenderPolicy policy(std::vector<std::pair<std::string, std::string>> rules) {
    conf::SenderPolicy p;
    for (auto& [from, to] : rules)
        p.rewrite.push_back(conf::RewriteRule{from, to, {}});
    return p;
}

}  // namespace

TEST_CASE("sender rewriting: first match wins, each kind of pattern", "[rewrite]") {
    SenderRewriter r(policy({
        {"printer7@corp.example", "printers@example.com"},               // 0: exact address
        {"printer-*@*.corp.example", "printers@example.com"},            // 1: glob on both sides
        {"*@scanner.local", "scans@example.com"},                        // 2: glob local part
        {"/^(.+)@legacy\\.example$/", "$1@example.com"},                 // 3: regex with a capture
        {"/^([a-z]+)\\.([a-z]+)@old\\.example$/", "$2.$1@example.com"},  // 4: two captures
        {"app.internal", "app@example.com"},                             // 5: a domain
        {"/^(.*)$/", "$1 x@example.com"},                                // 6: gives no valid address
    }));
    struct Case {
        const char* sender;
        const char* expect;  // "" for unchanged
        size_t rule;
    } cases[] = {
        {"printer7@corp.example", "printers@example.com", 0},
        {"PRINTER7@Corp.Example", "printers@example.com", 0},
        {"printer-3@floor2.corp.example", "printers@example.com", 1},
        {"anything@scanner.local", "scans@example.com", 2},
        {"jo@legacy.example", "jo@example.com", 3},
        {"ann.lee@old.example", "lee.ann@example.com", 4},
        {"svc@app.internal", "app@example.com", 5},
        {"", "", 0},  // the null sender stays <>
    };
    for (const auto& c : cases) {
        INFO(c.sender);
        auto out = r.rewrite(c.sender);
        if (*c.expect == 0) {
            CHECK_FALSE(out);
        } else {
            REQUIRE(out);
            CHECK(out->address == c.expect);
            CHECK(out->rule == c.rule);
        }
    }
    std::optional<RewriteProblem> problem;
    CHECK_FALSE(r.rewrite("someone@elsewhere.example", &problem));
    REQUIRE(problem);
    CHECK(problem->rule == 6);
    CHECK(problem->result == "someone@elsewhere.example x@example.com");
}

TEST_CASE("a rule that gives the same address is no rewrite", "[rewrite]") {
    SenderRewriter r(policy({{"*@example.com", "scans@example.com"}}));
    CHECK_FALSE(r.rewrite("scans@example.com"));
    CHECK_FALSE(r.rewrite("Scans@Example.com"));
    CHECK(r.rewrite("other@example.com"));
}

TEST_CASE("substitution", "[rewrite]") {
    CHECK(substitute("$1@example.com", {"all", "jo"}) == "jo@example.com");
    CHECK(substitute("$0", {"all"}) == "all");
    CHECK(substitute("$2-$9$$", {"a", "b", "c"}) == "c-$");
    CHECK(substitute("plain@x.example", {}) == "plain@x.example");
}
