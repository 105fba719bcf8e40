// The pieces of the built-in OAuth 2.0 client that read what a token endpoint sends: the JSON
// parser, the token answer with its claims, and the errors with their fixes.
#include "gateway/common/json.hpp"
#include "gateway/smtp/oauth2.hpp"
#include "tls/client_assertion.hpp"

#include <catch2/catch.hpp>

using namespace gateway;

namespace {

std::string token_with(const std::string& claims) {
    return tls::base64url(R"({"typ":"JWT","alg":"RS256"})") + "." + tls::base64url(claims) + ".c2lnbmF0dXJl";
}

conf::OAuth2 config() {
    conf::OAuth2 c;
    c.tenant = "contoso.onmicrosoft.com";
    c.client_id = "app-1";
    c.token_endpoint = "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token";
    return c;
}

}  // namespace

TEST_CASE("json_parse reads RFC 8259 and refuses the rest", "[oauth2]") {
    JsonValue v;
    std::string error;
    REQUIRE(json_parse(R"( {"a": [1, -2.5e1, true, null], "b": "x\"\u00e9\ud83d\ude00", "a": 0} )", v, error));
    REQUIRE(v.get("a")->items.size() == 4);
    CHECK(v.get("a")->items[1].number == -25);
    CHECK(v.text("b") == "x\"\xc3\xa9\xf0\x9f\x98\x80");
    CHECK(v.get("a")->type == JsonValue::Type::Array);  // a repeated name keeps the first
    for (const char* bad : {"", "{", "[1,]", "{\"a\" 1}", "01", "\"\x01\"", "[1] x", "tru", "\"\\x\"", "1."}) {
        INFO(bad);
        CHECK_FALSE(json_parse(bad, v, error));
    }
    CHECK_FALSE(json_parse(std::string(33, '[') + std::string(33, ']'), v, error));
    CHECK(error.find("nested too deep") == 0);
    CHECK(json_parse(std::string(32, '[') + std::string(32, ']'), v, error));
}

TEST_CASE("a token answer is read with its claims", "[oauth2]") {
    oauth2::Token t;
    std::string token =
        token_with(R"({"aud":"https://outlook.office365.com","tid":"t-1","roles":["SMTP.SendAsApp","Mail.Send"]})");
    REQUIRE(oauth2::read_token_answer(
        config(), R"({"token_type":"Bearer","expires_in":"3599","access_token":")" + token + "\"}", 1000, t));
    CHECK(t.access_token == token);
    CHECK(t.expires_at == 4599);
    CHECK(t.audience == "https://outlook.office365.com");
    CHECK(t.tenant_id == "t-1");
    CHECK(t.roles == std::vector<std::string>{"SMTP.SendAsApp", "Mail.Send"});

    // Exchange Online's resource ID as the audience is the same service.
    oauth2::Token guid;
    CHECK(oauth2::read_token_answer(
        config(),
        R"({"expires_in":60,"access_token":")" +
            token_with(R"({"aud":"00000002-0000-0ff1-ce00-000000000000","roles":["SMTP.SendAsApp"]})") + "\"}",
        0, guid));

    // An opaque token (another provider) is taken as it is.
    oauth2::Token opaque;
    CHECK(oauth2::read_token_answer(config(), R"({"expires_in":60,"access_token":"ya29.opaque-token"})", 0, opaque));
}

TEST_CASE("a token that cannot work for SMTP is refused with the fix", "[oauth2]") {
    oauth2::Token t;
    CHECK_FALSE(oauth2::read_token_answer(
        config(),
        R"({"expires_in":60,"access_token":")" + token_with(R"({"aud":"https://outlook.office365.com"})") + "\"}", 0,
        t));
    CHECK(t.error.find("carries no SMTP.SendAsApp role (roles: none): give the application the Office 365 Exchange "
                       "Online application permission SMTP.SendAsApp and grant admin consent") != std::string::npos);
    oauth2::Token graph;
    CHECK_FALSE(oauth2::read_token_answer(
        config(),
        R"({"expires_in":60,"access_token":")" +
            token_with(R"({"aud":"https://graph.microsoft.com","roles":["SMTP.SendAsApp"]})") + "\"}",
        0, graph));
    CHECK(graph.error.find("is for https://graph.microsoft.com, not https://outlook.office365.com") !=
          std::string::npos);
    for (const char* body : {"not json", "{}", R"({"access_token":"a"})", R"({"access_token":"a b","expires_in":1})",
                             R"({"access_token":"a","expires_in":-1})"}) {
        INFO(body);
        oauth2::Token bad;
        CHECK_FALSE(oauth2::read_token_answer(config(), body, 0, bad));
        CHECK_FALSE(bad.error.empty());
    }
}

TEST_CASE("endpoint errors are named with their code and fix", "[oauth2]") {
    auto e = oauth2::endpoint_error(config(), 401,
                                    R"({"error":"invalid_client","error_description":"AADSTS7000222: )"
                                    R"(The provided client secret keys for app 'x' are expired. Visit )"
                                    R"(the portal.\r\nTrace ID: 1"})");
    CHECK(e ==
          "OAuth 2.0 token request refused by "
          "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token: AADSTS7000222 invalid_client "
          "(The provided client secret keys for app 'x' are expired); the client secret has expired: create a new one "
          "in the app registration (Certificates & secrets) and write it to auth.oauth2.client_secret_file");
    CHECK(oauth2::endpoint_error(config(), 503, "<html>busy</html>") ==
          "OAuth 2.0 token endpoint https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token "
          "answered HTTP 503 (a fault on its side: the mail waits and is tried again)");
    CHECK(oauth2::endpoint_error(config(), 400, R"({"error":"invalid_scope","error_codes":[70011]})")
              .find("AADSTS70011 invalid_scope; the scope is not valid") != std::string::npos);
}

TEST_CASE("base64url has no padding and the URL alphabet", "[oauth2]") {
    CHECK(tls::base64url("\xfb\xff") == "-_8");
    CHECK(tls::base64url("") == "");
}
