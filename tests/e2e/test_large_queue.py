"""A large queue at start-up: 3,000 messages due at once for a dead destination.

The listener opens before the queue is read; at most queue.active_limit messages are taken up at
once, new arrivals taking turns with the backlog; the mass deferral that follows stays within a
small descriptor limit and never holds up a client's 250.
"""
import os
import re
import resource
import shutil
import socket
import subprocess
import tempfile
import time
import unittest

from gwtest import BIN, Gateway, queued_id, wait_for

MESSAGES = 3000


def fill_spool():
    """A spool of MESSAGES messages, each deferred once for the dead upstream, then made due."""
    gw = Gateway()
    try:
        gw.start()
        r = subprocess.run(["smtp-source", "-s", "10", "-m", str(MESSAGES), "-l", "300", "-f", "app@example.com",
                            "-t", "someone@example.org", "-M", "client.test", f"{gw.host}:{gw.port}"],
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
        wait_for(lambda: sum(" status=deferred " in l for l in gw.log_lines()) >= MESSAGES, timeout=120,
                 what=f"{MESSAGES} first attempts")
        assert gw.stop() == 0
        master = tempfile.mkdtemp(prefix="smtpgw-large-queue-")
        shutil.copytree(gw.spool, os.path.join(master, "deferred"))  # each due in an hour
        r = gw.run("queue", "flush")  # offline: every message due when the gateway starts
        assert r.returncode == 0, r.stderr
        shutil.copytree(gw.spool, os.path.join(master, "spool"))
        return master
    finally:
        gw.cleanup()


class LargeQueueTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.master = fill_spool()

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.master, ignore_errors=True)

    def setUp(self):
        self.gw = None

    def tearDown(self):
        if self.gw:
            self.gw.cleanup()

    def gateway(self, extra="", spool="spool"):
        self.gw = Gateway(extra)
        shutil.copytree(os.path.join(self.master, spool), self.gw.spool)
        return self.gw

    def submit(self, subject):
        c = self.gw.connect()
        self.assertTrue(c.reply().startswith("220"))
        c.command("EHLO client.test")
        self.assertTrue(c.command("MAIL FROM:<app@example.com>").startswith("250"))
        self.assertTrue(c.command("RCPT TO:<late@example.org>").startswith("250"))
        self.assertTrue(c.command("DATA").startswith("354"))
        c.send(f"Subject: {subject}\r\n\r\nbody\r\n.\r\n")
        reply = c.reply()
        self.assertTrue(reply.startswith("250 2.0.0 Ok: queued as "), reply)
        c.command("QUIT")
        return queued_id(reply)

    def deferred(self):
        return sum(" status=deferred " in l for l in self.gw.log_lines())

    def test_a_mass_deferral_within_a_small_descriptor_limit(self):
        # Each envelope update holds a descriptor until it is synced: 3,000 of them in one writer
        # batch would run out of 1,024 descriptors, and every accept and commit with them.
        gw = self.gateway()
        gw.start(preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024)))
        # The listener is open before the queue is read.
        lines = gw.log_lines()
        started = next(i for i, l in enumerate(lines) if f"started, {MESSAGES} message(s) in the queue" in l)
        self.assertFalse(any("queue loaded:" in l for l in lines[:started]))
        late = self.submit("during the deferral")
        wait_for(lambda: self.deferred() >= MESSAGES + 1, timeout=120, what="every message deferred")
        log = "\n".join(gw.log_lines())
        for trouble in ("queue file write error", "cannot write the envelope", "Too many open files", "accept failed"):
            self.assertNotIn(trouble, log)
        gw.wait_log(rf"qmgr\[\d+\]: queue loaded: {MESSAGES} message\(s\) in [0-9.]+ s, 0 damaged file\(s\) "
                    r"moved aside; \d+ active")
        # Every envelope got its second attempt written; the late message its first.
        queue = wait_for(lambda: (lambda q: q if sum(e["attempts"] == 2 for e in q) == MESSAGES else None)(gw.queue()),
                         timeout=60, what="every envelope updated")
        self.assertEqual(len(queue), MESSAGES + 1)
        self.assertEqual([e["attempts"] for e in queue if e["id"] == late], [1])

    def test_at_most_the_active_limit_and_new_mail_takes_turns(self):
        gw = self.gateway("queue: { dir: {spool}, retry: [1h], active_limit: 100 }\n")
        gw.start()
        late = self.submit("arrives behind 3,000")
        wait_for(lambda: self.deferred() >= MESSAGES + 1, timeout=120, what="every message deferred")
        # Read in order, the log never has more than 100 messages taken up and not yet deferred:
        # a message leaves the active set only after its deferral is logged and written.
        active, most, order = 0, 0, []
        for line in gw.log_lines():
            m = re.search(r"qmgr\[\d+\]: ([0-9A-F]+): from=<.*\(queue active\)", line)
            if m:
                active += 1
                order.append(m.group(1))
            elif " status=deferred " in line:
                active -= 1
            most = max(most, active)
        self.assertLessEqual(most, 100)
        self.assertEqual(len(order), MESSAGES + 1)
        # The new message did not wait for the backlog: it was taken up among the first.
        self.assertLess(order.index(late), 300, "a new message waited behind the backlog")

    def start_and_ask(self, request, restart=False):
        """The gateway started on the spool of deferred messages (or started again on its own),
        and `request` sent on its control socket (as the queue commands send it) from the moment
        the socket exists, while the spool is still being read: the answer's last line."""
        if restart:
            gw = self.gw
            self.assertEqual(gw.stop(), 0)
            gw.proc.stdout.close()
            gw.proc.stderr.close()
        else:
            gw = self.gateway("queue: { dir: {spool}, retry: [1h] }\n", spool="deferred")
        lines_before = len(gw.log_lines())
        sock = os.path.join(gw.spool, "control.sock")
        gw.proc = subprocess.Popen([BIN, "serve", "-c", gw.config_path], stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE)
        answer, deadline = None, time.monotonic() + 20
        while answer is None and time.monotonic() < deadline:
            try:
                with socket.socket(socket.AF_UNIX) as s:
                    s.connect(sock)
                    s.sendall(request.encode() + b"\n")
                    answer = b"".join(iter(lambda: s.recv(65536), b"")).decode()
            except OSError:
                time.sleep(0.001)
        self.assertIsNotNone(answer, "no answer on the control socket")
        started = wait_for(lambda: gw._started(lines_before), what="the gateway to start")
        host, port = re.findall(r"listening on (\S+) \(port (\d+)\)", "\n".join(started))[0]
        gw.host, gw.port = host.rsplit(":", 1)[0].strip("[]"), int(port)
        return answer.splitlines()[-1]

    def ask_while_loading(self, request, answer, restart=False):
        """start_and_ask, its answer matched against the pattern `answer`, and the queue read."""
        self.assertRegex(self.start_and_ask(request, restart), "^" + answer + "$")
        self.gw.wait_log(rf"qmgr\[\d+\]: queue loaded: {MESSAGES} message\(s\)", timeout=60)
        return self.gw

    def test_a_flush_while_the_queue_is_being_read_reaches_the_messages_read_after_it(self):
        # An administrator who mends the route and runs `smtpgw queue flush` just after the start
        # means every message, not only those read from the spool so far.
        gw = self.ask_while_loading("flush", r"ok: every message is being tried now, those still being read from the "
                                             r"spool as they are read")
        # Each message tried again now (its second attempt), not in an hour.
        wait_for(lambda: self.deferred() >= MESSAGES, timeout=120, what="every message tried again")
        attempts = wait_for(lambda: (lambda q: q if all(e["attempts"] == 2 for e in q) else None)(gw.queue()),
                            timeout=60, what="every envelope updated")
        self.assertEqual(len(attempts), MESSAGES)

    def test_delete_all_while_the_queue_is_being_read_removes_the_messages_read_after_it(self):
        gw = self.ask_while_loading("delete --all", r"ok: \d+ message\(s\) deleted; those still being read from the "
                                                    r"spool are deleted as they are read")
        late = self.submit("after the deletion")  # new mail is not in what was deleted
        wait_for(lambda: [e["id"] for e in gw.queue()] == [late] or None, timeout=60, what="every message removed")
        lines = gw.log_lines()
        self.assertEqual(sum(": deleted by the administrator" in l for l in lines), MESSAGES)
        self.assertEqual(sum(" status=" in l and late not in l for l in lines), 0)  # none was tried first

    def test_hold_all_while_the_queue_is_being_read_holds_the_messages_read_after_it_and_release_all_too(self):
        gw = self.ask_while_loading("hold --all", r"ok: \d+ message\(s\) placed on hold; those still being read from "
                                                  r"the spool are placed on hold as they are read")
        held = wait_for(lambda: (lambda q: q if len(q) == MESSAGES and all(e["held"] for e in q) else None)(gw.queue()),
                        timeout=60, what="every envelope held")
        self.assertEqual(len(held), MESSAGES)
        self.assertEqual(sum(": placed on hold by the administrator" in l for l in gw.log_lines()), MESSAGES)
        # Held across a restart, and `release --all` while the spool is read again releases every
        # one: each is tried at once (it was due in an hour), not only those read so far.
        self.ask_while_loading("release --all", r"ok: \d+ message\(s\) released; those still being read from the "
                                                r"spool are released as they are read", restart=True)
        wait_for(lambda: sum(": released from hold" in l for l in gw.log_lines()) >= MESSAGES or None, timeout=60,
                 what="every message released")
        wait_for(lambda: self.deferred() >= MESSAGES or None, timeout=120, what="every message tried again")


if __name__ == "__main__":
    unittest.main()
