"""notify: the administrator gets a copy of each bounce and delay warning, the bounces nobody
else would get, and an alert when the queue's oldest message passes notify.queue_age; all of it
delivered through a real Postfix upstream into the admin's mailbox."""
import re
import time
import unittest

from gwtest import Gateway, queued_id, wait_for
from peers import Postfix

ADMIN = "admin@example.test"


class NotifyTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.relay = Postfix("relay.notify.test", "127.0.0.75", 2525).start()

    @classmethod
    def tearDownClass(cls):
        cls.relay.cleanup()

    def setUp(self):
        self.gw = Gateway(f"""routes: [{{ to: "*", via: relay }}]
upstreams: {{ relay: {{ host: 127.0.0.75, port: 2525, security: none }} }}
queue: {{ dir: {{spool}}, retry: [1s], delay_warning: 2s }}
notify: {{ postmaster: {ADMIN}, classes: [bounce, delay, resource], queue_age: 3s }}
""")
        self.gw.start()
        self.addCleanup(self.gw.cleanup)

    def send(self, sender, to, subject):
        r = self.gw.swaks("--from", sender, "--to", to, "--header", f"Subject: {subject}")
        self.assertEqual(r.returncode, 0, r.stdout)
        return queued_id(r.stdout)

    def to_admin(self, subject_pattern, timeout=30):
        rx = re.compile(subject_pattern)
        return wait_for(lambda: next((m for m in self.relay.delivered_to(ADMIN) if rx.search(m["Subject"] or "")),
                                     None), timeout=timeout, what=f"a message /{subject_pattern}/ for {ADMIN}")

    def test_bounce_copy_and_a_bounce_nobody_else_gets(self):
        qid = self.send("app@site.test", "reject550@dest.test", "copy me")
        line = self.gw.wait_log(rf"bounce\[\d+\]: {qid}: sender non-delivery notification \(copy to <{ADMIN}>\): "
                                r"[0-9A-F]+$")
        notice = line.split()[-1]
        # One notice, two recipients: the sender and the postmaster.
        self.gw.wait_log(rf"{notice}: to=<app@site\.test>, .*status=sent")
        self.gw.wait_log(rf"{notice}: to=<{re.escape(ADMIN)}>, .*status=sent")
        copy = self.to_admin(r"^Undelivered Mail Returned to Sender$")
        self.assertIn("reject550@dest.test", copy.raw.decode(errors="replace"))
        wait_for(lambda: self.relay.delivered_to("app@site.test"), what="the sender's own bounce")
        # A bounce itself bounced (the null sender): to the postmaster alone.
        c = self.gw.connect()
        c.reply()
        c.command("EHLO client.test")
        c.command("MAIL FROM:<>")
        c.command("RCPT TO:<reject550@other.test>")
        c.command("DATA")
        reply = c.command("Subject: a bounce of a bounce\r\n\r\nx\r\n.")
        second = reply.split()[-1]
        self.gw.wait_log(rf"{second}: postmaster non-delivery notification: [0-9A-F]+")
        wait_for(lambda: len([m for m in self.relay.delivered_to(ADMIN)
                              if "reject550@other.test" in m.raw.decode(errors="replace")]) == 1,
                 what="the postmaster's bounce")

    def test_delay_copy_and_queue_age_alert(self):
        qid = self.send("app@site.test", "defer450@dest.test", "slow one")
        self.gw.wait_log(rf"{qid}: sender delay notification \(copy to <{ADMIN}>\)", timeout=30)
        self.to_admin(r"^Delayed Mail \(still being retried\)$")
        alert = self.to_admin(r"^smtpgw on gw\.test: the oldest queued message has waited \d+ s$")
        body = alert.get_payload(decode=True).decode()
        self.assertIn(f"  {qid} from <app@site.test>\n", body.replace("\r\n", "\n"))
        self.assertIn("to <defer450@dest.test>: host 127.0.0.75[127.0.0.75] said: 450 4.2.0", body)
        self.assertIn("`smtpgw queue list` shows each with the reason it waits", body)
        self.assertEqual(alert["Auto-Submitted"], "auto-generated")
        self.gw.wait_log(r"qmgr\[\d+\]: warning: alert to notify\.postmaster: the oldest queued message has waited")
        # One alert while it lasts, not one per check (every second here).
        time.sleep(3)
        count = len([l for l in self.gw.log_lines() if "alert to notify.postmaster" in l])
        self.assertEqual(count, 1)


if __name__ == "__main__":
    unittest.main()
