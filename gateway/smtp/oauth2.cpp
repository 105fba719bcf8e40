#include "gateway/smtp/oauth2.hpp"

#include "auth/sasl_client.hpp"
#include "gateway/common/json.hpp"
#include "gateway/common/log.hpp"
#include "gateway/common/text.hpp"
#include "gateway/smtp/https_post.hpp"
#include "gateway/smtp/secrets.hpp"
#include "tls/client_assertion.hpp"

#include <algorithm>
#include <ctime>
#include <map>
#include <memory>
#include <random>

namespace gateway::oauth2 {

namespace {

// After a failed fetch, requests within this time get the same answer instead of a new fetch:
// a queue of thousands meeting a broken endpoint asks it once, not thousands of times.
constexpr uint64_t k_failure_memory_ms = 5000;
// The resource ID of Office 365 Exchange Online: a token for it may carry this as its audience.
const char* const k_exchange_resource = "00000002-0000-0ff1-ce00-000000000000";

struct Entry {
    std::string client_id;
    Token token;  // ok: the one in use
    uint64_t usable_until_ms = 0;
    uint64_t refresh_from_ms = 0;
    bool fetching = false;
    uint64_t failed_ms = 0;
    Token failure;
    std::vector<TokenDone> waiters;
};

std::map<std::string, Entry>& cache() {
    static std::map<std::string, Entry> c;
    return c;
}

std::string key_of(const conf::OAuth2& c) {
    return c.token_endpoint + '\n' + c.client_id + '\n' + c.scope + '\n' + c.client_secret_file + '\n' +
           c.certificate_file + '\n' + c.key_file + '\n' + c.ca_file;
}

// Runs `f` from the loop, after the caller has returned.
void later(uv_loop_t* loop, std::function<void()> f) {
    struct Later {
        uv_timer_t timer;
        std::function<void()> f;
    };
    auto* l = new Later{{}, std::move(f)};
    uv_timer_init(loop, &l->timer);
    l->timer.data = l;
    uv_timer_start(
        &l->timer,
        [](uv_timer_t* t) {
            auto* l = static_cast<Later*>(t->data);
            auto f = std::move(l->f);
            uv_close(reinterpret_cast<uv_handle_t*>(t), [](uv_handle_t* h) { delete static_cast<Later*>(h->data); });
            f();
        },
        0, 0);
}

std::string setting(const char* key) { return std::string("auth.oauth2.") + key; }

std::string uuid() {
    std::random_device rd;
    std::uniform_int_distribution<int> d(0, 15);
    static const char hex[] = "0123456789abcdef";
    std::string s;
    for (int i = 0; i < 32; i++) {
        if (i == 8 || i == 12 || i == 16 || i == 20) s += '-';
        s += hex[i == 12 ? 4 : i == 16 ? (8 | (d(rd) & 3)) : d(rd)];
    }
    return s;
}

// The form to POST, built off the loop: it reads the secret or signs the assertion.
bool request_form(const conf::OAuth2& c, std::string& form, std::string& error) {
    form = "grant_type=client_credentials&client_id=" + form_escape(c.client_id) + "&scope=" + form_escape(c.scope);
    if (!c.client_secret_file.empty()) {
        std::string secret;
        if (!read_secret_file(c.client_secret_file, secret, error)) {
            error = setting("client_secret_file") + ": " + error;
            return false;
        }
        form += "&client_secret=" + form_escape(secret);
        return true;
    }
    auto now = std::to_string(std::time(nullptr));
    std::string claims = "{\"aud\":" + json_string(c.token_endpoint) + ",\"iss\":" + json_string(c.client_id) +
                         ",\"sub\":" + json_string(c.client_id) + ",\"jti\":\"" + uuid() + "\",\"nbf\":" + now +
                         ",\"iat\":" + now + ",\"exp\":" + std::to_string(std::time(nullptr) + 600) + "}";
    std::string jwt;
    if (!tls::sign_client_assertion(c.certificate_file, c.key_file, claims, jwt, error)) {
        error = "cannot sign the client assertion (" + setting("certificate_file") + "): " + error;
        return false;
    }
    form += "&client_assertion_type=" + form_escape("urn:ietf:params:oauth:client-assertion-type:jwt-bearer") +
            "&client_assertion=" + jwt;
    return true;
}

bool base64url_decode(std::string text, std::string& out) {
    for (char& ch : text) {
        if (ch == '-') ch = '+';
        if (ch == '_') ch = '/';
    }
    while (text.size() % 4)
        text += '=';
    return auth::base64_decode(text, out);
}

std::string audience_for(const std::string& scope) {
    const std::string suffix = "/.default";
    if (scope.size() > suffix.size() && scope.compare(scope.size() - suffix.size(), suffix.size(), suffix) == 0)
        return scope.substr(0, scope.size() - suffix.size());
    return {};
}

std::string first_sentence(const std::string& description) {
    std::string s = description.substr(0, description.find_first_of("\r\n"));
    // "AADSTS7000215: Invalid client secret provided. Ensure ..." -> "Invalid client secret provided"
    if (auto colon = s.find(": "); colon != std::string::npos && s.compare(0, 6, "AADSTS") == 0) s.erase(0, colon + 2);
    if (auto dot = s.find(". "); dot != std::string::npos) s.resize(dot);
    if (!s.empty() && s.back() == '.') s.pop_back();
    return printable(s, 160);
}

void finish_fetch(const std::string& key, uv_loop_t* loop, Token t);

void start_fetch(uv_loop_t* loop, const conf::OAuth2& config, const std::string& key) {
    cache()[key].fetching = true;
    struct Work {
        uv_work_t req;
        uv_loop_t* loop;
        conf::OAuth2 config;
        std::string key, form, error;
    };
    auto* w = new Work{{}, loop, config, key, {}, {}};
    w->req.data = w;
    uv_queue_work(
        loop, &w->req,
        [](uv_work_t* req) {
            auto* w = static_cast<Work*>(req->data);
            request_form(w->config, w->form, w->error);
        },
        [](uv_work_t* req, int) {
            std::unique_ptr<Work> w(static_cast<Work*>(req->data));
            Token t;
            t.endpoint = w->config.token_endpoint;
            if (!w->error.empty()) {
                t.error = w->error;
                return finish_fetch(w->key, w->loop, std::move(t));
            }
            auto config = w->config;
            auto key = w->key;
            auto* loop = w->loop;
            https_post(loop, config.token_endpoint, w->form, config.ca_file,
                       [config, key, loop, t](const HttpsReply& reply) mutable {
                           if (!reply.answered)
                               t.error = "OAuth 2.0 token request failed: " + reply.error;
                           else if (reply.status != 200)
                               t.error = endpoint_error(config, reply.status, reply.body);
                           else
                               read_token_answer(config, reply.body, std::time(nullptr), t);
                           finish_fetch(key, loop, std::move(t));
                       });
        });
}

void finish_fetch(const std::string& key, uv_loop_t* loop, Token t) {
    auto it = cache().find(key);
    if (it == cache().end()) return;  // stopped meanwhile
    Entry& e = it->second;
    e.fetching = false;
    uint64_t now = uv_now(loop);
    t.fetched = true;
    if (t.ok) {
        uint64_t life_ms = uint64_t(std::max<int64_t>(t.expires_at - std::time(nullptr), 0)) * 1000;
        e.token = t;
        e.usable_until_ms = now + life_ms - std::min<uint64_t>(60000, life_ms / 5);
        e.refresh_from_ms = now + life_ms - std::min<uint64_t>(300000, life_ms / 2);
        e.failed_ms = 0;
        log::info(log::Component::Smtp, "OAuth 2.0 token for client " + e.client_id + " from " + t.endpoint +
                                            ", expires in " + std::to_string(life_ms / 1000) + " s");
    } else {
        e.failed_ms = now;
        e.failure = t;
        log::warning(log::Component::Smtp, t.error);
    }
    auto waiters = std::move(e.waiters);
    e.waiters.clear();
    for (auto& w : waiters)
        w(t);
}

}  // namespace

std::string endpoint_error(const conf::OAuth2& c, long status, const std::string& body) {
    std::string head = "OAuth 2.0 token endpoint " + c.token_endpoint + " answered HTTP " + std::to_string(status);
    JsonValue v;
    std::string why;
    if (!json_parse(body, v, why) || v.type != JsonValue::Type::Object || v.text("error").empty())
        return head + (status >= 500 ? " (a fault on its side: the mail waits and is tried again)" : "");
    std::string error = printable(v.text("error"), 64);
    std::string description = v.text("error_description");
    std::string code;
    if (const JsonValue* codes = v.get("error_codes");
        codes && codes->type == JsonValue::Type::Array && !codes->items.empty() &&
        codes->items[0].type == JsonValue::Type::Number && codes->items[0].number >= 0 && codes->items[0].number < 1e9)
        code = std::to_string(int64_t(codes->items[0].number));
    else if (description.compare(0, 6, "AADSTS") == 0)
        code = description.substr(6, std::min<size_t>(description.find_first_not_of("0123456789", 6) - 6, 9));
    std::string fix;
    if (code == "7000215")
        fix = "the client secret is wrong: " + setting("client_secret_file") +
              " must hold the secret's Value (shown once, when it is created), not its Secret ID";
    else if (code == "7000222")
        fix =
            "the client secret has expired: create a new one in the app registration (Certificates & secrets) and "
            "write it to " +
            setting("client_secret_file");
    else if (code == "700016")
        fix = "application " + c.client_id + " is not known in tenant " + c.tenant + ": check " + setting("client_id") +
              " (the Application (client) ID) and " + setting("tenant");
    else if (code == "90002" || code == "90013")
        fix = "tenant " + c.tenant + " does not exist: " + setting("tenant") +
              " takes the Directory (tenant) ID or a domain of the tenant, such as contoso.onmicrosoft.com";
    else if (code == "700027" || code == "700024" || code == "7000274")
        fix = "the client assertion was not accepted: upload the certificate in " + setting("certificate_file") +
              " to the app registration (Certificates & secrets > Certificates), and check the clock";
    else if (code == "1002012" || code == "70011" || error == "invalid_scope")
        fix = "the scope is not valid: " + setting("scope") + " should be https://outlook.office365.com/.default";
    else if (code == "7000218")
        fix = "the request carried no client secret or assertion: set " + setting("client_secret_file") + " or " +
              setting("certificate_file");
    else if (code == "700082")
        fix = "the refresh token has expired: use the client credentials flow (" + setting("client_secret_file") + ")";
    else if (error == "unauthorized_client")
        fix =
            "the application may not use the client credentials grant: check that it is enabled in the tenant "
            "(Enterprise applications)";
    else if (error == "invalid_client")
        fix = "the endpoint does not accept the application's credentials: check " + setting("client_id") + " and " +
              setting("client_secret_file");
    std::string named = code.empty() ? error : "AADSTS" + code + " " + error;
    std::string said = first_sentence(description);
    return "OAuth 2.0 token request refused by " + c.token_endpoint + ": " + named +
           (said.empty() ? std::string() : " (" + said + ")") + (fix.empty() ? std::string() : "; " + fix);
}

bool read_token_answer(const conf::OAuth2& c, const std::string& body, int64_t now, Token& t) {
    t.endpoint = c.token_endpoint;
    JsonValue v;
    std::string why;
    if (!json_parse(body, v, why) || v.type != JsonValue::Type::Object) {
        t.error =
            "OAuth 2.0 token endpoint " + c.token_endpoint + " answered with something that is not JSON (" + why + ")";
        return false;
    }
    std::string token = v.text("access_token");
    std::string expires = v.text("expires_in");
    if (token.empty() || expires.empty() || expires.find_first_not_of("0123456789") != std::string::npos) {
        t.error = "OAuth 2.0 token endpoint " + c.token_endpoint + " answered without access_token and expires_in";
        return false;
    }
    if (token.size() > 16384 || token.find_first_of(" \t\r\n\x01") != std::string::npos) {
        t.error = "OAuth 2.0 token endpoint " + c.token_endpoint + " answered with a token that cannot be sent";
        return false;
    }
    t.expires_at = now + std::min<int64_t>(std::stoll(expires.substr(0, 9)), 86400 * 365);
    // A JWT says what it is for; an opaque token (other providers) is taken as it is.
    auto dot1 = token.find('.'), dot2 = token.find('.', dot1 + 1);
    std::string payload;
    JsonValue claims;
    if (dot1 != std::string::npos && dot2 != std::string::npos &&
        base64url_decode(token.substr(dot1 + 1, dot2 - dot1 - 1), payload) && json_parse(payload, claims, why) &&
        claims.type == JsonValue::Type::Object) {
        t.audience = printable(claims.text("aud"), 128);
        t.tenant_id = printable(claims.text("tid"), 64);
        if (const JsonValue* roles = claims.get("roles"); roles && roles->type == JsonValue::Type::Array)
            for (const auto& r : roles->items)
                if (r.type == JsonValue::Type::String && t.roles.size() < 32)
                    t.roles.push_back(printable(r.string, 64));
        std::string expected = audience_for(c.scope);
        bool exchange = t.audience == k_exchange_resource || expected.find("outlook.") != std::string::npos;
        if (!expected.empty() && !t.audience.empty() && t.audience != expected &&
            !(exchange && t.audience == k_exchange_resource)) {
            t.error = "the OAuth 2.0 token from " + c.token_endpoint + " is for " + t.audience + ", not " + expected +
                      ": set " + setting("scope") + " to " + expected + "/.default";
            return false;
        }
        if (exchange && std::find(t.roles.begin(), t.roles.end(), "SMTP.SendAsApp") == t.roles.end()) {
            std::string roles;
            for (const auto& r : t.roles)
                roles += (roles.empty() ? "" : " ") + r;
            t.error = "the OAuth 2.0 token from " + c.token_endpoint +
                      " carries no SMTP.SendAsApp role (roles: " + (roles.empty() ? "none" : roles) +
                      "): give the application the Office 365 Exchange Online application permission "
                      "SMTP.SendAsApp and grant admin consent";
            return false;
        }
    }
    t.access_token = std::move(token);
    t.ok = true;
    return true;
}

void get_token(uv_loop_t* loop, const conf::OAuth2& config, TokenDone done) {
    std::string key = key_of(config);
    Entry& e = cache()[key];
    e.client_id = config.client_id;
    uint64_t now = uv_now(loop);
    bool failed_recently = e.failed_ms && now < e.failed_ms + k_failure_memory_ms;
    if (e.token.ok && now < e.usable_until_ms) {
        if (now >= e.refresh_from_ms && !e.fetching && !failed_recently)
            start_fetch(loop, config, key);  // the next one, ahead of time
        Token t = e.token;
        t.fetched = false;
        return later(loop, [t, done = std::move(done)] { done(t); });
    }
    if (!e.fetching && failed_recently) {
        Token t = e.failure;
        t.fetched = false;
        return later(loop, [t, done = std::move(done)] { done(t); });
    }
    e.waiters.push_back(std::move(done));
    if (!e.fetching) start_fetch(loop, config, key);
}

void token_refused(const conf::OAuth2& config, const std::string& token) {
    auto it = cache().find(key_of(config));
    if (it != cache().end() && it->second.token.ok && it->second.token.access_token == token)
        it->second.token = Token{};
}

void stop() {
    stop_https();  // requests running end now, through finish_fetch
    auto entries = std::move(cache());
    cache().clear();
    for (auto& [key, e] : entries) {
        Token t;
        t.error = "OAuth 2.0 token request stopped: the gateway is stopping";
        for (auto& w : e.waiters)
            w(t);
    }
}

}  // namespace gateway::oauth2
