"""/healthz and /readyz on the metrics listener, for load balancers and orchestrators: ready while
the gateway takes mail, 503 "draining" from SIGTERM until the messages in transfer are done."""
import signal
import unittest
import urllib.error
import urllib.request

from gwtest import Gateway, wait_for
from peers import free_tcp_port


def get(port, path):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


class HealthTest(unittest.TestCase):
    def test_ready_until_draining(self):
        port, admin = free_tcp_port(), free_tcp_port()
        gw = Gateway(f'metrics: {{ listen: "127.0.0.1:{port}" }}\nadmin: {{ listen: "127.0.0.1:{admin}" }}\n')
        self.addCleanup(gw.cleanup)
        gw.start()
        self.assertEqual(get(port, "/healthz"), (200, "ok\n"))
        self.assertEqual(get(port, "/readyz"), (200, "ready\n"))
        self.assertEqual(get(port, "/readyz?verbose")[0], 200)
        self.assertEqual(get(port, "/ready")[0], 404)
        # The console's listener answers both without a sign-in.
        self.assertEqual(get(admin, "/healthz"), (200, "ok\n"))
        self.assertEqual(get(admin, "/readyz"), (200, "ready\n"))
        # A message in transfer keeps the gateway draining after SIGTERM (up to 10 s).
        c = gw.connect()
        c.reply()
        c.command("EHLO client.test")
        c.command("MAIL FROM:<app@example.com>")
        c.command("RCPT TO:<a@example.com>")
        self.assertTrue(c.command("DATA").startswith("354 "))
        c.send("Subject: half\r\n\r\nfirst line\r\n")
        gw.proc.send_signal(signal.SIGTERM)
        gw.wait_log(r"stopping: no new connections")
        self.assertEqual(get(port, "/readyz"), (503, "not ready: draining: the gateway is stopping\n"))
        self.assertEqual(get(port, "/healthz"), (200, "ok\n"))
        self.assertEqual(get(admin, "/readyz"), (503, "not ready: draining: the gateway is stopping\n"))
        self.assertEqual(get(admin, "/healthz"), (200, "ok\n"))
        self.assertEqual(get(admin, "/login"), (503, "the gateway is stopping\n"))
        c.send("last line\r\n.\r\n")
        self.assertTrue(c.reply().startswith("250 2.0.0 Ok: queued as "))
        wait_for(lambda: gw.proc.poll() is not None, timeout=15, what="the gateway to stop")
        self.assertEqual(gw.proc.returncode, 0)


if __name__ == "__main__":
    unittest.main()
