"""Clients that attack the listener, against the real binary: each test performs the attack and
asserts the bound (memory, descriptors, time), not only the reply."""
import base64
import json
import os
import resource
import select
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
import unittest

from gwtest import BIN, Gateway, queued_id, wait_for
from peers import free_tcp_port

HERE = os.path.dirname(os.path.abspath(__file__))
# Under AddressSanitizer the allocator keeps freed memory in quarantine and pads every block:
# the memory bounds are measured on the release build.
SANITIZED = os.environ.get("SMTPGW_SANITIZED") == "1"


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        return int(next(l for l in f if l.startswith("VmRSS:")).split()[1])


def descriptors(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime, stime


def spooled(spool):
    """Octets in the spool's queue folder."""
    folder = os.path.join(spool, "queue")
    total = 0
    for name in os.listdir(folder):
        try:
            total += os.path.getsize(os.path.join(folder, name))
        except FileNotFoundError:
            pass
    return total


def settle(pid, quiet=1.0, timeout=60):
    """Waits until the process has used no CPU for `quiet` seconds: it has done what it will."""
    deadline = time.monotonic() + timeout
    last = cpu_ticks(pid)
    while time.monotonic() < deadline:
        time.sleep(quiet)
        now = cpu_ticks(pid)
        if now == last:
            return
        last = now
    raise AssertionError(f"process {pid} still busy after {timeout} s")


def flood(sock, data, seconds=3.0):
    """Writes `data` without ever reading, until the peer has taken it all or has not taken more
    for `seconds` (or the connection breaks); returns the octets it took."""
    sock.setblocking(False)
    sent, view = 0, memoryview(data)
    idle_since = time.monotonic()
    while sent < len(data) and time.monotonic() - idle_since < seconds:
        _, writable, _ = select.select([], [sock], [], 0.2)
        if not writable:
            continue
        try:
            n = sock.send(view[sent:])
        except (BlockingIOError, InterruptedError):
            continue
        except OSError:
            break
        sent += n
        idle_since = time.monotonic()
    return sent


def small_buffers(sock):
    # Small kernel buffers on our side, so that what the gateway holds is what is measured.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)


class ListenerUnderAttack(unittest.TestCase):
    """A gateway for an attack from 127.0.0.1, which may not relay here."""
    TIMEOUT = "3s"

    def setUp(self):
        self.gw = Gateway("clients: [192.0.2.0/24]\n"
                          f"limits: {{ command_timeout: {self.TIMEOUT}, connections: 1100, connections_per_client: 1100 }}\n")
        self.gw.start()
        self.pid = self.gw.proc.pid

    def tearDown(self):
        self.gw.cleanup()


class UnreadRepliesTest(ListenerUnderAttack):
    """A client that pipelines commands and never reads a reply."""

    def test_one_connection_pipelining_ehlo_is_bounded_and_timed_out(self):
        before_rss, before_fds = rss_kb(self.pid), descriptors(self.pid)
        s = socket.create_connection((self.gw.host, self.gw.port))
        small_buffers(s)
        sent = flood(s, b"EHLO x\r\n" * (1 << 20))  # 8 MiB
        grown = rss_kb(self.pid) - before_rss
        self.assertLess(sent, 8 << 20, "the gateway read everything")
        if not SANITIZED:
            self.assertLess(grown, 5 * 1024, f"RSS grew by {grown} kB after {sent} octets of EHLO")
        # Nothing is read any more: after the command timeout the gateway says 421 and, since the
        # client takes nothing, closes after the drain time (here the command timeout again).
        self.gw.wait_log(r"smtpd\[\d+\]: timeout after EHLO from unknown\[127\.0\.0\.1\]", timeout=10)
        self.gw.wait_log(r"disconnect from unknown\[127\.0\.0\.1\] ehlo=\d+ commands=\d+", timeout=10)
        wait_for(lambda: descriptors(self.pid) <= before_fds, timeout=5, what="the connection's descriptor to go")
        s.close()


class ManyUnreadRepliesTest(ListenerUnderAttack):
    """A thousand such clients at once, with a command timeout long enough not to end the attack."""
    TIMEOUT = "5m"

    @unittest.skipIf(SANITIZED, "memory is measured on the release build")
    def test_a_thousand_connections_stay_under_200_mb(self):
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 4096)), hard))
        before = rss_kb(self.pid)
        socks = []
        try:
            for _ in range(1000):
                s = socket.socket()
                small_buffers(s)
                s.connect((self.gw.host, self.gw.port))
                s.setblocking(False)
                socks.append(s)
            # 256 KiB each: more replies than the kernel's socket buffers take, so that what is
            # left waits in the gateway.
            data = memoryview(b"EHLO x\r\n" * 32768)
            offsets = [0] * len(socks)
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                progress = False
                for i, s in enumerate(socks):
                    if offsets[i] >= len(data):
                        continue
                    try:
                        offsets[i] += s.send(data[offsets[i]:])
                        progress = True
                    except (BlockingIOError, InterruptedError):
                        pass
                if not progress:
                    break
                time.sleep(0.05)
            settle(self.pid)
            total = sum(offsets)
            peak = rss_kb(self.pid)
            self.assertGreater(total, 1000 * 128 * 1024, "the clients could not send what the test needs")
            self.assertLess(peak, 200 * 1024, f"RSS {peak} kB with 1,000 connections ({before} kB before)")
        finally:
            for s in socks:
                s.close()


class UnfinishedMessagesTest(unittest.TestCase):
    """Clients that each send most of a 1 MB message and stop before its end: the copies kept for
    a message's first delivery stay within their 64 MiB budget, and the messages still arrive."""
    SESSIONS = 150
    SIZE = 1000 * 1000

    def setUp(self):
        self.gw = Gateway("limits: { connections: 500, connections_per_client: 500, command_timeout: 60s }\n")
        self.gw.start()
        self.pid = self.gw.proc.pid

    def tearDown(self):
        self.gw.cleanup()

    @unittest.skipIf(SANITIZED, "the allocator's quarantine and padding make RSS meaningless")
    def test_copies_of_unfinished_messages_stay_within_their_budget(self):
        line = b"z" * 998 + b"\r\n"
        body = b"Subject: unfinished\r\n\r\n" + line * (self.SIZE // len(line))
        before = rss_kb(self.pid)
        clients = []
        for i in range(self.SESSIONS):
            c = self.gw.connect()
            c.reply()
            c.command("EHLO many.test")
            c.command("MAIL FROM:<app@corp.example>")
            c.command(f"RCPT TO:<r{i}@example.org>")
            self.assertTrue(c.command("DATA").startswith("354"))
            c.send(body)
            clients.append(c)
            # Each message written out before the next comes, so that what RSS holds is the
            # copies and not the writer's backlog (whose buffers the allocator keeps once freed).
            wait_for(lambda: spooled(self.gw.spool) >= (i + 1) * (self.SIZE - 70 * 1000), timeout=30,
                     what=f"{i + 1} unfinished messages written to the spool")
        settle(self.pid)
        grown = rss_kb(self.pid) - before
        # 150 MB sent: without the budget the gateway would hold all of it.
        self.assertLess(grown, 100 * 1024, f"RSS grew by {grown} kB with {self.SESSIONS} unfinished 1 MB messages")
        for c in clients:
            c.send(b".\r\n")
        for c in clients:
            reply = c.reply()
            self.assertTrue(reply.startswith("250 2.0.0 Ok: queued as "), reply)
            c.command("QUIT")
        queued = {e["id"]: e for e in self.gw.queue()}
        self.assertEqual(len(queued), self.SESSIONS)
        self.assertTrue(all(e["size"] > self.SIZE for e in queued.values()))



class ImplicitTlsLimitsTest(unittest.TestCase):
    """Idle connections to a `tls: implicit` listener: the connection limits hold before any
    handshake, refused connections close at once, and a handshake has a deadline of its own."""

    def setUp(self):
        self.certs = tempfile.mkdtemp(prefix="smtpgw-certs-")
        subprocess.run([os.path.join(HERE, "../tools/make-certs"), self.certs, "gw.test"], check=True,
                       capture_output=True)
        self.gw = Gateway(f"""listen:
  - {{ address: "127.0.0.1:0", tls: implicit, auth: none }}
tls: {{ certificate: {self.certs}/gw.test.pem, key: {self.certs}/gw.test.key }}
limits: {{ connections: 5, connections_per_client: 2, handshake_timeout: 2s }}
""")
        self.gw.start()
        self.pid = self.gw.proc.pid
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 4096)), hard))

    def tearDown(self):
        self.gw.cleanup()
        shutil.rmtree(self.certs, ignore_errors=True)

    def open_idle(self, sources):
        socks = []
        for source in sources:
            s = socket.socket()
            s.bind((source, 0))
            s.connect((self.gw.host, self.gw.port))
            socks.append(s)
        return socks

    def test_idle_connections_from_one_address(self):
        base = descriptors(self.pid)
        socks = self.open_idle(["127.0.0.1"] * 200)
        try:
            # Two are counted and wait for a handshake; the other 198 are closed at once.
            wait_for(lambda: descriptors(self.pid) <= base + 2, timeout=5, what="refused connections to close")
            self.assertEqual(sum(1 for s in socks if closed_by_peer(s, wait=0.05)), 198)
            self.gw.wait_log(r"refusing connection from unknown\[127\.0\.0\.1\]: 421 4\.7\.0 gw\.test Error: too many "
                             r"connections from 127\.0\.0\.1")
            # No handshake within limits.handshake_timeout: the last two go too.
            wait_for(lambda: descriptors(self.pid) <= base, timeout=6, what="the handshake timeout")
            self.gw.wait_log(r"timeout after CONNECT from unknown\[127\.0\.0\.1\]")
        finally:
            for s in socks:
                s.close()

    def test_idle_connections_from_many_addresses(self):
        base = descriptors(self.pid)
        sources = [f"127.0.{i // 250 + 1}.{i % 250 + 1}" for i in range(1500)]
        socks = self.open_idle(sources)
        try:
            wait_for(lambda: descriptors(self.pid) <= base + 5, timeout=10, what="refused connections to close")
            self.gw.wait_log(r"refusing connection from unknown\[127\.0\.\d+\.\d+\]: 421 4\.7\.0 gw\.test Error: too "
                             r"many connections")
            wait_for(lambda: descriptors(self.pid) <= base, timeout=6, what="the handshake timeout")
        finally:
            for s in socks:
                s.close()

    def test_a_trickled_handshake_is_cut_off(self):
        s = socket.create_connection((self.gw.host, self.gw.port))
        started = time.monotonic()
        hello = bytes.fromhex("16030100")  # the start of a TLS record, one octet every half second
        try:
            for b in hello * 4:
                s.send(bytes([b]))
                time.sleep(0.5)
                if closed_by_peer(s, wait=0):
                    break
            self.assertTrue(closed_by_peer(s, wait=3))
            self.assertLess(time.monotonic() - started, 4.5)
        finally:
            s.close()


def closed_by_peer(sock, wait=1.0):
    sock.setblocking(False)
    try:
        ready, _, _ = select.select([sock], [], [], wait)
        if not ready:
            return False
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except BlockingIOError:
        return False
    finally:
        sock.setblocking(True)


class AuthAttackTest(unittest.TestCase):
    """Guessing at AUTH: user names cannot be told apart, and parallel connections get no more
    tries between them than one connection."""

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="smtpgw-sasl-")
        self.gw = Gateway(f"""listen:
  - {{ address: "127.0.0.1:0", tls: none, auth: optional }}
clients: [192.0.2.0/24]
sasl: {{ sasldb: {self.dir}/sasldb2, mechanisms: [PLAIN, LOGIN, SCRAM-SHA-256, SCRAM-SHA-1],
        plaintext_without_tls: true }}
limits: {{ connections_per_client: 100 }}
""")
        for user in ("alice@gw.test", "bob@gw.test"):
            r = subprocess.run([BIN, "user", "add", user, "-c", self.gw.config_path], input="right one\nright one\n",
                               text=True, capture_output=True)
            self.assertEqual(r.returncode, 0, r.stderr)
        self.gw.start()

    def tearDown(self):
        self.gw.cleanup()
        shutil.rmtree(self.dir, ignore_errors=True)

    def session(self, source):
        c = self.gw.connect(source)
        c.reply()
        c.command("EHLO attacker.test")
        return c

    def scram_first(self, source, mechanism, user):
        c = self.session(source)
        first = base64.b64encode(f"n,,n={user},r=0123456789abcdef".encode()).decode()
        started = time.perf_counter()
        reply = c.command(f"AUTH {mechanism} {first}")
        return c, reply, time.perf_counter() - started

    def test_scram_answers_unknown_users_as_known_ones(self):
        times = {"known": [], "unknown": []}
        for round in range(12):
            for kind, user in (("known", "alice@gw.test"), ("unknown", f"ghost{round}@gw.test")):
                c, reply, took = self.scram_first(f"127.0.3.{round + 1}", "SCRAM-SHA-256", user)
                times[kind].append(took)
                self.assertRegex(reply, r"^334 [A-Za-z0-9+/=]+\r\n$")
                server_first = base64.b64decode(reply[4:]).decode()
                self.assertRegex(server_first, r"^r=0123456789abcdef[A-Za-z0-9+/]{32},s=[A-Za-z0-9+/]{43}=,i=4096$")
                if round == 0:  # a wrong proof: the same refusal either way
                    final = base64.b64encode(b"c=biws,r=" + server_first.split(",")[0][2:].encode() +
                                             b",p=" + base64.b64encode(b"\0" * 32)).decode()
                    self.assertEqual(c.command(final),
                                     "535 5.7.8 Error: authentication failed: authentication failure\r\n")
                else:
                    c.command("*")
                c.close()
        known, unknown = statistics.median(times["known"]), statistics.median(times["unknown"])
        self.assertLess(abs(known - unknown), max(0.005, 0.5 * known), f"known {known * 1000:.1f} ms, unknown "
                        f"{unknown * 1000:.1f} ms")
        # The same made-up salt each time for the same name, another for another mechanism.
        salts = set()
        for mechanism in ("SCRAM-SHA-256", "SCRAM-SHA-256", "SCRAM-SHA-1"):
            c, reply, _ = self.scram_first("127.0.4.1", mechanism, "ghost@gw.test")
            salts.add(base64.b64decode(reply[4:]).decode().split(",")[1])
            c.command("*")
            c.close()
        self.assertEqual(len(salts), 2)
        self.gw.wait_log(r"warning: unknown\[127\.0\.3\.1\]: SASL SCRAM-SHA-256 authentication failed: user not found, "
                         r"sasl_username=ghost0@gw\.test")

    def test_cancelling_counts_as_a_failure(self):
        for i in range(5):
            c = self.session("127.0.5.1")
            self.assertTrue(c.command("AUTH LOGIN").startswith("334 "))
            self.assertEqual(c.command("*"), "501 5.7.0 Authentication aborted\r\n")
            c.close()
        c = self.session("127.0.5.1")
        self.assertEqual(c.command("AUTH LOGIN"), "421 4.7.0 gw.test Error: too many AUTH failures from 127.0.5.1\r\n")
        self.gw.wait_log(r"warning: unknown\[127\.0\.5\.1\]: SASL LOGIN authentication aborted")

    def test_thirty_parallel_guesses_get_five_answers(self):
        wrong = base64.b64encode(b"\0alice@gw.test\0guess").decode()
        conns = [self.session("127.0.6.1") for _ in range(30)]
        for c in conns:
            c.send(f"AUTH PLAIN {wrong}\r\n")
        replies = [c.reply() for c in conns]
        refused = [r for r in replies if r.startswith("535 ")]
        blocked = [r for r in replies if r == "421 4.7.0 gw.test Error: too many AUTH failures from 127.0.6.1\r\n"]
        self.assertEqual((len(refused), len(blocked)), (5, 25), replies)
        # Even the right password is not tried now.
        c = self.session("127.0.6.1")
        right = base64.b64encode(b"\0alice@gw.test\0right one").decode()
        self.assertTrue(c.command(f"AUTH PLAIN {right}").startswith("421 4.7.0 "))
        # Another address is not affected.
        c = self.session("127.0.6.2")
        self.assertEqual(c.command(f"AUTH PLAIN {right}"), "235 2.7.0 Authentication successful\r\n")


class CredentialsInTheDebugLogTest(unittest.TestCase):
    """AUTH LOGIN's answers pipelined behind an AUTH that is refused arrive as command lines; even
    at log level debug they never reach the log."""

    def test_pipelined_answers_to_a_refused_auth(self):
        d = tempfile.mkdtemp(prefix="smtpgw-sasl-")
        config = f"""listen:
  - {{ address: "127.0.0.1:0", tls: none, auth: optional }}
sasl: {{ sasldb: {d}/sasldb2, mechanisms: [PLAIN, LOGIN] }}
"""
        gw = Gateway(config)
        gw.write_config(config, log_level="debug")
        try:
            gw.start()
            user, password = base64.b64encode(b"alice@gw.test").decode(), base64.b64encode(b"s3cret!pw").decode()
            c = gw.connect()
            c.reply()
            c.command("EHLO client.test")
            # 538: AUTH needs TLS here; 504: no such mechanism.
            for auth in ("AUTH LOGIN", "AUTH CRAM-MD5"):
                c.send(f"{auth}\r\n{user}\r\n{password}\r\n")
                replies = [c.reply() for _ in range(3)]
                self.assertRegex(replies[0], r"^5(38|04) ")
                self.assertEqual(replies[1:], ["502 5.5.2 Error: command not recognized\r\n"] * 2)
            c.command("QUIT")
            gw.wait_log(r"disconnect from unknown\[127\.0\.0\.1\]")
            log = "\n".join(gw.log_lines())
            self.assertIn("< unknown[127.0.0.1]: AUTH LOGIN", log)  # debug lines are there
            self.assertIn("< unknown[127.0.0.1]: (not a command, 12 octets)", log)
            for secret in (user, password, "s3cret!pw"):
                self.assertNotIn(secret, log)
        finally:
            gw.cleanup()
            shutil.rmtree(d, ignore_errors=True)


class AddressLiteralTest(unittest.TestCase):
    """A relay client naming an address literal would have the gateway connect to any host,
    inside the network too: refused unless limits.address_literals says allow."""

    def run_rcpts(self, config):
        gw = Gateway(config)
        try:
            gw.start()
            c = gw.connect()
            c.reply()
            c.command("EHLO client.test")
            c.command("MAIL FROM:<app@example.com>")
            replies = [c.command(f"RCPT TO:<{r}>") for r in ("x@[127.0.0.1]", "y@[10.1.2.3]", "z@[IPv6:::1]")]
            return gw, replies
        except Exception:
            gw.cleanup()
            raise

    def test_refused_by_default(self):
        gw, replies = self.run_rcpts("")
        try:
            self.assertEqual(replies, [
                "550 5.7.1 <x@[127.0.0.1]>: Recipient address rejected: Address literals are not accepted\r\n",
                "550 5.7.1 <y@[10.1.2.3]>: Recipient address rejected: Address literals are not accepted\r\n",
                "550 5.7.1 <z@[IPv6:::1]>: Recipient address rejected: Address literals are not accepted\r\n"])
            gw.wait_log(r"NOQUEUE: reject: RCPT from unknown\[127\.0\.0\.1\]: 550 5\.7\.1 <y@\[10\.1\.2\.3\]>: Recipient "
                        r"address rejected: Address literals are not accepted; from=<app@example\.com> "
                        r"to=<y@\[10\.1\.2\.3\]> proto=ESMTP helo=<client\.test>")
        finally:
            gw.cleanup()

    def test_allowed_when_configured(self):
        gw, replies = self.run_rcpts("limits: { address_literals: allow }\n")
        try:
            self.assertEqual(replies, ["250 2.1.5 Ok\r\n"] * 3)
        finally:
            gw.cleanup()


class MetricsEndpointTest(unittest.TestCase):
    """Idle connections to /metrics cannot lock a scraper out: they are given 10 seconds for the
    request, and when all 64 places are taken, the oldest waiting one makes room."""

    def test_idle_connections_do_not_lock_out_the_scraper(self):
        port = free_tcp_port("127.0.2.3")
        gw = Gateway(f'metrics: {{ listen: "127.0.2.3:{port}" }}\n')
        try:
            gw.start()
            base = descriptors(gw.proc.pid)
            idle = [socket.create_connection(("127.0.2.3", port)) for _ in range(200)]
            started = time.monotonic()
            r = subprocess.run(["curl", "-sf", "--max-time", "5", f"http://127.0.2.3:{port}/metrics"],
                               capture_output=True, text=True, timeout=30)
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertIn("smtpgw_connections_total", r.stdout)
            self.assertLess(time.monotonic() - started, 2)
            self.assertLessEqual(descriptors(gw.proc.pid), base + 64)
            # Those that never send a request are closed after 10 seconds.
            wait_for(lambda: descriptors(gw.proc.pid) <= base, timeout=15, what="idle connections to close")
            for s in idle:
                s.close()
        finally:
            gw.cleanup()


class ControlCharactersTest(unittest.TestCase):
    """Escape sequences, NUL, BEL and octets that are not UTF-8, in a Message-ID: and in EHLO: none
    reaches the log, queue list, queue show or Received: raw, and each value is bounded."""

    def test_nothing_a_terminal_acts_on_leaves_the_gateway(self):
        gw = Gateway()
        try:
            gw.start()
            c = gw.connect()
            c.reply()
            c.send(b"EHLO evil\x1b[2J\x07.test\r\n")
            c.reply()
            self.assertTrue(c.command("MAIL FROM:<app@example.com>").startswith("250 "))
            self.assertTrue(c.command("RCPT TO:<someone@example.org>").startswith("250 "))
            c.command("DATA")
            folded = b"".join(b" <" + b"\x1b]0;x\x07" * 50 + b">\r\n" for _ in range(2000))  # 200 kB
            c.send(b"Message-ID: <\x1b[31mred\x00\x07\xff\xc2\x9b@evil.test>\r\n" + folded +
                   b"Subject: t\r\n\r\nbody\r\n.\r\n")
            qid = queued_id(c.reply())
            line = gw.wait_log(rf"cleanup\[\d+\]: {qid}: message-id=")
            self.assertTrue(line.endswith("..."), line[-80:])
            self.assertLess(len(line), 400)
            with open(gw.log_path, "rb") as f:
                log = f.read()
            log.decode("utf-8")  # valid UTF-8 throughout
            self.assertFalse(any(b < 0x20 and b != 0x0a for b in log), "a control character in the log")
            self.assertNotIn(b"\xc2\x9b", log)
            for args in (["queue", "list"], ["queue", "show", qid]):
                out = subprocess.run([BIN, *args, "-c", gw.config_path], capture_output=True, timeout=30).stdout
                out.decode("utf-8")
                self.assertFalse(any(b < 0x20 and b != 0x0a for b in out), args)
            out = subprocess.run([BIN, "queue", "list", "--json", "-c", gw.config_path], capture_output=True,
                                 timeout=30).stdout
            [entry] = json.loads(out.decode("utf-8"))
            self.assertTrue(entry["message_id"].startswith("<?[31mred?????@evil.test><?]0;x??]0;x"), entry["message_id"][:60])
            self.assertLessEqual(len(entry["message_id"].encode()), 256 + 3)
            received = gw.content(qid).split(b"\r\n")[0]
            self.assertIn(b"evil?[2J?.test", received)
        finally:
            gw.cleanup()


if __name__ == "__main__":
    unittest.main()
