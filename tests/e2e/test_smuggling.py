"""SMTP smuggling (RFC 5321 2.3.8 and 4.1.1.4): only <CR><LF>.<CR><LF> ends a message."""
import unittest

from gwtest import GatewayTest, queued_id, strip_received

SMUGGLED = ("MAIL FROM:<ceo@bank.example>\r\nRCPT TO:<victim@example.org>\r\nDATA\r\n"
            "Subject: smuggled\r\n\r\npay now\r\n")


class SmugglingTest(GatewayTest):
    def open_data(self):
        c = self.gw.connect()
        c.reply()
        c.command("EHLO smuggler.test")
        self.assertEqual(c.command("MAIL FROM:<a@corp.example>"), "250 2.1.0 Ok\r\n")
        self.assertEqual(c.command("RCPT TO:<b@example.org>"), "250 2.1.5 Ok\r\n")
        self.assertEqual(c.command("DATA"), "354 End data with <CR><LF>.<CR><LF>\r\n")
        return c

    def assert_one_message(self, sent_end, expected_tail):
        c = self.open_data()
        c.send("Subject: one\r\n\r\nfirst" + sent_end + SMUGGLED + ".\r\n")
        reply = c.reply()
        qid = queued_id(reply)
        self.assertEqual(c.command("QUIT"), "221 2.0.0 Bye\r\n")
        [entry] = self.gw.queue()
        self.assertEqual(entry["id"], qid)
        self.assertEqual([r["address"] for r in entry["recipients"]], ["b@example.org"])
        content = self.gw.content(qid)
        self.assertTrue(content.endswith(expected_tail.encode()), content[-200:])
        self.assert_canonical(content)

    def assert_canonical(self, content):
        # Stored with CRLF only: nothing a later hop could split differently.
        self.assertNotIn(b"\r\r", content)
        self.assertEqual(content.count(b"\n"), content.count(b"\r\n"))
        self.assertEqual(content.count(b"\r"), content.count(b"\r\n"))

    def test_lf_dot_crlf_does_not_end_the_message(self):
        self.assert_one_message("\n.\r\n", "first\r\n\r\n" + SMUGGLED)

    def test_crlf_dot_lf_does_not_end_the_message(self):
        self.assert_one_message("\r\n.\n", "first\r\n\r\n" + SMUGGLED)

    def test_lf_dot_lf_does_not_end_the_message(self):
        self.assert_one_message("\n.\n", "first\r\n\r\n" + SMUGGLED)

    def test_bare_cr_is_refused(self):
        c = self.open_data()
        c.send("Subject: cr\r\n\r\nfirst\r.\r" + SMUGGLED + ".\r\n")
        self.assertEqual(c.reply(), "550 5.5.2 Message contains a bare <CR> (carriage return without line feed); "
                                    "see RFC 5321 2.3.8\r\n")
        self.assertEqual(self.gw.queue(), [])
        self.gw.wait_log(r"reject: END-OF-MESSAGE from unknown\[127\.0\.0\.1\]: 550 5\.5\.2 Message contains a bare <CR>")

    def test_bare_lf_lines_are_stored_as_crlf(self):
        c = self.open_data()
        c.send("Subject: lf\n\nline one\nline two\r\n.\r\n")
        qid = queued_id(c.reply())
        content = self.gw.content(qid)
        self.assertIn(b"Subject: lf\r\n", content)
        self.assertTrue(content.endswith(b"\r\n\r\nline one\r\nline two\r\n"))
        self.assert_canonical(content)

    def test_dot_unstuffing(self):
        c = self.open_data()
        c.send("Subject: dots\r\nMessage-ID: <d@x>\r\nDate: d\r\n\r\n..leading\r\n...two\r\nmid.dle\r\n..\r\n.\r\n")
        qid = queued_id(c.reply())
        self.assertEqual(strip_received(self.gw.content(qid)),
                         b"Subject: dots\r\nMessage-ID: <d@x>\r\nDate: d\r\n\r\n.leading\r\n..two\r\nmid.dle\r\n.\r\n")


class RejectBareNewlineTest(GatewayTest):
    CONFIG = 'listen: [{ address: "127.0.0.1:0", bare_newline: reject }]\n'

    def test_bare_lf_refused(self):
        c = self.gw.connect()
        c.reply()
        c.command("EHLO strict.test")
        c.command("MAIL FROM:<a@corp.example>")
        c.command("RCPT TO:<b@example.org>")
        c.command("DATA")
        c.send("Subject: lf\n\nbody\r\n.\r\n")
        self.assertEqual(c.reply(), "550 5.5.2 Message contains a bare <LF> (line feed without carriage return); "
                                    "see RFC 5321 2.3.8\r\n")
        self.assertEqual(self.gw.queue(), [])
        # A well-formed message still goes through on the same session.
        self.assertTrue(self.transaction(c).startswith("250 2.0.0 Ok: queued as "))


if __name__ == "__main__":
    unittest.main()
