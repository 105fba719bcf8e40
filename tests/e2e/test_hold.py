"""`smtpgw queue hold` and `release`: a held message is never tried, survives a restart held,
and goes as soon as it is released; through the running gateway's control socket and on a
stopped gateway's spool."""
import re
import subprocess
import time
import unittest

from gwtest import Gateway, queued_id, wait_for
from scripted import ScriptedSmtp

UPSTREAM = ("127.0.0.74", 2525)


class HoldTest(unittest.TestCase):
    def setUp(self):
        # The upstream is down at first: messages are deferred and retried every second.
        self.gw = Gateway(f"""routes: [{{ to: "*", via: up }}]
upstreams: {{ up: {{ host: {UPSTREAM[0]}, port: {UPSTREAM[1]}, security: none }} }}
delivery: {{ connection_reuse: 0s }}
queue: {{ dir: {{spool}}, retry: [1s] }}
""")
        self.gw.start()
        self.smtp = None

    def tearDown(self):
        self.gw.cleanup()
        if self.smtp:
            self.smtp.close()

    def send(self, to):
        r = self.gw.swaks("--from", "app@example.com", "--to", to)
        self.assertEqual(r.returncode, 0, r.stdout)
        return queued_id(r.stdout)

    def queue(self):
        return {m["id"]: m for m in self.gw.queue()}

    def run_ok(self, *args):
        r = self.gw.run(*args)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        return r.stdout

    def test_held_message_waits_until_released(self):
        held, other = self.send("a@example.com"), self.send("b@example.com")
        self.gw.wait_log(rf"{held}: to=<a@example\.com>, .*status=deferred")
        out = self.run_ok("queue", "hold", held)
        self.assertEqual(out, f"{held}: placed on hold\nok: 1 message(s) placed on hold\n")
        self.gw.wait_log(rf"qmgr\[\d+\]: {held}: placed on hold by the administrator")
        self.assertTrue(self.queue()[held]["held"])
        self.assertFalse(self.queue()[other]["held"])
        listing = self.run_ok("queue", "list")
        self.assertRegex(listing, rf"(?m)^{held}!  ")
        self.assertIn(f"held (smtpgw queue release {held})", listing)
        flush = self.gw.run("queue", "flush", held)
        self.assertEqual(flush.returncode, 1)
        self.assertIn(f"error: {held} is on hold; smtpgw queue release {held}", flush.stdout)

        # The upstream comes back: the other message goes, the held one stays.
        self.smtp = ScriptedSmtp(*UPSTREAM)
        wait_for(lambda: len(self.smtp.messages) == 1, timeout=15, what="the message not held")
        attempts = len([l for l in self.gw.log_lines() if f"{held}: to=<" in l])
        time.sleep(3)
        self.assertEqual(len([l for l in self.gw.log_lines() if f"{held}: to=<" in l]), attempts)
        self.assertEqual(len(self.smtp.messages), 1)
        self.assertIn(held, self.queue())

        out = self.run_ok("queue", "release", held)
        self.assertEqual(out, f"{held}: released\nok: 1 message(s) released\n")
        self.gw.wait_log(rf"{held}: to=<a@example\.com>, .*status=sent", timeout=15)
        self.assertEqual(sorted(r for _, rcpts, _ in self.smtp.messages for r in rcpts),
                         ["RCPT TO:<a@example.com>", "RCPT TO:<b@example.com>"])

    def test_hold_survives_a_restart_and_release_works_offline(self):
        ids = [self.send(f"r{i}@example.com") for i in range(3)]
        for qid in ids:
            self.gw.wait_log(rf"{qid}: to=<.*status=deferred")
        out = self.run_ok("queue", "hold", "--all")
        self.assertTrue(out.endswith("ok: 3 message(s) placed on hold\n"), out)
        self.assertEqual(self.gw.stop(), 0)
        self.assertTrue(all(m["held"] for m in self.queue().values()))
        # Started again with the upstream up: nothing goes.
        self.smtp = ScriptedSmtp(*UPSTREAM)
        self.gw.start()
        time.sleep(2)
        self.assertEqual(self.smtp.messages, [])
        self.assertEqual(self.gw.stop(), 0)
        # Released on the stopped gateway's spool: tried as soon as it starts.
        out = self.run_ok("queue", "release", ids[0])
        self.assertEqual(out, f"{ids[0]}: released; tried as soon as the gateway starts\n")
        out = self.run_ok("queue", "release", ids[0])
        self.assertEqual(out, f"{ids[0]}: not on hold\n")
        self.gw.start()
        wait_for(lambda: len(self.smtp.messages) == 1, timeout=15, what="the released message")
        time.sleep(1)
        self.assertEqual(len(self.smtp.messages), 1)
        self.assertEqual(self.smtp.messages[0][1], ["RCPT TO:<r0@example.com>"])
        out = self.run_ok("queue", "release", "--all")
        self.assertTrue(out.endswith("ok: 2 message(s) released\n"), out)
        wait_for(lambda: len(self.smtp.messages) == 3, timeout=15, what="the other two")

    def test_unknown_ids(self):
        r = self.gw.run("queue", "hold", "ABCDEF123456")
        self.assertEqual(r.returncode, 1)
        self.assertRegex(r.stdout, r"error: ABCDEF123456")


class OnDiskWhenAnsweredTest(unittest.TestCase):
    """When a queue command through the control socket answers ok, its change is in the spool:
    a crash right after it keeps the hold, and a deleted message does not come back."""

    MESSAGES = 40

    def setUp(self):
        self.gw = Gateway(f"""routes: [{{ to: "*", via: up }}]
upstreams: {{ up: {{ host: {UPSTREAM[0]}, port: {UPSTREAM[1]}, security: none }} }}
queue: {{ dir: {{spool}}, retry: [1h] }}
""")
        self.gw.start()

    def tearDown(self):
        self.gw.cleanup()

    def test_hold_release_and_delete_are_on_disk_when_answered(self):
        r = subprocess.run(["smtp-source", "-s", "5", "-m", str(self.MESSAGES), "-l", "300", "-f", "app@example.com",
                            "-t", "someone@example.org", f"{self.gw.host}:{self.gw.port}"],
                           capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        wait_for(lambda: sum(" status=deferred " in l for l in self.gw.log_lines()) >= self.MESSAGES, timeout=30,
                 what="every first attempt")
        out = self.gw.run("queue", "hold", "--all")
        self.assertTrue(out.stdout.endswith(f"ok: {self.MESSAGES} message(s) placed on hold\n"), out.stdout)
        # The gateway killed at once: what the spool says is what a restart finds.
        self.assertEqual([m["id"] for m in self.gw.queue() if not m["held"]], [])
        out = self.gw.run("queue", "release", "--all")
        self.assertTrue(out.stdout.endswith(f"ok: {self.MESSAGES} message(s) released\n"), out.stdout)
        self.assertEqual([m["id"] for m in self.gw.queue() if m["held"]], [])
        out = self.gw.run("queue", "delete", "--all")
        self.assertTrue(out.stdout.endswith(f"ok: {self.MESSAGES} message(s) deleted\n"), out.stdout)
        self.gw.kill()
        self.assertEqual(self.gw.queue(), [])


if __name__ == "__main__":
    unittest.main()
