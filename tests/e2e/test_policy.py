"""Who may send what (policy:), with real clients: swaks and msmtp against the real binary.

One gateway with two listeners (the second with its own `clients`), a sasldb with two users,
and these rules, first match wins:
  scanner*            may send only as scans@example.com, only to *@example.com, 5 recipients an hour
  127.0.0.3           60 messages a minute
  127.0.0.4           messages up to 10k
  127.0.0.0/8         the print room: only as scans@example.com, to example.com and partner.example
and limits.connection_rate 10 a minute per client address. Every client address below is used by
one test only, so the rates of one test do not touch another.
"""
import os
import re
import subprocess
import time
import unittest
import urllib.request

from gwtest import BIN, Gateway, Client, wait_for
from peers import free_tcp_port

USER, PASSWORD = "scanner1", "scan-pass-1"
PRINT_ROOM = f"""
listen:
  - {{ address: "127.0.0.1:0", auth: optional }}
  - {{ address: "127.0.0.1:0", clients: ["127.0.0.2/32"] }}
clients: ["127.0.0.0/8"]
sasl: {{ sasldb: {{dir}}/sasldb2, mechanisms: [PLAIN, LOGIN], plaintext_without_tls: true }}
policy:
  - match: {{ user: "scanner*" }}
    senders: [scans@example.com]
    recipients: ["*@example.com"]
    rate: {{ recipients: 5/h }}
  - match: {{ clients: [127.0.0.3/32] }}
    rate: {{ messages: 60/m }}
  - match: {{ clients: [127.0.0.4/32] }}
    message_size: 10k
  - match: {{ clients: [127.0.0.0/8] }}
    senders: [scans@example.com]
    recipients: ["*@example.com", "*@partner.example"]
limits: {{ connection_rate: 10/m }}
"""


class PolicyTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.metrics_port = free_tcp_port()
        cls.gw = Gateway()
        # `user:` appears in the rules, so the file says whom to run as itself.
        cls.gw.write_config(PRINT_ROOM.replace("{dir}", cls.gw.dir) +
                            f"metrics: {{ listen: \"127.0.0.1:{cls.metrics_port}\" }}\n" +
                            ("user: root\n" if os.geteuid() == 0 else ""))
        for user, password in ((USER, PASSWORD), ("helpdesk", "help-pass")):
            r = subprocess.run([BIN, "user", "add", user, "-c", cls.gw.config_path], input=password + "\n",
                               capture_output=True, text=True, timeout=30)
            assert r.returncode == 0, r.stderr
        cls.gw.start()

    @classmethod
    def tearDownClass(cls):
        cls.gw.cleanup()

    def swaks(self, source, sender, to, *args, port=0, body="Subject: t\r\n\r\nhello\r\n"):
        return subprocess.run(["swaks", "--server", "127.0.0.1", "--port", str(self.gw.ports[port]),
                               "--local-interface", source, "--helo", "client.test", "--from", sender, "--to", to,
                               "--data", body, *args], capture_output=True, text=True, timeout=60)

    def msmtp(self, source, sender, *recipients):
        return subprocess.run(["msmtp", "-d", "--host=127.0.0.1", f"--port={self.gw.ports[0]}", "--tls=off",
                               "--auth=off", "--domain=client.test", f"--source-ip={source}", f"--from={sender}",
                               *recipients], input="Subject: msmtp\n\nhello\n", capture_output=True, text=True,
                              timeout=60)

    def reject_line(self, source, reply, sender, rcpt):
        return self.gw.wait_log(re.escape(f"smtpgw/smtpd[") + r"\d+" + re.escape(
            f"]: NOQUEUE: reject: RCPT from unknown[{source}]: {reply}; from=<{sender}> to=<{rcpt}> proto=ESMTP "
            f"helo=<client.test>"))

    def metric(self, name):
        text = urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10).read().decode()
        m = re.search(rf"(?m)^{re.escape(name)} (\d+)$", text)
        return int(m.group(1)) if m else None

    # --- the print room: a network rule ----------------------------------------------------------
    def test_print_room_sends_only_as_scans_and_only_to_its_domains(self):
        ok = self.msmtp("127.0.0.5", "scans@example.com", "a@example.com", "b@partner.example")
        self.assertEqual(ok.returncode, 0, ok.stdout + ok.stderr)
        self.assertRegex(ok.stdout, r"<-- 250 2\.0\.0 Ok: queued as [0-9A-F]+")

        sender = self.msmtp("127.0.0.5", "boss@example.com", "a@example.com")
        self.assertNotEqual(sender.returncode, 0)
        refusal = "553 5.7.1 <boss@example.com>: Sender address rejected: Access denied"
        self.assertIn("<-- " + refusal, sender.stdout)
        self.reject_line("127.0.0.5", refusal, "boss@example.com", "a@example.com")

        rcpt = self.swaks("127.0.0.5", "scans@example.com", "x@elsewhere.test")
        self.assertNotEqual(rcpt.returncode, 0)
        refusal = "550 5.7.1 <x@elsewhere.test>: Recipient address rejected: Access denied"
        self.assertIn("<** " + refusal, rcpt.stdout)
        self.reject_line("127.0.0.5", refusal, "scans@example.com", "x@elsewhere.test")

        # The null sender is a sender too: not in the list, so refused.
        null = self.swaks("127.0.0.5", "<>", "a@example.com")
        self.assertIn("<** 553 5.7.1 <>: Sender address rejected: Access denied", null.stdout)

        report = subprocess.run(["pflogsumm", "--syslog-name=smtpgw", self.gw.log_path], capture_output=True,
                                text=True, timeout=60)
        detail = report.stdout.split("message reject detail", 1)[1].split("message reject warning detail", 1)[0]
        self.assertRegex(detail, r"Sender address rejected: Access denied \(total: \d+\)")
        self.assertRegex(detail, r"Recipient address rejected: Access denied \(total: \d+\)")

    # --- an AUTH user rule -----------------------------------------------------------------------
    def auth(self, source, sender, to, user=USER, password=PASSWORD):
        return self.swaks(source, sender, to, "--auth", "PLAIN", "--auth-user", user, "--auth-password", password)

    def test_a_user_sends_only_as_its_own_address(self):
        ok = self.auth("127.0.0.6", "scans@example.com", "a@example.com")
        self.assertEqual(ok.returncode, 0, ok.stdout)
        refused = self.auth("127.0.0.6", "ceo@example.com", "a@example.com")
        refusal = "553 5.7.1 <ceo@example.com>: Sender address rejected: not owned by user scanner1"
        self.assertIn("<** " + refusal, refused.stdout)
        self.reject_line("127.0.0.6", refusal, "ceo@example.com", "a@example.com")
        # The user's rule comes first: the print room's partner.example is not for it.
        partner = self.auth("127.0.0.6", "scans@example.com", "b@partner.example")
        self.assertIn("<** 550 5.7.1 <b@partner.example>: Recipient address rejected: Access denied", partner.stdout)

    def test_recipient_rate_of_a_user(self):
        # 5 recipients an hour for scanner*: one was used by no test before (its own address).
        to = ",".join(f"r{i}@example.com" for i in range(6))
        r = self.auth("127.0.0.7", "scans@example.com", to, user="scanner1")
        out = r.stdout
        accepted = len(re.findall(r"<-  250 2\.1\.5 Ok", out))
        refused = re.findall(r"<\*\* (450 4\.7\.1 <r\d@example\.com>: Recipient address rejected: rate limit "
                             r"exceeded \(5 recipients per hour for user scanner1\))", out)
        self.assertGreaterEqual(len(refused), 1, out)
        self.assertEqual(accepted + len(refused), 6, out)
        self.assertRegex(out, r"<-  250 2\.0\.0 Ok: queued as", out)

    # --- rates and sizes -------------------------------------------------------------------------
    def test_the_61st_message_in_a_minute_waits_for_the_next(self):
        c = Client("127.0.0.1", self.gw.ports[0], source="127.0.0.3")
        self.addCleanup(c.close)
        c.reply()
        c.command("EHLO client.test")
        started = time.monotonic()
        for i in range(60):
            self.assertTrue(c.command("MAIL FROM:<app@example.com>").startswith("250 "), i)
            self.assertTrue(c.command("RCPT TO:<r@example.com>").startswith("250 "), i)
            self.assertTrue(c.command("DATA").startswith("354 "))
            self.assertTrue(c.command(f"Subject: {i}\r\n\r\nbody\r\n.").startswith("250 2.0.0 Ok: queued"))
        self.assertEqual(c.command("MAIL FROM:<app@example.com>"),
                         "450 4.7.1 <app@example.com>: Sender address rejected: rate limit exceeded (60 messages "
                         "per minute for 127.0.0.3)\r\n")
        self.gw.wait_log(r"NOQUEUE: reject: MAIL from unknown\[127\.0\.0\.3\]: 450 4\.7\.1 <app@example\.com>: "
                         r"Sender address rejected: rate limit exceeded")
        self.assertGreaterEqual(self.metric('smtpgw_rate_limited_total{limit="messages"}'), 1)
        self.assertGreaterEqual(self.metric("smtpgw_rate_limit_keys"), 1)
        time.sleep(max(0, 61 - (time.monotonic() - started)))
        self.assertTrue(c.command("MAIL FROM:<app@example.com>").startswith("250 "))

    def test_message_size_of_a_rule(self):
        big = "Subject: big\r\n\r\n" + ("x" * 70 + "\r\n") * 200  # about 14 KB
        r = self.swaks("127.0.0.4", "app@example.com", "a@example.com", body=big)
        self.assertIn("<** 552 5.3.4 Error: message file too big", r.stdout[-2000:])
        c = Client("127.0.0.1", self.gw.ports[0], source="127.0.0.4")
        self.addCleanup(c.close)
        c.reply()
        c.command("EHLO client.test")
        self.assertEqual(c.command("MAIL FROM:<app@example.com> SIZE=20000"),
                         "552 5.3.4 Message size exceeds fixed limit\r\n")
        self.assertTrue(c.command("MAIL FROM:<app@example.com> SIZE=9000").startswith("250 "))
        # Another client of the network has the global limit.
        ok = self.swaks("127.0.0.8", "scans@example.com", "a@example.com", body=big)
        self.assertEqual(ok.returncode, 0, ok.stdout)

    def test_connections_per_minute_per_client_address(self):
        for i in range(10):
            c = Client("127.0.0.1", self.gw.ports[0], source="127.0.0.9")
            self.assertTrue(c.reply().startswith("220 "), i)
            c.close()
        c = Client("127.0.0.1", self.gw.ports[0], source="127.0.0.9")
        self.addCleanup(c.close)
        self.assertEqual(c.reply(), "421 4.7.0 gw.test Error: too many connections from 127.0.0.9\r\n")
        self.gw.wait_log(r"warning: Connection rate limit exceeded: more than 10 per minute from 127\.0\.0\.9 for "
                         r"service smtp")
        other = Client("127.0.0.1", self.gw.ports[0], source="127.0.0.10")
        self.addCleanup(other.close)
        self.assertTrue(other.reply().startswith("220 "))

    # --- clients per listener --------------------------------------------------------------------
    def test_clients_of_one_listener(self):
        denied = self.swaks("127.0.0.11", "scans@example.com", "a@example.com", port=1)
        self.assertIn("<** 554 5.7.1 <a@example.com>: Relay access denied", denied.stdout)
        ok = self.swaks("127.0.0.2", "scans@example.com", "a@example.com", port=1)
        self.assertEqual(ok.returncode, 0, ok.stdout)
        # The same address on the first listener is in the global list.
        ok = self.swaks("127.0.0.11", "scans@example.com", "a@example.com")
        self.assertEqual(ok.returncode, 0, ok.stdout)

    # --- check-config ----------------------------------------------------------------------------
    def test_check_config_names_users_that_may_send_as_anyone(self):
        r = subprocess.run([BIN, "check-config", "-c", self.gw.config_path], capture_output=True, text=True,
                           timeout=30)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("warning: sasl user helpdesk may send as any address: no policy rule with senders: applies to "
                      "it", r.stdout)
        self.assertNotIn("sasl user scanner1", r.stdout)


class PolicyConfigTest(unittest.TestCase):
    def test_mistakes_are_reported_where_they_are(self):
        gw = Gateway("""policy:
  - match: { user: a, listener: "10.0.0.1:25", color: red }
    senders: ["/(unclosed/"]
    recipients: []
    rate: { messages: lots }
""")
        self.addCleanup(gw.cleanup)
        r = gw.run("check-config")
        self.assertEqual(r.returncode, 1)
        self.assertIn("policy[0].match.color: unknown key", r.stdout)
        self.assertIn("policy[0].match.listener: \"10.0.0.1:25\" is not the address of a listener in listen:",
                      r.stdout)
        self.assertIn("policy[0].senders: ", r.stdout)
        self.assertIn("policy[0].recipients: an empty list would refuse everything; leave it out", r.stdout)
        self.assertIn("policy[0].rate.messages: \"lots\" is not a rate: a count per s, m, h or d, e.g. 60/m",
                      r.stdout)


if __name__ == "__main__":
    unittest.main()
