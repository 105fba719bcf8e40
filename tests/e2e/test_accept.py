"""Accepting mail: swaks submits, the message is stored, queued and logged."""
import os
import re
import signal
import subprocess
import tempfile
import time
import unittest

from gwtest import BIN, Gateway, GatewayTest, queued_id

SYSLOG = r"^[A-Z][a-z]{2} [ 0-9]\d \d\d:\d\d:\d\d \S+ smtpgw/"


class AcceptTest(GatewayTest):
    CONFIG = "clients: [127.0.0.1/32]\n"

    def test_swaks_message_is_stored_queued_and_logged(self):
        r = self.gw.swaks("--from", "scanner@corp.example", "--to", "a@example.org,b@example.org",
                          "--header", "Subject: scan 42", "--body", "see attachment")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        qid = queued_id(r.stdout)
        self.assertIn("<-  250 2.0.0 Ok: queued as " + qid, r.stdout)

        [entry] = self.gw.queue()
        self.assertEqual(entry["id"], qid)
        self.assertEqual(entry["sender"], "scanner@corp.example")
        self.assertEqual([x["address"] for x in entry["recipients"]], ["a@example.org", "b@example.org"])
        self.assertLessEqual({x["status"] for x in entry["recipients"]}, {"pending", "deferred"})
        content = self.gw.content(qid)
        self.assertEqual(entry["size"], len(content))
        self.assertTrue(content.startswith(b"Received: from "), content[:100])
        self.assertIn(b"by gw.test (smtpgw) with ESMTP id " + qid.encode(), content)
        self.assertIn(b"Subject: scan 42\r\n", content)
        self.assertIn(b"\r\n\r\nsee attachment\r\n", content)

        client = self.gw.wait_log(rf"smtpgw/smtpd\[\d+\]: {qid}: client=unknown\[127\.0\.0\.1\]$")
        self.assertRegex(client, SYSLOG)
        self.gw.wait_log(rf"smtpgw/cleanup\[\d+\]: {qid}: message-id=<")
        self.gw.wait_log(rf"smtpgw/qmgr\[\d+\]: {qid}: from=<scanner@corp\.example>, size={len(content)}, nrcpt=2 "
                         r"\(queue active\)$")
        self.gw.wait_log(r"smtpd\[\d+\]: disconnect from unknown\[127\.0\.0\.1\] ehlo=1 mail=1 rcpt=2 data=1 quit=1 "
                         r"commands=6$")

    def test_queue_show(self):
        r = self.gw.swaks("--from", "a@corp.example", "--to", "b@example.org")
        qid = queued_id(r.stdout)
        out = self.gw.run("queue", "show", qid)
        self.assertEqual(out.returncode, 0)
        self.assertIn(qid, out.stdout)
        self.assertRegex(out.stdout, r"<b@example\.org> (pending|deferred)")
        self.assertIn("client=unknown[127.0.0.1]", out.stdout)
        missing = self.gw.run("queue", "show", "ABCDEF")
        self.assertEqual(missing.returncode, 1)
        self.assertIn("no queued message with ID ABCDEF", missing.stderr)

    def test_relay_refused_for_other_clients(self):
        # 127.0.0.5 is loopback but not in `clients`.
        r = self.gw.swaks("--from", "x@outsider.example", "--to", "victim@example.org",
                          "--local-interface", "127.0.0.5")
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("<** 554 5.7.1 <victim@example.org>: Relay access denied", r.stdout)
        line = self.gw.wait_log(r"NOQUEUE: reject: RCPT from unknown\[127\.0\.0\.5\]")
        self.assertTrue(line.endswith(
            "NOQUEUE: reject: RCPT from unknown[127.0.0.5]: 554 5.7.1 <victim@example.org>: Relay access denied; "
            "from=<x@outsider.example> to=<victim@example.org> proto=ESMTP helo=<" + r.stdout.split("EHLO ")[1].split()[0] + ">"),
            line)
        self.assertEqual(self.gw.queue(), [])

    def test_pipelining_swaks(self):
        r = self.gw.swaks("--pipeline", "--from", "a@corp.example", "--to", "b@example.org,c@example.org")
        self.assertEqual(r.returncode, 0, r.stdout)
        self.assertIn("250 2.0.0 Ok: queued as", r.stdout)
        self.assertEqual(len(self.gw.queue()), 1)

    def test_pipelined_transactions_on_a_raw_socket(self):
        c = self.gw.connect()
        self.assertEqual(c.reply(), "220 gw.test ESMTP\r\n")
        c.send("EHLO raw\r\nMAIL FROM:<a@corp.example>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n"
               "Subject: 1\r\n\r\none\r\n.\r\n"
               "MAIL FROM:<a@corp.example>\r\nRCPT TO:<c@example.org>\r\nDATA\r\n"
               "Subject: 2\r\n\r\ntwo\r\n.\r\nQUIT\r\n")
        replies = [c.reply() for _ in range(10)]
        self.assertTrue(replies[0].startswith("250-gw.test\r\n250-PIPELINING\r\n"))
        self.assertEqual(replies[1:4], ["250 2.1.0 Ok\r\n", "250 2.1.5 Ok\r\n",
                                        "354 End data with <CR><LF>.<CR><LF>\r\n"])
        first = queued_id(replies[4])
        self.assertEqual(replies[5:8], ["250 2.1.0 Ok\r\n", "250 2.1.5 Ok\r\n",
                                        "354 End data with <CR><LF>.<CR><LF>\r\n"])
        second = queued_id(replies[8])
        self.assertEqual(replies[9], "221 2.0.0 Bye\r\n")
        self.assertTrue(c.closed())
        self.assertEqual([e["id"] for e in self.gw.queue()], [first, second])
        self.assertTrue(self.gw.content(second).endswith(b"\r\n\r\ntwo\r\n"))

    def test_ehlo_capabilities(self):
        c = self.gw.connect()
        c.reply()
        self.assertEqual(c.command("EHLO me.example"),
                         "250-gw.test\r\n250-PIPELINING\r\n250-SIZE 26214400\r\n250-8BITMIME\r\n"
                         "250-ENHANCEDSTATUSCODES\r\n250 SMTPUTF8\r\n")

    def test_missing_headers_are_added(self):
        c = self.gw.connect()
        c.reply()
        c.command("EHLO me")
        qid = queued_id(self.transaction(c, body="Subject: bare\r\n\r\nno id, no date\r\n.\r\n"))
        content = self.gw.content(qid)
        self.assertRegex(content, rb"\r\nMessage-ID: <\d{14}\." + qid.encode() + rb"@gw\.test>\r\n")
        self.assertRegex(content, rb"\r\nDate: \w{3}, \d\d \w{3} \d{4} \d\d:\d\d:\d\d [+-]\d{4}")
        self.gw.wait_log(rf"cleanup\[\d+\]: {qid}: message-id=<\d{{14}}\.{qid}@gw\.test>")


class Ipv6Test(unittest.TestCase):
    def test_ipv6_listener_and_clients(self):
        gw = Gateway('listen: [{ address: "[::1]:0" }, { address: "127.0.0.1:0" }]\nclients: ["::1/128"]\n')
        try:
            gw.start()
            ports = [int(p) for p in re.findall(r"listening on \S+ \(port (\d+)\)", "\n".join(gw.log_lines()))]
            r = subprocess.run(["swaks", "--server", "::1", "--port", str(ports[0]), "--from", "a@corp.example",
                                "--to", "b@example.org", "--hide-informational"], capture_output=True, text=True)
            qid = queued_id(r.stdout)
            gw.wait_log(rf"{qid}: client=unknown\[::1\]$")
            received = gw.content(qid).split(b"\r\n")[0]
            self.assertRegex(received, rb"^Received: from \S+ \(unknown \[IPv6:::1\]\)$")  # RFC 5321 4.1.3
            # The same gateway over IPv4: 127.0.0.1 is not in clients.
            r = subprocess.run(["swaks", "--server", "127.0.0.1", "--port", str(ports[1]), "--from", "a@corp.example",
                                "--to", "b@example.org", "--hide-informational"], capture_output=True, text=True)
            self.assertIn("554 5.7.1 <b@example.org>: Relay access denied", r.stdout)
        finally:
            gw.cleanup()


class CommandLineTest(unittest.TestCase):
    def test_check_config_reports_file_line_column(self):
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "bad.yaml")
            with open(path, "w") as f:
                f.write("hostname: relay.example.com\nlisten:\n  - address: 0.0.0.0:25\n    tsl: starttls\nlimits:\n"
                        "  message_size: 25X\n")
            r = subprocess.run([BIN, "check-config", "-c", path], capture_output=True, text=True)
            self.assertEqual(r.returncode, 1)
            self.assertEqual(r.stdout.splitlines(), [
                f"{path}:4:5: error: listen[0].tsl: unknown key (did you mean tls?)",
                f"{path}:6:17: error: limits.message_size: \"25X\" is not a size (a number of bytes, or with k, M or G)",
            ])
            with open(path, "w") as f:
                f.write("listen: [ { address: 127.0.0.1:25 }\n")
            r = subprocess.run([BIN, "check-config", "-c", path], capture_output=True, text=True)
            self.assertEqual(r.returncode, 1)
            self.assertRegex(r.stdout, rf"^{re.escape(path)}:\d+:\d+: error: YAML syntax: ")
            r = subprocess.run([BIN, "check-config", "-c",
                                os.path.join(os.path.dirname(__file__), "../../conf/examples/smtpgw.yaml")],
                               capture_output=True, text=True)
            self.assertEqual(r.returncode, 0, r.stdout)

    def test_check_config_default(self):
        r = subprocess.run([BIN, "check-config"], capture_output=True, text=True)
        self.assertEqual(r.returncode, 0)
        # The default hostname is the machine's; a bare one is worth a warning, nothing else is.
        lines = r.stdout.splitlines()
        self.assertEqual(lines[-1], "(default): configuration is valid")
        for line in lines[:-1]:
            self.assertRegex(line, r"^\(default\): warning: hostname: the bounce address MAILER-DAEMON@\S+ cannot be a "
                                   r"sender on the Internet")

    def test_serve_refuses_a_bad_file(self):
        gw = Gateway("limits: { recipients: none }\n")
        try:
            proc = gw.start(expect_failure=True)
            self.assertEqual(proc.returncode, 1)
            self.assertIn("limits.recipients: \"none\" is not a whole number", proc.stderr.read().decode())
        finally:
            gw.cleanup()

    def test_serve_refuses_a_port_in_use(self):
        first = Gateway()
        first.start()
        second = Gateway(listen=f"127.0.0.1:{first.port}")
        try:
            proc = second.start(expect_failure=True)
            self.assertEqual(proc.returncode, 1)
            self.assertIn(f"cannot listen on 127.0.0.1:{first.port}: Address already in use",
                          proc.stderr.read().decode())
        finally:
            first.cleanup()
            second.cleanup()

    def test_version(self):
        r = subprocess.run([BIN, "version"], capture_output=True, text=True)
        self.assertEqual(r.returncode, 0)
        for lib in ("smtpgw ", "libuv ", "mbed TLS ", "Cyrus SASL ", "c-ares "):
            self.assertIn(lib, r.stdout)

    def test_unknown_command(self):
        r = subprocess.run([BIN, "frobnicate"], capture_output=True, text=True)
        self.assertEqual(r.returncode, 2)
        self.assertIn("usage: smtpgw", r.stderr)


class LifecycleTest(unittest.TestCase):
    def setUp(self):
        self.gw = Gateway()
        self.gw.start()

    def tearDown(self):
        self.gw.cleanup()

    def test_sigterm_exits_zero_and_says_so(self):
        c = self.gw.connect()
        c.reply()
        c.command("EHLO me")
        self.assertEqual(self.gw.stop(signal.SIGTERM), 0)
        self.assertEqual(c.reply(), "421 4.3.2 gw.test Service shutting down, closing transmission channel\r\n")
        self.gw.wait_log(r"master\[\d+\]: stopped$")

    def test_sighup_with_a_broken_file_keeps_the_running_configuration(self):
        with open(self.gw.config_path) as f:
            line = len(f.read().splitlines()) + 1
        with open(self.gw.config_path, "a") as f:
            f.write("limits: { message_size: lots }\n")
        self.gw.proc.send_signal(signal.SIGHUP)
        logged = self.gw.wait_log(r"reload refused")
        self.assertIn("error: reload refused, keeping the running configuration: " + self.gw.config_path +
                      f":{line}:25: error: limits.message_size: \"lots\" is not a size", logged)
        c = self.gw.connect()
        self.assertEqual(c.reply(), "220 gw.test ESMTP\r\n")

    def test_sighup_applies_a_new_limit(self):
        self.gw.write_config("limits: { message_size: 2k }\n")
        self.gw.proc.send_signal(signal.SIGHUP)
        self.gw.wait_log(r"configuration reloaded from ")
        c = self.gw.connect()
        c.reply()
        self.assertIn("250-SIZE 2048\r\n", c.command("EHLO me"))


class DefaultConfigurationTest(unittest.TestCase):
    def test_serve_without_a_file(self):
        with tempfile.TemporaryDirectory() as d:
            proc = subprocess.Popen([BIN, "serve"], cwd=d, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL)
            try:
                deadline = time.monotonic() + 10
                while True:
                    try:
                        r = subprocess.run(["swaks", "--server", "127.0.0.1:2525", "--from", "a@corp.example",
                                            "--to", "b@example.org", "--hide-informational"],
                                           capture_output=True, text=True, timeout=30)
                    except subprocess.TimeoutExpired:
                        r = None
                    if r and "queued as" in r.stdout:
                        break
                    self.assertLess(time.monotonic(), deadline, r.stdout if r else "no answer")
                    time.sleep(0.1)
                qid = queued_id(r.stdout)
            finally:
                proc.send_signal(signal.SIGTERM)
                self.assertEqual(proc.wait(timeout=20), 0)
            log = proc.stderr.read().decode()
            proc.stderr.close()
            self.assertIn("listening on 127.0.0.1:2525", log)
            self.assertIn(f"{qid}: client=unknown[127.0.0.1]", log)


if __name__ == "__main__":
    unittest.main()
