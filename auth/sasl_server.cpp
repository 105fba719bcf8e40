#include "auth/sasl_server.hpp"

#include <sasl/sasl.h>

#include <unistd.h>
#include <cerrno>
#include <cstring>
#include <functional>
#include <mutex>

namespace auth {

namespace {

template <typename F>
int (*callback(F f))() {
    return reinterpret_cast<int (*)()>(reinterpret_cast<void (*)()>(f));
}

void init_library() {
    static std::once_flag once;
    std::call_once(once, [] { sasl_server_init(nullptr, "smtpgw"); });
}

// Options Cyrus asks for, answered from ServerOptions: passwords come from the sasldb only.
struct Options {
    std::string sasldb;
    std::string mech_list;

    static int get(void* ctx, const char*, const char* option, const char** result, unsigned* len) {
        auto* self = static_cast<Options*>(ctx);
        const char* value = nullptr;
        if (std::strcmp(option, "pwcheck_method") == 0)
            value = "auxprop";
        else if (std::strcmp(option, "auxprop_plugin") == 0)
            value = "sasldb";
        else if (std::strcmp(option, "sasldb_path") == 0)
            value = self->sasldb.c_str();
        else if (std::strcmp(option, "mech_list") == 0)
            value = self->mech_list.c_str();
        else if (std::strcmp(option, "log_level") == 0)
            value = "0";
        if (!value) return SASL_FAIL;
        *result = value;
        if (len) *len = unsigned(std::strlen(value));
        return SASL_OK;
    }
    // Cyrus would write to syslog; the gateway logs outcomes itself, never secrets.
    static int log(void*, int, const char*) { return SASL_OK; }
};

}  // namespace

struct SaslServer::Conn {
    Options options;
    std::vector<sasl_callback_t> callbacks;
    sasl_conn_t* conn = nullptr;

    ~Conn() {
        if (conn) sasl_dispose(&conn);
    }
    int create(const ServerOptions& o) {
        options.sasldb = o.sasldb;
        for (const auto& m : o.mechanisms)
            options.mech_list += (options.mech_list.empty() ? "" : " ") + m;
        callbacks = {{SASL_CB_GETOPT, callback(&Options::get), &options},
                     {SASL_CB_LOG, callback(&Options::log), nullptr},
                     {SASL_CB_LIST_END, nullptr, nullptr}};
        int r = sasl_server_new("smtp", o.hostname.c_str(), nullptr, nullptr, nullptr, callbacks.data(), 0, &conn);
        if (r != SASL_OK) return r;
        sasl_security_properties_t props{};
        props.max_ssf = 0;  // no security layer
        return sasl_setprop(conn, SASL_SEC_PROPS, &props);
    }
};

SaslServer::~SaslServer() = default;

void SaslServer::note_username() {
    const void* user = nullptr;
    if (sasl_getprop(m_conn->conn, SASL_USERNAME, &user) == SASL_OK && user)
        m_username = static_cast<const char*>(user);
}

Outcome SaslServer::outcome_of(int r, std::string& detail) {
    switch (r) {
    case SASL_OK: note_username(); return Outcome::Success;
    case SASL_CONTINUE: return Outcome::Continue;
    // RFC 4954 6: an unknown user and a wrong password get the same answer; the log gets the
    // library's reason and, where the mechanism got that far, the user name.
    case SASL_BADAUTH:
    case SASL_NOUSER:
    case SASL_NOAUTHZ:
    case SASL_NOVERIFY:
    case SASL_EXPIRED:
    case SASL_DISABLED:
    case SASL_BADVERS:
        note_username();
        detail = sasl_errstring(r, nullptr, nullptr);
        return Outcome::Failure;
    case SASL_BADPROT:
    case SASL_BADPARAM:
    case SASL_NOMECH:
    case SASL_TOOWEAK:
    case SASL_ENCRYPT: detail = sasl_errstring(r, nullptr, nullptr); return Outcome::Invalid;
    default:
        detail = m_conn && m_conn->conn ? sasl_errdetail(m_conn->conn) : sasl_errstring(r, nullptr, nullptr);
        return Outcome::TempFailure;
    }
}

std::unique_ptr<SaslServer> SaslServer::start(const ServerOptions& options, const std::string& mechanism,
                                              const std::optional<std::string>& initial, std::string& challenge,
                                              Outcome& outcome, std::string& detail) {
    init_library();
    // Cyrus answers "user not found" for a sasldb it cannot open; that is the server's trouble,
    // not the client's, so it is a temporary failure with the reason for the log.
    if (::access(options.sasldb.c_str(), R_OK) != 0) {
        outcome = Outcome::TempFailure;
        detail = "cannot read sasl.sasldb " + options.sasldb + ": " + std::strerror(errno);
        return nullptr;
    }
    std::unique_ptr<SaslServer> s(new SaslServer);
    s->m_conn = std::make_unique<Conn>();
    int r = s->m_conn->create(options);
    if (r != SASL_OK) {
        outcome = Outcome::TempFailure;
        detail = sasl_errstring(r, nullptr, nullptr);
        return nullptr;
    }
    const char* out = nullptr;
    unsigned len = 0;
    r = sasl_server_start(s->m_conn->conn, mechanism.c_str(), initial ? initial->data() : nullptr,
                          initial ? unsigned(initial->size()) : 0, &out, &len);
    challenge.assign(out ? out : "", len);
    outcome = s->outcome_of(r, detail);
    return s;
}

Outcome SaslServer::step(std::string_view response, std::string& challenge, std::string& detail) {
    const char* out = nullptr;
    unsigned len = 0;
    int r = sasl_server_step(m_conn->conn, response.data(), unsigned(response.size()), &out, &len);
    challenge.assign(out ? out : "", len);
    return outcome_of(r, detail);
}

namespace {

bool with_admin_conn(const std::string& sasldb, const std::string& hostname, std::string& error,
                     const std::function<int(sasl_conn_t*)>& f) {
    init_library();
    struct Admin {
        Options options;
        std::vector<sasl_callback_t> callbacks;
        sasl_conn_t* conn = nullptr;
        ~Admin() {
            if (conn) sasl_dispose(&conn);
        }
    } admin;
    admin.options.sasldb = sasldb;
    admin.callbacks = {{SASL_CB_GETOPT, callback(&Options::get), &admin.options},
                       {SASL_CB_LOG, callback(&Options::log), nullptr},
                       {SASL_CB_LIST_END, nullptr, nullptr}};
    int r =
        sasl_server_new("smtp", hostname.c_str(), nullptr, nullptr, nullptr, admin.callbacks.data(), 0, &admin.conn);
    if (r == SASL_OK) r = f(admin.conn);
    if (r != SASL_OK) {
        error = admin.conn ? sasl_errdetail(admin.conn) : sasl_errstring(r, nullptr, nullptr);
        return false;
    }
    return true;
}

}  // namespace

bool set_password(const std::string& sasldb, const std::string& hostname, const std::string& user,
                  const std::string& password, std::string& error) {
    return with_admin_conn(sasldb, hostname, error, [&](sasl_conn_t* c) {
        return sasl_setpass(c, user.c_str(), password.c_str(), unsigned(password.size()), nullptr, 0, SASL_SET_CREATE);
    });
}

bool delete_user(const std::string& sasldb, const std::string& hostname, const std::string& user, std::string& error) {
    return with_admin_conn(sasldb, hostname, error, [&](sasl_conn_t* c) {
        return sasl_setpass(c, user.c_str(), nullptr, 0, nullptr, 0, SASL_SET_DISABLE);
    });
}

}  // namespace auth
