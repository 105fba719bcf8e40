"""What a smarthost such as Exchange Online limits per account: connections at once (432 4.3.2
sender thread limit exceeded), messages per minute, recipients per message, and a sending quota
(554 5.2.0 SubmissionQuotaExceededException). Scripted servers: a real one will not produce these
on demand."""
import re
import unittest

from gwtest import Gateway, queued_id, wait_for
from scripted import Script, ScriptedSmtp


class SmarthostLimitsTest(unittest.TestCase):
    def setUp(self):
        self.server = None
        self.gw = None

    def tearDown(self):
        if self.gw:
            self.gw.cleanup()
        if self.server:
            self.server.close()

    def start(self, script, upstream_extra="", extra=""):
        self.server = ScriptedSmtp("127.0.0.73", 2525, script)
        self.gw = Gateway(f"""routes: [{{ to: "*", via: exo }}]
upstreams: {{ exo: {{ host: 127.0.0.73, port: 2525, security: none{upstream_extra} }} }}
queue: {{ dir: {{spool}}, retry: [1h] }}
{extra}""")
        self.gw.start()

    def submit(self, count, rcpts=1):
        c = self.gw.connect()
        c.reply()
        c.command("EHLO client.test")
        ids = []
        for i in range(count):
            c.command("MAIL FROM:<scanner@example.com>")
            for k in range(rcpts):
                c.command(f"RCPT TO:<r{i}.{k}@example.org>")
            c.command("DATA")
            c.send(f"Subject: scan {i}\r\n\r\npage {i}\r\n.\r\n")
            ids.append(queued_id(c.reply()))
        c.command("QUIT")
        return ids

    def statuses(self, status):
        return [l for l in self.gw.log_lines() if f" status={status} " in l]

    def test_a_thread_limit_lowers_the_concurrency_and_loses_nothing(self):
        # Three sessions may send at once; the fourth gets 432 at MAIL. The gateway starts five.
        self.start(Script(slow=0.05, thread_limit=3), extra="delivery: { initial_concurrency: 5 }\n")
        ids = self.submit(100)
        wait_for(lambda: len(self.server.messages) >= 100, timeout=120, what="100 messages delivered")
        wait_for(lambda: len(self.statuses("sent")) >= 100, timeout=30, what="100 sent lines")
        self.assertEqual(sorted(int(re.search(rb"page (\d+)", d).group(1)) for _, _, d in self.server.messages),
                         list(range(100)))  # each exactly once
        self.assertEqual(self.statuses("deferred"), [])
        self.assertEqual(self.statuses("bounced"), [])
        self.assertLessEqual(self.server.most_sending, 3)
        self.assertGreater(self.server.throttled, 0)  # the 432s did happen
        # The gateway backed off instead of trying again and again.
        self.assertLessEqual(self.server.throttled, 10)
        warning = self.gw.wait_log(r"qmgr\[\d+\]: warning: upstream exo: host 127\.0\.0\.73\[127\.0\.0\.73\] said: "
                                   r"432 4\.3\.2 STOREDRV\.ClientSubmit; sender thread limit exceeded")
        self.assertRegex(warning, r"at most [123] connection\(s\) to it now")
        self.assertIn("set upstreams.exo.concurrency", warning)
        self.assertEqual(self.gw.queue(), [])
        self.assertEqual(len(ids), 100)

    def test_a_thread_limit_in_the_greeting(self):
        # Two connections at once; a third is greeted with 432 and closed.
        self.start(Script(slow=0.05, greeting_limit=2), extra="delivery: { initial_concurrency: 5 }\n")
        self.submit(30)
        wait_for(lambda: len(self.statuses("sent")) >= 30, timeout=60, what="30 sent lines")
        self.assertEqual(len(self.server.messages), 30)
        self.assertEqual(self.statuses("deferred"), [])
        self.assertGreater(self.server.throttled, 0)
        self.assertLessEqual(self.server.throttled, 10)
        self.assertLessEqual(self.server.most_open, 5)  # never more than it started with
        self.gw.wait_log(r"qmgr\[\d+\]: warning: upstream exo: host 127\.0\.0\.73\[127\.0\.0\.73\] refused to talk to "
                         r"me: 432 4\.3\.2 STOREDRV\.ClientSubmit; sender thread limit exceeded .*; at most [12] "
                         r"connection\(s\) to it now")

    def test_the_configured_concurrency_avoids_the_thread_limit(self):
        self.start(Script(slow=0.05, thread_limit=3), upstream_extra=", concurrency: 3",
                   extra="delivery: { initial_concurrency: 5 }\n")
        self.submit(30)
        wait_for(lambda: len(self.statuses("sent")) >= 30, timeout=60, what="30 sent lines")
        self.assertEqual(self.server.throttled, 0)
        self.assertLessEqual(self.server.most_open, 3)

    def test_a_rate_per_upstream(self):
        # 5 messages a second: 16 messages are 15 intervals of 200 ms, within 10%.
        self.start(Script(), upstream_extra=", rate: 5/s")
        self.submit(16)
        wait_for(lambda: len(self.server.messages) >= 16, timeout=60, what="16 messages delivered")
        times = self.server.mail_times
        span = times[-1] - times[0]
        self.assertGreaterEqual(span, 15 * 0.2 * 0.9)
        self.assertLessEqual(span, 15 * 0.2 * 1.1)
        for i, t in enumerate(times):  # never more than 5 in any second
            self.assertLessEqual(sum(1 for u in times[i:] if u - t < 1.0), 5)

    def test_recipients_per_message(self):
        self.start(Script(), upstream_extra=", recipients_per_message: 2")
        [qid] = self.submit(1, rcpts=5)
        wait_for(lambda: len(self.statuses("sent")) >= 5, timeout=30, what="5 sent lines")
        self.assertEqual(sorted(len(rcpts) for _, rcpts, _ in self.server.messages), [1, 2, 2])

    def test_a_sending_quota_defers(self):
        self.start(Script(replies={"MAIL": "554 5.2.0 STOREDRV.Submission.Exception:SubmissionQuotaExceededException; "
                                           "Failed to process message due to a permanent exception"}))
        [qid] = self.submit(1)
        line = self.gw.wait_log(rf"{qid}: to=<r0\.0@example\.org>, .*status=deferred ")
        self.assertIn("dsn=4.2.0, status=deferred (host 127.0.0.73[127.0.0.73] said: 554 5.2.0 "
                      "STOREDRV.Submission.Exception:SubmissionQuotaExceededException", line)
        self.assertIn("the account's sending quota is used up", line)
        self.assertEqual(self.statuses("bounced"), [])
        [entry] = self.gw.queue()
        self.assertEqual(entry["recipients"][0]["status"], "deferred")

    def test_a_rate_that_is_not_one(self):
        gw = Gateway("""routes: [{ to: "*", via: exo }]
upstreams: { exo: { host: 127.0.0.73, port: 2525, rate: fast } }
""")
        try:
            r = gw.run("check-config")
            self.assertEqual(r.returncode, 1)
            self.assertIn('upstreams.exo.rate: "fast" is not a rate: messages per second, minute, hour or day, '
                          'like 30/m', r.stderr + r.stdout)
        finally:
            gw.cleanup()


if __name__ == "__main__":
    unittest.main()
