"""`smtpgw queue import DIR`: taking over a dead instance's queue. Messages in every state (never
tried, deferred, held, partly delivered) move with their envelopes; a clash of IDs gets a new ID;
a running gateway on either spool is refused; and SIGKILL at random moments of an import, again
and again, never leaves a message in both spools or in neither, and the next run finishes."""
import json
import os
import random
import re
import signal
import smtplib
import subprocess
import time
import unittest

from gwtest import BIN, Gateway, queued_id, wait_for
from scripted import Script, ScriptedSmtp

ROUTES = """routes:
  - { to: sent.test, via: sink }
  - { to: "*", via: hold }
upstreams:
  sink: { host: 127.0.0.94, port: 2525, security: none }
  hold: { host: 127.0.0.1, port: 9, security: none }
"""


def files(spool):
    queue = os.path.join(spool, "queue")
    names = os.listdir(queue) if os.path.isdir(queue) else []  # killed before it made the folder
    ids = {n for n in names if re.fullmatch(r"[0-9A-F]+", n)}
    imports = {n[:-7] for n in names if n.endswith(".import")}
    markers = {tuple(n.split(".exported.")) for n in names if ".exported." in n}
    return ids, imports, markers


class QueueImportTest(unittest.TestCase):
    def setUp(self):
        self.sink = ScriptedSmtp("127.0.0.94", 2525, Script())
        self.addCleanup(self.sink.close)
        self.dead = Gateway(ROUTES)  # the instance that died: its spool is DIR
        self.addCleanup(self.dead.cleanup)
        self.live = Gateway(ROUTES)
        self.addCleanup(self.live.cleanup)

    def import_(self, *extra):
        return subprocess.run([BIN, "queue", "import", self.dead.spool, "-c", self.live.config_path, *extra],
                              capture_output=True, text=True, timeout=120)

    def send(self, gw, count, to=("someone@example.org",)):
        ids = []
        with smtplib.SMTP(gw.host, gw.port, timeout=30) as s:
            for i in range(count):
                s.ehlo("client.test")
                s.mail("app@example.com")
                for rcpt in to:
                    s.rcpt(rcpt)
                code, reply = s.data(f"Subject: message {i}\r\n\r\nbody {i}\r\n".encode())
                self.assertEqual(code, 250)
                ids.append(queued_id(reply.decode()))
        return ids

    def test_messages_in_every_state_move_with_their_envelopes(self):
        self.dead.start()
        deferred = self.send(self.dead, 1)[0]
        partly = self.send(self.dead, 1, to=("a@sent.test", "b@example.org"))[0]
        held = self.send(self.dead, 1)[0]
        for qid in (deferred, partly, held):
            self.dead.wait_log(rf"{qid}: to=<.*status=deferred")
        self.dead.wait_log(rf"{partly}: to=<a@sent\.test>, .*status=sent")
        self.assertEqual(self.dead.run("queue", "hold", held).returncode, 0)
        # The running gateway writes the hold into the envelope after it answers.
        wait_for(lambda: {m["id"]: m for m in self.dead.queue()}[held]["held"], what="the hold on disk")
        before = {m["id"]: m for m in self.dead.queue()}
        contents = {qid: self.dead.content(qid) for qid in before}
        # Neither gateway may run during an import.
        r = self.import_()
        self.assertEqual(r.returncode, 1)
        self.assertIn("import only from an instance that is stopped or dead", r.stderr)
        self.dead.kill()  # it died
        self.live.start()
        r = self.import_()
        self.assertEqual(r.returncode, 1)
        self.assertIn("is in use by a running gateway: stop it first", r.stderr)
        self.live.stop()
        # A clash: this spool has a message with the deferred one's ID.
        os.makedirs(os.path.join(self.live.spool, "queue"), exist_ok=True)
        with open(os.path.join(self.dead.spool, "queue", deferred), "rb") as f, \
                open(os.path.join(self.live.spool, "queue", deferred), "wb") as g:
            g.write(f.read())
        r = self.import_()
        self.assertEqual(r.returncode, 0, r.stderr)
        renamed = re.search(rf"^{deferred}: imported as ([0-9A-F]+)$", r.stdout, re.M).group(1)
        self.assertIn(f"{partly}: imported\n", r.stdout)
        self.assertIn(f"{held}: imported\n", r.stdout)
        self.assertIn("3 message(s) imported from " + self.dead.spool, r.stdout)
        self.assertEqual(self.dead.queue(), [])
        self.assertEqual(files(self.dead.spool), (set(), set(), set()))
        after = {m["id"]: m for m in self.live.queue()}
        self.assertEqual(set(after), {deferred, renamed, partly, held})
        for old, new in ((deferred, renamed), (partly, partly), (held, held)):
            a, b = dict(before[old]), dict(after[new])
            a.pop("id"), b.pop("id")
            self.assertEqual(a, b, old)  # sender, recipients and their states, attempts, held
            self.assertEqual(self.live.content(new), contents[old])
        self.assertEqual([r["status"] for r in after[partly]["recipients"]], ["sent", "deferred"])
        self.assertTrue(after[held]["held"])
        # The gateway takes them up: the partly delivered one goes on with its open recipient only.
        self.live.start()
        self.live.wait_log(rf"queue loaded: 4 message\(s\) in [0-9.]+ s, 0 damaged")
        self.live.run("queue", "flush")
        self.live.wait_log(rf"{partly}: to=<b@example\.org>, .*status=deferred")
        self.assertFalse(any(f"{partly}: to=<a@sent.test>" in l for l in self.live.log_lines()))

    def test_sigkill_at_random_moments_never_loses_or_doubles(self):
        self.dead.start()
        ids = set(self.send(self.dead, 200))
        self.dead.stop()
        rng = random.Random(7)
        kills = 0
        for attempt in range(40):
            p = subprocess.Popen([BIN, "queue", "import", self.dead.spool, "-c", self.live.config_path],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            time.sleep(rng.uniform(0, 0.05))
            if p.poll() is None:
                p.send_signal(signal.SIGKILL)
                kills += 1
            p.wait()
            p.stderr.close()
            source, _, markers = files(self.dead.spool)
            here, imports, _ = files(self.live.spool)
            self.assertEqual(source & here, set(), "a message in both spools")
            committed = {old for old, new in markers if new in here or new in imports}
            self.assertEqual(source | here | committed, ids, "a message in neither spool")
            if p.returncode == 0:
                break
        self.assertGreater(kills, 3)
        r = self.import_()  # done, or finishing the last interrupted one
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(files(self.dead.spool), (set(), set(), set()))
        self.assertEqual(files(self.live.spool), (ids, set(), set()))
        self.live.start()
        self.live.wait_log(r"queue loaded: 200 message\(s\) in [0-9.]+ s, 0 damaged")
        print(f"\n{kills} imports killed before one finished", flush=True)


if __name__ == "__main__":
    unittest.main()
