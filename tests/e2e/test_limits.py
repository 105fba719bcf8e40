"""Every limit of the listener, against the real binary, as a client sees it."""
import time
import unittest

from gwtest import GatewayTest, queued_id


class MessageLimitsTest(GatewayTest):
    CONFIG = "limits: { message_size: 10k, recipients: 3, line_length: 4k }\n"

    def session(self):
        c = self.gw.connect()
        self.assertEqual(c.reply(), "220 gw.test ESMTP\r\n")
        self.assertIn("250 SMTPUTF8", c.command("EHLO limits.test"))
        return c

    def test_declared_size_over_the_limit_is_refused_at_mail(self):
        c = self.session()
        self.assertEqual(c.command("MAIL FROM:<a@corp.example> SIZE=10241"),
                         "552 5.3.4 Message size exceeds fixed limit\r\n")
        self.gw.wait_log(r"NOQUEUE: reject: MAIL from unknown\[127\.0\.0\.1\]: 552 5\.3\.4 Message size exceeds "
                         r"fixed limit; from=<a@corp\.example> proto=ESMTP helo=<limits\.test>")
        self.assertEqual(c.command("MAIL FROM:<a@corp.example> SIZE=10240"), "250 2.1.0 Ok\r\n")

    def test_content_over_the_limit_is_refused_at_the_end(self):
        c = self.session()
        big = ("x" * 70 + "\r\n") * 200
        reply = self.transaction(c, body="Subject: big\r\n\r\n" + big + ".\r\n")
        self.assertEqual(reply, "552 5.3.4 Error: message file too big\r\n")
        self.assertEqual(self.gw.queue(), [])
        # The session is still usable.
        self.assertTrue(self.transaction(c).startswith("250 2.0.0 Ok: queued as "))

    def test_too_many_recipients(self):
        c = self.session()
        c.command("MAIL FROM:<a@corp.example>")
        replies = [c.command(f"RCPT TO:<r{i}@example.org>") for i in range(5)]
        self.assertEqual(replies, ["250 2.1.5 Ok\r\n"] * 3 + ["452 4.5.3 Error: too many recipients\r\n"] * 2)
        c.command("DATA")
        qid = queued_id(c.command("Subject: t\r\n\r\nx\r\n."))
        [entry] = self.gw.queue()
        self.assertEqual(entry["id"], qid)
        self.assertEqual(len(entry["recipients"]), 3)

    def test_long_command_line(self):
        c = self.session()
        self.assertEqual(c.command("NOOP " + "a" * 3000), "500 5.5.2 Line too long\r\n")
        self.assertEqual(c.command("NOOP"), "250 2.0.0 Ok\r\n")
        self.assertEqual(c.command("MAIL FROM:<" + "b" * 2100 + "@corp.example>"), "500 5.5.2 Line too long\r\n")

    def test_text_lines_over_998_are_accepted_intact(self):
        c = self.session()
        line = "L" * 3000
        qid = queued_id(self.transaction(c, body=f"Subject: long\r\n\r\n{line}\r\n.\r\n"))
        self.assertTrue(self.gw.content(qid).endswith(f"\r\n\r\n{line}\r\n".encode()))

    def test_a_line_over_the_hard_bound_is_refused(self):
        c = self.session()
        reply = self.transaction(c, body="Subject: huge\r\n\r\n" + "H" * 5000 + "\r\n.\r\n")
        self.assertEqual(reply, "552 5.3.4 Message has a line longer than 4096 octets\r\n")
        self.assertEqual(self.gw.queue(), [])

    def test_address_syntax(self):
        c = self.session()
        self.assertEqual(c.command("MAIL FROM:<a@corp.example"), "501 5.1.7 Bad sender address syntax\r\n")
        self.assertEqual(c.command("MAIL FROM:<a@corp.example>"), "250 2.1.0 Ok\r\n")
        self.assertEqual(c.command("RCPT TO:<b@example.org"), "501 5.1.3 Bad recipient address syntax\r\n")
        self.assertEqual(c.command("RCPT TO:<b..c@example.org>"),
                         "553 5.1.3 <b..c@example.org>: Recipient address rejected: invalid address syntax\r\n")
        self.assertEqual(c.command("RCPT TO:<nodomain>"),
                         "553 5.1.3 <nodomain>: Recipient address rejected: need fully-qualified address\r\n")


class TimeoutTest(GatewayTest):
    CONFIG = "limits: { command_timeout: 1s, data_timeout: 2s }\n"

    def test_command_timeout(self):
        c = self.gw.connect()
        c.reply()
        start = time.monotonic()
        self.assertEqual(c.reply(), "421 4.4.2 gw.test Error: timeout exceeded\r\n")
        self.assertGreaterEqual(time.monotonic() - start, 0.9)
        self.assertTrue(c.closed())
        self.gw.wait_log(r"smtpd\[\d+\]: timeout after CONNECT from unknown\[127\.0\.0\.1\]$")

    def test_data_timeout_keeps_nothing(self):
        c = self.gw.connect()
        c.reply()
        c.command("EHLO t")
        c.command("MAIL FROM:<a@corp.example>")
        c.command("RCPT TO:<b@example.org>")
        c.command("DATA")
        c.send("Subject: never finished\r\n\r\nhalf")
        start = time.monotonic()
        self.assertEqual(c.reply(), "421 4.4.2 gw.test Error: timeout exceeded\r\n")
        self.assertGreaterEqual(time.monotonic() - start, 1.9)
        self.gw.wait_log(r"timeout after DATA from unknown\[127\.0\.0\.1\]$")
        self.assertEqual(self.gw.queue(), [])
        self.assertEqual(self.gw.run("queue", "list").stdout, "Mail queue is empty\n")


class ConnectionLimitsTest(GatewayTest):
    CONFIG = "limits: { connections: 4, connections_per_client: 2 }\n"

    def test_per_client_and_total(self):
        a, b = self.gw.connect(), self.gw.connect()
        self.assertEqual(a.reply(), "220 gw.test ESMTP\r\n")
        self.assertEqual(b.reply(), "220 gw.test ESMTP\r\n")
        c = self.gw.connect()
        self.assertEqual(c.reply(), "421 4.7.0 gw.test Error: too many connections from 127.0.0.1\r\n")
        self.assertTrue(c.closed())
        # Another client address still gets in, up to the total.
        d, e = self.gw.connect("127.0.0.2"), self.gw.connect("127.0.0.2")
        self.assertEqual(d.reply(), "220 gw.test ESMTP\r\n")
        self.assertEqual(e.reply(), "220 gw.test ESMTP\r\n")
        f = self.gw.connect("127.0.0.3")
        self.assertEqual(f.reply(), "421 4.7.0 gw.test Error: too many connections\r\n")
        self.gw.wait_log(r"warning: refusing connection from unknown\[127\.0\.0\.3\]: 421 4\.7\.0")


class ErrorBudgetTest(GatewayTest):
    CONFIG = "limits: { errors: 3 }\n"

    def test_too_many_errors(self):
        c = self.gw.connect()
        c.reply()
        self.assertEqual(c.command("FOO"), "502 5.5.2 Error: command not recognized\r\n")
        self.assertEqual(c.command("BAR"), "502 5.5.2 Error: command not recognized\r\n")
        self.assertEqual(c.command("BAZ"), "502 5.5.2 Error: command not recognized\r\n")
        self.assertEqual(c.reply(), "421 4.7.0 gw.test Error: too many errors\r\n")
        self.assertTrue(c.closed())
        self.gw.wait_log(r"too many errors after UNKNOWN from unknown\[127\.0\.0\.1\]")

    def test_http_request_is_cut_off(self):
        c = self.gw.connect()
        c.reply()
        c.send("POST /cgi-bin/x HTTP/1.1\r\nHost: gw\r\nContent-Length: 5\r\n\r\nhello")
        self.assertEqual(c.reply(), "221 2.7.0 Error: non-SMTP command received; closing connection\r\n")
        self.assertTrue(c.closed())
        self.gw.wait_log(r"warning: non-SMTP command from unknown\[127\.0\.0\.1\]: POST /cgi-bin/x HTTP/1\.1")


if __name__ == "__main__":
    unittest.main()
