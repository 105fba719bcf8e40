"""Servers that attack the delivery client: an upstream, or with direct delivery the MX of any
recipient domain. Each test runs such a server, has the real binary deliver to it, and asserts
the bound (memory, time, what reaches the log and the queue), not only the outcome."""
import re
import socket
import threading
import time
import unittest

from gwtest import Gateway, queued_id
from test_hostile_clients import SANITIZED, rss_kb

EVIL = ("127.0.0.44", 2525)


class EvilServer:
    """Greets, reads EHLO, then runs `after_ehlo(conn)`; counts the octets it sent."""

    def __init__(self, after_ehlo):
        self.after_ehlo = after_ehlo
        self.sent = 0
        self.connections = 0
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(EVIL)
        self.sock.listen(8)
        self.thread = threading.Thread(target=self.accept, daemon=True)
        self.thread.start()

    def accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self.session, args=(conn,), daemon=True).start()

    def session(self, conn):
        try:
            conn.sendall(b"220 evil.test ESMTP\r\n")
            f = conn.makefile("rb")
            f.readline()
            self.after_ehlo(self, conn, f)
        except OSError:
            pass
        finally:
            conn.close()

    def send(self, conn, data):
        conn.sendall(data)
        self.sent += len(data)

    def close(self):
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


def endless_ehlo(server, conn, _):
    line = b"250-" + b"x" * 70 + b"\r\n"
    chunk = line * 1000
    while server.sent < 200 << 20:  # 200 MiB, unless the gateway stops taking it
        server.send(conn, chunk)


def trickling_ehlo(server, conn, _):
    while True:
        server.send(conn, b"250-still talking\r\n")
        time.sleep(0.3)


def long_refusal(server, conn, f):
    conn.sendall(b"250-evil.test\r\n250 PIPELINING\r\n")
    while True:
        line = f.readline()
        if not line:
            return
        if line.upper().startswith(b"MAIL"):
            conn.sendall(b"250 2.1.0 Ok\r\n")
        elif line.upper().startswith(b"RCPT"):
            text = b"".join(b"450-4.2.0 " + b"w" * 100 + b"\x1b[2J\x07\r\n" for _ in range(40))
            conn.sendall(text + b"450 4.2.0 try later\r\n")
        elif line.upper().startswith(b"QUIT"):
            conn.sendall(b"221 bye\r\n")
            return
        else:
            conn.sendall(b"250 2.0.0 Ok\r\n")


class HostileServerTest(unittest.TestCase):
    def start(self, behaviour):
        self.server = EvilServer(behaviour)
        self.gw = Gateway(f"""routes: [{{ to: "*", via: evil }}]
upstreams: {{ evil: {{ host: {EVIL[0]}, port: {EVIL[1]}, security: none }} }}
delivery: {{ timeouts: {{ helo: 3s }} }}
""")
        self.gw.start()
        self.pid = self.gw.proc.pid

    def tearDown(self):
        self.gw.cleanup()
        self.server.close()

    def send(self):
        r = self.gw.swaks("--from", "app@example.com", "--to", "someone@example.org")
        self.assertEqual(r.returncode, 0, r.stdout)
        return queued_id(r.stdout)

    def test_an_endless_ehlo_reply_is_cut_off(self):
        self.start(endless_ehlo)
        before = rss_kb(self.pid)
        started = time.monotonic()
        qid = self.send()
        line = self.gw.wait_log(rf"smtp\[\d+\]: {qid}: to=<someone@example\.org>, .*status=deferred", timeout=20)
        self.assertLess(time.monotonic() - started, 10)
        self.assertIn("dsn=4.4.2, status=deferred (protocol error with 127.0.0.44[127.0.0.44] while performing "
                      "the EHLO handshake: reply longer than 1000 lines or 64 KiB)", line)
        if not SANITIZED:
            self.assertLess(rss_kb(self.pid) - before, 5 * 1024)
        self.assertLess(self.server.sent, 8 << 20)  # the gateway stopped reading long before 200 MiB

    def test_a_trickling_reply_does_not_hold_off_the_timeout(self):
        self.start(trickling_ehlo)
        started = time.monotonic()
        qid = self.send()
        line = self.gw.wait_log(rf"smtp\[\d+\]: {qid}: to=<someone@example\.org>, .*status=deferred", timeout=20)
        self.assertLess(time.monotonic() - started, 8)  # helo: 3s, not 3s after the last line
        self.assertIn("status=deferred (conversation with 127.0.0.44[127.0.0.44] timed out while performing "
                      "the EHLO handshake)", line)

    def test_a_long_reply_reaches_the_log_and_the_queue_cut_short_and_printable(self):
        self.start(long_refusal)
        qid = self.send()
        line = self.gw.wait_log(rf"smtp\[\d+\]: {qid}: to=<someone@example\.org>, .*status=deferred", timeout=20)
        reason = re.search(r"status=deferred \((.*)\)$", line).group(1)
        self.assertTrue(reason.startswith("host 127.0.0.44[127.0.0.44] said: 450-4.2.0 www"), reason)
        self.assertIn("?[2J?", reason)
        self.assertNotIn("\x1b", line)
        self.assertLess(len(reason), 2048 + 200)
        [entry] = self.gw.queue()
        [rcpt] = entry["recipients"]
        self.assertEqual(rcpt["reason"], reason)
        shown = self.gw.run("queue", "show", qid)
        self.assertNotIn("\x1b", shown.stdout)


if __name__ == "__main__":
    unittest.main()
