#include "gateway/common/address.hpp"
#include "gateway/common/idn.hpp"
#include "gateway/common/json.hpp"
#include "gateway/common/text.hpp"
#include "gateway/smtpd/smtp_syntax.hpp"

#include <catch2/catch.hpp>

using namespace gateway;

TEST_CASE("paths", "[address]") {
    struct Case {
        const char* text;
        bool allow_null, utf8;
        AddressError error;
        const char* address;
        const char* rest;
    } cases[] = {
        {"<user@example.com>", false, false, AddressError::None, "user@example.com", ""},
        {" <user@example.com>", false, false, AddressError::None, "user@example.com", ""},
        {"<user@example.com> SIZE=100 BODY=8BITMIME", false, false, AddressError::None, "user@example.com",
         "SIZE=100 BODY=8BITMIME"},
        {"user@example.com", false, false, AddressError::None, "user@example.com", ""},  // no brackets: Postfix accepts
        {"user@example.com SIZE=5", false, false, AddressError::None, "user@example.com", "SIZE=5"},
        {"<>", true, false, AddressError::None, "", ""},
        {"<>", false, false, AddressError::Syntax, "", ""},
        {"<@relay.example,@b.example:user@example.com>", false, false, AddressError::None, "user@example.com", ""},
        {"<\"john doe\"@example.com>", false, false, AddressError::None, "\"john doe\"@example.com", ""},
        {"<\"a>b\"@example.com>", false, false, AddressError::None, "\"a>b\"@example.com", ""},
        {"<first.last+tag@sub.example.co.uk>", false, false, AddressError::None, "first.last+tag@sub.example.co.uk",
         ""},
        {"<user@[192.0.2.1]>", false, false, AddressError::None, "user@[192.0.2.1]", ""},
        {"<user@[IPv6:2001:db8::1]>", false, false, AddressError::None, "user@[IPv6:2001:db8::1]", ""},
        {"<user@[300.0.0.1]>", false, false, AddressError::BadDomain, "", ""},
        {"<user@exa_mple.com>", false, false, AddressError::None, "user@exa_mple.com", ""},
        {"<user>", false, false, AddressError::NoDomain, "", ""},
        {"<user@>", false, false, AddressError::NoDomain, "", ""},
        {"<@example.com>", false, false, AddressError::Syntax, "", ""},
        {"<user@example..com>", false, false, AddressError::BadDomain, "", ""},
        {"<user@-example.com>", false, false, AddressError::BadDomain, "", ""},
        {"<.user@example.com>", false, false, AddressError::BadLocal, "", ""},
        {"<us..er@example.com>", false, false, AddressError::BadLocal, "", ""},
        {"<us er@example.com>", false, false, AddressError::BadLocal, "", ""},
        {"<user@example.com", false, false, AddressError::Syntax, "", ""},
        {"<user@example.com>SIZE=5", false, false, AddressError::Syntax, "", ""},
        {"", false, false, AddressError::Syntax, "", ""},
        {"<用户@例子.测试>", false, false, AddressError::NeedsUtf8, "", ""},
        {"<用户@例子.测试>", false, true, AddressError::None, "用户@例子.测试", ""},
        {"<jörg@example.com>", false, true, AddressError::None, "jörg@example.com", ""},
    };
    for (const auto& c : cases) {
        INFO(c.text);
        auto r = parse_path(c.text, c.allow_null, c.utf8);
        CHECK(int(r.error) == int(c.error));
        if (c.error == AddressError::None) {
            CHECK(r.address == c.address);
            CHECK(std::string(r.rest) == c.rest);
            CHECK(r.null == (std::string(c.address).empty()));
        }
    }
    std::string long_local(250, 'a');
    CHECK(parse_path("<" + long_local + "@example.com>", false, false).error == AddressError::TooLong);
}

TEST_CASE("domains", "[address]") {
    CHECK(domain_of("User@Example.COM") == "example.com");
    CHECK(domain_of("\"a@b\"@example.org") == "example.org");
    CHECK(domain_of("nodomain").empty());
    CHECK(is_valid_domain("a.example", false));
    CHECK_FALSE(is_valid_domain("a.example-", false));
    CHECK_FALSE(is_valid_domain(std::string(64, 'a') + ".example", false));
    CHECK(is_valid_domain(std::string(63, 'a') + ".example", false));
}

TEST_CASE("command lines and parameters", "[syntax]") {
    auto c = split_command("MAIL FROM:<a@b.example> SIZE=10");
    CHECK(c.verb == "MAIL");
    CHECK(c.args == "FROM:<a@b.example> SIZE=10");
    CHECK(split_command("QUIT").args.empty());

    std::string_view rest;
    CHECK(strip_keyword("from:<x@y.example>", "FROM:", rest));
    CHECK(rest == "<x@y.example>");
    CHECK(strip_keyword("  FROM: <x@y.example>", "FROM:", rest));
    CHECK_FALSE(strip_keyword("FROM <x@y.example>", "FROM:", rest));

    auto params = split_parameters("SIZE=100  body=8bitmime SMTPUTF8");
    REQUIRE(params.size() == 3);
    CHECK(params[0].keyword == "SIZE");
    CHECK(params[0].value == "100");
    CHECK(params[1].keyword == "BODY");
    CHECK(params[1].value == "8bitmime");
    CHECK(params[2].keyword == "SMTPUTF8");
    CHECK_FALSE(params[2].has_value);
    CHECK(has_parameter("<a@b.example> SMTPUTF8", "SMTPUTF8"));
    CHECK_FALSE(has_parameter("<smtputf8@b.example>", "SMTPUTF8"));

    CHECK(parse_decimal("12345") == 12345u);
    CHECK_FALSE(parse_decimal("12a"));
    CHECK_FALSE(parse_decimal("99999999999999999999"));
    CHECK(is_http_verb("GET"));
    CHECK(is_http_verb("CONNECT"));
    CHECK_FALSE(is_http_verb("EHLO"));
    CHECK(trim_brackets(" <a@b> SIZE=1") == "a@b");
}

TEST_CASE("an AUTH initial response never reaches the log", "[syntax]") {
    auto logged = [](std::string_view line) { return loggable(split_command(line), line); };
    CHECK(logged("AUTH PLAIN AGFsaWNlAHNlY3JldA==") == "AUTH PLAIN ***");
    CHECK(logged("auth  login   YWxpY2U=") == "auth login ***");
    CHECK(logged("AUTH CRAM-MD5") == "AUTH CRAM-MD5");
    CHECK(logged("MAIL FROM:<a@b> AUTH=<>") == "MAIL FROM:<a@b> AUTH=<>");
}

TEST_CASE("what came from the network is printed inert and bounded", "[text]") {
    CHECK(printable("a\r\nb\x01") == "a??b?");
    CHECK(printable(std::string("esc\x1b[2J nul") + '\0' + "bel\x07 del\x7f") == "esc?[2J nul?bel? del?");
    CHECK(printable("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x93\xa7") ==
          "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x93\xa7");                           // UTF-8 stays
    CHECK(printable("c1 \xc2\x9b[2J") == "c1 ??[2J");                             // U+009B, CSI
    CHECK(printable("bad \xc3 \xff \xed\xa0\x80 \xc0\xaf") == "bad ? ? ??? ??");  // not UTF-8
    CHECK(printable(std::string(300, 'x')) == std::string(256, 'x') + "...");
    CHECK(printable("ab\xe2\x82\xac", 4) == "ab...");  // a character is not cut in two

    CHECK(json_string("a\"b\\c\n") == "\"a\\\"b\\\\c\\n\"");
    CHECK(json_string(std::string("\x1b\x07") + '\0' + "\x7f") == "\"\\u001b\\u0007\\u0000\\u007f\"");
    CHECK(json_string("caf\xc3\xa9") == "\"caf\xc3\xa9\"");
    CHECK(json_string("\xc2\x9b \xff\xc3") == "\"\\u009b \\ufffd\\ufffd\"");
}

TEST_CASE("internationalized domain names in their A-label form", "[idn]") {
    CHECK(ascii_domain("M\xc3\xbc"
                       "nchen.Example") == std::optional<std::string>("xn--mnchen-3ya.example"));
    CHECK(ascii_domain("Example.COM") == std::optional<std::string>("example.com"));
    CHECK_FALSE(ascii_domain("bad\xff.example"));
    CHECK(ascii_address("Jo@m\xc3\xbcnchen.example") == std::optional<std::string>("Jo@xn--mnchen-3ya.example"));
    CHECK(utf8_local_part("j\xc3\xbcrgen@example.com"));
    CHECK_FALSE(utf8_local_part("jo@m\xc3\xbcnchen.example"));
}
