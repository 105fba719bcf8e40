// The listener on a real libuv loop and real loopback sockets, driven by a scripted client.
#include "conf/config_load.hpp"
#include "gateway/common/log.hpp"
#include "gateway/queue/spool.hpp"
#include "gateway/smtpd/server.hpp"

#include <catch2/catch.hpp>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <fstream>
#include <sstream>
#include <thread>

using namespace gateway;

namespace {

struct Gateway {
    std::string dir;
    std::shared_ptr<const conf::Config> config;
    uv_loop_t loop{};
    std::unique_ptr<Spool> spool;
    std::unique_ptr<Server> server;
    uv_async_t stop_async{};
    std::thread thread;
    int port = 0;

    explicit Gateway(const std::string& extra = "") {
        char name[] = "/tmp/smtpgw-listener-XXXXXX";
        dir = mkdtemp(name);
        auto r = conf::load_string(
            "hostname: gw.example\nlisten: [{ address: \"127.0.0.1:0\" }]\nqueue: { dir: " + dir + " }\n" + extra,
            "test.yaml");
        INFO(r.first_error());
        REQUIRE(r.ok());
        config = std::make_shared<const conf::Config>(*r.config);
        uv_loop_init(&loop);
        spool = std::make_unique<Spool>(dir);
        spool->open(&loop);
        server = std::make_unique<Server>(&loop, config, *spool);
        server->start();
        port = server->bound_ports().at(0);
        stop_async.data = this;
        uv_async_init(&loop, &stop_async, [](uv_async_t* a) {
            auto* g = static_cast<Gateway*>(a->data);
            uv_close(reinterpret_cast<uv_handle_t*>(a), nullptr);
            g->server->stop([g] { g->spool->close(); });
        });
        thread = std::thread([this] { uv_run(&loop, UV_RUN_DEFAULT); });
    }

    void stop() {
        if (!thread.joinable()) return;
        uv_async_send(&stop_async);
        thread.join();
        CHECK(uv_loop_close(&loop) == 0);
    }

    ~Gateway() {
        stop();
        std::system(("rm -rf '" + dir + "'").c_str());
    }

    std::string content(const std::string& id) const {
        std::ifstream in(spool->layout().message(id), std::ios::binary);
        std::ostringstream s;
        s << in.rdbuf();
        auto stored = read_stored_message(spool->layout(), id);
        return s.str().substr(0, stored.content_size);
    }
};

struct Client {
    int fd = -1;
    std::string buffer;

    explicit Client(int port) {
        fd = socket(AF_INET, SOCK_STREAM, 0);
        sockaddr_in a{};
        a.sin_family = AF_INET;
        a.sin_port = htons(uint16_t(port));
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        REQUIRE(connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
        timeval tv{10, 0};
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    }
    ~Client() { ::close(fd); }

    void send(const std::string& s) {
        size_t off = 0;
        while (off < s.size()) {
            ssize_t n = ::send(fd, s.data() + off, s.size() - off, MSG_NOSIGNAL);
            REQUIRE(n > 0);
            off += size_t(n);
        }
    }

    // One complete reply (all lines of a multi-line one); empty at EOF.
    std::string reply() {
        std::string out;
        for (;;) {
            auto nl = buffer.find("\r\n");
            if (nl == std::string::npos) {
                char b[4096];
                ssize_t n = recv(fd, b, sizeof b, 0);
                if (n <= 0) return out;
                buffer.append(b, size_t(n));
                continue;
            }
            std::string line = buffer.substr(0, nl + 2);
            buffer.erase(0, nl + 2);
            out += line;
            if (line.size() >= 4 && line[3] == ' ') return out;
        }
    }

    bool at_eof() {
        char b;
        return recv(fd, &b, 1, 0) == 0;
    }
};

std::string queued_id(const std::string& reply) {
    auto at = reply.find("queued as ");
    REQUIRE(at != std::string::npos);
    return reply.substr(at + 10, reply.find("\r\n") - at - 10);
}

}  // namespace

TEST_CASE("a pipelined transaction over a loopback socket is stored", "[listener]") {
    Gateway gw;
    Client c(gw.port);
    CHECK(c.reply() == "220 gw.example ESMTP\r\n");
    c.send("EHLO t\r\nMAIL FROM:<a@x.example>\r\nRCPT TO:<b@y.example>\r\nDATA\r\n");
    CHECK(c.reply().rfind("250-gw.example\r\n250-PIPELINING\r\n", 0) == 0);
    CHECK(c.reply() == "250 2.1.0 Ok\r\n");
    CHECK(c.reply() == "250 2.1.5 Ok\r\n");
    CHECK(c.reply() == "354 End data with <CR><LF>.<CR><LF>\r\n");
    c.send("Subject: t\r\nMessage-ID: <t@x>\r\nDate: d\r\n\r\nbody\r\n.\r\nQUIT\r\n");
    auto queued = c.reply();
    auto id = queued_id(queued);
    // 250 means the file is already in place.
    auto content = gw.content(id);
    CHECK(content.substr(content.find("Subject: t")) == "Subject: t\r\nMessage-ID: <t@x>\r\nDate: d\r\n\r\nbody\r\n");
    CHECK(c.reply() == "221 2.0.0 Bye\r\n");
    CHECK(c.at_eof());
}

TEST_CASE("a large message streams to disk and arrives intact", "[listener]") {
    Gateway gw("limits: { message_size: 64M }\n");
    Client c(gw.port);
    c.reply();
    c.send("EHLO t\r\nMAIL FROM:<a@x.example>\r\nRCPT TO:<b@y.example>\r\nDATA\r\n");
    for (int i = 0; i < 4; ++i)
        c.reply();
    std::string body;
    for (int i = 0; i < 200000; ++i)
        body += "line " + std::to_string(i) + " of a big message, long enough to count\r\n";
    std::string message = "Subject: big\r\nMessage-ID: <b@x>\r\nDate: d\r\n\r\n" + body;
    c.send(message + ".\r\n");
    auto id = queued_id(c.reply());
    auto content = gw.content(id);
    CHECK(content.size() > message.size());
    CHECK(content.substr(content.find("Subject: big")) == message);
}

TEST_CASE("connections per client are limited", "[listener][limits]") {
    Gateway gw("limits: { connections_per_client: 2 }\n");
    Client a(gw.port), b(gw.port);
    CHECK(a.reply() == "220 gw.example ESMTP\r\n");
    CHECK(b.reply() == "220 gw.example ESMTP\r\n");
    Client c(gw.port);
    CHECK(c.reply() == "421 4.7.0 gw.example Error: too many connections from 127.0.0.1\r\n");
    CHECK(c.at_eof());
    a.send("QUIT\r\n");
    CHECK(a.reply() == "221 2.0.0 Bye\r\n");
    CHECK(a.at_eof());
    // The slot is free again once the first one has gone.
    for (int tries = 0;; ++tries) {
        Client d(gw.port);
        auto r = d.reply();
        if (r == "220 gw.example ESMTP\r\n") break;
        REQUIRE(tries < 50);
        usleep(20000);
    }
}

TEST_CASE("connections in total are limited", "[listener][limits]") {
    Gateway gw("limits: { connections: 1 }\n");
    Client a(gw.port);
    CHECK(a.reply() == "220 gw.example ESMTP\r\n");
    Client b(gw.port);
    CHECK(b.reply() == "421 4.7.0 gw.example Error: too many connections\r\n");
    CHECK(b.at_eof());
}

TEST_CASE("the command timeout ends an idle session with 421", "[listener][limits]") {
    Gateway gw("limits: { command_timeout: 1s }\n");
    Client c(gw.port);
    c.reply();
    CHECK(c.reply() == "421 4.4.2 gw.example Error: timeout exceeded\r\n");
    CHECK(c.at_eof());
}

TEST_CASE("stopping the server tells idle clients and closes every handle", "[listener]") {
    Gateway gw;
    Client c(gw.port);
    c.reply();
    c.send("EHLO t\r\n");
    c.reply();
    gw.stop();  // checks uv_loop_close() == 0
    CHECK(c.reply() == "421 4.3.2 gw.example Service shutting down, closing transmission channel\r\n");
    CHECK(c.at_eof());
}
