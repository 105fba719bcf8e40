"""AUTH against a directory: sasl.pwcheck: saslauthd, with Cyrus's saslauthd running its LDAP
backend against a real OpenLDAP slapd. swaks and msmtp authenticate as directory users; a wrong
password and an unknown user get 535 5.7.8; saslauthd gone gets 454 4.7.0 with the reason logged."""
import re
import subprocess
import unittest

from gwtest import BIN, Gateway
from peers import Saslauthd, Slapd

PEOPLE = {"alice": "alice-ldap-pass", "scanner2": "scanner2-ldap-pass"}


class DirectoryAuthTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.slapd = Slapd(PEOPLE).start()
        cls.saslauthd = Saslauthd(cls.slapd).start()
        cls.gw = Gateway(f"""listen: [{{ address: "127.0.0.1:0", auth: required }}]
sasl: {{ pwcheck: saslauthd, saslauthd_socket: {cls.saslauthd.socket}, mechanisms: [PLAIN, LOGIN],
        plaintext_without_tls: true }}
policy:
  - match: {{ user: "scanner*" }}
    senders: [scans@example.com]
""")
        cls.gw.start()

    @classmethod
    def tearDownClass(cls):
        cls.gw.cleanup()
        cls.saslauthd.cleanup()
        cls.slapd.cleanup()

    def swaks(self, user, password, mechanism="PLAIN", sender="app@example.com"):
        return subprocess.run(["swaks", "--server", "127.0.0.1", "--port", str(self.gw.port), "--helo", "client.test",
                               "--from", sender, "--to", "someone@example.com", "--auth", mechanism,
                               "--auth-user", user, "--auth-password", password], capture_output=True, text=True,
                              timeout=60)

    def test_directory_users_authenticate_with_swaks_and_msmtp(self):
        r = self.swaks("alice", PEOPLE["alice"])
        self.assertIn("<-  235 2.7.0 Authentication successful", r.stdout)
        self.assertRegex(r.stdout, r"<-  250 2\.0\.0 Ok: queued as [0-9A-F]+")
        self.gw.wait_log(r"client=localhost\[127\.0\.0\.1\], sasl_method=PLAIN, sasl_username=alice|"
                         r"client=unknown\[127\.0\.0\.1\], sasl_method=PLAIN, sasl_username=alice")
        m = subprocess.run(["msmtp", "-d", "--host=127.0.0.1", f"--port={self.gw.port}", "--tls=off", "--auth=login",
                            "--user=scanner2", f"--passwordeval=echo '{PEOPLE['scanner2']}'", "--domain=client.test",
                            "--from=scans@example.com", "someone@example.com"], input="Subject: ldap\n\nhello\n",
                           capture_output=True, text=True, timeout=60)
        self.assertEqual(m.returncode, 0, m.stdout + m.stderr)
        self.assertIn("<-- 235 2.7.0 Authentication successful", m.stdout)
        # A directory user is matched by policy rules like any other.
        r = self.swaks("scanner2", PEOPLE["scanner2"], sender="ceo@example.com")
        self.assertIn("553 5.7.1 <ceo@example.com>: Sender address rejected: not owned by user scanner2", r.stdout)

    def test_wrong_password_and_unknown_user_get_the_same_answer(self):
        for user, password in (("alice", "not-her-password"), ("mallory", "anything")):
            r = self.swaks(user, password, mechanism="LOGIN")
            self.assertIn("<** 535 5.7.8 Error: authentication failed: authentication failure", r.stdout)
        log = "\n".join(self.gw.log_lines())
        self.assertRegex(log, r"warning: \S+\[127\.0\.0\.1\]: SASL LOGIN authentication failed: .*"
                              r"sasl_username=mallory")
        self.assertNotIn("not-her-password", log)

    def test_saslauthd_gone_is_a_temporary_failure(self):
        # Its own saslauthd, so that stopping it touches no other test.
        own = Saslauthd(self.slapd).start()
        self.addCleanup(own.cleanup)
        gw = Gateway(f"""listen: [{{ address: "127.0.0.1:0", auth: required }}]
sasl: {{ pwcheck: saslauthd, saslauthd_socket: {own.socket}, plaintext_without_tls: true }}
""")
        self.addCleanup(gw.cleanup)
        gw.start()
        own.stop()
        r = subprocess.run(["swaks", "--server", "127.0.0.1", "--port", str(gw.port), "--from", "a@example.com",
                            "--to", "b@example.com", "--auth", "PLAIN", "--auth-user", "alice", "--auth-password",
                            PEOPLE["alice"]], capture_output=True, text=True, timeout=60)
        self.assertRegex(r.stdout, r"<\*\* 454 4\.7\.0 Temporary authentication failure")
        gw.wait_log(r"warning: unknown\[127\.0\.0\.1\]: SASL PLAIN authentication problem: cannot reach saslauthd "
                    rf"at sasl\.saslauthd_socket {re.escape(own.socket)}: No such file or directory")

    def test_user_commands_point_at_the_directory(self):
        r = subprocess.run([BIN, "user", "add", "bob", "-c", self.gw.config_path], input="x\n", capture_output=True,
                           text=True, timeout=30)
        self.assertEqual(r.returncode, 1)
        self.assertIn("checks passwords with saslauthd (sasl.pwcheck)", r.stderr)

    def test_check_config(self):
        gw = Gateway("""listen: [{ address: "127.0.0.1:0", auth: optional }]
sasl: { pwcheck: saslauthd, mechanisms: [PLAIN, SCRAM-SHA-256], saslauthd_socket: relative/mux }
""")
        self.addCleanup(gw.cleanup)
        r = gw.run("check-config")
        self.assertEqual(r.returncode, 1)
        self.assertIn("sasl.mechanisms: SCRAM-SHA-256 cannot work with pwcheck: saslauthd, which checks plain "
                      "passwords: use PLAIN and LOGIN", r.stdout)
        self.assertIn("sasl.saslauthd_socket: must be an absolute path", r.stdout)


if __name__ == "__main__":
    unittest.main()
