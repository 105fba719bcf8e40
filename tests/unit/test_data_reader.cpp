#include "gateway/smtpd/data_reader.hpp"

#include <catch2/catch.hpp>

using namespace gateway;

namespace {

struct Outcome {
    std::string content;
    bool done = false;
    DataError error = DataError::None;
    size_t consumed = 0;
};

Outcome run(std::string_view input, DataLimits limits, size_t step) {
    DataReader r(limits);
    Outcome o;
    size_t pos = 0;
    while (pos < input.size() && !r.done()) {
        auto piece = input.substr(pos, std::min(step, input.size() - pos));
        size_t used = r.feed(piece, o.content);
        pos += used;
        if (used < piece.size()) break;
    }
    o.done = r.done();
    o.error = r.error();
    o.consumed = pos;
    return o;
}

const DataLimits k_default{1 << 20, 4096, false};
const DataLimits k_reject_lf{1 << 20, 4096, true};

}  // namespace

TEST_CASE("DATA content: end of data, unstuffing, line ends", "[data]") {
    struct Case {
        const char* name;
        std::string input;
        DataLimits limits;
        std::string content;
        bool done;
        DataError error;
        size_t consumed;  // 0: all of the input
    } cases[] = {
        {"simple", "Subject: x\r\n\r\nbody\r\n.\r\n", k_default, "Subject: x\r\n\r\nbody\r\n", true, DataError::None,
         0},
        {"empty message", ".\r\n", k_default, "", true, DataError::None, 0},
        {"dot-stuffed line", "..leading dot\r\n.\r\n", k_default, ".leading dot\r\n", true, DataError::None, 0},
        {"a lone stuffed dot", "a\r\n..\r\n.\r\n", k_default, "a\r\n.\r\n", true, DataError::None, 0},
        {"dot inside a line", "a.b\r\n.\r\n", k_default, "a.b\r\n", true, DataError::None, 0},
        {"bytes after the end stay for the next command", "x\r\n.\r\nQUIT\r\n", k_default, "x\r\n", true,
         DataError::None, 6},
        {"not finished", "line one\r\nline two", k_default, "line one\r\nline two", false, DataError::None, 0},
        // RFC 5321 2.3.8: a bare LF is a line end here (default), stored as CRLF...
        {"bare LF normalised", "a\nb\r\n.\r\n", k_default, "a\r\nb\r\n", true, DataError::None, 0},
        // ...but never part of the end-of-data sequence (SMTP smuggling).
        {"LF.CRLF does not end", "a\n.\r\nMAIL FROM:<evil@x>\r\n.\r\n", k_default, "a\r\n\r\nMAIL FROM:<evil@x>\r\n",
         true, DataError::None, 0},
        {"CRLF.LF does not end", "a\r\n.\nMAIL FROM:<evil@x>\r\n.\r\n", k_default, "a\r\n\r\nMAIL FROM:<evil@x>\r\n",
         true, DataError::None, 0},
        {"LF.LF does not end", "a\n.\nRCPT\r\n.\r\n", k_default, "a\r\n\r\nRCPT\r\n", true, DataError::None, 0},
        {"bare LF refused when the listener says so", "a\nb\r\n.\r\n", k_reject_lf, "", true, DataError::BareLf, 0},
        {"bare CR refused", "a\rb\r\n.\r\n", k_default, "", true, DataError::BareCr, 0},
        {"CR.CR does not end", "a\r.\rMAIL\r\n.\r\n", k_default, "", true, DataError::BareCr, 0},
        {"bare CR before CRLF", "a\r\r\n.\r\n", k_default, "", true, DataError::BareCr, 0},
        {"CRLF.CR-x is content with a bare CR", "a\r\n.\rx\r\n.\r\n", k_default, "", true, DataError::BareCr, 0},
        {"size limit", std::string(2000, 'x') + "\r\n.\r\n", DataLimits{1000, 4096, false}, "", true, DataError::TooBig,
         0},
        {"size limit counts CRLF", std::string(998, 'x') + "\r\n.\r\n", DataLimits{1000, 4096, false},
         std::string(998, 'x') + "\r\n", true, DataError::None, 0},
        {"line over 998 is accepted", std::string(3000, 'y') + "\r\n.\r\n", k_default, std::string(3000, 'y') + "\r\n",
         true, DataError::None, 0},
        {"line over the hard bound", std::string(5000, 'y') + "\r\n.\r\n", k_default, "", true, DataError::LineTooLong,
         0},
        {"line exactly at the hard bound", std::string(4096, 'y') + "\r\n.\r\n", k_default,
         std::string(4096, 'y') + "\r\n", true, DataError::None, 0},
        {"8-bit and NUL octets pass", std::string("caf\xc3\xa9 \0x\r\n.\r\n", 13), k_default,
         std::string("caf\xc3\xa9 \0x\r\n", 10), true, DataError::None, 0},
    };
    for (const auto& c : cases) {
        for (size_t step : {size_t(1), size_t(2), size_t(3), size_t(7), size_t(1) << 20}) {
            INFO(c.name << " (fed " << step << " bytes at a time)");
            auto o = run(c.input, c.limits, step);
            CHECK(o.done == c.done);
            CHECK(int(o.error) == int(c.error));
            if (c.error == DataError::None) CHECK(o.content == c.content);
            CHECK(o.consumed == (c.consumed ? c.consumed : c.input.size()));
        }
    }
}

TEST_CASE("the size counter keeps counting past the limit", "[data]") {
    DataReader r({100, 4096, false});
    std::string out;
    r.feed(std::string(300, 'z') + "\r\n.\r\n", out);
    CHECK(r.done());
    CHECK(r.error() == DataError::TooBig);
    CHECK(r.size() == 302);
    CHECK(out.size() <= 100);
}
