"""Delivery against real peers: Postfix as MX hosts and as the upstream relay, dnsmasq serving
MX and A records, swaks submitting. Everything on loopback.

  example.test     MX 10 mx1.example.test (127.0.0.11), MX 20 mx2.example.test (127.0.0.12)
  twomx.test       MX 10 dead.twomx.test (127.0.0.13, nothing listens), MX 20 mx1.example.test
  implicit.test    no MX; A 127.0.0.12 (RFC 5321 5.1 implicit MX)
  nullmx.test      MX 0 "." (RFC 7505)
  nosuch.test      NXDOMAIN
  servfail.test    the DNS server cannot answer (forwarded to a dead server)
  loop.test        MX 10 gw.loop.test (127.0.0.30, the gateway itself)
  relayed.test     routed to the upstream relay Postfix at 127.0.0.21:2525
"""
import os
import re
import signal
import unittest

from gwtest import Gateway, queued_id, wait_for
from peers import ACCESS, Dnsmasq, Postfix

DNS = [
    "--mx-host=example.test,mx1.example.test,10", "--mx-host=example.test,mx2.example.test,20",
    "--host-record=mx1.example.test,127.0.0.11", "--host-record=mx2.example.test,127.0.0.12",
    "--mx-host=twomx.test,dead.twomx.test,10", "--mx-host=twomx.test,mx1.example.test,20",
    "--host-record=dead.twomx.test,127.0.0.13",
    "--host-record=implicit.test,127.0.0.12",
    "--mx-host=nullmx.test,.,0",
    "--server=/servfail.test/127.0.0.1#9",
    "--mx-host=loop.test,gw.loop.test,10", "--host-record=gw.loop.test,127.0.0.30",
]

SENDER = "app@example.test"


def config(dns_port, retry="1s", lifetime="5d", extra=""):
    return f"""listen: [{{ address: "127.0.0.30:2525" }}]
routes:
  - {{ to: relayed.test, via: relay }}
  - {{ from: failover@example.test, via: [deadup, direct] }}
  - {{ to: "*", via: direct }}
upstreams:
  relay: {{ host: 127.0.0.21, port: 2525, security: none }}
  deadup: {{ host: 127.0.0.22, port: 2525, security: none }}
direct: {{ security: none, port: 2525 }}
dns: {{ servers: ["127.0.0.1:{dns_port}"], timeout: 1s, attempts: 1 }}
delivery: {{ connection_reuse: 1s }}
queue: {{ dir: {{spool}}, retry: [{retry}], lifetime: {lifetime} }}
{extra}"""


NEEDS_ROOT = unittest.skipUnless(os.geteuid() == 0, "Postfix peers need root to start")


@NEEDS_ROOT
class DeliveryTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dns = Dnsmasq(DNS).start()
        cls.mx1 = Postfix("mx1.example.test", "127.0.0.11", 2525).start()
        cls.mx2 = Postfix("mx2.example.test", "127.0.0.12", 2525).start()
        cls.relay = Postfix("relay.example.test", "127.0.0.21", 2525).start()

    @classmethod
    def tearDownClass(cls):
        for p in (cls.mx1, cls.mx2, cls.relay):
            p.cleanup()
        cls.dns.cleanup()

    def setUp(self):
        self.gw = self.start_gateway()

    def tearDown(self):
        self.gw.cleanup()

    def start_gateway(self, **kw):
        gw = Gateway(config(self.dns.port, **kw))
        gw.start()
        return gw

    def send(self, to, sender=SENDER, subject="test", body="hello"):
        r = self.gw.swaks("--from", sender, "--to", to, "--header", f"Subject: {subject}", "--body", body)
        self.assertEqual(r.returncode, 0, r.stdout)
        return queued_id(r.stdout)

    def delivery_line(self, qid, rcpt, status):
        return self.gw.wait_log(rf"smtpgw/smtp\[\d+\]: {qid}: to=<{re.escape(rcpt)}>, relay=.*status={status} ", timeout=30)

    # --- the upstream relay --------------------------------------------------------------------------
    def test_delivery_via_smarthost(self):
        qid = self.send("alice@relayed.test", subject="via relay")
        line = self.delivery_line(qid, "alice@relayed.test", "sent")
        self.assertRegex(line, rf"{qid}: to=<alice@relayed\.test>, relay=127\.0\.0\.21\[127\.0\.0\.21\]:2525, "
                               r"delay=[\d.]+, delays=[\d.]+/[\d.]+/[\d.]+/[\d.]+, dsn=2\.0\.0, "
                               r"status=sent \(250 2\.0\.0 Ok: queued as [0-9A-F]+\)$")
        self.gw.wait_log(rf"qmgr\[\d+\]: {qid}: removed$")
        msg = self.relay.wait_subject("via relay")
        self.assertEqual(msg["Return-Path"], f"<{SENDER}>")
        self.assertEqual(msg["Delivered-To"], "alice@relayed.test")
        self.assertIn(f"with ESMTP id {qid}", msg.raw.decode(errors="replace"))
        self.assertEqual(self.gw.queue(), [])

    def test_several_recipients_one_transaction(self):
        qid = self.send("r1@relayed.test,r2@relayed.test,r3@relayed.test", subject="three")
        for r in ("r1@relayed.test", "r2@relayed.test", "r3@relayed.test"):
            self.delivery_line(qid, r, "sent")
        wait_for(lambda: len([m for m in self.relay.messages() if m["Subject"] == "three"]) == 3)
        # One SMTP transaction at the relay carried all three.
        queued = re.findall(r"status=sent \(250 2\.0\.0 Ok: queued as ([0-9A-F]+)\)",
                            "\n".join(l for l in self.gw.log_lines() if qid in l))
        self.assertEqual(len(set(queued)), 1)

    def test_failover_to_direct_routes_each_recipient_by_its_own_domain(self):
        qid = self.send("x@example.test,y@implicit.test", sender="failover@example.test", subject="failover")
        x = self.delivery_line(qid, "x@example.test", "sent")
        y = self.delivery_line(qid, "y@implicit.test", "sent")
        self.assertIn("relay=mx1.example.test[127.0.0.11]:2525", x)
        self.assertIn("relay=implicit.test[127.0.0.12]:2525", y)
        self.assertEqual(self.mx2.wait_subject("failover")["Delivered-To"], "y@implicit.test")
        self.assertEqual(self.mx1.wait_subject("failover")["Delivered-To"], "x@example.test")

    # --- direct delivery (RFC 5321 section 5, RFC 7505) ----------------------------------------------
    def test_first_mx_refuses_second_accepts(self):
        qid = self.send("bob@twomx.test", subject="second mx")
        line = self.delivery_line(qid, "bob@twomx.test", "sent")
        self.assertIn("relay=mx1.example.test[127.0.0.11]:2525", line)
        # The first address's failure is logged although the second took the mail (as Postfix does).
        self.gw.wait_log(r"smtpgw/smtp\[\d+\]: connect to dead\.twomx\.test\[127\.0\.0\.13\]:2525: Connection refused$")
        msg = self.mx1.wait_subject("second mx")
        self.assertEqual(msg["Delivered-To"], "bob@twomx.test")

    def test_implicit_mx(self):
        qid = self.send("carol@implicit.test", subject="implicit")
        line = self.delivery_line(qid, "carol@implicit.test", "sent")
        self.assertIn("relay=implicit.test[127.0.0.12]:2525", line)
        self.mx2.wait_subject("implicit")

    def test_null_mx_bounces(self):
        qid = self.send("dave@nullmx.test", subject="to null mx")
        line = self.delivery_line(qid, "dave@nullmx.test", "bounced")
        self.assertRegex(line, r"relay=none, .*dsn=5\.1\.0, status=bounced \(Domain nullmx\.test does not accept mail "
                               r"\(nullMX\)\)$")
        report = self.bounce_for("to null mx")
        self.assertEqual(report["Status"], "5.1.0")

    def test_nxdomain_bounces(self):
        qid = self.send("erin@nosuch.test", subject="to nowhere")
        line = self.delivery_line(qid, "erin@nosuch.test", "bounced")
        self.assertIn("dsn=5.4.4, status=bounced (Host or domain name not found. Name service error for "
                      "name=nosuch.test type=A: Host not found)", line)

    def test_servfail_defers(self):
        qid = self.send("frank@servfail.test")
        line = self.delivery_line(qid, "frank@servfail.test", "deferred")
        self.assertIn("relay=none", line)
        self.assertIn("dsn=4.4.3, status=deferred (Host or domain name not found. Name service error for "
                      "name=servfail.test type=MX: Host not found, try again)", line)
        [entry] = self.gw.queue()
        self.assertEqual(entry["recipients"][0]["status"], "deferred")
        self.assertEqual(entry["recipients"][0]["dsn"], "4.4.3")

    def test_mx_pointing_at_the_gateway_is_a_loop(self):
        qid = self.send("gina@loop.test")
        line = self.delivery_line(qid, "gina@loop.test", "bounced")
        self.assertIn("dsn=5.4.6, status=bounced (mail for loop.test loops back to myself)", line)

    # --- what the recipient's server says -----------------------------------------------------------
    def test_550_recipient_bounces_to_the_sender_as_a_dsn(self):
        qid = self.send("reject550@relayed.test,ok550@relayed.test", subject="half rejected")
        line = self.delivery_line(qid, "reject550@relayed.test", "bounced")
        self.assertIn("relay=127.0.0.21[127.0.0.21]:2525", line)
        self.assertIn("dsn=5.1.1, status=bounced (host 127.0.0.21[127.0.0.21] said: 550 5.1.1 "
                      "<reject550@relayed.test>: Recipient address rejected: User unknown (in reply to RCPT TO "
                      "command))", line)
        self.delivery_line(qid, "ok550@relayed.test", "sent")
        self.gw.wait_log(rf"bounce\[\d+\]: {qid}: sender non-delivery notification: [0-9A-F]+$")
        report = self.bounce_for("half rejected")
        self.assertEqual(report["Final-Recipient"], "rfc822; reject550@relayed.test")
        self.assertEqual(report["Action"], "failed")
        self.assertEqual(report["Status"], "5.1.1")
        self.assertEqual(report["Remote-MTA"], "dns; 127.0.0.21")
        self.assertEqual(report["Diagnostic-Code"],
                         "smtp; 550 5.1.1 <reject550@relayed.test>: Recipient address rejected: User unknown")

    def bounce_for(self, subject):
        """The DSN in the sender's mailbox (example.test is at mx1) about the message `subject`."""
        def find():
            for m in self.mx1.messages():
                if m["Subject"] == "Undelivered Mail Returned to Sender" and subject in m.raw.decode(errors="replace"):
                    return m
            return None
        bounce = wait_for(find, timeout=30, what="the bounce in the sender's mailbox")
        self.assertEqual(bounce["Return-Path"], "<>")
        self.assertEqual(bounce["Delivered-To"], SENDER)
        self.assertTrue(bounce["From"].startswith("MAILER-DAEMON@gw.test"))
        self.assertEqual(bounce.get_content_type(), "multipart/report")
        self.assertEqual(bounce.get_param("report-type"), "delivery-status")
        parts = bounce.get_payload()
        self.assertEqual([p.get_content_type() for p in parts],
                         ["text/plain", "message/delivery-status", "text/rfc822-headers"])
        self.assertIn(f"Subject: {subject}", parts[2].get_payload())
        per_message, per_recipient = parts[1].get_payload()[0], parts[1].get_payload()[1]
        self.assertEqual(per_message["Reporting-MTA"], "dns; gw.test")
        self.assertIsNotNone(per_message["Arrival-Date"])
        self.assertIsNotNone(per_recipient["Last-Attempt-Date"])
        return per_recipient

    def test_450_recipient_is_deferred_then_delivered(self):
        qid = self.send("defer450@relayed.test", subject="busy mailbox")
        line = self.delivery_line(qid, "defer450@relayed.test", "deferred")
        self.assertIn("dsn=4.2.0, status=deferred (host 127.0.0.21[127.0.0.21] said: 450 4.2.0 "
                      "<defer450@relayed.test>: Recipient address rejected: Mailbox busy, try again later (in reply "
                      "to RCPT TO command))", line)
        try:
            self.relay.set_access("")
            self.relay.reload()
            self.delivery_line(qid, "defer450@relayed.test", "sent")
        finally:
            self.relay.set_access(ACCESS)
            self.relay.reload()
        self.relay.wait_subject("busy mailbox")
        self.gw.wait_log(rf"{qid}: removed$")

    def test_upstream_down_then_up(self):
        self.relay.stop()
        try:
            qid = self.send("henry@relayed.test", subject="relay was down")
            line = self.delivery_line(qid, "henry@relayed.test", "deferred")
            self.assertIn("relay=none", line)
            self.assertIn("dsn=4.4.1, status=deferred (connect to 127.0.0.21[127.0.0.21]:2525: Connection refused)",
                          line)
            [entry] = self.gw.queue()
            self.assertEqual(entry["recipients"][0]["reason"],
                             "connect to 127.0.0.21[127.0.0.21]:2525: Connection refused")
        finally:
            self.relay.start()
        self.delivery_line(qid, "henry@relayed.test", "sent")
        self.relay.wait_subject("relay was down")


@NEEDS_ROOT
class RestartTest(unittest.TestCase):
    """A full queue survives a restart and every message is delivered exactly once."""

    def test_restart_with_a_full_queue(self):
        dns = Dnsmasq(DNS).start()
        relay = Postfix("relay2.example.test", "127.0.0.22", 2525)
        gw = Gateway(config(dns.port).replace("127.0.0.21", "127.0.0.22"))
        try:
            gw.start()
            ids = []
            for i in range(20):
                r = gw.swaks("--from", SENDER, "--to", f"user{i}@relayed.test", "--header", f"Subject: restart {i}")
                ids.append(queued_id(r.stdout))
            wait_for(lambda: len([l for l in gw.log_lines() if "status=deferred" in l]) >= 20, timeout=30)
            self.assertEqual(gw.stop(signal.SIGTERM), 0)
            relay.start()
            gw.start()
            gw.wait_log(r"started, 20 message\(s\) in the queue")
            relay.wait_messages(20, timeout=60)
            wait_for(lambda: gw.queue() == [], timeout=30, what="an empty queue")
            subjects = sorted(m["Subject"] for m in relay.messages())
            self.assertEqual(subjects, sorted(f"restart {i}" for i in range(20)))
            for qid in ids:
                gw.wait_log(rf"{qid}: to=.*status=sent")  # log lines may trail the spool by a few ms
                self.assertEqual(len([l for l in gw.log_lines() if f"{qid}: to=" in l and "status=sent" in l]), 1)
        finally:
            gw.cleanup()
            relay.cleanup()
            dns.cleanup()


if __name__ == "__main__":
    unittest.main()


@NEEDS_ROOT
class EightBitTest(unittest.TestCase):
    """RFC 6152: 8-bit content to a Postfix that offers 8BITMIME goes as BODY=8BITMIME, declared by
    the client or not; to one that does not (smtpd_discard_ehlo_keywords = 8bitmime), it goes in
    quoted-printable with its MIME structure kept."""

    MESSAGE = ("MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\n"
               "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
               "Grüße aus dem Drucker = 100%\r\n--b\r\nContent-Type: application/octet-stream\r\n"
               "Content-Transfer-Encoding: base64\r\n\r\nAAEC\r\n--b--\r\n")

    @classmethod
    def setUpClass(cls):
        cls.seven = Postfix("seven.example.test", "127.0.0.24", 2525,
                            extra_main_cf="smtpd_discard_ehlo_keywords = 8bitmime\n").start()
        cls.eight = Postfix("eight.example.test", "127.0.0.25", 2525).start()

    @classmethod
    def tearDownClass(cls):
        cls.seven.cleanup()
        cls.eight.cleanup()

    def setUp(self):
        self.gw = Gateway("""routes:
  - { to: seven.test, via: seven }
  - { to: "*", via: eight }
upstreams:
  seven: { host: 127.0.0.24, port: 2525, security: none }
  eight: { host: 127.0.0.25, port: 2525, security: none }
""")
        self.gw.start()

    def tearDown(self):
        self.gw.cleanup()

    def submit(self, rcpt, subject):
        c = self.gw.connect()
        c.reply()
        c.command("EHLO client.test")
        c.command("MAIL FROM:<app@example.test>")  # no BODY=8BITMIME, as many appliances send
        c.command(f"RCPT TO:<{rcpt}>")
        c.command("DATA")
        c.send((f"Subject: {subject}\r\n" + self.MESSAGE + ".\r\n").encode())
        return queued_id(c.reply())

    def test_a_server_without_8bitmime_gets_quoted_printable(self):
        qid = self.submit("a@seven.test", "seven")
        self.gw.wait_log(rf"{qid}: to=<a@seven\.test>, .*status=sent ")
        msg = self.seven.wait_subject("seven")
        body = msg.raw.split(b"\n\n", 1)[1]
        self.assertTrue(all(b < 128 for b in body), body)
        text, attachment = msg.get_payload()
        self.assertEqual(text["Content-Transfer-Encoding"], "quoted-printable")
        # RFC 2046 5.1.1: the line break before a delimiter belongs to the delimiter.
        self.assertEqual(text.get_payload(decode=True).decode("utf-8"), "Grüße aus dem Drucker = 100%")
        self.assertEqual(attachment["Content-Transfer-Encoding"], "base64")
        self.assertEqual(attachment.get_payload(decode=True), b"\x00\x01\x02")

    def test_a_server_with_8bitmime_gets_the_content_as_it_came(self):
        qid = self.submit("b@eight.test", "eight")
        self.gw.wait_log(rf"{qid}: to=<b@eight\.test>, .*status=sent ")
        msg = self.eight.wait_subject("eight")
        self.assertIn("Grüße aus dem Drucker = 100%\n--b\n".encode(), msg.raw)
