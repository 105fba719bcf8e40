"""The files of messages that are gone are written over by new ones (free/), within bounds: a
file over 1 MiB is not kept, nor more than 64 MiB of them, and a longer file taken for a shorter
message holds exactly the new one."""
import os
import unittest

from gwtest import Gateway, queued_id, strip_received, wait_for

MIB = 1024 * 1024


def message(size, tag):
    """About `size` octets: a header section the gateway adds nothing to, then lines of 1,000."""
    head = (f"From: app@corp.example\r\nTo: a@example.org\r\nSubject: {tag}\r\n"
            f"Message-ID: <{tag}@corp.example>\r\nDate: Wed, 02 Dec 2026 12:00:00 +0000\r\n\r\n").encode()
    return head + (b"y" * 998 + b"\r\n") * max(1, (size - len(head)) // 1000)


class SpoolReuseTest(unittest.TestCase):
    def setUp(self):
        self.gw = Gateway()
        self.gw.start()
        self.free = os.path.join(self.gw.spool, "free")

    def tearDown(self):
        self.gw.cleanup()

    def submit(self, content):
        c = self.gw.connect()
        c.reply()
        c.command("EHLO app.test")
        c.command("MAIL FROM:<app@corp.example>")
        c.command("RCPT TO:<a@example.org>")
        self.assertTrue(c.command("DATA").startswith("354"))
        c.send(content + b".\r\n")
        reply = c.reply()
        c.command("QUIT")
        return queued_id(reply)

    def delete(self, qid):
        r = self.gw.run("queue", "delete", qid)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)

    def free_files(self):
        return {n: os.path.getsize(os.path.join(self.free, n)) for n in os.listdir(self.free)}

    def test_a_file_is_written_over_and_cut_to_the_new_message(self):
        big = self.submit(message(300 * 1000, "big"))
        self.delete(big)
        kept = wait_for(lambda: self.free_files() or None, what="the file kept in free/")
        self.assertEqual(len(kept), 1)
        self.assertGreater(next(iter(kept.values())), 290 * 1000)
        small_content = message(1000, "small")
        small = self.submit(small_content)
        self.assertEqual(self.free_files(), {}, "the new message did not take the free file")
        # The queue file is the new message only: no tail of the old one after its trailer.
        self.assertEqual(strip_received(self.gw.content(small)), small_content)
        path = os.path.join(self.gw.spool, "queue", small)
        self.assertLess(os.path.getsize(path), 4000)
        [entry] = self.gw.queue()
        self.assertEqual(entry["id"], small)
        # After a restart the spool reads it as whole.
        self.gw.stop()
        self.gw.start()
        self.gw.wait_log(r"started, 1 message\(s\) in the queue")
        self.assertEqual(strip_received(self.gw.content(small)), small_content)

    def test_over_1_mib_a_file_goes_and_at_most_64_mib_are_kept(self):
        huge = self.submit(message(MIB + 200 * 1000, "huge"))
        self.delete(huge)
        wait_for(lambda: not os.path.exists(os.path.join(self.gw.spool, "queue", huge)), what="the file gone")
        self.assertEqual(self.free_files(), {})
        ids = [self.submit(message(1000 * 1000, f"m{i}")) for i in range(70)]
        for qid in ids:
            self.delete(qid)
        wait_for(lambda: not any(os.path.exists(os.path.join(self.gw.spool, "queue", q)) for q in ids),
                 what="every file released")
        kept = self.free_files()
        self.assertGreater(len(kept), 50)
        self.assertLess(len(kept), 70)
        self.assertLessEqual(sum(kept.values()), 64 * MIB + 100 * 1000)


if __name__ == "__main__":
    unittest.main()
