// The SASL server for AUTH from clients (RFC 4954), on Cyrus SASL with a sasldb: one fresh
// sasl_conn_t per attempt, no security layer. The answers are what the SMTP session needs to
// choose its reply: success (235), failure (535, the same for an unknown user as for a wrong
// password), temporary trouble (454), or a client error (501).
//
// SCRAM (RFC 5802) would tell which user names exist: Cyrus refuses an unknown name at the
// client's first message, where a known one gets its salt. For an unknown name this module
// answers as for a known one (RFC 5802 9: a salt that is the same each time for the name, the
// iteration count Cyrus gives new passwords) and refuses the client's proof, as for a wrong
// password. It takes as long as for a known name, because Cyrus does the same work meanwhile:
// the same first message for a user who is in the sasldb, on a connection of its own.
//
// Call order: start() with the client's initial response if any, then step() for each line the
// client sends after a 334, until the outcome is not Continue.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace auth {

struct ServerOptions {
    std::string sasldb;                   // path of the Cyrus sasldb
    std::vector<std::string> mechanisms;  // offered, e.g. PLAIN LOGIN SCRAM-SHA-256
    std::string hostname;                 // the server's name (Cyrus's default realm)
    std::string saslauthd;                // or: the saslauthd socket, which checks passwords instead
};

enum class Outcome { Continue, Success, Failure, TempFailure, Invalid };

class SaslServer {
public:
    // `challenge` receives the first challenge when the outcome is Continue.
    static std::unique_ptr<SaslServer> start(const ServerOptions& options, const std::string& mechanism,
                                             const std::optional<std::string>& initial, std::string& challenge,
                                             Outcome& outcome, std::string& detail);
    ~SaslServer();
    Outcome step(std::string_view response, std::string& challenge, std::string& detail);
    const std::string& username() const { return m_username; }

private:
    SaslServer() = default;
    Outcome outcome_of(int r, std::string& detail);
    void note_username();
    // Cyrus answered `r` to the client's first message `message`: an unknown user of SCRAM gets a
    // made-up server-first-message in `challenge` (true).
    bool decoy(int r, std::string_view message, std::string& challenge);

    struct Conn;
    std::unique_ptr<Conn> m_conn;
    ServerOptions m_options;
    std::string m_username;
    std::string m_mechanism;
    bool m_first_message = true;  // the next client message is its first
    bool m_decoy = false;         // an unknown SCRAM user: the next message fails
};

// Sets a user's password in the sasldb (creating the file); false with `error` on failure.
bool set_password(const std::string& sasldb, const std::string& hostname, const std::string& user,
                  const std::string& password, std::string& error);
bool delete_user(const std::string& sasldb, const std::string& hostname, const std::string& user, std::string& error);

}  // namespace auth
