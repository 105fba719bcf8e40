// The c-ares resolver on a real libuv loop against a real DNS server (dnsmasq on loopback).
#include "gateway/dns/dns.hpp"

#include <catch2/catch.hpp>

#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <optional>

using namespace gateway;

namespace {

// A loopback port free for UDP and for TCP (dnsmasq listens on both).
int free_port() {
    for (;;) {
        int udp = socket(AF_INET, SOCK_DGRAM, 0), tcp = socket(AF_INET, SOCK_STREAM, 0);
        sockaddr_in a{};
        a.sin_family = AF_INET;
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        bind(udp, reinterpret_cast<sockaddr*>(&a), sizeof a);
        socklen_t len = sizeof a;
        getsockname(udp, reinterpret_cast<sockaddr*>(&a), &len);
        bool both = bind(tcp, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
        close(udp);
        close(tcp);
        if (both) return ntohs(a.sin_port);
    }
}

struct Dnsmasq {
    pid_t pid = -1;
    int port = 0;
    Dnsmasq() {
        // The port may be taken between the look and dnsmasq's bind: then dnsmasq exits at once,
        // and another port is tried.
        for (int tries = 0; tries < 10; ++tries) {
            port = free_port();
            pid = fork();
            if (pid == 0) {
                std::string p = "--port=" + std::to_string(port);
                execlp("dnsmasq", "dnsmasq", "--keep-in-foreground", p.c_str(), "--listen-address=127.0.0.1",
                       "--bind-interfaces", "--no-resolv", "--no-hosts", "--local=/test/",
                       "--pid-file=", "--log-facility=/dev/null", "--mx-host=example.test,mx1.example.test,10",
                       "--mx-host=example.test,mx2.example.test,20", "--host-record=mx1.example.test,127.0.0.11",
                       "--host-record=mx2.example.test,127.0.0.12,::12", "--mx-host=nullmx.test,.,0",
                       "--host-record=implicit.test,127.0.0.13", "--server=/servfail.test/127.0.0.1#9",
                       "--txt-record=spf.test,v=spf1 a -all", "--txt-record=spf.test,second record",
                       "--local=/in-addr.arpa/", nullptr);
                _exit(127);
            }
            usleep(300000);
            if (waitpid(pid, nullptr, WNOHANG) == 0) return;  // running
        }
        FAIL("dnsmasq did not start");
    }
    conf::Dns config() const {  // one quick try at this server
        conf::Dns cfg;
        cfg.servers = {{"127.0.0.1", uint16_t(port)}};
        cfg.timeout = std::chrono::seconds(1);
        cfg.attempts = 1;
        return cfg;
    }
    ~Dnsmasq() {
        kill(pid, SIGTERM);
        waitpid(pid, nullptr, 0);
    }
};

struct Loop {
    uv_loop_t loop;
    Loop() { uv_loop_init(&loop); }
    ~Loop() {
        uv_run(&loop, UV_RUN_DEFAULT);
        CHECK(uv_loop_close(&loop) == 0);
    }
    template <typename F>
    void until(F done) {
        while (!done())
            uv_run(&loop, UV_RUN_ONCE);
    }
};

}  // namespace

TEST_CASE("MX and address lookups against dnsmasq", "[dns]") {
    Dnsmasq server;
    Loop l;
    dns::Resolver r(&l.loop, server.config());

    std::optional<std::pair<dns::Status, std::vector<dns::MxRecord>>> mx, null_mx, no_mx, nx, servfail;
    auto keep = [](auto& slot) { return [&slot](dns::Status s, std::vector<dns::MxRecord> v) { slot.emplace(s, v); }; };
    r.mx("example.test", keep(mx));
    r.mx("nullmx.test", keep(null_mx));
    r.mx("implicit.test", keep(no_mx));
    r.mx("nosuch.test", keep(nx));
    r.mx("servfail.test", keep(servfail));
    std::optional<std::pair<dns::Status, std::vector<conf::IpAddress>>> both, none;
    r.addresses("mx2.example.test", [&](dns::Status s, std::vector<conf::IpAddress> a) { both.emplace(s, a); });
    r.addresses("nosuch.test", [&](dns::Status s, std::vector<conf::IpAddress> a) { none.emplace(s, a); });
    l.until([&] { return mx && null_mx && no_mx && nx && servfail && both && none; });

    REQUIRE(mx->first == dns::Status::Ok);
    REQUIRE(mx->second.size() == 2);
    CHECK(((mx->second[0].host == "mx1.example.test" && mx->second[0].preference == 10) ||
           (mx->second[1].host == "mx1.example.test" && mx->second[1].preference == 10)));
    REQUIRE(null_mx->first == dns::Status::Ok);
    REQUIRE(null_mx->second.size() == 1);
    CHECK(null_mx->second[0].host.empty());
    CHECK(no_mx->first == dns::Status::NoData);
    CHECK(nx->first == dns::Status::NotFound);
    CHECK(servfail->first == dns::Status::TempFail);
    REQUIRE(both->first == dns::Status::Ok);
    REQUIRE(both->second.size() == 2);
    CHECK(both->second[0].to_string() == "127.0.0.12");  // IPv4 first
    CHECK(both->second[1].to_string() == "::12");
    CHECK(none->first == dns::Status::NotFound);
    r.close();
}

TEST_CASE("one record type at a time: A, AAAA, TXT and PTR keep their status", "[dns]") {
    Dnsmasq server;
    Loop l;
    dns::Resolver r(&l.loop, server.config());
    using Addresses = std::optional<std::pair<dns::Status, std::vector<conf::IpAddress>>>;
    using Texts = std::optional<std::pair<dns::Status, std::vector<std::string>>>;
    Addresses a, aaaa, a_none;
    Texts txt, no_txt, ptr, no_ptr;
    auto keep_a = [](Addresses& slot) {
        return [&slot](dns::Status s, std::vector<conf::IpAddress> v) { slot.emplace(s, std::move(v)); };
    };
    auto keep_t = [](Texts& slot) {
        return [&slot](dns::Status s, std::vector<std::string> v) { slot.emplace(s, std::move(v)); };
    };
    r.a("mx2.example.test", keep_a(a));
    r.aaaa("mx2.example.test", keep_a(aaaa));
    r.a("example.test", keep_a(a_none));
    r.txt("spf.test", keep_t(txt));
    r.txt("mx1.example.test", keep_t(no_txt));
    r.ptr("11.0.0.127.in-addr.arpa", keep_t(ptr));
    r.ptr("99.0.0.127.in-addr.arpa", keep_t(no_ptr));
    l.until([&] { return a && aaaa && a_none && txt && no_txt && ptr && no_ptr; });
    CHECK(a->first == dns::Status::Ok);
    REQUIRE(a->second.size() == 1);
    CHECK(a->second[0].to_string() == "127.0.0.12");
    CHECK(aaaa->first == dns::Status::Ok);
    REQUIRE(aaaa->second.size() == 1);
    CHECK(aaaa->second[0].to_string() == "::12");
    CHECK(a_none->first == dns::Status::NoData);
    CHECK(txt->first == dns::Status::Ok);
    std::sort(txt->second.begin(), txt->second.end());
    CHECK(txt->second == std::vector<std::string>{"second record", "v=spf1 a -all"});
    CHECK(no_txt->first == dns::Status::NoData);
    CHECK(ptr->first == dns::Status::Ok);
    CHECK(ptr->second.at(0) == "mx1.example.test");
    CHECK(no_ptr->first == dns::Status::NotFound);
    r.close();
}
