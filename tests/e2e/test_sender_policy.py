"""Sender rewriting and routing, end to end against real Postfix upstreams.

  relay-a   Postfix at 127.0.1.1:2525 (the default route)
  relay-b   Postfix at 127.0.1.2:2525 (b.test, and mail from *@billing.example)
  dead      127.0.1.3:2525, where nothing listens; dead.test goes [dead, relay-a]
Each Postfix delivers every domain into one Maildir, where Return-Path: shows the envelope
sender the gateway used.
"""
import os
import re
import subprocess
import unittest

from gwtest import Gateway, queued_id
from peers import Postfix

RULES = """sender:
  rewrite:
    - { from: "*@scanner.local", to: scans@example.com }
    - { from: "/^([a-z]+)\\\\.([a-z]+)@legacy\\\\.example$/", to: "$2.$1@example.com" }
    - { from: "printer-*@*.corp.example", to: printers@example.com }
    - { from: "*", to: relay-account@example.com }
  header_from: HEADER_FROM
"""

ROUTES = """routes:
  - { to: b.test, via: relay-b }
  - { from: "*@billing.example", via: relay-b }
  - { to: dead.test, via: [dead, relay-a] }
  - { to: "*", via: relay-a }
upstreams:
  relay-a: { host: 127.0.1.1, port: 2525, security: none }
  relay-b: { host: 127.0.1.2, port: 2525, security: none }
  dead: { host: 127.0.1.3, port: 2525, security: none }
queue: { dir: {spool}, retry: [1s] }
"""


def config(header_from="keep"):
    return RULES.replace("HEADER_FROM", header_from) + ROUTES


@unittest.skipUnless(os.geteuid() == 0, "Postfix peers need root to start")
class SenderPolicyTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.a = Postfix("relay-a.test", "127.0.1.1", 2525).start()
        cls.b = Postfix("relay-b.test", "127.0.1.2", 2525).start()

    @classmethod
    def tearDownClass(cls):
        cls.a.cleanup()
        cls.b.cleanup()

    def gateway(self, text):
        gw = Gateway(text)
        gw.start()
        self.addCleanup(gw.cleanup)
        return gw

    def send(self, gw, sender, to, subject, headers=()):
        args = ["--from", sender, "--to", to, "--header", f"Subject: {subject}", "--body", "hello"]
        for h in headers:
            args += ["--header", h]
        r = gw.swaks(*args)
        return queued_id(r.stdout)

    def received(self, relay, subject):
        return relay.wait_subject(subject)

    # --- rewriting --------------------------------------------------------------------------
    def test_envelope_rewrite_with_from_kept(self):
        gw = self.gateway(config("keep"))
        qid = self.send(gw, "scanner@scanner.local", "alice@a.test", "scan 1",
                        headers=["From: Scanner <scanner@scanner.local>"])
        msg = self.received(self.a, "scan 1")
        self.assertEqual(msg["Return-Path"], "<scans@example.com>")
        self.assertEqual(msg["From"], "Scanner <scanner@scanner.local>")
        self.assertIsNone(msg["Reply-To"])
        gw.wait_log(rf"cleanup\[\d+\]: {qid}: sender\.rewrite\[0\]: from=<scans@example\.com>, "
                    r"orig_from=<scanner@scanner\.local>$")
        gw.wait_log(rf"qmgr\[\d+\]: {qid}: from=<scans@example\.com>, orig_from=<scanner@scanner\.local>, size=\d+, "
                    r"nrcpt=1 \(queue active\)")

    def test_regex_captures_and_globs(self):
        gw = self.gateway(config("keep"))
        for sender, subject, expected in [("ann.lee@legacy.example", "regex", "<lee.ann@example.com>"),
                                          ("printer-3@floor2.corp.example", "glob", "<printers@example.com>"),
                                          ("someone@elsewhere.example", "catch-all", "<relay-account@example.com>")]:
            with self.subTest(sender=sender):
                self.send(gw, sender, "bob@a.test", subject)
                self.assertEqual(self.received(self.a, subject)["Return-Path"], expected)

    def test_the_null_sender_is_never_rewritten(self):
        gw = self.gateway(config("rewrite"))
        qid = self.send(gw, "<>", "bob@a.test", "null sender")
        msg = self.received(self.a, "null sender")
        self.assertEqual(msg["Return-Path"], "<>")
        self.assertFalse([l for l in gw.log_lines() if f"{qid}: sender.rewrite" in l])

    def test_header_from_rewrite_moves_the_old_from_to_reply_to(self):
        gw = self.gateway(config("rewrite"))
        self.send(gw, "scanner@scanner.local", "carol@a.test", "scan 2",
                  headers=['From: "Scanner, 3rd floor" <scanner@scanner.local>'])
        msg = self.received(self.a, "scan 2")
        self.assertEqual(msg["Return-Path"], "<scans@example.com>")
        self.assertEqual(msg["From"], '"Scanner, 3rd floor" <scans@example.com>')
        self.assertEqual(msg["Reply-To"], '"Scanner, 3rd floor" <scanner@scanner.local>')
        self.assertEqual(len(msg.get_all("From")), 1)
        # A Reply-To: the message already has is kept.
        qid = self.send(gw, "scanner@scanner.local", "carol@a.test", "scan 3",
                        headers=["From: scanner@scanner.local", "Reply-To: helpdesk@example.com"])
        msg = self.received(self.a, "scan 3")
        self.assertEqual(msg["From"], "<scans@example.com>")
        self.assertEqual(msg.get_all("Reply-To"), ["helpdesk@example.com"])
        gw.wait_log(rf"{qid}: sender\.rewrite\[0\]: from=<scans@example\.com>, orig_from=<scanner@scanner\.local>, "
                    r"header From: rewritten$")

    # --- routing ----------------------------------------------------------------------------
    def test_two_domains_two_upstreams_and_a_sender_route(self):
        gw = self.gateway(config("keep"))
        qa = self.send(gw, "app@app.example", "x@a.test", "to a")
        qb = self.send(gw, "app@app.example", "y@b.test", "to b")
        # Matched on the original sender: billing@billing.example is rewritten, but still goes to relay-b.
        qs = self.send(gw, "billing@billing.example", "z@a.test", "from billing")
        self.received(self.a, "to a")
        self.received(self.b, "to b")
        msg = self.received(self.b, "from billing")
        self.assertEqual(msg["Return-Path"], "<relay-account@example.com>")
        for qid, rcpt, relay in [(qa, "x@a.test", "127.0.1.1"), (qb, "y@b.test", "127.0.1.2"),
                                 (qs, "z@a.test", "127.0.1.2")]:
            gw.wait_log(rf"{qid}: to=<{re.escape(rcpt)}>, relay={re.escape(relay)}\[{re.escape(relay)}\]:2525, .*"
                        r"status=sent")
        self.assertFalse([m for m in self.a.messages() if m["Subject"] in ("to b", "from billing")])

    def test_one_message_split_across_routes(self):
        gw = self.gateway(config("keep"))
        r = gw.swaks("--from", "app@app.example", "--to", "p@a.test,q@b.test", "--header", "Subject: split")
        qid = queued_id(r.stdout)
        self.assertEqual(self.received(self.a, "split")["Delivered-To"], "p@a.test")
        self.assertEqual(self.received(self.b, "split")["Delivered-To"], "q@b.test")
        gw.wait_log(rf"{qid}: removed")

    def test_failover_from_a_dead_upstream(self):
        gw = self.gateway(config("keep"))
        qid = self.send(gw, "app@app.example", "f@dead.test", "failover")
        gw.wait_log(rf"{qid}: to=<f@dead\.test>, via dead failed \(connect to 127\.0\.1\.3\[127\.0\.1\.3\]:2525: "
                    r"Connection refused\); trying relay-a")
        self.received(self.a, "failover")
        gw.wait_log(rf"{qid}: to=<f@dead\.test>, relay=127\.0\.1\.1\[127\.0\.1\.1\]:2525, .*status=sent")

    # --- reload -----------------------------------------------------------------------------
    def test_reload_reroutes_queued_mail_and_keeps_sessions(self):
        held = ROUTES.replace('{ to: "*", via: relay-a }', '{ to: "*", via: dead }')
        gw = self.gateway(RULES.replace("HEADER_FROM", "keep") + held)
        qid = self.send(gw, "app@app.example", "r@a.test", "rerouted")
        gw.wait_log(rf"{qid}: to=<r@a\.test>, relay=none, .*status=deferred \(connect to 127\.0\.1\.3")
        [entry] = gw.queue()
        self.assertEqual(entry["sender"], "relay-account@example.com")
        self.assertEqual(entry["orig_sender"], "app@app.example")

        session = gw.connect()
        session.reply()
        session.command("EHLO client.test")
        self.assertEqual(session.command("MAIL FROM:<app@app.example>"), "250 2.1.0 Ok\r\n")

        # An invalid file is refused before the gateway is told.
        with open(gw.config_path) as f:
            good = f.read()
        with open(gw.config_path, "w") as f:
            f.write(good + "routes: oops\n")
        out = gw.run("reload")
        self.assertEqual(out.returncode, 1)
        self.assertIn("not reloaded: the running gateway keeps its configuration", out.stderr)

        with open(gw.config_path, "w") as f:
            f.write(good.replace('{ to: "*", via: dead }', '{ to: "*", via: relay-a }'))
        out = gw.run("reload")
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertEqual(out.stdout, f"smtpgw: ok: configuration reloaded from {gw.config_path}\n")
        gw.wait_log(r"configuration reloaded from ")
        self.received(self.a, "rerouted")
        gw.wait_log(rf"{qid}: to=<r@a\.test>, relay=127\.0\.1\.1\[127\.0\.1\.1\]:2525, .*status=sent")

        # The session opened before the reload carries on.
        self.assertEqual(session.command("RCPT TO:<s@a.test>"), "250 2.1.5 Ok\r\n")
        self.assertEqual(session.command("DATA"), "354 End data with <CR><LF>.<CR><LF>\r\n")
        session.send("Subject: during reload\r\n\r\nhi\r\n.\r\n")
        self.assertTrue(session.reply().startswith("250 2.0.0 Ok: queued as "))
        self.received(self.a, "during reload")

    def test_reload_without_a_running_gateway(self):
        gw = Gateway(config())
        self.addCleanup(gw.cleanup)
        out = gw.run("reload")
        self.assertEqual(out.returncode, 1)
        self.assertIn("no gateway is running on the spool", out.stderr)


class ExampleConfigurationsTest(unittest.TestCase):
    """Every ready-made configuration in conf/examples/ passes check-config."""

    def test_examples_are_valid(self):
        here = os.path.dirname(os.path.abspath(__file__))
        examples = os.path.join(here, "../../conf/examples")
        names = sorted(n for n in os.listdir(examples) if n.endswith(".yaml"))
        for expected in ("smtpgw.yaml", "exchange-connector.yaml", "exchange-online.yaml", "elasticemail.yaml",
                         "direct.yaml"):
            self.assertIn(expected, names)
        binary = os.environ.get("SMTPGW_BIN", os.path.join(here, "../../build/smtpgw"))
        for name in names:
            with self.subTest(example=name):
                out = subprocess.run([binary, "check-config", "-c", os.path.join(examples, name)],
                                     capture_output=True, text=True, timeout=30)
                self.assertEqual(out.returncode, 0, out.stdout + out.stderr)
                self.assertIn("configuration is valid", out.stdout)


if __name__ == "__main__":
    unittest.main()
