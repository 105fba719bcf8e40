// The SASL server for AUTH from clients (RFC 4954), on Cyrus SASL with a sasldb: one fresh
// sasl_conn_t per attempt, no security layer. The answers are what the SMTP session needs to
// choose its reply: success (235), failure (535, the same for an unknown user as for a wrong
// password), temporary trouble (454), or a client error (501).
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

    struct Conn;
    std::unique_ptr<Conn> m_conn;
    std::string m_username;
};

// Sets a user's password in the sasldb (creating the file); false with `error` on failure.
bool set_password(const std::string& sasldb, const std::string& hostname, const std::string& user,
                  const std::string& password, std::string& error);
bool delete_user(const std::string& sasldb, const std::string& hostname, const std::string& user, std::string& error);

}  // namespace auth
