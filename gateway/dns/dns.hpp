// Asynchronous DNS on the libuv loop (c-ares): MX and address lookups for delivery.
//
// c-ares tells us which sockets it wants watched (sock_state_cb); each gets a uv_poll_t, and
// one uv_timer_t drives its retransmissions. Raw c-ares codes are turned into Status here;
// nothing outside this file includes <ares.h>.
//
// Call order: construct on the loop thread (throws on a bad server list), query freely, then
// close() before the loop is closed; pending callbacks then run with Status::TempFail.
#pragma once

#include "conf/cidr.hpp"
#include "conf/config.hpp"

#include <uv.h>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace gateway::dns {

enum class Status {
    Ok,
    NoData,    // the name exists, but has no record of this type (NOERROR, empty answer)
    NotFound,  // NXDOMAIN
    TempFail,  // SERVFAIL, timeout, refused, no server reachable
};

struct MxRecord {
    uint16_t preference = 0;
    std::string host;  // empty for the null MX "." (RFC 7505)
};

using MxCallback = std::function<void(Status, std::vector<MxRecord>)>;
using AddressCallback = std::function<void(Status, std::vector<conf::IpAddress>)>;
using TextCallback = std::function<void(Status, std::vector<std::string>)>;

std::string library_version();  // "1.18.1"

// "Host not found, try again" and the other texts Postfix uses in its reasons.
const char* status_text(Status s);

// The lookups delivery needs; Resolver is the real one, tests may script their own.
class Client {
public:
    virtual ~Client() = default;
    virtual void mx(const std::string& name, MxCallback done) = 0;
    // A and AAAA together: IPv4 addresses first. Ok when either had addresses.
    virtual void addresses(const std::string& name, AddressCallback done) = 0;
};

class Resolver : public Client {
public:
    Resolver(uv_loop_t* loop, const conf::Dns& config);
    ~Resolver() override;
    Resolver(const Resolver&) = delete;
    Resolver& operator=(const Resolver&) = delete;

    void mx(const std::string& name, MxCallback done) override;
    void addresses(const std::string& name, AddressCallback done) override;
    // One type at a time, for `smtpgw doctor` (SPF, reverse DNS, blocklists).
    void a(const std::string& name, AddressCallback done);
    void aaaa(const std::string& name, AddressCallback done);
    void txt(const std::string& name, TextCallback done);  // each record's strings joined
    void ptr(const std::string& name, TextCallback done);  // "4.3.2.1.in-addr.arpa" -> names
    void close();

private:
    struct Poll;
    static void on_sock_state(void* data, int fd, int readable, int writable);
    void query(const std::string& name, int type, std::function<void(int status, const unsigned char*, int)> done);
    void arm_timer();
    void process(int read_fd, int write_fd);

    uv_loop_t* m_loop;
    void* m_channel = nullptr;  // ares_channel
    uv_timer_t* m_timer = nullptr;
    std::map<int, Poll*> m_polls;
    bool m_closed = false;
};

}  // namespace gateway::dns
