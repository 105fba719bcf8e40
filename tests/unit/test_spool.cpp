// The spool on a real libuv loop and a real directory.
#include "gateway/common/log.hpp"
#include "gateway/queue/spool.hpp"

#include <catch2/catch.hpp>

#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>
#include <fstream>
#include <optional>
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
        // Durable and in place when the session is told: content, envelope, trailer.
        auto file = slurp(spool.layout().message("A1"));
        CHECK(file.substr(0, content.size()) == content);
        CHECK(file.substr(file.size() - k_trailer_size) == message_trailer(content.size()));
        auto stored = read_stored_message(spool.layout(), "A1");
        REQUIRE(stored.envelope);
        CHECK(stored.content_size == content.size());
    });
    l.until([&] { return result.has_value(); });
    CHECK(*result == CommitResult::Stored);
    CHECK(files_in(spool.layout().queue()) == std::set<std::string>{"A1"});
    struct stat st {};
    REQUIRE(stat(spool.layout().message("A1").c_str(), &st) == 0);
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
    // A message stored after the abort: the abort is done.
    auto next = spool.begin("B2");
    spool.write(next, "x\r\n", [] {});
    bool stored = false;
    spool.commit(next, envelope("B2", 3), [&](CommitResult, const Envelope&) { stored = true; });
    l.until([&] { return stored; });
    CHECK(files_in(spool.layout().queue()) == std::set<std::string>{"B2"});
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
    CHECK(files_in(spool.layout().queue()).size() == size_t(n));
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
    CHECK(files_in(spool.layout().queue()) == std::set<std::string>{"D1", "D1.env"});
    auto back = read_stored_message(spool.layout(), "D1");
    REQUIRE(back.envelope);
    CHECK(back.envelope->attempts == 3);
    CHECK(back.envelope->recipients[0].reason == e.recipients[0].reason);
    // Reading content stops where the envelope begins.
    std::optional<std::string> data;
    spool.read("D1", 3, 0, 1000, [&](int err, std::string d) {
        CHECK(err == 0);
        data = d;
    });
    l.until([&] { return data.has_value(); });
    CHECK(*data == "x\r\n");
    done = false;
    spool.remove("D1", true, 3, [&](bool r) { ok = r, done = true; });
    l.until([&] { return done; });
    CHECK(ok);
    CHECK(files_in(spool.layout().queue()).empty());
    spool.close();
}

TEST_CASE("a message being received goes ahead of a mass of envelope updates", "[spool]") {
    TempDir dir;
    Loop l;
    Spool spool(dir.path);
    spool.open(&l.loop);
    // 2,000 messages deferred at once, as when a destination dies under a large queue.
    const int n = 2000;
    int stored = 0;
    for (int i = 0; i < n; ++i) {
        std::string id = "F" + std::to_string(i);
        auto txn = spool.begin(id);
        spool.write(txn, "x\r\n", [] {});
        spool.commit(txn, envelope(id, 3),
                     [&](CommitResult r, const Envelope&) { stored += r == CommitResult::Stored; });
    }
    l.until([&] { return stored == n; });
    int updated = 0, failed = 0;
    for (int i = 0; i < n; ++i) {
        auto e = envelope("F" + std::to_string(i), 3);
        e.attempts = 1;
        spool.update(e, [&](bool ok) { ok ? ++updated : ++failed; });
    }
    REQUIRE(spool.bulk_backlog() > 0);
    // A client's message arrives behind them: it is stored while most of them still wait.
    auto txn = spool.begin("G1");
    spool.write(txn, "y\r\n", [] {});
    std::optional<int> updated_before_commit;
    spool.commit(txn, envelope("G1", 3), [&](CommitResult r, const Envelope&) {
        CHECK(r == CommitResult::Stored);
        updated_before_commit = updated;
    });
    l.until([&] { return updated == n; });
    REQUIRE(updated_before_commit.has_value());
    CHECK(*updated_before_commit < n / 2);
    CHECK(failed == 0);
    spool.close();
}

TEST_CASE("start-up recovery keeps good messages and moves damaged files aside", "[spool]") {
    TempDir dir;
    std::vector<std::string> logs;
    log::set_capture([&](const std::string& line) { logs.push_back(line); });
    SpoolLayout layout{dir.path};
    mkdir(layout.root.c_str(), 0700);
    mkdir(layout.queue().c_str(), 0700);
    auto message = [&](const std::string& id, const std::string& content, const Envelope& e) {
        spit(layout.message(id), content + serialize(e) + message_trailer(content.size()));
    };
    // A good message, and one with an updated envelope.
    message("E1", "hello\r\n", envelope("E1", 7));
    message("E6", "x\r\n", envelope("E6", 3));
    auto updated = envelope("E6", 3);
    updated.attempts = 4;
    spit(layout.envelope("E6"), serialize(updated));
    // A message whose commit never completed (the client never got 250).
    spit(layout.queue() + "/E2.tmp", "half");
    // A message file cut short.
    message("E3", "x", envelope("E3", 1));
    truncate(layout.message("E3").c_str(), 20);
    // Content of the wrong size.
    spit(layout.message("E4"), "too long" + serialize(envelope("E4", 2)) + message_trailer(8));
    // An envelope update left behind, the envelope of a message that is gone, and a stranger.
    spit(layout.queue() + "/E1.17.tmp", "tmp");
    spit(layout.envelope("E7"), serialize(envelope("E7", 1)));
    spit(layout.queue() + "/notes.txt", "?");
    {
        Loop l;
        Spool spool(dir.path);
        // open() only lists: the names of message files, oldest first.
        CHECK(spool.open(&l.loop) == std::vector<std::string>{"E1", "E3", "E4", "E6"});
        std::vector<Envelope> found;
        std::optional<Spool::LoadSummary> summary;
        spool.load(
            [&](std::vector<Envelope> chunk) {
                for (auto& e : chunk)
                    found.push_back(std::move(e));
            },
            [&](const Spool::LoadSummary& s) { summary = s; });
        l.until([&] { return summary.has_value(); });
        REQUIRE(found.size() == 2);
        CHECK(found[0].id == "E1");
        CHECK(found[1].id == "E6");
        CHECK(found[1].attempts == 4);
        CHECK(summary->messages == 2);
        CHECK(summary->damaged == 6);
        CHECK(files_in(layout.queue()) == std::set<std::string>{"E1", "E6", "E6.env"});
        CHECK(files_in(layout.corrupt()) ==
              std::set<std::string>{"E2.tmp", "E3", "E4", "E1.17.tmp", "E7.env", "notes.txt"});
        spool.close();
    }
    log::set_capture(nullptr);
    auto logged = [&](const std::string& fragment) {
        for (const auto& line : logs)
            if (line.find(fragment) != std::string::npos) return true;
        return false;
    };
    CHECK(logged("warning: moved " + layout.queue() + "/E2.tmp to " + layout.corrupt() +
                 "/: written, but never acknowledged or put in place"));
    CHECK(logged("E3 to " + layout.corrupt() + "/: truncated"));
    CHECK(logged("E4 to " + layout.corrupt() + "/: content size does not match the envelope"));
    CHECK(logged("E7.env to " + layout.corrupt() + "/: envelope of a message that is gone"));
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

TEST_CASE("a delivered message's file is written over by the next one, cut to length", "[spool]") {
    TempDir dir;
    Loop l;
    Spool spool(dir.path);
    spool.open(&l.loop);
    auto store = [&](const std::string& id, const std::string& content) {
        auto txn = spool.begin(id);
        spool.write(txn, std::string(content), [] {});
        std::optional<CommitResult> r;
        spool.commit(txn, envelope(id, content.size()), [&](CommitResult c, const Envelope&) { r = c; });
        l.until([&] { return r.has_value(); });
        REQUIRE(*r == CommitResult::Stored);
    };
    store("F1", std::string(10000, 'a') + "\r\n");
    bool done = false;
    spool.remove("F1", false, 10002, [&](bool) { done = true; });
    l.until([&] { return done; });
    CHECK(files_in(spool.layout().queue()).empty());
    CHECK(files_in(spool.layout().free()).size() == 1);

    store("F2", "short\r\n");
    CHECK(files_in(spool.layout().free()).empty());
    auto file = slurp(spool.layout().message("F2"));
    CHECK(file.find("aaaa") == std::string::npos);  // nothing of the old message is left
    auto stored = read_stored_message(spool.layout(), "F2");
    REQUIRE(stored.envelope);
    CHECK(stored.envelope->id == "F2");
    CHECK(file.size() == 7 + serialize(envelope("F2", 7)).size() + k_trailer_size);

    // Files over 1 MiB are not kept.
    store("F3", std::string(1100000, 'b'));
    done = false;
    spool.remove("F3", false, 1100000, [&](bool) { done = true; });
    l.until([&] { return done; });
    CHECK(files_in(spool.layout().free()).empty());
    spool.close();
}
