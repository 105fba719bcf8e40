// The spool on a real libuv loop and a real directory.
#include "gateway/log.hpp"
#include "gateway/spool.hpp"

#include <catch2/catch.hpp>

#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>
#include <fstream>
#include <set>
#include <sstream>

using namespace gateway;

namespace {

struct TempDir {
    std::string path;
    TempDir() {
        char name[] = "/tmp/smtpgw-spool-XXXXXX";
        path = mkdtemp(name);
    }
    ~TempDir() { std::system(("rm -rf '" + path + "'").c_str()); }
};

struct Loop {
    uv_loop_t loop;
    Loop() { uv_loop_init(&loop); }
    ~Loop() {
        uv_run(&loop, UV_RUN_DEFAULT);
        REQUIRE(uv_loop_close(&loop) == 0);
    }
    // Runs until `done` holds.
    template <typename F>
    void until(F done) {
        while (!done())
            uv_run(&loop, UV_RUN_ONCE);
    }
};

std::string slurp(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    std::ostringstream s;
    s << in.rdbuf();
    return s.str();
}

std::set<std::string> files_in(const std::string& dir) {
    std::set<std::string> out;
    if (DIR* d = opendir(dir.c_str())) {
        while (auto* e = readdir(d))
            if (e->d_name[0] != '.') out.insert(e->d_name);
        closedir(d);
    }
    return out;
}

Envelope envelope(const std::string& id, uint64_t size) {
    Envelope e;
    e.id = id;
    e.size = size;
    e.sender = "a@x.example";
    e.recipients.emplace_back("b@y.example");
    return e;
}

void spit(const std::string& path, const std::string& content) { std::ofstream(path, std::ios::binary) << content; }

}  // namespace

TEST_CASE("a committed message is on disk, complete, before the callback", "[spool]") {
    TempDir dir;
    Loop l;
    Spool spool(dir.path);
    CHECK(spool.open(&l.loop).empty());
    auto txn = spool.begin("A1");
    std::string content = "Subject: x\r\n\r\n" + std::string(100000, 'b') + "\r\n";
    spool.write(txn, content.substr(0, 50000), [] {});
    spool.write(txn, content.substr(50000), [] {});
    std::optional<CommitResult> result;
    spool.commit(txn, envelope("A1", content.size()), [&](CommitResult r, const Envelope& e) {
        result = r;
        CHECK(e.id == "A1");
        // Durable and in place when the session is told.
        CHECK(slurp(spool.layout().content("A1")) == content);
        CHECK(parse_envelope(slurp(spool.layout().envelope("A1"))).envelope);
    });
    l.until([&] { return result.has_value(); });
    CHECK(*result == CommitResult::Stored);
    CHECK(files_in(spool.layout().queue()) == std::set<std::string>{"A1.env", "A1.msg"});
    struct stat st {};
    REQUIRE(stat(spool.layout().content("A1").c_str(), &st) == 0);
    CHECK((st.st_mode & 0777) == 0600);
    spool.close();
}

TEST_CASE("an aborted message leaves nothing behind", "[spool]") {
    TempDir dir;
    Loop l;
    Spool spool(dir.path);
    spool.open(&l.loop);
    auto txn = spool.begin("B1");
    spool.write(txn, "partial", [] {});
    spool.abort(txn);
    bool removed = false;
    spool.remove("NOTHERE", [&](bool) { removed = true; });  // a job after the abort: the abort is done
    l.until([&] { return removed; });
    CHECK(files_in(spool.layout().queue()).empty());
    spool.close();
}

TEST_CASE("many commits share directory syncs (group commit)", "[spool]") {
    TempDir dir;
    Loop l;
    Spool spool(dir.path);
    spool.open(&l.loop);
    const int n = 300;
    int stored = 0;
    for (int i = 0; i < n; ++i) {
        std::string id = "C" + std::to_string(i);
        auto txn = spool.begin(id);
        spool.write(txn, "message " + std::to_string(i) + "\r\n", [] {});
        spool.commit(txn, envelope(id, 10 + std::to_string(i).size()), [&](CommitResult r, const Envelope&) {
            if (r == CommitResult::Stored) ++stored;
        });
    }
    l.until([&] { return stored == n; });
    CHECK(files_in(spool.layout().queue()).size() == size_t(2 * n));
    INFO("batches: " << spool.commit_batches());
    CHECK(spool.commit_batches() < uint64_t(n));
    spool.close();
}

TEST_CASE("updates replace the envelope atomically, remove deletes both files", "[spool]") {
    TempDir dir;
    Loop l;
    Spool spool(dir.path);
    spool.open(&l.loop);
    auto txn = spool.begin("D1");
    spool.write(txn, "x\r\n", [] {});
    bool done = false;
    spool.commit(txn, envelope("D1", 3), [&](CommitResult, const Envelope&) { done = true; });
    l.until([&] { return done; });
    auto e = envelope("D1", 3);
    e.attempts = 3;
    e.recipients[0].status = RcptStatus::Deferred;
    e.recipients[0].reason = "connect to mx[192.0.2.1]:25: Connection refused";
    bool ok = false;
    done = false;
    spool.update(e, [&](bool r) { ok = r, done = true; });
    l.until([&] { return done; });
    CHECK(ok);
    auto back = parse_envelope(slurp(spool.layout().envelope("D1")));
    REQUIRE(back.envelope);
    CHECK(back.envelope->attempts == 3);
    CHECK(back.envelope->recipients[0].reason == e.recipients[0].reason);
    done = false;
    spool.remove("D1", [&](bool r) { ok = r, done = true; });
    l.until([&] { return done; });
    CHECK(ok);
    CHECK(files_in(spool.layout().queue()).empty());
    spool.close();
}

TEST_CASE("start-up recovery keeps good messages and moves damaged files aside", "[spool]") {
    TempDir dir;
    std::vector<std::string> logs;
    log::set_capture([&](const std::string& line) { logs.push_back(line); });
    SpoolLayout layout{dir.path};
    mkdir(layout.root.c_str(), 0700);
    mkdir(layout.queue().c_str(), 0700);
    // A good message.
    spit(layout.content("E1"), "hello\r\n");
    spit(layout.envelope("E1"), serialize(envelope("E1", 7)));
    // Content whose envelope never landed (the client never got 250).
    spit(layout.content("E2"), "half");
    // An envelope cut short.
    auto text = serialize(envelope("E3", 1));
    spit(layout.content("E3"), "x");
    spit(layout.envelope("E3"), text.substr(0, text.size() - 10));
    // Content of the wrong size.
    spit(layout.content("E4"), "too long");
    spit(layout.envelope("E4"), serialize(envelope("E4", 2)));
    // A temporary file and a stranger.
    spit(layout.queue() + "/E5.17.tmp", "tmp");
    spit(layout.queue() + "/notes.txt", "?");
    {
        Loop l;
        Spool spool(dir.path);
        auto found = spool.open(&l.loop);
        REQUIRE(found.size() == 1);
        CHECK(found[0].envelope.id == "E1");
        CHECK(files_in(layout.queue()) == std::set<std::string>{"E1.env", "E1.msg"});
        CHECK(files_in(layout.corrupt()) ==
              std::set<std::string>{"E2.msg", "E3.env", "E3.msg", "E4.env", "E4.msg", "E5.17.tmp", "notes.txt"});
        spool.close();
    }
    log::set_capture(nullptr);
    auto logged = [&](const std::string& fragment) {
        for (const auto& line : logs)
            if (line.find(fragment) != std::string::npos) return true;
        return false;
    };
    CHECK(logged("warning: moved " + layout.queue() + "/E2.msg to " + layout.corrupt() +
                 "/: content without an envelope (never acknowledged)"));
    CHECK(logged("E3.env to " + layout.corrupt() + "/: truncated"));
    CHECK(logged("E4.env to " + layout.corrupt() + "/: content size does not match the envelope"));
}

TEST_CASE("one spool, one gateway", "[spool]") {
    TempDir dir;
    Loop l;
    Spool first(dir.path);
    first.open(&l.loop);
    Spool second(dir.path);
    Loop l2;
    CHECK_THROWS_WITH(second.open(&l2.loop), Catch::Contains("is in use by another smtpgw process"));
    first.close();
    second.close();
}
