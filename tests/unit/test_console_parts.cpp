// The console's Email Log search (newest first over log.file and log.file.1, read backwards in
// blocks) and its Overview's per-minute activity and charts.
#include "gateway/ops/activity.hpp"
#include "gateway/ops/log_search.hpp"

#include <catch2/catch.hpp>

#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <string>

using namespace gateway;

namespace {

struct TempLog {
    std::string path;
    TempLog() {
        char dir[] = "/tmp/smtpgw-logsearch-XXXXXX";
        REQUIRE(mkdtemp(dir));
        path = std::string(dir) + "/smtpgw.log";
    }
    ~TempLog() {
        std::remove(path.c_str());
        std::remove((path + ".1").c_str());
        rmdir(path.substr(0, path.rfind('/')).c_str());
    }
};

std::string line(int i, const char* status) {
    return "Dec  2 10:00:00 gw smtpgw/smtp[1]: Q" + std::to_string(i) + ": to=<user" + std::to_string(i % 7) +
           "@example.org>, relay=mx[127.0.0.1]:25, delay=0.1, dsn=2.0.0, status=" + status + " (250 ok) " +
           std::string(size_t(i % 50), 'x');
}

const char* status(int i) { return i % 3 == 0 ? "deferred" : "sent"; }

}  // namespace

TEST_CASE("the log is searched newest first, a page at a time, across blocks and the rotated file", "[log]") {
    TempLog t;
    const int n = 40000;  // about 5 MB: lines cross the 1 MiB blocks
    {
        std::ofstream old(t.path + ".1"), cur(t.path);
        for (int i = 0; i < n; ++i)
            (i < n / 2 ? old : cur) << line(i, status(i)) << "\n";
    }
    auto page = search_log({t.path, t.path + ".1"}, LogQuery{"", "", 0, 5});
    REQUIRE(page.lines.size() == 5);
    CHECK(page.lines[0] == line(n - 1, status(n - 1)));
    CHECK(page.lines[4] == line(n - 5, status(n - 5)));
    CHECK(page.more);
    CHECK(page.error.empty());

    // Every line once, whole, in order: none lost or cut at a block's edge, none twice.
    page = search_log({t.path, t.path + ".1"}, LogQuery{"", "", 0, size_t(n)});
    REQUIRE(page.lines.size() == size_t(n));
    CHECK_FALSE(page.more);
    for (int i = 0; i < n; ++i)
        if (page.lines[size_t(i)] != line(n - 1 - i, status(n - 1 - i)))
            FAIL("line " << i << " is " << page.lines[size_t(i)]);

    // Status, text (case ignored), and later pages.
    page = search_log({t.path, t.path + ".1"}, LogQuery{"USER3@", "deferred", 0, 5000});
    for (const auto& l : page.lines) {
        CHECK(l.find("user3@") != std::string::npos);
        CHECK(l.find("status=deferred") != std::string::npos);
    }
    size_t expected = 0;
    for (int i = 0; i < n; ++i)
        expected += i % 7 == 3 && i % 3 == 0;
    CHECK(page.lines.size() == expected);
    auto second = search_log({t.path, t.path + ".1"}, LogQuery{"USER3@", "deferred", 10, 10});
    REQUIRE(second.lines.size() == 10);
    CHECK(second.lines[0] == page.lines[10]);
    CHECK(search_log({t.path}, LogQuery{"Q5 ", "", 0, 10}).lines.empty());  // Q5 is in the rotated file
    CHECK(search_log({t.path, t.path + ".1"}, LogQuery{": Q5:", "", 0, 10}).lines.size() == 1);
}

TEST_CASE("rejections, bounces and a missing log", "[log]") {
    TempLog t;
    {
        std::ofstream f(t.path);
        f << "a smtpd[1]: NOQUEUE: reject: RCPT from x[10.0.0.1]: 554 5.7.1 <a@b>: Relay access denied\n"
          << "b qmgr[1]: Q1: from=<s@x>, status=expired, returned to sender\n"
          << "c smtp[1]: Q2: to=<a@b>, status=bounced (550 no)\n"
          << "d smtp[1]: Q3: to=<a@b>, status=sent (250 ok)";  // no newline at the end
    }
    CHECK(search_log({t.path}, LogQuery{"", "rejected", 0, 10}).lines.size() == 1);
    CHECK(search_log({t.path}, LogQuery{"", "bounced", 0, 10}).lines.size() == 2);
    auto sent = search_log({t.path}, LogQuery{"", "sent", 0, 10});
    REQUIRE(sent.lines.size() == 1);
    CHECK(sent.lines[0] == "d smtp[1]: Q3: to=<a@b>, status=sent (250 ok)");
    CHECK(valid_log_status("rejected"));
    CHECK_FALSE(valid_log_status("delivered"));
    auto missing = search_log({t.path + ".none"}, LogQuery{});
    CHECK(missing.error.find("cannot read") == 0);
}

TEST_CASE("activity per minute is the difference of the totals, for 24 hours", "[overview]") {
    Activity a;
    ActivityTotals t;
    a.sample(1000, t, 0);
    t.received = 5, t.delivered = 3;
    a.sample(1001, t, 2);
    t.received = 6, t.delivered = 5, t.rejected = 1;
    auto m = a.minutes(1001, t, 1);
    REQUIRE(m.size() == 2);
    CHECK((m[0].minute == 1000 && m[0].received == 5 && m[0].delivered == 3 && m[0].queue == 2));
    CHECK((m[1].minute == 1001 && m[1].received == 1 && m[1].delivered == 2 && m[1].rejected == 1 && m[1].queue == 1));
    a.sample(1001, t, 1);  // the same minute again: kept once
    CHECK(a.minutes(1001, t, 1).size() == 2);
    for (int64_t minute = 1002; minute < 1002 + 2000; ++minute)
        a.sample(minute, t, 0);
    auto day = a.minutes(1002 + 1999, t, 0);
    CHECK(day.size() == 24 * 60 + 1);
    CHECK(day.back().minute == 1002 + 1999);
}

TEST_CASE("a chart escapes its names and draws one line a series", "[overview]") {
    std::string svg =
        svg_chart("<t>", {100, 101, 102}, {{"a<b", "#f00", {1, 2, 3}}, {"c\"", "#0f0", {0, 0, 7}, false}}, 102);
    CHECK(svg.find("<title>&lt;t&gt;</title>") != std::string::npos);
    CHECK(svg.find("a&lt;b 6") != std::string::npos);   // a sum
    CHECK(svg.find("c&quot; 7") != std::string::npos);  // a level: the last value
    CHECK(svg.find("<script") == std::string::npos);
    CHECK(svg.find("style=") == std::string::npos);
    size_t lines = 0;
    for (size_t p = svg.find("<polyline"); p != std::string::npos; p = svg.find("<polyline", p + 1))
        lines++;
    CHECK(lines == 2);
    CHECK(svg.find(">10</text>") != std::string::npos);  // the scale: 7 rounds up to 10
}

TEST_CASE("a search matches ASCII letters of either case, and nothing else loosely", "[log]") {
    CHECK(CaseFreeSearch("").in(""));
    CHECK(CaseFreeSearch("").in("anything"));
    CHECK(CaseFreeSearch("SINK@").in("to=<sink@sink.test>"));
    CHECK(CaseFreeSearch("connection refused").in("connect to mx[127.0.0.1]:25: Connection Refused"));
    CHECK(CaseFreeSearch("abc").in("xxABC"));  // at the very end
    CHECK(CaseFreeSearch("abc").in("abc"));
    CHECK_FALSE(CaseFreeSearch("abc").in("ab"));
    CHECK_FALSE(CaseFreeSearch("abcd").in("abcabcab"));
    CHECK_FALSE(CaseFreeSearch("[").in("{"));  // '[' and '{' are 32 apart, but no letters
    CHECK_FALSE(CaseFreeSearch("@").in("`"));
    CHECK(CaseFreeSearch("\xc3\xa9t\xc3\xa9").in("\xc3\xa9T\xc3\xa9"));  // other octets as they are
    CHECK_FALSE(CaseFreeSearch("\xc3\xa9").in("\xc3\x89"));              // É is not é: ASCII only

    // Against the plain definition, on texts made of few letters so that near misses abound.
    auto fold = [](std::string s) {
        for (char& c : s)
            if (c >= 'A' && c <= 'Z') c = char(c - 'A' + 'a');
        return s;
    };
    uint32_t seed = 7;
    auto next = [&] { return seed = seed * 1103515245u + 12345u, (seed >> 16) & 0x7fff; };
    const char letters[] = "aAbB.";
    for (int round = 0; round < 20000; ++round) {
        std::string text, needle;
        for (unsigned i = next() % 12; i > 0; --i)
            text += letters[next() % 5];
        for (unsigned i = next() % 4; i > 0; --i)
            needle += letters[next() % 5];
        bool expected = fold(text).find(fold(needle)) != std::string::npos;
        if (CaseFreeSearch(needle).in(text) != expected) FAIL("\"" << needle << "\" in \"" << text << "\"");
    }
}
