"""What the service account could do to root: the gateway starts as root and works in folders its
account may write (the spool, the log folder). Links put there must not make root read, write,
move or give away anything else, neither at start-up nor in the offline queue commands."""
import os
import shutil
import subprocess
import tempfile
import unittest

from gwtest import BIN, Gateway

QID = "6619D0352F33D"


@unittest.skipUnless(os.geteuid() == 0, "starting as root and dropping to an account needs root")
class ServiceAccountLinksTest(unittest.TestCase):
    def setUp(self):
        self.outside = tempfile.mkdtemp(prefix="smtpgw-outside-")
        self.target = os.path.join(self.outside, "precious")
        with open(self.target, "w") as f:
            f.write("precious\n")
        os.chmod(self.target, 0o600)
        self.gw = Gateway("user: nobody\n")
        os.makedirs(self.gw.spool)

    def tearDown(self):
        self.gw.cleanup()
        shutil.rmtree(self.outside, ignore_errors=True)

    def assert_untouched(self, path=None):
        path = path or self.target
        st = os.stat(path)
        self.assertEqual((st.st_uid, st.st_gid, st.st_mode & 0o777), (0, 0, 0o600))
        with open(path) as f:
            self.assertEqual(f.read(), "precious\n")

    def refused(self, text):
        proc = self.gw.start(expect_failure=True)
        self.assertEqual(proc.returncode, 1)
        self.assertIn(text, proc.stderr.read().decode())

    def test_a_lock_that_is_a_link(self):
        os.symlink(self.target, os.path.join(self.gw.spool, "lock"))
        self.refused(f"{self.gw.spool}/lock is not a plain file: the spool's folders and files are made by smtpgw")
        self.assert_untouched()
        # The offline queue commands refuse it as well.
        r = self.gw.run("queue", "flush")
        self.assertEqual(r.returncode, 1)
        self.assertIn("lock is not a plain file", r.stderr)
        self.assert_untouched()

    def test_a_queue_folder_that_is_a_link(self):
        elsewhere = os.path.join(self.outside, "dir")
        os.makedirs(elsewhere)
        shutil.copy(self.target, os.path.join(elsewhere, QID))
        os.symlink(elsewhere, os.path.join(self.gw.spool, "queue"))
        self.refused(f"{self.gw.spool}/queue is a symbolic link")
        self.assert_untouched(os.path.join(elsewhere, QID))
        self.assertFalse(os.path.exists(os.path.join(self.gw.spool, "corrupt", QID)))

    def test_a_link_inside_the_queue_is_neither_followed_nor_given_away(self):
        os.makedirs(os.path.join(self.gw.spool, "queue"))
        os.symlink(self.target, os.path.join(self.gw.spool, "queue", QID))
        os.symlink(self.target, os.path.join(self.gw.spool, "queue", "stray"))
        self.gw.start()
        self.gw.wait_log(r"started, 0 message\(s\) in the queue")
        self.assert_untouched()
        # The link was moved aside as it is (a link), and only the link is the account's now.
        moved = os.path.join(self.gw.spool, "corrupt", QID)
        self.assertTrue(os.path.islink(moved))
        self.assertEqual(os.readlink(moved), self.target)

    def test_a_log_file_that_is_a_link(self):
        os.symlink(self.target, self.gw.log_path)
        self.refused(f"log.file {self.gw.log_path} is a symbolic link")
        self.assert_untouched()
        dangling = os.path.join(self.outside, "would-be-made")
        os.remove(self.gw.log_path)
        os.symlink(dangling, self.gw.log_path)
        self.refused("is a symbolic link")
        self.assertFalse(os.path.exists(dangling))


if __name__ == "__main__":
    unittest.main()
