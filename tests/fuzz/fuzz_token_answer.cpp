// A token endpoint's answer (JSON from the network) and the token in it (a JWT whose claims are
// decoded): read as an answer to a request that succeeded and as one that failed.
#include "fuzz.hpp"
#include "gateway/smtp/oauth2.hpp"

using namespace gateway;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    std::string body(fuzz::bytes(data, size));
    conf::OAuth2 config;
    config.tenant = "contoso.onmicrosoft.com";
    config.client_id = "app";
    config.token_endpoint = "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token";
    oauth2::Token token;
    oauth2::read_token_answer(config, body, 1700000000, token);
    oauth2::endpoint_error(config, 400, body);
    return 0;
}
