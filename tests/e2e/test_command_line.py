"""The command line as a careless or hostile user drives it: every subcommand with missing, extra
or garbage arguments gets the usage and exit 2, before any file is read; queue IDs never become
paths outside the spool, neither on the command line nor through the control socket."""
import os
import socket
import subprocess
import tempfile
import unittest

from gwtest import BIN, Gateway

BAD = [
    [], ["bogus"], ["serve", "extra"], ["serve", "--json"], ["check-config", "x"], ["version", "extra"],
    ["help", "me"], ["reload", "now"], ["doctor", "x"], ["doctor", "--security", "none"], ["probe"],
    ["probe", "a:25", "b:25"], ["probe", "a:25", "--ip", "192.0.2.1"], ["user"], ["user", "add"],
    ["user", "add", "a", "b"], ["user", "delete"], ["user", "list", "x"], ["user", "remove", "a"],
    ["queue"], ["queue", "list", "x"], ["queue", "list", "--all"], ["queue", "show"], ["queue", "show", "--all"],
    ["queue", "flush", "A", "B"], ["queue", "flush", "--json"], ["queue", "delete"], ["queue", "delete", "A", "B"],
    ["queue", "purge"], ["queue", "show", "../x"], ["queue", "flush", "../../etc/passwd"],
    ["queue", "delete", "lock"], ["queue", "show", "6619d0352f33d"], ["-c"], ["serve", "-c"], ["--unknown"],
    ["queue", "list", "--verify"],
]


class CommandLineShapesTest(unittest.TestCase):
    def test_every_bad_command_line_gets_usage_and_exit_2(self):
        with tempfile.TemporaryDirectory() as d:
            for args in BAD:
                with self.subTest(args=args):
                    r = subprocess.run([BIN, *args], capture_output=True, text=True, timeout=30, cwd=d)
                    self.assertEqual(r.returncode, 2, r.stdout + r.stderr)
                    self.assertIn("usage: smtpgw COMMAND [-c FILE]", r.stderr)
                    self.assertEqual(r.stdout, "")
                    self.assertEqual(os.listdir(d), [])  # nothing read or made: not even the default spool

    def test_queue_ids_are_checked(self):
        for args in (["queue", "show", "../x"], ["queue", "flush", "x/../../y"], ["queue", "delete", "../lock"]):
            r = subprocess.run([BIN, *args], capture_output=True, text=True, timeout=30)
            self.assertIn(f'"{args[2]}" is not a queue ID', r.stderr)

    def test_good_command_lines_still_work(self):
        with tempfile.TemporaryDirectory() as d:
            for args in (["version"], ["help"], ["check-config"], ["queue", "list"], ["queue", "list", "--json"]):
                r = subprocess.run([BIN, *args], capture_output=True, text=True, timeout=30, cwd=d)
                self.assertEqual(r.returncode, 0, (args, r.stderr))


class ControlSocketIdsTest(unittest.TestCase):
    def test_the_control_socket_refuses_what_is_not_a_queue_id(self):
        gw = Gateway()
        try:
            gw.start()
            outside = os.path.join(gw.dir, "outside")
            with open(outside, "w") as f:
                f.write("not a message\n")
            for request in ("flush ../outside", "delete ../../x", "delete lock", "flush \x1b[2Jx"):
                with self.subTest(request=request):
                    s = socket.socket(socket.AF_UNIX)
                    s.connect(os.path.join(gw.spool, "control.sock"))
                    s.sendall((request + "\n").encode())
                    answer = b""
                    while chunk := s.recv(4096):
                        answer += chunk
                    s.close()
                    self.assertRegex(answer.decode(), r"^error: \S+: not a queue ID\n$")
                    self.assertNotIn(b"\x1b", answer)
            self.assertTrue(os.path.exists(outside))
            self.assertTrue(os.path.exists(os.path.join(gw.spool, "lock")))
            self.assertFalse(any("\x1b" in line for line in gw.log_lines()))
        finally:
            gw.cleanup()


if __name__ == "__main__":
    unittest.main()


class ReloadTest(unittest.TestCase):
    def test_reload_asks_the_gateway_not_the_pid_in_the_lock_file(self):
        gw = Gateway()
        victim = subprocess.Popen(["sleep", "60"])
        try:
            gw.start()
            # The service account can write the lock file; what it says must not be signalled.
            with open(os.path.join(gw.spool, "lock"), "w") as f:
                f.write(f"{victim.pid}\n")
            out = gw.run("reload")
            self.assertEqual(out.returncode, 0, out.stderr)
            self.assertEqual(out.stdout, f"smtpgw: ok: configuration reloaded from {gw.config_path}\n")
            self.assertIsNone(victim.poll())
            gw.wait_log(r"configuration reloaded from ")
        finally:
            victim.kill()
            victim.wait()
            gw.cleanup()
