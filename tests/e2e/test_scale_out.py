"""Several gateways behind a real HAProxy (TCP mode, send-proxy-v2, option smtpchk): clients are
seen with their own addresses (relay rights, logs, Received:), only the balancer may send a PROXY
header, a malformed one closes the connection, and under load one instance killed with SIGKILL
and restarted loses no message it acknowledged.

  127.0.0.90:2525   HAProxy's frontend; it connects to the gateways from 127.0.0.90
  127.0.0.91:2525   gateway 1      127.0.0.92:2525   gateway 2
  127.0.0.93:2525   the sink: a real Postfix both gateways relay to
  127.0.0.50        a client allowed to relay (clients:); 127.0.0.51 one that is not
"""
import concurrent.futures
import glob
import os
import re
import smtplib
import socket
import threading
import time
import unittest

from gwtest import Gateway, queued_id, wait_for
from peers import Haproxy, Postfix

FRONT, SINK = "127.0.0.90", "127.0.0.93"
INSTANCES = {"gw1": "127.0.0.91", "gw2": "127.0.0.92"}


def gateway_config(address, route_to_sink):
    routes = f"""routes: [{{ to: "*", via: sink }}]
upstreams: {{ sink: {{ host: {SINK}, port: 2525, security: none }} }}
""" if route_to_sink else ""
    return f"""listen:
  - {{ address: "{address}:2525", proxy_protocol: true, proxies: [{FRONT}/32] }}
clients: [127.0.0.50/32]
limits: {{ connections_per_client: 200, connections: 300, handshake_timeout: 2s }}
{routes}"""


def backend(check=True):
    health = "check check-send-proxy inter 300ms fall 1 rise 2" if check else ""
    return f"""    balance roundrobin
    option smtpchk EHLO haproxy.test
    source {FRONT}
""" + "".join(f"    server {name} {address}:2525 send-proxy-v2 {health}\n" for name, address in INSTANCES.items())


def via_balancer(source):
    return smtplib.SMTP(FRONT, 2525, source_address=(source, 0), timeout=30)


@unittest.skipUnless(os.geteuid() == 0, "Postfix peers need root to start")
class ClientAddressesTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.gws = {name: Gateway(gateway_config(address, route_to_sink=False)) for name, address in INSTANCES.items()}
        for gw in cls.gws.values():
            gw.start()
        cls.haproxy = Haproxy(f"{FRONT}:2525", backend()).start()
        wait_for(lambda: cls.haproxy.servers() == {"gw1": "UP", "gw2": "UP"}, timeout=15,
                 what="HAProxy's smtpchk to find both gateways UP")

    @classmethod
    def tearDownClass(cls):
        cls.haproxy.cleanup()
        for gw in cls.gws.values():
            gw.cleanup()

    def lines(self, pattern):
        rx = re.compile(pattern)
        return [l for gw in self.gws.values() for l in gw.log_lines() if rx.search(l)]

    def test_clients_are_seen_with_their_own_addresses(self):
        for _ in range(2):  # round robin: one session to each instance
            with via_balancer("127.0.0.50") as s:
                s.ehlo("printer.test")
                s.mail("scanner@example.com")
                self.assertEqual(s.rcpt("someone@example.org")[0], 250)
                code, reply = s.data(b"Subject: through the balancer\r\n\r\nhello\r\n")
                self.assertEqual(code, 250)
                qid = queued_id("250 " + reply.decode())
                gw = next(g for g in self.gws.values() if qid in {m["id"] for m in g.queue()})
                received = gw.content(qid).decode()
                self.assertIn("from printer.test (unknown [127.0.0.50])", received)
                self.assertEqual(next(m for m in gw.queue() if m["id"] == qid)["client"], "unknown[127.0.0.50]")
        self.assertEqual(len(self.lines(r"smtpd\[\d+\]: connect from unknown\[127\.0\.0\.50\]")), 2)
        # Both instances took one: the balancer spread them.
        for gw in self.gws.values():
            self.assertTrue(any("connect from unknown[127.0.0.50]" in l for l in gw.log_lines()))
        # The other client is refused relaying on its own address, not the balancer's.
        with via_balancer("127.0.0.51") as s:
            s.ehlo("stranger.test")
            s.mail("x@example.com")
            code, reply = s.rcpt("someone@example.org")
            self.assertEqual((code, reply.decode()), (554, "5.7.1 <someone@example.org>: Relay access denied"))
        wait_for(lambda: self.lines(r"NOQUEUE: reject: RCPT from unknown\[127\.0\.0\.51\]: 554 5\.7\.1 "
                                    r"<someone@example\.org>: Relay access denied"), what="the reject line")

    def test_only_the_balancer_may_send_the_header(self):
        gw = self.gws["gw1"]
        # Straight to the gateway from an address that is not a proxy: closed without a word.
        with socket.create_connection((INSTANCES["gw1"], 2525), timeout=10) as s:
            self.assertEqual(s.recv(100), b"")
        gw.wait_log(r"warning: connect from 127\.0\.0\.1 to 127\.0\.0\.91:2525: not in its proxies "
                    r"\(a PROXY protocol listener\); closed")
        # From the balancer's address but without a header, with a malformed one, or with none in time.
        for data, reason in [(b"EHLO client.test\r\n", "no PROXY protocol header"),
                             (b"PROXY TCP4 999.0.2.7 127.0.0.91 1 25\r\n",
                              "malformed address or port in the PROXY v1 header"),
                             (b"\r\n\r\n\x00\r\nQUIT\n\x21\x11\x10\x01", "PROXY v2 header of 4113 octets (at most 4112)"),
                             (b"PROXY TCP4 " + b"1" * 200, "PROXY v1 header without CRLF in 107 octets")]:
            s = socket.socket()
            s.bind((FRONT, 0))
            s.settimeout(10)
            s.connect((INSTANCES["gw1"], 2525))
            s.sendall(data)
            self.assertEqual(s.recv(100), b"", data)
            s.close()
            gw.wait_log(rf"warning: PROXY header from 127\.0\.0\.90: {re.escape(reason)}")
        # A balancer that connects and says nothing is closed after limits.handshake_timeout (2 s here);
        # however many do so at once, they count against limits.connections (300 here).
        silent = []
        for _ in range(400):
            s = socket.socket()
            s.bind((FRONT, 0))
            s.settimeout(10)
            s.connect((INSTANCES["gw1"], 2525))
            silent.append(s)
        started = time.monotonic()
        gw.wait_log(r"warning: connect from 127\.0\.0\.90 to 127\.0\.0\.91:2525: limits\.connections reached before "
                    r"its PROXY header; closed")
        for s in silent:
            try:
                self.assertEqual(s.recv(100), b"")
            except ConnectionResetError:
                pass
            s.close()
        self.assertLess(time.monotonic() - started, 8)
        gw.wait_log(r"warning: PROXY header from 127\.0\.0\.90: none within limits\.handshake_timeout; closed")
        # A v1 header by hand: the client it names is the client.
        s = socket.socket()
        s.bind((FRONT, 0))
        s.settimeout(10)
        s.connect((INSTANCES["gw1"], 2525))
        s.sendall(b"PROXY TCP4 192.0.2.7 127.0.0.91 40000 2525\r\n")
        self.assertTrue(s.recv(200).startswith(b"220 "))
        s.sendall(b"EHLO far.test\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.org>\r\n")
        wait_for(lambda: self.lines(r"NOQUEUE: reject: RCPT from unknown\[192\.0\.2\.7\]"), what="the reject line")
        s.close()

    def test_health_checks_keep_both_instances_up(self):
        time.sleep(1)
        self.assertEqual(self.haproxy.servers(), {"gw1": "UP", "gw2": "UP"})
        # smtpchk's sessions come as LOCAL: the balancer's own address, never a client's.
        self.assertTrue(self.lines(r"connect from unknown\[127\.0\.0\.90\]"))


@unittest.skipUnless(os.geteuid() == 0, "Postfix peers need root to start")
class FailoverTest(unittest.TestCase):
    """5,000 messages through HAProxy to two gateways relaying to a real Postfix; gateway 1 is
    killed (SIGKILL) midway and started again on its spool. Every message acknowledged with 250
    reaches the sink; duplicates (a 250 lost with the process, on either side) are counted and reported; sessions
    that failed are retried, and the balancer sends them to the other instance."""

    MESSAGES = 5000
    SESSIONS = 10

    def setUp(self):
        self.sink = Postfix("sink.scale.test", SINK, 2525).start()
        self.addCleanup(self.sink.cleanup)
        self.gws = {name: Gateway(gateway_config(address, route_to_sink=True)) for name, address in INSTANCES.items()}
        for gw in self.gws.values():
            gw.start()
            self.addCleanup(gw.cleanup)
        self.haproxy = Haproxy(f"{FRONT}:2525", backend()).start()
        self.addCleanup(self.haproxy.cleanup)
        wait_for(lambda: self.haproxy.servers() == {"gw1": "UP", "gw2": "UP"}, timeout=15, what="both UP")

    def delivered(self):
        """{load id: copies} in the sink's Maildir."""
        counts = {}
        for path in glob.glob(os.path.join(self.sink.maildir, "new", "*")) + \
                glob.glob(os.path.join(self.sink.maildir, "cur", "*")):
            with open(path, "rb") as f:
                m = re.search(rb"\nX-Load-Id: (\d+)\r?\n", f.read(4096))
            if m:
                counts[int(m.group(1))] = counts.get(int(m.group(1)), 0) + 1
        return counts

    def test_sigkill_midway_loses_nothing_acknowledged(self):
        acked, lock = set(), threading.Lock()
        retried = [0]
        todo = list(range(self.MESSAGES))
        killed = threading.Event()

        def worker(ids):
            pending = list(ids)
            while pending:
                try:
                    with via_balancer("127.0.0.50") as s:
                        while pending:
                            n = pending[0]
                            s.sendmail("load@example.com", [f"user{n % 50}@dest.test"],
                                       f"X-Load-Id: {n}\r\nSubject: load {n}\r\n\r\nmessage {n}\r\n")
                            with lock:
                                acked.add(n)
                            pending.pop(0)
                            if len(acked) >= self.MESSAGES * 2 // 5 and not killed.is_set():
                                killed.set()
                except (smtplib.SMTPException, OSError):
                    with lock:
                        retried[0] += 1  # the session died with its instance: again, through the balancer
                    time.sleep(0.05)

        started = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(self.SESSIONS) as pool:
            futures = [pool.submit(worker, todo[i::self.SESSIONS]) for i in range(self.SESSIONS)]
            killed.wait(timeout=300)
            self.gws["gw1"].kill()  # SIGKILL: no chance to finish anything
            wait_for(lambda: self.haproxy.servers()["gw1"] != "UP", timeout=10, what="HAProxy to mark gw1 down")
            self.gws["gw1"].start()  # on the same spool: what it acknowledged is still there
            for f in futures:
                f.result(timeout=600)
        elapsed = time.monotonic() - started
        self.assertEqual(acked, set(range(self.MESSAGES)))
        self.assertGreater(retried[0], 0, "no session was cut by the SIGKILL")
        wait_for(lambda: set(self.delivered()) >= acked, timeout=300, interval=1,
                 what="every acknowledged message at the sink")
        copies = self.delivered()
        duplicates = sum(c - 1 for c in copies.values())
        print(f"\n{self.MESSAGES} messages in {elapsed:.1f} s through HAProxy; sessions retried after the SIGKILL: "
              f"{retried[0]}; delivered twice: {duplicates}", flush=True)
        # A duplicate needs a 250 lost with the process: at most one per client session cut, and one
        # per delivery session to the sink that had its 250 and not yet recorded it (at most
        # delivery.destination_concurrency, 20).
        self.assertLessEqual(duplicates, retried[0] + 20)
        # The restarted instance is back in the balancer's rotation, and its queue has drained.
        wait_for(lambda: self.haproxy.servers()["gw1"] == "UP", timeout=10, what="gw1 UP again")
        wait_for(lambda: not self.gws["gw1"].queue() and not self.gws["gw2"].queue(), timeout=60,
                 what="both queues empty")


if __name__ == "__main__":
    unittest.main()
