#include "auth/sasl_client.hpp"

#include <sasl/sasl.h>
#include <sasl/saslutil.h>

#include <algorithm>
#include <cstring>
#include <mutex>

namespace auth {

namespace {

void init_library() {
    static std::once_flag once;
    std::call_once(once, [] { sasl_client_init(nullptr); });
}

// sasl_callback_t stores every callback as int (*)(); the cast goes through void (*)(), which
// GCC accepts as the generic function pointer type.
template <typename F>
int (*callback(F f))() {
    return reinterpret_cast<int (*)()>(reinterpret_cast<void (*)()>(f));
}

// Cyrus keeps pointers to the callbacks and the secret for the life of the connection.
class CyrusClient : public SaslClient {
public:
    explicit CyrusClient(Credentials c) : m_credentials(std::move(c)) {
        m_secret.resize(sizeof(sasl_secret_t) + m_credentials.secret.size());
        auto* s = reinterpret_cast<sasl_secret_t*>(m_secret.data());
        s->len = m_credentials.secret.size();
        std::memcpy(s->data, m_credentials.secret.data(), m_credentials.secret.size());
        m_callbacks = {
            {SASL_CB_USER, callback(&CyrusClient::simple), this},
            {SASL_CB_AUTHNAME, callback(&CyrusClient::simple), this},
            {SASL_CB_PASS, callback(&CyrusClient::password), this},
            {SASL_CB_GETREALM, callback(&CyrusClient::realm), this},
            {SASL_CB_LIST_END, nullptr, nullptr},
        };
    }
    ~CyrusClient() override {
        if (m_conn) sasl_dispose(&m_conn);
        std::fill(m_secret.begin(), m_secret.end(), '\0');
    }

    bool begin(const std::string& mechanism, const std::string& host, std::string& initial, bool& has_initial,
               std::string& error) {
        int r = sasl_client_new("smtp", host.c_str(), nullptr, nullptr, m_callbacks.data(), 0, &m_conn);
        if (r != SASL_OK) return fail(r, error);
        sasl_security_properties_t props{};
        props.max_ssf = 0;  // no SASL security layer: TLS protects the connection, or nothing does
        props.maxbufsize = 0;
        sasl_setprop(m_conn, SASL_SEC_PROPS, &props);
        const char* out = nullptr;
        unsigned len = 0;
        const char* chosen = nullptr;
        r = sasl_client_start(m_conn, mechanism.c_str(), nullptr, &out, &len, &chosen);
        if (r != SASL_OK && r != SASL_CONTINUE) return fail(r, error);
        has_initial = out != nullptr;
        initial.assign(out ? out : "", len);
        return true;
    }

    bool step(std::string_view challenge, std::string& response, std::string& error) override {
        const char* out = nullptr;
        unsigned len = 0;
        int r = sasl_client_step(m_conn, challenge.data(), unsigned(challenge.size()), nullptr, &out, &len);
        if (r != SASL_OK && r != SASL_CONTINUE) return fail(r, error);
        response.assign(out ? out : "", len);
        return true;
    }

private:
    bool fail(int r, std::string& error) {
        error = m_conn ? sasl_errdetail(m_conn) : sasl_errstring(r, nullptr, nullptr);
        return false;
    }
    static int simple(void* ctx, int, const char** result, unsigned* len) {
        auto* self = static_cast<CyrusClient*>(ctx);
        *result = self->m_credentials.username.c_str();
        if (len) *len = unsigned(self->m_credentials.username.size());
        return SASL_OK;
    }
    static int password(sasl_conn_t*, void* ctx, int, sasl_secret_t** secret) {
        *secret = reinterpret_cast<sasl_secret_t*>(static_cast<CyrusClient*>(ctx)->m_secret.data());
        return SASL_OK;
    }
    static int realm(void*, int, const char** available, const char** result) {
        *result = available && available[0] ? available[0] : "";
        return SASL_OK;
    }

    Credentials m_credentials;
    std::vector<char> m_secret;
    std::vector<sasl_callback_t> m_callbacks;
    sasl_conn_t* m_conn = nullptr;
};

// XOAUTH2 (Google's and Microsoft's format): one initial response; on failure the server sends
// a 334 with a JSON error, which is answered with an empty line before it says 535.
class XOAuth2Client : public SaslClient {
public:
    bool step(std::string_view, std::string& response, std::string&) override {
        response.clear();
        return true;
    }
};

}  // namespace

std::unique_ptr<SaslClient> SaslClient::start(const std::string& mechanism, const std::string& server_host,
                                              const Credentials& credentials, std::string& initial, bool& has_initial,
                                              std::string& error) {
    if (mechanism == "XOAUTH2") {
        initial = "user=" + credentials.username + "\x01" + "auth=Bearer " + credentials.secret + "\x01\x01";
        has_initial = true;
        return std::make_unique<XOAuth2Client>();
    }
    init_library();
    auto c = std::make_unique<CyrusClient>(credentials);
    if (!c->begin(mechanism, server_host, initial, has_initial, error)) return nullptr;
    return c;
}

std::vector<std::string> client_mechanisms() {
    init_library();
    std::vector<std::string> out{"XOAUTH2"};
    if (const char** list = sasl_global_listmech())
        for (const char** m = list; *m; ++m)
            out.emplace_back(*m);
    return out;
}

bool sends_secret_in_clear(const std::string& m) { return m == "PLAIN" || m == "LOGIN" || m == "XOAUTH2"; }

std::string base64_encode(std::string_view data) {
    std::string out(data.size() * 4 / 3 + 8, '\0');
    unsigned len = 0;
    sasl_encode64(data.data(), unsigned(data.size()), out.data(), unsigned(out.size()), &len);
    out.resize(len);
    return out;
}

bool base64_decode(std::string_view text, std::string& out) {
    out.assign(text.size() * 3 / 4 + 4, '\0');
    unsigned len = 0;
    if (text.empty()) {
        out.clear();
        return true;
    }
    if (sasl_decode64(text.data(), unsigned(text.size()), out.data(), unsigned(out.size()), &len) != SASL_OK)
        return false;
    out.resize(len);
    return true;
}

}  // namespace auth
