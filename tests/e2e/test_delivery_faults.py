"""Delivery faults from scripted peers: what the log and the bounce say for each."""
import base64
import email
import os
import re
import subprocess
import tempfile
import time
import unittest

from gwtest import Gateway, queued_id, wait_for
from scripted import Script, ScriptedSmtp

SENDER = "app@catch.test"


def config(extra_queue="retry: [1s]", timeouts="{ helo: 2s, data_xfer: 2s }", concurrency=""):
    return f"""routes:
  - {{ to: catch.test, via: catcher }}
  - {{ to: faulty.test, via: faulty }}
  - {{ to: failover.test, via: [down, catcher] }}
upstreams:
  catcher: {{ host: 127.0.0.41, port: 2525, security: none }}
  faulty: {{ host: 127.0.0.42, port: 2525, security: none }}
  down: {{ host: 127.0.0.43, port: 2525, security: none }}
delivery: {{ connection_reuse: 1s, timeouts: {timeouts} {concurrency} }}
queue: {{ dir: {{spool}}, {extra_queue} }}
"""


class FaultTest(unittest.TestCase):
    def setUp(self):
        self.catcher = ScriptedSmtp("127.0.0.41", 2525)
        self.faulty = None
        self.gw = None

    def tearDown(self):
        if self.gw:
            self.gw.cleanup()
        self.catcher.close()
        if self.faulty:
            self.faulty.close()

    def start(self, script=None, **kw):
        if script:
            self.faulty = ScriptedSmtp("127.0.0.42", 2525, script)
        self.gw = Gateway(config(**kw))
        self.gw.start()

    def send(self, to, body="hello", subject="t"):
        r = self.gw.swaks("--from", SENDER, "--to", to, "--header", f"Subject: {subject}", "--body", body)
        self.assertEqual(r.returncode, 0, r.stdout)
        return queued_id(r.stdout)

    def line(self, qid, rcpt, status, timeout=30):
        return self.gw.wait_log(rf"smtp\[\d+\]: {qid}: to=<{re.escape(rcpt)}>, .*status={status} ", timeout=timeout)

    def notices(self, subject_start):
        out = []
        for mail_from, rcpts, data in list(self.catcher.messages):
            msg = email.message_from_bytes(data)
            if (msg["Subject"] or "").startswith(subject_start):
                out.append((mail_from, rcpts, msg))
        return out

    def test_greeting_refused(self):
        self.start(Script(greeting="554 5.7.1 scripted.test: this relay does not accept your mail"))
        qid = self.send("a@faulty.test")
        line = self.line(qid, "a@faulty.test", "deferred")
        self.assertIn("relay=127.0.0.42[127.0.0.42]:2525", line)
        # A 5xx greeting is not final (Postfix's smtp_skip_5xx_greeting): deferred, 4.x.x.
        self.assertIn("dsn=4.7.1, status=deferred (host 127.0.0.42[127.0.0.42] refused to talk to me: 554 5.7.1 "
                      "scripted.test: this relay does not accept your mail)", line)

    def test_silent_server_times_out(self):
        self.start(Script(greeting=None))
        qid = self.send("b@faulty.test")
        line = self.line(qid, "b@faulty.test", "deferred")
        self.assertIn("dsn=4.4.2, status=deferred (conversation with 127.0.0.42[127.0.0.42] timed out while "
                      "receiving the initial server greeting)", line)

    def test_connection_cut_during_the_body(self):
        self.start(Script(cut_after=2000))
        qid = self.send("c@faulty.test", body="x" * 70 + "\n" + ("y" * 70 + "\n") * 200)
        line = self.line(qid, "c@faulty.test", "deferred")
        # Where the loss is noticed depends on socket buffers: in the body, or waiting for the reply.
        self.assertRegex(line, r"dsn=4\.4\.2, status=deferred \(lost connection with 127\.0\.0\.42\[127\.0\.0\.42\] "
                               r"while sending (message body|end of data -- message may be sent more than once)\)$")
        [entry] = self.gw.queue()
        self.assertEqual(entry["recipients"][0]["status"], "deferred")

    def test_message_larger_than_the_server_allows(self):
        self.start(Script(ehlo=("250-scripted.test", "250-PIPELINING", "250 SIZE 100")))
        qid = self.send("d@faulty.test", body="z" * 500)
        line = self.line(qid, "d@faulty.test", "bounced")
        size = re.search(r"message size (\d+) exceeds", line).group(1)
        self.assertIn(f"dsn=5.3.4, status=bounced (message size {size} exceeds size limit 100 of server "
                      "127.0.0.42[127.0.0.42])", line)
        self.assertTrue(wait_for(lambda: self.notices("Undelivered Mail"), what="the bounce"))

    def test_multiline_rejection_is_kept_whole(self):
        self.start(Script(replies={"RCPT": ["550-5.7.1 Message rejected because the sender is not allowed.",
                                            "550 5.7.1 See https://support.example/5.7.1 for details."]}))
        qid = self.send("e@faulty.test")
        line = self.line(qid, "e@faulty.test", "bounced")
        self.assertIn("said: 550-5.7.1 Message rejected because the sender is not allowed. 550 5.7.1 See "
                      "https://support.example/5.7.1 for details. (in reply to RCPT TO command)", line)
        [(mail_from, rcpts, bounce)] = wait_for(lambda: self.notices("Undelivered Mail"), what="the bounce")
        self.assertEqual(mail_from, "MAIL FROM:<> BODY=8BITMIME")  # no SIZE= to a server that did not offer it
        self.assertEqual(rcpts, [f"RCPT TO:<{SENDER}>"])
        report = bounce.get_payload()[1].get_payload()[1]
        self.assertEqual(report["Diagnostic-Code"],
                         "smtp; 550-5.7.1 Message rejected because the sender is not allowed. 550 5.7.1 See "
                         "https://support.example/5.7.1 for details.")

    def test_one_connection_carries_several_messages(self):
        self.start()
        ids = [self.send(f"user{i}@catch.test", subject=f"reuse {i}") for i in range(3)]
        for i, qid in enumerate(ids):
            self.line(qid, f"user{i}@catch.test", "sent")
        wait_for(lambda: len(self.catcher.messages) == 3)
        sessions = [s for s in self.catcher.sessions if any(c.startswith("MAIL") for c in s)]
        mails = sum(1 for s in sessions for c in s if c.startswith("MAIL"))
        self.assertEqual(mails, 3)
        # Messages sent while a connection was open share it, with RSET between them.
        self.assertLess(len(sessions), 3 + 1)
        for s in sessions:
            for i, c in enumerate(s):
                if c.startswith("MAIL") and i > 0 and any(x.startswith("MAIL") for x in s[:i]):
                    self.assertEqual(s[i - 1], "RSET")

    def test_destination_concurrency_is_respected(self):
        # A slow server: each message takes a while, so the queue builds up behind the connections.
        self.start(Script(slow=0.4), concurrency=", destination_concurrency: 2")
        ids = [self.send(f"c{i}@faulty.test", subject=f"conc {i}") for i in range(8)]
        for i, qid in enumerate(ids):
            self.line(qid, f"c{i}@faulty.test", "sent")
        self.assertEqual(self.faulty.most_open, 2)

    def test_failover_to_the_next_upstream(self):
        self.start()
        qid = self.send("f@failover.test")
        self.gw.wait_log(rf"{qid}: to=<f@failover\.test>, via down failed \(connect to 127\.0\.0\.43\[127\.0\.0\.43\]"
                         r":2525: Connection refused\); trying catcher")
        line = self.line(qid, "f@failover.test", "sent")
        self.assertIn("relay=127.0.0.41[127.0.0.41]:2525", line)

    def test_expiry_returns_the_message_with_the_last_reason(self):
        self.start(Script(replies={"RCPT": "451 4.3.0 Temporary local problem"}), extra_queue="retry: [1s], lifetime: 2s")
        qid = self.send("g@faulty.test", subject="will expire")
        self.line(qid, "g@faulty.test", "deferred")
        self.gw.wait_log(rf"qmgr\[\d+\]: {qid}: from=<{SENDER}>, status=expired, returned to sender$", timeout=30)
        [(_, _, bounce)] = wait_for(lambda: self.notices("Undelivered Mail"), what="the bounce")
        report = bounce.get_payload()[1].get_payload()[1]
        self.assertEqual(report["Action"], "failed")
        self.assertEqual(report["Status"], "4.3.0")
        self.gw.wait_log(rf"qmgr\[\d+\]: {qid}: removed$")

    def test_delay_warning_is_sent_once(self):
        self.start(Script(replies={"RCPT": "451 4.3.0 Temporary local problem"}),
                   extra_queue="retry: [1s], delay_warning: 1s")
        qid = self.send("h@faulty.test", subject="slow")
        [(_, _, warning)] = wait_for(lambda: self.notices("Delayed Mail"), timeout=30, what="the delay warning")
        report = warning.get_payload()[1].get_payload()[1]
        self.assertEqual(report["Action"], "delayed")
        self.assertEqual(report["Status"], "4.3.0")
        self.assertIsNotNone(report["Will-Retry-Until"])
        self.gw.wait_log(rf"bounce\[\d+\]: {qid}: sender delay notification: [0-9A-F]+$")
        time.sleep(3)  # more retries, no second warning
        self.assertEqual(len(self.notices("Delayed Mail")), 1)
        [entry] = [e for e in self.gw.queue() if e["id"] == qid]
        self.assertGreaterEqual(entry["attempts"], 2)

    def test_a_deferral_after_a_5xx_has_class_4(self):
        # RFC 3464 2.3.4: a recipient still queued is "delayed" with a 4.x.x status, whatever the
        # server said in its 5xx to EHLO (which does not end the message: another MX may do).
        self.start(Script(replies={"EHLO": "550 5.7.1 no mail from you", "HELO": "550 5.7.1 no mail from you"}),
                   extra_queue="retry: [1s], delay_warning: 1s")
        qid = self.send("e@faulty.test", subject="refused ehlo")
        line = self.line(qid, "e@faulty.test", "deferred")
        self.assertIn("dsn=4.7.1, status=deferred", line)
        [(_, _, warning)] = wait_for(lambda: self.notices("Delayed Mail"), timeout=30, what="the delay warning")
        report = warning.get_payload()[1].get_payload()[1]
        self.assertEqual((report["Action"], report["Status"]), ("delayed", "4.7.1"))
        [entry] = [e for e in self.gw.queue() if e["id"] == qid]
        self.assertEqual(entry["recipients"][0]["dsn"], "4.7.1")

    def test_a_queue_file_cut_short_after_acceptance(self):
        self.start(Script(replies={"RCPT": "451 4.3.0 come back later"}))
        qid = self.send("t@faulty.test", body="x" * 5000)
        self.line(qid, "t@faulty.test", "deferred")
        # The first attempt kept the content in memory; the next one reads the file, cut short now.
        path = os.path.join(self.gw.spool, "queue", qid)
        with open(path, "r+b") as f:
            f.truncate(100)
        self.faulty.script.replies.clear()
        started = time.monotonic()
        line = self.gw.wait_log(rf"{qid}: to=<t@faulty\.test>, .*dsn=4\.3\.0, status=deferred \(local data error",
                                timeout=20)
        self.assertIn("the queue file ends after 100 of its ", line)
        self.assertLess(time.monotonic() - started, 10)

    def test_recipients_past_the_servers_limit_go_in_another_transaction(self):
        self.start(Script(rcpt_limit=3))
        rcpts = [f"r{i}@faulty.test" for i in range(7)]
        qid = self.send(",".join(rcpts))
        for r in rcpts:
            self.line(qid, r, "sent")
        self.assertEqual(sorted(len(m[1]) for m in self.faulty.messages), [1, 3, 3])
        self.assertEqual(len(self.faulty.sessions), 1)  # one connection carried all three
        self.assertFalse([l for l in self.gw.log_lines() if "status=deferred" in l])

    def test_at_most_recipient_limit_recipients_per_transaction(self):
        self.start(Script(), concurrency=", recipient_limit: 2")
        rcpts = [f"q{i}@faulty.test" for i in range(5)]
        qid = self.send(",".join(rcpts))
        for r in rcpts:
            self.line(qid, r, "sent")
        self.assertEqual(sorted(len(m[1]) for m in self.faulty.messages), [1, 2, 2])

    def test_552_at_rcpt_is_temporary(self):
        # RFC 5321 4.5.3.1.10: an old server's 552 "too many recipients" means 452.
        self.start(Script(replies={"RCPT": "552 5.5.3 Too many recipients"}))
        qid = self.send("f@faulty.test")
        line = self.line(qid, "f@faulty.test", "deferred")
        self.assertIn("dsn=4.5.3, status=deferred (host 127.0.0.42[127.0.0.42] said: 552 5.5.3 Too many recipients "
                      "(in reply to RCPT TO command))", line)

    def test_8bit_content_goes_with_body_8bitmime(self):
        # The client did not say BODY=8BITMIME (appliances seldom do); the gateway noticed.
        self.start(Script())
        qid = self.send("e@faulty.test", body="Grüße")
        self.line(qid, "e@faulty.test", "sent")
        self.assertIn("MAIL FROM:<app@catch.test> BODY=8BITMIME", [c for s in self.faulty.sessions for c in s])

    # --- notices -------------------------------------------------------------------------------
    def test_a_notice_has_one_message_id(self):
        self.start(Script(replies={"RCPT": "550 5.1.1 no such user"}))
        r = self.gw.swaks("--from", "app@unrouted.test", "--to", "n@faulty.test")
        qid = queued_id(r.stdout)
        notice = self.gw.wait_log(rf"bounce\[\d+\]: {qid}: sender non-delivery notification: ([0-9A-F]+)$")
        nid = notice.rsplit(" ", 1)[1]
        [entry] = wait_for(lambda: [e for e in self.gw.queue() if e["id"] == nid], what="the notice in the queue")
        header = re.search(rb"\r\nMessage-ID: (\S+)\r\n", self.gw.content(nid)).group(1).decode()
        self.assertEqual(entry["message_id"], header)
        self.assertRegex(header, rf"^<{qid}\.{nid}/gw\.test@gw\.test>$")

    def test_a_notice_to_a_utf8_sender_goes_with_smtputf8(self):
        self.catcher.script.ehlo = ["250-scripted.test", "250-8BITMIME", "250 SMTPUTF8"]
        self.start(Script(replies={"RCPT": "550 5.1.1 no such user"}))
        c = self.gw.connect()
        c.reply()
        c.command("EHLO client.test")
        c.command("MAIL FROM:<jürgen@catch.test> SMTPUTF8")
        c.command("RCPT TO:<u@faulty.test>")
        c.command("DATA")
        c.send("Subject: t\r\n\r\nx\r\n.\r\n")
        qid = queued_id(c.reply())
        self.line(qid, "u@faulty.test", "bounced")
        [(mail_from, rcpts, msg)] = wait_for(lambda: self.notices("Undelivered Mail"), timeout=20, what="the notice")
        self.assertEqual(mail_from, "MAIL FROM:<> BODY=8BITMIME SMTPUTF8")
        self.assertEqual(rcpts, ["RCPT TO:<jürgen@catch.test>"])

    def test_a_failover_route_removed_by_a_reload(self):
        slow = ScriptedSmtp("127.0.0.43", 2525, Script(greeting=None))  # says nothing: helo 2s
        try:
            self.start()
            qid = self.send("v@failover.test")
            wait_for(lambda: slow.sessions, what="the first route's connection")
            with open(self.gw.config_path) as f:
                text = f.read()
            text = text.replace("  - { to: failover.test, via: [down, catcher] }\n", "  - { to: failover.test, via: down }\n")
            text = text.replace("  catcher: { host: 127.0.0.41, port: 2525, security: none }\n", "")
            text = text.replace("  - { to: catch.test, via: catcher }\n", "")
            with open(self.gw.config_path, "w") as f:
                f.write(text)
            self.assertEqual(self.gw.run("reload").returncode, 0)
            line = self.line(qid, "v@failover.test", "deferred")
            self.assertIn("dsn=4.3.5, status=deferred (mail routing configuration: the next route, catcher, is no "
                          "longer in upstreams:)", line)
        finally:
            slow.close()

    # --- loops ---------------------------------------------------------------------------------
    def test_a_server_that_greets_with_our_name_is_a_loop(self):
        for script, what in ((Script(greeting="220 gw.test ESMTP"), "greeted me with my own hostname gw.test"),
                             (Script(ehlo=("250-GW.TEST", "250 PIPELINING")),
                              "replied to HELO/EHLO with my own hostname gw.test")):
            with self.subTest(what=what):
                self.start(script)
                qid = self.send("l@faulty.test")
                line = self.line(qid, "l@faulty.test", "bounced")
                self.assertIn(f"dsn=5.4.6, status=bounced (mail for 127.0.0.42 loops back to myself (host "
                              f"127.0.0.42[127.0.0.42] {what}))", line)
                self.gw.cleanup()
                self.faulty.close()
                self.gw = self.faulty = None

    def test_an_upstream_that_is_this_gateway_is_a_loop(self):
        self.gw = Gateway("""listen: [{ address: "127.0.0.50:2526" }]
routes: [{ to: "*", via: myself }]
upstreams: { myself: { host: 127.0.0.50, port: 2526, security: none } }
queue: { dir: {spool}, retry: [1s] }
""")
        self.gw.start()
        qid = self.send("s@anywhere.test")
        line = self.line(qid, "s@anywhere.test", "bounced")
        self.assertIn("dsn=5.4.6, status=bounced (mail for 127.0.0.50 loops back to myself)", line)

    def test_too_many_hops(self):
        self.start()
        hops = "".join(f"Received: from h{i}.example by h{i + 1}.example; Thu, 1 Jan 2026 00:00:00 +0000\r\n"
                       for i in range(50))
        c = self.gw.connect()
        c.reply()
        c.command("EHLO client.test")
        c.command("MAIL FROM:<app@catch.test>")
        c.command("RCPT TO:<h@faulty.test>")
        c.command("DATA")
        c.send(hops + "Subject: looping\r\n\r\nround and round\r\n.\r\n")
        self.assertEqual(c.reply(), "554 5.4.0 Error: too many hops\r\n")
        self.gw.wait_log(r"reject: END-OF-MESSAGE from unknown\[127\.0\.0\.1\]: 554 5\.4\.0 Error: too many hops")
        self.assertEqual(self.gw.queue(), [])
        # One hop fewer is accepted.
        c.command("MAIL FROM:<app@catch.test>")
        c.command("RCPT TO:<h@faulty.test>")
        c.command("DATA")
        c.send(hops.split("\r\n", 1)[1] + "Subject: long way\r\n\r\nok\r\n.\r\n")
        self.assertTrue(c.reply().startswith("250 2.0.0 Ok: queued as "))

    def xoauth2_upstream(self, token_source, allow_plaintext="true"):
        return f"""routes: [{{ to: "*", via: oauth }}]
upstreams:
  oauth:
    host: 127.0.0.42
    port: 2525
    security: none
    auth: {{ username: app@example.com, {token_source}, mechanisms: [XOAUTH2], allow_plaintext: {allow_plaintext} }}
queue: {{ dir: {{spool}}, retry: [1h] }}
"""

    def test_xoauth2_with_a_token_file(self):
        self.faulty = ScriptedSmtp("127.0.0.42", 2525, Script(
            ehlo=("250-scripted.test", "250-PIPELINING", "250 AUTH LOGIN XOAUTH2"), xoauth2="good-token"))
        token = os.path.join(tempfile.mkdtemp(), "token")
        with open(token, "w") as f:
            f.write("good-token\n")
        self.gw = Gateway(self.xoauth2_upstream(f"token_file: {token}"))
        self.gw.start()
        qid = self.send("x@oauth.test")
        self.line(qid, "x@oauth.test", "sent")
        auth = [c for s in self.faulty.sessions for c in s if c.startswith("AUTH XOAUTH2 ")]
        self.assertEqual(base64.b64decode(auth[0].split(" ")[2]), b"user=app@example.com\x01auth=Bearer good-token\x01\x01")
        self.assertNotIn("good-token", "\n".join(self.gw.log_lines()))

    def test_xoauth2_token_fetched_again_after_535(self):
        self.faulty = ScriptedSmtp("127.0.0.42", 2525, Script(
            ehlo=("250-scripted.test", "250 AUTH XOAUTH2"), xoauth2="fresh-token"))
        d = tempfile.mkdtemp()
        # The command hands out an expired token first, as a cache would, then a fresh one.
        script = os.path.join(d, "token.sh")
        with open(script, "w") as f:
            f.write(f"#!/bin/sh\nif [ -e {d}/used ]; then echo fresh-token; else touch {d}/used; echo stale-token; fi\n")
        os.chmod(script, 0o755)
        self.gw = Gateway(self.xoauth2_upstream(f"token_command: {script}"))
        self.gw.start()
        qid = self.send("y@oauth.test")
        self.line(qid, "y@oauth.test", "sent")
        [session] = [s for s in self.faulty.sessions if any(c.startswith("AUTH") for c in s)]
        auths = [c for c in session if c.startswith("AUTH XOAUTH2 ")]
        self.assertEqual(len(auths), 2)  # one connection: the refused token, then the fresh one

    def token_script(self, body):
        script = os.path.join(tempfile.mkdtemp(), "token.sh")
        with open(script, "w") as f:
            f.write("#!/bin/sh\n" + body + "\n")
        os.chmod(script, 0o755)
        return script

    def leftovers(self, marker):
        r = subprocess.run(["pgrep", "-f", marker], capture_output=True, text=True)
        return r.stdout.split()

    def test_a_token_command_that_leaves_a_child_holding_its_output(self):
        self.faulty = ScriptedSmtp("127.0.0.42", 2525, Script(
            ehlo=("250-scripted.test", "250 AUTH XOAUTH2"), xoauth2="good-token"))
        script = self.token_script("echo good-token\nsleep 4241 &")
        self.gw = Gateway(self.xoauth2_upstream(f"token_command: {script}"))
        self.gw.start()
        started = time.monotonic()
        qid = self.send("w@oauth.test")
        self.line(qid, "w@oauth.test", "sent")
        self.assertLess(time.monotonic() - started, 5)  # not the 30 s timeout, nor the child's 4241 s
        wait_for(lambda: not self.leftovers("sleep 4241"), timeout=5, what="the command's child to be killed")

    def test_a_token_command_past_its_timeout_is_killed_with_its_children(self):
        self.faulty = ScriptedSmtp("127.0.0.42", 2525, Script(
            ehlo=("250-scripted.test", "250 AUTH XOAUTH2"), xoauth2="good-token"))
        script = self.token_script("sleep 4242; echo good-token")
        self.gw = Gateway(self.xoauth2_upstream(f"token_command: {script}"))
        self.gw.start()
        qid = self.send("v@oauth.test")
        line = self.line(qid, "v@oauth.test", "deferred", timeout=45)
        self.assertRegex(line, r"delay=3[01], ")
        self.assertIn("auth.token_command did not finish within 30 s: " + script, line)
        wait_for(lambda: not self.leftovers("sleep 4242"), timeout=5, what="the command's children to be killed")

    def test_sigterm_while_a_token_command_runs(self):
        self.faulty = ScriptedSmtp("127.0.0.42", 2525, Script(
            ehlo=("250-scripted.test", "250 AUTH XOAUTH2"), xoauth2="good-token"))
        script = self.token_script("sleep 4243; echo good-token")
        self.gw = Gateway(self.xoauth2_upstream(f"token_command: {script}"))
        self.gw.start()
        self.send("u@oauth.test")
        wait_for(lambda: self.leftovers("sleep 4243"), timeout=10, what="the token command to run")
        started = time.monotonic()
        self.assertEqual(self.gw.stop(), 0)
        self.assertLess(time.monotonic() - started, 5)
        self.assertFalse(self.leftovers("sleep 4243"))

    def test_xoauth2_is_not_sent_without_tls(self):
        self.faulty = ScriptedSmtp("127.0.0.42", 2525, Script(
            ehlo=("250-scripted.test", "250 AUTH XOAUTH2"), xoauth2="t"))
        token = os.path.join(tempfile.mkdtemp(), "token")
        with open(token, "w") as f:
            f.write("t\n")
        self.gw = Gateway(self.xoauth2_upstream(f"token_file: {token}", allow_plaintext="false"))
        self.gw.start()
        qid = self.send("z@oauth.test")
        line = self.line(qid, "z@oauth.test", "deferred")
        self.assertIn("have only XOAUTH2 in common, which send the password in clear, and TLS is not active", line)
        self.assertFalse([c for s in self.faulty.sessions for c in s if c.startswith("AUTH")])

    def starttls_upstream(self, security):
        return f"""routes: [{{ to: "*", via: tls }}]
upstreams:
  tls: {{ host: 127.0.0.42, port: 2525, security: {security} }}
queue: {{ dir: {{spool}}, retry: [1h] }}
"""

    def test_starttls_refused(self):
        script = Script(ehlo=("250-scripted.test", "250-PIPELINING", "250 STARTTLS"),
                        replies={"STARTTLS": "454 4.7.0 TLS not available due to local problem"})
        self.faulty = ScriptedSmtp("127.0.0.42", 2525, script)
        # Mandatory: deferred with the server's words and status.
        self.gw = Gateway(self.starttls_upstream("mandatory"))
        self.gw.start()
        qid = self.send("m@tls.test")
        line = self.line(qid, "m@tls.test", "deferred")
        self.assertIn("dsn=4.7.0, status=deferred (TLS is required, but host 127.0.0.42[127.0.0.42] refused to start "
                      "TLS: 454 4.7.0 TLS not available due to local problem)", line)
        self.gw.cleanup()
        # Opportunistic: carries on in plaintext.
        self.gw = Gateway(self.starttls_upstream("opportunistic"))
        self.gw.start()
        qid = self.send("o@tls.test")
        self.line(qid, "o@tls.test", "sent")

    def test_the_null_sender_is_never_bounced(self):
        self.start(Script(replies={"RCPT": "550 5.1.1 no such user"}))
        r = self.gw.swaks("--from", "<>", "--to", "i@faulty.test")
        qid = queued_id(r.stdout)
        self.line(qid, "i@faulty.test", "bounced")
        self.gw.wait_log(rf"qmgr\[\d+\]: {qid}: removed$")
        time.sleep(0.5)
        self.assertEqual(self.notices("Undelivered Mail"), [])
        self.assertFalse([l for l in self.gw.log_lines() if f"{qid}: sender non-delivery" in l])


if __name__ == "__main__":
    unittest.main()


class DestinationTableTest(unittest.TestCase):
    """The queue manager forgets a destination once nothing is queued for it, no connection is
    open and no failure is to be remembered: twenty domains mailed once leave no entries behind."""

    def test_idle_destinations_are_forgotten(self):
        from peers import Dnsmasq, free_tcp_port
        dns = Dnsmasq(["--address=/pruned.test/127.0.0.47"]).start()
        server = ScriptedSmtp("127.0.0.47", 2525)
        port = free_tcp_port("127.0.2.4")
        gw = Gateway(f"""routes: [{{ to: "*", via: direct }}]
direct: {{ security: none, port: 2525 }}
dns: {{ servers: ["127.0.0.1:{dns.port}"], timeout: 1s, attempts: 1 }}
delivery: {{ connection_reuse: 1s }}
metrics: {{ listen: "127.0.2.4:{port}" }}
""")
        try:
            gw.start()
            rcpts = [f"u@d{i}.pruned.test" for i in range(20)]
            qid = queued_id(gw.swaks("--from", "app@example.com", "--to", ",".join(rcpts)).stdout)
            for r in rcpts:
                gw.wait_log(rf"{qid}: to=<{re.escape(r)}>, relay=d\d+\.pruned\.test.*status=sent ")

            def destinations():
                out = subprocess.run(["curl", "-sf", f"http://127.0.2.4:{port}/metrics"], capture_output=True,
                                     text=True, timeout=10).stdout
                return int(re.search(r"(?m)^smtpgw_queue_destinations (\d+)$", out).group(1))

            wait_for(lambda: destinations() == 0, timeout=15, what="the idle destinations to be forgotten")
        finally:
            gw.cleanup()
            server.close()
            dns.cleanup()


class Smtputf8Test(unittest.TestCase):
    """RFC 6531 3.5: SMTPUTF8 is needed only for UTF-8 in the addresses or the headers; a server
    without it may be the wrong MX, so the next one is tried before the message bounces.

      utf.test   MX 10 a.utf.test (127.0.0.51, no SMTPUTF8), MX 20 b.utf.test (127.0.0.52, SMTPUTF8)
      old.test   MX 10 a.utf.test only
    """

    @classmethod
    def setUpClass(cls):
        from peers import Dnsmasq
        cls.dns = Dnsmasq(["--mx-host=utf.test,a.utf.test,10", "--mx-host=utf.test,b.utf.test,20",
                           "--host-record=a.utf.test,127.0.0.51", "--host-record=b.utf.test,127.0.0.52",
                           "--mx-host=old.test,a.utf.test,10", "--mx-host=xn--mnchen-3ya.test,a.utf.test,10"]).start()
        cls.old = ScriptedSmtp("127.0.0.51", 2525, Script(ehlo=("250-a.utf.test", "250-PIPELINING", "250 8BITMIME")))
        cls.new = ScriptedSmtp("127.0.0.52", 2525, Script(ehlo=("250-b.utf.test", "250-8BITMIME", "250 SMTPUTF8")))

    @classmethod
    def tearDownClass(cls):
        cls.old.close()
        cls.new.close()
        cls.dns.cleanup()

    def setUp(self):
        self.gw = Gateway(f"""routes: [{{ to: "*", via: direct }}]
direct: {{ security: none, port: 2525 }}
dns: {{ servers: ["127.0.0.1:{self.dns.port}"], timeout: 1s, attempts: 1 }}
queue: {{ dir: {{spool}}, retry: [1h] }}
""")
        self.gw.start()

    def tearDown(self):
        self.gw.cleanup()

    def submit(self, rcpt, headers=b""):
        c = self.gw.connect()
        c.reply()
        c.command("EHLO client.test")
        self.assertEqual(c.command("MAIL FROM:<app@example.com> SMTPUTF8"), "250 2.1.0 Ok\r\n")
        self.assertEqual(c.command(f"RCPT TO:<{rcpt}>"), "250 2.1.5 Ok\r\n")
        c.command("DATA")
        c.send(headers + b"Subject: t\r\n\r\nhello\r\n.\r\n")
        return queued_id(c.reply())

    def line(self, qid, rcpt, status):
        return self.gw.wait_log(rf"smtp\[\d+\]: {qid}: to=<{re.escape(rcpt)}>, .*status={status} ", timeout=20)

    def test_plain_ascii_needs_no_smtputf8(self):
        qid = self.submit("plain@old.test")
        self.assertIn("relay=a.utf.test[127.0.0.51]:2525", self.line(qid, "plain@old.test", "sent"))

    def test_utf8_goes_to_the_mx_that_can_take_it(self):
        qid = self.submit("jürgen@utf.test")
        self.assertIn("relay=b.utf.test[127.0.0.52]:2525", self.line(qid, "jürgen@utf.test", "sent"))
        qid = self.submit("plain@utf.test", headers="From: Jürgen <app@example.com>\r\n".encode())
        self.assertIn("relay=b.utf.test[127.0.0.52]:2525", self.line(qid, "plain@utf.test", "sent"))

    def test_an_internationalized_domain_goes_in_its_a_label_form(self):
        # RFC 5890: looked up as xn--mnchen-3ya.test; RFC 6531 3.2: no SMTPUTF8 at the server, so
        # the domain goes on the wire as its A-label too (the local part is ASCII).
        qid = self.submit("user@münchen.test")
        self.assertIn("relay=a.utf.test[127.0.0.51]:2525", self.line(qid, "user@münchen.test", "sent"))
        self.assertIn("RCPT TO:<user@xn--mnchen-3ya.test>", [c for s in self.old.sessions for c in s])

    def test_utf8_bounces_when_no_mx_can_take_it(self):
        qid = self.submit("jürgen@old.test")
        line = self.line(qid, "jürgen@old.test", "bounced")
        self.assertIn("dsn=5.6.7, status=bounced (SMTPUTF8 is required, but was not offered by host "
                      "a.utf.test[127.0.0.51])", line)


class BackupMxTest(unittest.TestCase):
    """A connection that moved to the backup MX, reused for a later message, does not defer that
    message without trying the preferred MX.

      two.test   MX 10 a.two.test (127.0.0.53), MX 20 b.two.test (127.0.0.54)
    """

    def test_a_later_job_on_the_backup_goes_round_to_the_preferred_mx(self):
        from peers import Dnsmasq
        dns = Dnsmasq(["--mx-host=two.test,a.two.test,10", "--mx-host=two.test,b.two.test,20",
                       "--host-record=a.two.test,127.0.0.53", "--host-record=b.two.test,127.0.0.54"]).start()
        backup = ScriptedSmtp("127.0.0.54", 2525, Script(replies={"RCPT TO:<SECOND@": "451 4.3.0 not here, not now"}))
        preferred = None
        gw = Gateway(f"""routes: [{{ to: "*", via: direct }}]
direct: {{ security: none, port: 2525 }}
dns: {{ servers: ["127.0.0.1:{dns.port}"], timeout: 1s, attempts: 1 }}
delivery: {{ connection_reuse: 10s }}
queue: {{ dir: {{spool}}, retry: [1h] }}
""")
        try:
            gw.start()
            # The preferred MX is down: the first message goes to the backup, whose connection stays.
            first = queued_id(gw.swaks("--from", "app@example.com", "--to", "first@two.test").stdout)
            gw.wait_log(rf"{first}: to=<first@two\.test>, relay=b\.two\.test\[127\.0\.0\.54\]:2525, .*status=sent ")
            preferred = ScriptedSmtp("127.0.0.53", 2525)
            second = queued_id(gw.swaks("--from", "app@example.com", "--to", "second@two.test").stdout)
            line = gw.wait_log(rf"{second}: to=<second@two\.test>, .*status=(sent|deferred) ", timeout=20)
            self.assertIn("relay=a.two.test[127.0.0.53]:2525", line)
            self.assertIn("status=sent", line)
            self.assertEqual(len(backup.sessions), 1)  # the second message came on the reused connection
        finally:
            gw.cleanup()
            backup.close()
            if preferred:
                preferred.close()
            dns.cleanup()


class FairnessTest(unittest.TestCase):
    """A busy, slow destination gives up its connection slot now and then (delivery.reuse_messages),
    and the slot goes to the destination that waited for it, not back to the busy one."""

    def test_a_waiting_destination_gets_the_next_slot(self):
        slow = ScriptedSmtp("127.0.0.55", 2525, Script(slow=1.5))
        fast = ScriptedSmtp("127.0.0.56", 2525)
        gw = Gateway("""routes:
  - { to: slow.test, via: slow }
  - { to: fast.test, via: fast }
upstreams:
  slow: { host: 127.0.0.55, port: 2525, security: none }
  fast: { host: 127.0.0.56, port: 2525, security: none }
delivery: { concurrency: 1, reuse_messages: 2, connection_reuse: 1s }
""")
        try:
            gw.start()
            slow_ids = [queued_id(gw.swaks("--from", "app@example.com", "--to", f"s{i}@slow.test").stdout)
                        for i in range(4)]
            fast_id = queued_id(gw.swaks("--from", "app@example.com", "--to", "f@fast.test").stdout)
            for qid in slow_ids + [fast_id]:
                gw.wait_log(rf"{qid}: to=<\S+>, .*status=sent ", timeout=30)
            sent = [l for l in gw.log_lines() if "status=sent" in l]
            order = [next(q for q in slow_ids + [fast_id] if f" {q}: " in l) for l in sent]
            # Two slow messages, then the connection quits and the fast one takes the slot.
            self.assertEqual(order.index(fast_id), 2, order)
        finally:
            gw.cleanup()
            slow.close()
            fast.close()


class PartialResultsTest(unittest.TestCase):
    """A message whose recipients went to two destinations: the one delivered is written down when
    its job ends, so a stop while the other is still out does not send it again."""

    def test_a_stop_after_part_was_delivered(self):
        fast = ScriptedSmtp("127.0.0.57", 2525)
        silent = ScriptedSmtp("127.0.0.58", 2525, Script(greeting=None))
        config = """routes:
  - { to: fast.test, via: fast }
  - { to: silent.test, via: silent }
upstreams:
  fast: { host: 127.0.0.57, port: 2525, security: none }
  silent: { host: 127.0.0.58, port: 2525, security: none }
delivery: { timeouts: { helo: 60s } }
queue: { dir: {spool}, retry: [1h] }
"""
        gw = Gateway(config)
        try:
            gw.start()
            qid = queued_id(gw.swaks("--from", "app@example.com", "--to", "a@fast.test,b@silent.test").stdout)
            gw.wait_log(rf"{qid}: to=<a@fast\.test>, .*status=sent ")
            wait_for(lambda: silent.sessions, what="the other job's connection")
            time.sleep(0.2)  # the envelope update is on its way to the disk
            self.assertEqual(gw.stop(), 0)
            gw.start()
            gw.wait_log(r"started, 1 message\(s\) in the queue")
            [entry] = gw.queue()
            self.assertEqual({r["address"]: r["status"] for r in entry["recipients"]},
                             {"a@fast.test": "sent", "b@silent.test": "pending"})
            gw.run("queue", "flush")
            time.sleep(1)
            self.assertEqual(len(fast.messages), 1)  # not sent again
        finally:
            gw.cleanup()
            fast.close()
            silent.close()


class SourceAddressTest(unittest.TestCase):
    """upstreams.NAME.source_address and helo_name (Postfix's smtp_bind_address, smtp_helo_name):
    on a host with several addresses, mail leaves from the one whose PTR and SPF are right."""

    def test_source_address_and_helo_name(self):
        server = ScriptedSmtp("127.0.0.59", 2525)
        gw = Gateway("""routes: [{ to: "*", via: up }]
upstreams:
  up: { host: 127.0.0.59, port: 2525, security: none, source_address: 127.0.0.60, helo_name: out.example.net }
""")
        try:
            gw.start()
            qid = queued_id(gw.swaks("--from", "app@example.com", "--to", "a@example.org").stdout)
            gw.wait_log(rf"{qid}: to=<a@example\.org>, .*status=sent ")
            self.assertEqual(server.peers, ["127.0.0.60"])
            self.assertEqual(server.sessions[0][0], "EHLO out.example.net")
        finally:
            gw.cleanup()
            server.close()

    def test_a_source_address_that_is_not_ours(self):
        gw = Gateway("""routes: [{ to: "*", via: bad }]
upstreams:
  bad: { host: 127.0.0.59, port: 2525, security: none, source_address: 192.0.2.1 }
""")
        try:
            gw.start()
            qid = queued_id(gw.swaks("--from", "app@example.com", "--to", "a@example.org").stdout)
            line = gw.wait_log(rf"{qid}: to=<a@example\.org>, .*status=deferred ")
            self.assertIn("(connect to 127.0.0.59[127.0.0.59]:2525: Cannot assign requested address)", line)
        finally:
            gw.cleanup()


class DestinationHealthTest(unittest.TestCase):
    """A server that takes two connections at a time and answers the others 421: the destination
    is not declared dead while two sessions deliver; every message goes on its first attempt."""

    def test_421_for_too_many_connections_does_not_stop_the_destination(self):
        server = ScriptedSmtp("127.0.0.66", 2525, Script(slow=0.3, max_sessions=2))
        gw = Gateway("""routes: [{ to: "*", via: busy }]
upstreams: { busy: { host: 127.0.0.66, port: 2525, security: none } }
delivery: { initial_concurrency: 8 }
queue: { dir: {spool}, retry: [1h] }
""")
        try:
            gw.start()
            c = gw.connect()
            c.reply()
            c.command("EHLO client.test")
            ids = []
            for i in range(12):
                c.command("MAIL FROM:<app@example.com>")
                c.command(f"RCPT TO:<r{i}@example.org>")
                c.command("DATA")
                c.send(f"Subject: {i}\r\n\r\nx\r\n.\r\n")
                ids.append(queued_id(c.reply()))
            for i, qid in enumerate(ids):
                gw.wait_log(rf"{qid}: to=<r{i}@example\.org>, .*status=sent ", timeout=30)
            self.assertFalse([l for l in gw.log_lines() if "status=deferred" in l])
            self.assertGreater(getattr(server, "refused", 0), 0)  # the 421s did happen
            self.assertEqual(len(server.messages), 12)
        finally:
            gw.cleanup()
            server.close()


class ThreeDestinationsTest(unittest.TestCase):
    """One destination dead (it never answers), one slow (2 s a message), one fast: the fast one's
    mail is never delayed by the others."""

    def test_the_fast_destination_is_not_delayed(self):
        dead = ScriptedSmtp("127.0.0.62", 2525, Script(greeting=None))
        slow = ScriptedSmtp("127.0.0.63", 2525, Script(slow=2.0))
        fast = ScriptedSmtp("127.0.0.64", 2525)
        gw = Gateway("""routes:
  - { to: dead.test, via: dead }
  - { to: slow.test, via: slow }
  - { to: "*", via: fast }
upstreams:
  dead: { host: 127.0.0.62, port: 2525, security: none }
  slow: { host: 127.0.0.63, port: 2525, security: none }
  fast: { host: 127.0.0.64, port: 2525, security: none }
delivery: { concurrency: 6, timeouts: { helo: 30s } }
queue: { dir: {spool}, retry: [1h] }
""")
        try:
            gw.start()
            c = gw.connect()
            c.reply()
            c.command("EHLO client.test")
            fast_ids = []
            for i in range(30):
                for domain in ("dead.test", "slow.test", "fast.test"):
                    c.command("MAIL FROM:<app@example.com>")
                    c.command(f"RCPT TO:<m{i}@{domain}>")
                    c.command("DATA")
                    c.send(f"Subject: {i}\r\n\r\nx\r\n.\r\n")
                    qid = queued_id(c.reply())
                    if domain == "fast.test":
                        fast_ids.append((i, qid))
            for i, qid in fast_ids:
                line = gw.wait_log(rf"{qid}: to=<m{i}@fast\.test>, .*status=sent ", timeout=30)
                delay = float(re.search(r", delay=([\d.]+),", line).group(1))
                self.assertLess(delay, 1.0, line)
        finally:
            gw.cleanup()
            for s in (dead, slow, fast):
                s.close()
