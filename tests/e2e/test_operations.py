"""What an administrator touches every day: queue commands (with the gateway running and stopped),
the log (pflogsumm, JSON, syslog, reopening for logrotate), /metrics, privileges, and SIGTERM.

  relay    Postfix at 127.0.2.1:2525; reject550@ gets 550 5.1.1, defer450@ gets 450 4.2.0
"""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import unittest

from gwtest import Gateway, queued_id, strip_received, wait_for
from peers import Postfix, free_tcp_port

NEEDS_ROOT = unittest.skipUnless(os.geteuid() == 0, "Postfix peers and privilege changes need root")


def relay_config(extra=""):
    return f"""clients: ["127.0.0.1/32"]
routes: [{{ to: "*", via: relay }}]
upstreams: {{ relay: {{ host: 127.0.2.1, port: 2525, security: none }} }}
queue: {{ dir: {{spool}}, retry: [1h] }}
{extra}"""


def scrape(port):
    r = subprocess.run(["curl", "-sf", f"http://127.0.2.2:{port}/metrics"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    return r.stdout


def metric(text, name, **labels):
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    pattern = "^" + re.escape(name) + (r"\{" + re.escape(want) + r"\}" if want else "") + r" (\S+)$"
    m = re.search(pattern, text, re.M)
    return float(m.group(1)) if m else None


@NEEDS_ROOT
class OperationsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.relay = Postfix("relay.ops.test", "127.0.2.1", 2525).start()

    @classmethod
    def tearDownClass(cls):
        cls.relay.cleanup()

    def gateway(self, extra="", log_options=""):
        gw = Gateway(relay_config(extra), log_options=log_options)
        gw.start()
        self.addCleanup(gw.cleanup)
        return gw

    def send(self, gw, to, sender="app@ops.test", subject="ops"):
        r = gw.swaks("--from", sender, "--to", to, "--header", f"Subject: {subject}")
        return queued_id(r.stdout)

    # --- the queue ------------------------------------------------------------------------------
    def test_queue_commands_with_the_gateway_running_and_stopped(self):
        gw = self.gateway()
        first = self.send(gw, "defer450@one.test", subject="first")
        second = self.send(gw, "defer450@two.test", subject="second")
        line = gw.wait_log(rf"{first}: to=<defer450@one\.test>, .*status=deferred")
        gw.wait_log(rf"{second}: to=<defer450@two\.test>, .*status=deferred")
        logged_reason = re.search(r"status=deferred \((.*)\)$", line).group(1)

        entries = {e["id"]: e for e in gw.queue()}
        self.assertEqual(set(entries), {first, second})
        e = entries[first]
        self.assertRegex(e["arrival"], r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$")
        self.assertEqual(e["size"], len(gw.content(first)))
        self.assertEqual(e["sender"], "app@ops.test")
        self.assertNotIn("orig_sender", e)
        self.assertEqual(e["client"], "unknown[127.0.0.1]")
        self.assertEqual(e["attempts"], 1)
        self.assertRegex(e["next_attempt"], r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$")
        [r] = e["recipients"]
        self.assertEqual(r, {"address": "defer450@one.test", "status": "deferred", "dsn": "4.2.0",
                             "relay": "127.0.2.1[127.0.2.1]:2525", "reason": logged_reason})
        self.assertIn("Mailbox busy, try again later (in reply to RCPT TO command)", logged_reason)
        shown = gw.run("queue", "show", first, "--json")
        self.assertEqual(shown.returncode, 0, shown.stderr)
        self.assertEqual(json.loads(shown.stdout)["recipients"], e["recipients"])

        # Running: through the control socket.
        out = gw.run("queue", "delete", first)
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertEqual(out.stdout, f"{first}: removed\nok: 1 message(s) deleted\n")
        gw.wait_log(rf"qmgr\[\d+\]: {first}: deleted by the administrator$")
        gw.wait_log(rf"qmgr\[\d+\]: {first}: removed$")
        self.assertEqual([x["id"] for x in gw.queue()], [second])
        self.assertFalse(os.path.exists(os.path.join(gw.spool, "queue", first)))

        out = gw.run("queue", "flush", second)
        self.assertEqual((out.returncode, out.stdout), (0, f"ok: {second} is being tried now\n"))
        wait_for(lambda: len([l for l in gw.log_lines() if f"{second}: to=" in l]) == 2, what="a second attempt")
        wait_for(lambda: gw.queue()[0]["attempts"] == 2, what="the attempt to be recorded")

        out = gw.run("queue", "delete", "0123456789ABC")
        self.assertEqual(out.returncode, 1)
        self.assertIn("error: 0123456789ABC: no such message in the queue", out.stdout)

        # Stopped: on the spool directly.
        self.assertEqual(gw.stop(), 0)
        self.assertEqual([x["id"] for x in gw.queue()], [second])
        out = gw.run("queue", "flush")
        self.assertEqual((out.returncode, out.stdout), (0, f"{second}: will be tried as soon as the gateway starts\n"))
        self.assertEqual(gw.queue()[0]["next_attempt"], "-")
        out = gw.run("queue", "delete", "0123456789ABC")
        self.assertEqual(out.returncode, 1)
        self.assertIn("0123456789ABC: no such message in the queue", out.stderr)
        out = gw.run("queue", "delete", "--all")
        self.assertEqual((out.returncode, out.stdout), (0, f"{second}: removed\n"))
        self.assertEqual(gw.queue(), [])
        self.assertEqual(sorted(os.listdir(os.path.join(gw.spool, "queue"))), [])
        gw.start()  # the spool is still good
        gw.wait_log(r"started, 0 message\(s\) in the queue")

    # --- what pflogsumm and /metrics make of a known mix ------------------------------------------
    def test_pflogsumm_and_metrics_count_what_happened(self):
        port = free_tcp_port("127.0.2.2")
        gw = self.gateway(f'metrics: {{ listen: "127.0.2.2:{port}" }}\n')
        sent = [self.send(gw, f"user{i}@one.test", subject=f"ok {i}") for i in range(3)]
        sent.append(self.send(gw, "user9@two.test", subject="ok two"))
        bounced = self.send(gw, "reject550@one.test", sender="<>", subject="bounce")
        deferred = self.send(gw, "defer450@two.test", subject="defer")
        refused = gw.swaks("--from", "app@ops.test", "--to", "x@one.test", "--local-interface", "127.0.0.9")
        self.assertIn("554 5.7.1 <x@one.test>: Relay access denied", refused.stdout)
        for qid in sent:
            gw.wait_log(rf"{qid}: to=<[^>]+>, relay=127\.0\.2\.1\[127\.0\.2\.1\]:2525, .*dsn=2\.0\.0, status=sent")
        gw.wait_log(rf"{bounced}: to=<reject550@one\.test>, .*dsn=5\.1\.1, status=bounced")
        gw.wait_log(rf"{deferred}: to=<defer450@two\.test>, .*dsn=4\.2\.0, status=deferred")
        gw.wait_log(r"NOQUEUE: reject: RCPT from unknown\[127\.0\.0\.9\]: 554 5\.7\.1")
        self.relay.wait_messages(4)

        text = scrape(port)
        self.assertEqual(metric(text, "smtpgw_messages_received_total"), 6)
        self.assertEqual(metric(text, "smtpgw_messages_rejected_total", stage="RCPT", status="5.7.1"), 1)
        self.assertEqual(metric(text, "smtpgw_deliveries_total", route="relay", status="sent", dsn_class="2"), 4)
        self.assertEqual(metric(text, "smtpgw_deliveries_total", route="relay", status="bounced", dsn_class="5"), 1)
        self.assertEqual(metric(text, "smtpgw_deliveries_total", route="relay", status="deferred", dsn_class="4"), 1)
        self.assertEqual(metric(text, "smtpgw_delivery_delay_seconds_count"), 4)
        self.assertEqual(metric(text, "smtpgw_delivery_delay_seconds_bucket", le="+Inf"), 4)
        self.assertEqual(metric(text, "smtpgw_queue_messages"), 1)
        self.assertGreater(metric(text, "smtpgw_queue_oldest_message_age_seconds"), 0)
        self.assertEqual(metric(text, "smtpgw_auth_failures_total", direction="in"), 0)
        self.assertEqual(metric(text, "smtpgw_connections_total"), 7)
        for args, code in [([f"http://127.0.2.2:{port}/other"], "404"), (["-I", f"http://127.0.2.2:{port}/metrics"], "200"),
                           (["-X", "POST", f"http://127.0.2.2:{port}/metrics"], "405")]:
            curl = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", *args], capture_output=True,
                                  text=True, timeout=10)
            self.assertEqual(curl.stdout, code, args)

        report = subprocess.run(["pflogsumm", "--syslog-name=smtpgw", "--problems-first", gw.log_path],
                                capture_output=True, text=True, timeout=60)
        self.assertEqual(report.returncode, 0, report.stderr)
        totals = report.stdout.split("Grand Totals", 1)[1]
        for count, what in [(6, "received"), (4, "delivered"), (1, "deferred"), (1, "bounced"), (1, "rejected")]:
            self.assertRegex(totals, rf"\n\s+{count}\s+{what}\b", report.stdout)
        # Per recipient domain: sent count, bytes, deferrals, ..., domain.
        delivery = report.stdout.split("Host/Domain Summary: Message Delivery", 1)[1].split("Host/Domain Summary", 1)[0]
        rows = {m.group(4): (int(m.group(1)), int(m.group(3)))
                for m in re.finditer(r"(?m)^\s+(\d+)\s+(\d+)\s+(\d+)\s+.*\s(\S+\.test)$", delivery)}
        self.assertEqual(rows, {"one.test": (3, 0), "two.test": (1, 1)}, delivery)
        self.assertRegex(report.stdout, r"(?m)^\s+5\s+\d+\s+ops\.test$")  # received per sender domain

    # --- the log ---------------------------------------------------------------------------------
    def test_sigusr1_reopens_the_log_file(self):
        gw = self.gateway()
        first = self.send(gw, "user1@one.test", subject="before rotation")
        gw.wait_log(rf"{first}: removed")
        rotated = gw.log_path + ".1"
        os.rename(gw.log_path, rotated)
        gw.proc.send_signal(signal.SIGUSR1)
        second = self.send(gw, "user2@one.test", subject="after rotation")
        wait_for(lambda: os.path.exists(gw.log_path), what="a new log file")
        gw.wait_log(rf"{second}: removed")
        with open(rotated) as f:
            old = f.read()
        self.assertIn(f"{first}: removed", old)
        self.assertNotIn(second, old)

    def test_json_log_lines(self):
        gw = self.gateway(log_options="format: json")
        qid = self.send(gw, "user1@one.test", subject="json")
        gw.wait_log(rf'"queue_id":"{qid}","text":"{qid}: removed"')
        records = [json.loads(l) for l in gw.log_lines()]
        sent = next(r for r in records if r.get("queue_id") == qid and "status=sent" in r["text"])
        self.assertEqual(sent["program"], "smtpgw")
        self.assertEqual(sent["component"], "smtp")
        self.assertEqual(sent["level"], "info")
        self.assertEqual(sent["pid"], gw.proc.pid)
        self.assertEqual(sent["host"], "gw")
        self.assertRegex(sent["time"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d$")
        self.assertRegex(sent["text"], rf"^{qid}: to=<user1@one\.test>, relay=127\.0\.2\.1")

    def test_syslog(self):
        path = os.path.join(tempfile.mkdtemp(prefix="smtpgw-syslog-"), "log")
        self.addCleanup(shutil.rmtree, os.path.dirname(path), True)
        daemon = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        daemon.bind(path)
        daemon.settimeout(10)
        self.addCleanup(daemon.close)
        gw = self.gateway(log_options=f"syslog: true, syslog_socket: {path}")
        qid = self.send(gw, "user1@one.test", subject="syslog")
        seen = []
        deadline = time.monotonic() + 15
        while not any(f"{qid}: removed" in s for s in seen) and time.monotonic() < deadline:
            seen.append(daemon.recv(65536).decode())
        line = next(s for s in seen if f"{qid}: to=" in s)
        self.assertRegex(line, rf"^<22>[A-Z][a-z][a-z] [ \d]\d \d\d:\d\d:\d\d smtpgw/smtp\[{gw.proc.pid}\]: {qid}: "
                               r"to=<user1@one\.test>, relay=127\.0\.2\.1\[127\.0\.2\.1\]:2525, .*status=sent")
        self.assertTrue(any(s.startswith("<22>") and "smtpd[" in s and "connect from unknown[127.0.0.1]" in s
                            for s in seen))

    # --- privileges --------------------------------------------------------------------------------
    def test_runs_as_the_configured_user(self):
        gw = Gateway(relay_config("user: nobody\n"))
        self.addCleanup(gw.cleanup)
        os.chmod(gw.dir, 0o755)
        gw.start()
        gw.wait_log(r"running as nobody \(uid \d+\)")
        with open(f"/proc/{gw.proc.pid}/status") as f:
            status = f.read()
        nobody = int(subprocess.run(["id", "-u", "nobody"], capture_output=True, text=True).stdout)
        uids = re.search(r"^Uid:\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)$", status, re.M).groups()
        self.assertEqual([int(u) for u in uids], [nobody] * 4)
        self.assertRegex(status, r"(?m)^CapEff:\s+0+$")
        qid = self.send(gw, "defer450@one.test", subject="as nobody")  # the spool is writable
        self.assertEqual(os.stat(os.path.join(gw.spool, "queue", qid)).st_uid, nobody)
        self.assertEqual(os.stat(os.path.join(gw.spool, "control.sock")).st_mode & 0o777, 0o660)
        out = gw.run("queue", "delete", qid)  # root may use the socket
        self.assertEqual(out.returncode, 0, out.stdout + out.stderr)

    def test_a_configuration_file_must_say_whom_to_run_as(self):
        gw = Gateway(relay_config("user: \"\"\n"))
        self.addCleanup(gw.cleanup)
        proc = gw.start(expect_failure=True)
        self.assertEqual(proc.returncode, 1)
        self.assertIn("smtpgw would run as root: set user:", proc.stderr.read().decode())

    # --- SIGTERM -----------------------------------------------------------------------------------
    def test_sigterm_lets_a_message_in_transfer_finish(self):
        gw = self.gateway()
        c = gw.connect()
        c.reply()
        c.command("EHLO client.test")
        c.command("MAIL FROM:<app@ops.test>")
        c.command("RCPT TO:<defer450@one.test>")
        self.assertTrue(c.command("DATA").startswith("354 "))
        body = b"Subject: in flight\r\n\r\n" + b"line of the body\r\n" * 2000
        c.send(body[:10000])
        gw.proc.send_signal(signal.SIGTERM)
        gw.wait_log(r"stopping: no new connections")
        c.send(body[10000:] + b".\r\n")
        reply = c.reply()
        self.assertTrue(reply.startswith("250 2.0.0 Ok: queued as "), reply)
        qid = queued_id(reply)
        self.assertEqual(c.reply(), "421 4.3.2 gw.test Service shutting down, closing transmission channel\r\n")
        self.assertEqual(gw.proc.wait(timeout=30), 0)
        stored = strip_received(gw.content(qid))
        self.assertTrue(stored.startswith(b"Subject: in flight\r\n"), stored[:200])
        self.assertTrue(stored.endswith(b"\r\n\r\n" + body.split(b"\r\n\r\n", 1)[1]))  # every line of the body
        gw.start()
        gw.wait_log(r"started, 1 message\(s\) in the queue")


if __name__ == "__main__":
    unittest.main()
