"""Nothing acknowledged is ever lost: SIGKILL after 250, restarts, damaged files, a full disk."""
import os
import subprocess
import threading
import unittest

from gwtest import Gateway, queued_id, strip_received, wait_for

# Dots to unstuff, 8-bit text, a long line, an empty line, trailing spaces: all kept exactly.
MESSAGE = ("From: Scanner <scanner@corp.example>\r\nTo: a@example.org\r\nSubject: =?UTF-8?Q?Gr=C3=BC=C3=9Fe?=\r\n"
           "Message-ID: <crash-test@corp.example>\r\nDate: Fri, 27 Nov 2026 18:00:00 +0000\r\n"
           "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
           "Grüße aus dem Drucker \r\n.hidden dot line\r\n\r\n" + "x" * 1500 + "\r\n..\r\nend\r\n").encode()


def stuffed(message):
    """The message as it goes on the wire (RFC 5321 4.5.2), with the end-of-data line."""
    lines = message.split(b"\r\n")
    return b"\r\n".join(b"." + l if l.startswith(b".") else l for l in lines) + b".\r\n"


class CrashTest(unittest.TestCase):
    def setUp(self):
        self.gw = Gateway()
        self.gw.start()

    def tearDown(self):
        self.gw.cleanup()

    def submit(self, client, message=MESSAGE, rcpt="a@example.org"):
        client.command("EHLO crash.test")
        client.command("MAIL FROM:<scanner@corp.example>")
        client.command(f"RCPT TO:<{rcpt}>")
        self.assertEqual(client.command("DATA"), "354 End data with <CR><LF>.<CR><LF>\r\n")
        client.send(stuffed(message))
        return client.reply()

    def test_sigkill_right_after_250_loses_nothing(self):
        c = self.gw.connect()
        c.reply()
        reply = self.submit(c)
        self.gw.kill()  # SIGKILL: no chance to flush anything after the 250
        qid = queued_id(reply)
        self.assertEqual(strip_received(self.gw.content(qid)), MESSAGE)

        self.gw.start()
        self.gw.wait_log(r"started, 1 message\(s\) in the queue")
        [entry] = self.gw.queue()
        self.assertEqual(entry["id"], qid)
        self.assertEqual(entry["size"], len(self.gw.content(qid)))
        self.assertEqual(strip_received(self.gw.content(qid)), MESSAGE)
        # New messages get new IDs after the restart.
        c2 = self.gw.connect()
        c2.reply()
        second = queued_id(self.submit(c2))
        self.assertGreater(int(second, 16), int(qid, 16))

    def test_sigkill_under_load_keeps_every_acknowledged_message(self):
        acknowledged = []
        lock = threading.Lock()

        def sender(n):
            try:
                c = self.gw.connect()
                c.reply()
                for i in range(1000):
                    body = MESSAGE + f"sender {n} message {i}\r\n".encode()
                    reply = self.submit(c, body, rcpt=f"r{n}-{i}@example.org")
                    if not reply.startswith("250 "):
                        return
                    with lock:
                        acknowledged.append((queued_id(reply), body))
            except (OSError, AssertionError):
                return

        threads = [threading.Thread(target=sender, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        wait_for(lambda: len(acknowledged) >= 40, timeout=60, what="40 acknowledged messages")
        self.gw.kill()
        for t in threads:
            t.join()
        self.gw.start()
        queued = {e["id"] for e in self.gw.queue()}
        for qid, body in acknowledged:
            self.assertIn(qid, queued)
            self.assertEqual(strip_received(self.gw.content(qid)), body)
        # Moved aside: messages in flight when the gateway died (never acknowledged) and envelope
        # rewrites cut short (the acknowledged message itself is intact in the queue).
        acked = {qid for qid, _ in acknowledged}
        for name in os.listdir(os.path.join(self.gw.spool, "corrupt")):
            if name.split(".")[0] in acked:
                self.assertTrue(name.endswith(".tmp"), name)

    def test_damaged_files_are_moved_aside_with_a_log_line(self):
        c = self.gw.connect()
        c.reply()
        good = queued_id(self.submit(c))
        self.assertEqual(self.gw.stop(), 0)
        queue = os.path.join(self.gw.spool, "queue")
        with open(os.path.join(queue, "ABC.tmp"), "wb") as f:
            f.write(b"content whose commit never completed")
        with open(os.path.join(queue, good), "rb") as f:
            whole = f.read()
        with open(os.path.join(queue, "ABD"), "wb") as f:
            f.write(whole[: len(whole) - 40])  # cut short: no trailer
        self.gw.start()
        self.gw.wait_log(r"warning: moved \S+/queue/ABC\.tmp to \S+/corrupt/: written, but never acknowledged")
        self.gw.wait_log(r"warning: moved \S+/queue/ABD to \S+/corrupt/: truncated")
        self.assertEqual(sorted(os.listdir(os.path.join(self.gw.spool, "corrupt"))), ["ABC.tmp", "ABD"])
        self.assertEqual([e["id"] for e in self.gw.queue()], [good])

    def test_a_second_gateway_on_the_same_spool_is_refused(self):
        other = Gateway(directory=self.gw.dir)
        other.config_path = self.gw.config_path
        proc = other.start(expect_failure=True)
        self.assertEqual(proc.returncode, 1)
        self.assertIn("is in use by another smtpgw process", proc.stderr.read().decode())
        proc.stdout.close()
        proc.stderr.close()


@unittest.skipUnless(os.geteuid() == 0, "mounting a small tmpfs needs root")
class FullDiskTest(unittest.TestCase):
    """The spool on a 4 MB tmpfs: refused at MAIL when space is short, 452 when a write fails."""

    def setUp(self):
        self.gw = Gateway("limits: { message_size: 1M }\n")
        os.makedirs(self.gw.spool)
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", self.gw.spool], check=True)
        self.filler = os.path.join(self.gw.spool, "filler")

    def tearDown(self):
        self.gw.stop()
        subprocess.run(["umount", "-l", self.gw.spool])
        self.gw.cleanup()

    def fill(self, leave):
        st = os.statvfs(self.gw.spool)
        free = st.f_bavail * st.f_frsize
        with open(self.filler, "ab") as f:
            f.write(b"\0" * max(0, free - leave))

    def session(self):
        c = self.gw.connect()
        c.reply()
        c.command("EHLO disk.test")
        return c

    def test_write_failure_gives_452_and_leaves_nothing(self):
        self.gw.start()
        c = self.session()
        self.assertEqual(c.command("MAIL FROM:<a@corp.example>"), "250 2.1.0 Ok\r\n")
        c.command("RCPT TO:<b@example.org>")
        c.command("DATA")
        self.fill(leave=0)
        c.send("Subject: no room\r\n\r\n" + ("y" * 998 + "\r\n") * 200 + ".\r\n")
        self.assertEqual(c.reply(), "452 4.3.1 Insufficient system storage\r\n")
        self.gw.wait_log(r"warning: [0-9A-F]+: queue file write error: No space left on device")
        self.assertEqual(os.listdir(os.path.join(self.gw.spool, "queue")), [])
        # Space again: within a few seconds the same session goes on.
        os.remove(self.filler)
        self.assertTrue(c.command("RSET").startswith("250"))
        wait_for(lambda: c.command("MAIL FROM:<a@corp.example>").startswith("250"), timeout=10, interval=0.5,
                 what="MAIL to be accepted again")
        c.command("RCPT TO:<b@example.org>")
        c.command("DATA")
        self.assertTrue(c.command("Subject: room\r\n\r\nok\r\n.").startswith("250 2.0.0 Ok: queued as "))

    def test_low_space_refuses_mail(self):
        os.makedirs(os.path.join(self.gw.spool, "queue"))
        self.fill(leave=1024 * 1024)  # less than 1.5 x message_size
        self.gw.start()
        c = self.session()
        self.assertEqual(c.command("MAIL FROM:<a@corp.example>"), "452 4.3.1 Insufficient system storage\r\n")
        self.gw.wait_log(r"NOQUEUE: reject: MAIL from unknown\[127\.0\.0\.1\]: 452 4\.3\.1 Insufficient system storage")


if __name__ == "__main__":
    unittest.main()


@unittest.skipUnless(os.geteuid() == 0, "mounting a small tmpfs needs root")
class DelayWarningOnAFullDiskTest(unittest.TestCase):
    """A delay warning that could not be queued (the disk was full) is sent at a later attempt,
    not marked as sent."""

    def test_the_warning_comes_once_there_is_room(self):
        from scripted import Script, ScriptedSmtp
        server = ScriptedSmtp("127.0.0.46", 2525, Script(replies={"RCPT": "451 4.3.0 later"}))
        gw = Gateway("routes: [{ to: \"*\", via: slow }]\n"
                     "upstreams: { slow: { host: 127.0.0.46, port: 2525, security: none } }\n"
                     "queue: { dir: {spool}, retry: [1s], delay_warning: 2s }\nlimits: { message_size: 1M }\n")
        os.makedirs(gw.spool)
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", gw.spool], check=True)
        filler = os.path.join(gw.spool, "filler")
        try:
            gw.start()
            r = gw.swaks("--from", "app@example.com", "--to", "w@example.org")
            qid = queued_id(r.stdout)
            gw.wait_log(rf"{qid}: to=<w@example\.org>, .*status=deferred")
            st = os.statvfs(gw.spool)
            with open(filler, "wb") as f:  # no room at all
                f.write(b"\0" * (st.f_bavail * st.f_frsize))
            gw.wait_log(rf"bounce\[\d+\]: warning: {qid}: cannot queue the sender delay notification", timeout=20)
            os.remove(filler)
            gw.wait_log(rf"bounce\[\d+\]: {qid}: sender delay notification: [0-9A-F]+$", timeout=20)
        finally:
            gw.stop()
            subprocess.run(["umount", "-l", gw.spool])
            gw.cleanup()
            server.close()
