#include "auth/sasl_server.hpp"

#include <sasl/sasl.h>

#include "auth/sasl_client.hpp"
#include "auth/sasldb_users.hpp"

#include <unistd.h>
#include <array>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <functional>
#include <mutex>
#include <random>

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

// Options Cyrus asks for, answered from ServerOptions: passwords come from the sasldb, or from
// saslauthd when a socket is given.
struct Options {
    std::string sasldb;
    std::string saslauthd;
    std::string mech_list;

    static int get(void* ctx, const char*, const char* option, const char** result, unsigned* len) {
        auto* self = static_cast<Options*>(ctx);
        const char* value = nullptr;
        if (std::strcmp(option, "pwcheck_method") == 0)
            value = self->saslauthd.empty() ? "auxprop" : "saslauthd";
        else if (std::strcmp(option, "saslauthd_path") == 0 && !self->saslauthd.empty())
            value = self->saslauthd.c_str();
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

// The octets of a SCRAM mechanism's hash (its salt is as long), 0 for any other mechanism.
size_t scram_hash_size(std::string_view mechanism) {
    if (mechanism.substr(0, 6) != "SCRAM-") return 0;
    auto plus = mechanism.find("-PLUS");
    std::string_view hash = mechanism.substr(6, plus == std::string_view::npos ? std::string_view::npos : plus - 6);
    if (hash == "SHA-1") return 20;
    if (hash == "SHA-224") return 28;
    if (hash == "SHA-256") return 32;
    if (hash == "SHA-384") return 48;
    if (hash == "SHA-512") return 64;
    return 0;
}

// RFC 5802 7: client-first-message = gs2-header "n=" saslname ",r=" c-nonce ["," extensions];
// the user name with "=2C" and "=3D" decoded. False when the message is not one.
bool parse_client_first(std::string_view m, std::string& user, std::string& nonce) {
    std::array<std::string_view, 4> f;
    for (auto& field : f) {
        auto comma = m.find(',');
        field = m.substr(0, comma);
        m = comma == std::string_view::npos ? std::string_view() : m.substr(comma + 1);
    }
    bool cbind = f[0] == "n" || f[0] == "y" || f[0].substr(0, 2) == "p=";
    if (!cbind || f[2].substr(0, 2) != "n=" || f[3].substr(0, 2) != "r=" || f[3].size() < 3) return false;
    user.clear();
    std::string_view name = f[2].substr(2);
    for (size_t i = 0; i < name.size(); ++i) {
        if (name.substr(i, 3) == "=2C") {
            user += ',', i += 2;
        } else if (name.substr(i, 3) == "=3D") {
            user += '=', i += 2;
        } else {
            user += name[i];
        }
    }
    nonce = std::string(f[3].substr(2));
    return !user.empty();
}

// The same octets for the same name and mechanism while the process runs, and nothing to tell
// them from a real salt. XXX: a restart changes them.
std::string made_up_salt(const std::string& mechanism, const std::string& user, size_t size) {
    static const std::array<uint32_t, 8> key = [] {
        std::random_device rd;
        std::array<uint32_t, 8> k{};
        for (auto& w : k)
            w = rd();
        return k;
    }();
    std::vector<uint32_t> seed(key.begin(), key.end());
    for (unsigned char c : mechanism + '\0' + user)
        seed.push_back(c);
    std::seed_seq seq(seed.begin(), seed.end());
    std::mt19937 gen(seq);
    std::string salt(size, '\0');
    for (auto& c : salt)
        c = char(gen() & 0xff);
    return salt;
}

std::string random_octets(size_t size) {
    static thread_local std::mt19937 gen{std::random_device{}()};
    std::string out(size, '\0');
    for (auto& c : out)
        c = char(gen() & 0xff);
    return out;
}

constexpr unsigned k_scram_iterations = 4096;  // Cyrus's scram_iteration_counter for new passwords

// A user of the sasldb to spend a decoy's time on (its login name), looked up again after a
// minute; empty when there is none.
std::string some_known_user(const ServerOptions& o) {
    static std::mutex mutex;
    static std::string path, user;
    static std::chrono::steady_clock::time_point checked;
    std::lock_guard<std::mutex> lock(mutex);
    auto now = std::chrono::steady_clock::now();
    if (path != o.sasldb || now - checked > std::chrono::minutes(1)) {
        std::vector<SasldbUser> users;
        std::string error;
        user.clear();
        if (list_users(o.sasldb, users, error) && !users.empty())
            user = users.front().name + (users.front().realm == o.hostname ? "" : "@" + users.front().realm);
        path = o.sasldb;
        checked = now;
    }
    return user;
}

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
        options.saslauthd = o.saslauthd;
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
    if (!options.saslauthd.empty() && ::access(options.saslauthd.c_str(), W_OK) != 0) {
        outcome = Outcome::TempFailure;
        detail = "cannot reach saslauthd at sasl.saslauthd_socket " + options.saslauthd + ": " + std::strerror(errno);
        return nullptr;
    }
    if (options.saslauthd.empty() && ::access(options.sasldb.c_str(), R_OK) != 0) {
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
    s->m_mechanism = mechanism;
    s->m_options = options;
    const char* out = nullptr;
    unsigned len = 0;
    r = sasl_server_start(s->m_conn->conn, mechanism.c_str(), initial ? initial->data() : nullptr,
                          initial ? unsigned(initial->size()) : 0, &out, &len);
    challenge.assign(out ? out : "", len);
    if (initial) {
        s->m_first_message = false;
        if (s->decoy(r, *initial, challenge)) {
            outcome = Outcome::Continue;
            return s;
        }
    }
    outcome = s->outcome_of(r, detail);
    return s;
}

Outcome SaslServer::step(std::string_view response, std::string& challenge, std::string& detail) {
    if (m_decoy) {  // the proof of a user who does not exist
        m_decoy = false;
        detail = sasl_errstring(SASL_NOUSER, nullptr, nullptr);
        return Outcome::Failure;
    }
    const char* out = nullptr;
    unsigned len = 0;
    int r = sasl_server_step(m_conn->conn, response.data(), unsigned(response.size()), &out, &len);
    challenge.assign(out ? out : "", len);
    bool first = m_first_message;
    m_first_message = false;
    if (first && decoy(r, response, challenge)) return Outcome::Continue;
    return outcome_of(r, detail);
}

bool SaslServer::decoy(int r, std::string_view message, std::string& challenge) {
    size_t hash = scram_hash_size(m_mechanism);
    std::string user, nonce;
    if (r != SASL_NOUSER || hash == 0 || !parse_client_first(message, user, nonce)) return false;
    // As Cyrus words it: r=c-nonce s-nonce (24 random octets in base64), s=salt, i=count.
    challenge = "r=" + nonce + base64_encode(random_octets(24)) +
                ",s=" + base64_encode(made_up_salt(m_mechanism, user, hash)) +
                ",i=" + std::to_string(k_scram_iterations);
    m_username = user;
    m_decoy = true;
    // The work Cyrus does for a user who exists (it derives the SCRAM keys from the stored
    // password), so that the answer comes as late as it would for one.
    std::string known = some_known_user(m_options);
    if (!known.empty()) {
        Conn other;
        if (other.create(m_options) == SASL_OK) {
            std::string name;  // RFC 5802 5.1: saslname
            for (char c : known)
                name += c == ',' ? "=2C" : c == '=' ? "=3D" : std::string(1, c);
            std::string first = "n,,n=" + name + ",r=" + nonce;
            const char* out = nullptr;
            unsigned len = 0;
            sasl_server_start(other.conn, m_mechanism.c_str(), first.data(), unsigned(first.size()), &out, &len);
        }
    }
    return true;
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
