"""TLS and AUTH on the listener, with real clients: swaks, msmtp, openssl s_client and Python's ssl.

One gateway (certificate for gw.test from a throwaway CA, users in a sasldb made with
`smtpgw user add`) with four listeners, in this order:
  STARTTLS   tls: starttls, auth: optional
  IMPLICIT   tls: implicit, auth: required
  PLAIN      tls: none,     auth: optional   (AUTH needs TLS: it is neither offered nor accepted)
  REQUIRED   tls: starttls, auth: required
Only 127.0.0.1 is in `clients`; the tests that need a stranger connect from other loopback
addresses, a different one per test, because failed AUTH attempts are counted per address.
"""
import base64
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import unittest

from gwtest import Client, Gateway

HERE = os.path.dirname(os.path.abspath(__file__))
USER, PASSWORD = "alice@gw.test", "correct horse 42"
STARTTLS, IMPLICIT, PLAIN, REQUIRED = range(4)


def b64(s):
    return base64.b64encode(s.encode()).decode()


class TlsClient(Client):
    """gwtest's raw SMTP client, able to switch to TLS (verifying gw.test against the test CA)."""

    def __init__(self, port, source, ca, implicit=False):
        super().__init__("127.0.0.1", port, source)
        self.ctx = ssl.create_default_context(cafile=ca)
        self.ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        if implicit:
            self.starttls()

    def starttls(self):
        self.sock = self.ctx.wrap_socket(self.sock, server_hostname="gw.test")

    def pending(self):
        """Whatever the server sent that no command asked for (waits briefly)."""
        self.sock.settimeout(0.5)
        try:
            return self.buf + self.sock.recv(65536)
        except (socket.timeout, ssl.SSLError):
            return self.buf
        finally:
            self.sock.settimeout(15)


class ListenerSecurityTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.certs = tempfile.mkdtemp(prefix="smtpgw-certs-")
        subprocess.run([os.path.join(HERE, "../tools/make-certs"), cls.certs, "gw.test"], check=True)
        cls.ca = os.path.join(cls.certs, "ca.pem")
        cls.gw = Gateway()
        cls.sasldb = os.path.join(cls.gw.dir, "sasldb2")
        cls.gw.write_config(f"""
listen:
  - {{ address: "127.0.0.1:0", tls: starttls, auth: optional }}
  - {{ address: "127.0.0.1:0", tls: implicit, auth: required }}
  - {{ address: "127.0.0.1:0", tls: none, auth: optional }}
  - {{ address: "127.0.0.1:0", tls: starttls, auth: required }}
clients: ["127.0.0.1/32"]
tls: {{ certificate: {cls.certs}/gw.test.pem, key: {cls.certs}/gw.test.key }}
sasl:
  sasldb: {cls.sasldb}
  mechanisms: [PLAIN, LOGIN, CRAM-MD5, SCRAM-SHA-256]
""", log_level="debug")
        cls.user("add", USER, stdin=PASSWORD + "\n")
        cls.gw.start()

    @classmethod
    def tearDownClass(cls):
        cls.gw.cleanup()
        shutil.rmtree(cls.certs, ignore_errors=True)

    @classmethod
    def user(cls, *args, stdin=""):
        out = subprocess.run([os.environ.get("SMTPGW_BIN", os.path.join(HERE, "../../build/smtpgw")), "user", *args,
                              "-c", cls.gw.config_path], input=stdin, capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stderr
        return out.stdout

    def port(self, which):
        return self.gw.ports[which]

    def swaks(self, which, *args, source="127.0.0.1", body="Subject: t\r\n\r\nhello\r\n"):
        return subprocess.run(["swaks", "--server", "127.0.0.1", "--port", str(self.port(which)),
                               "--local-interface", source, "--helo", "client.test", "--from", "app@example.com",
                               "--to", "someone@example.org", "--data", body, "--tls-ca-path", self.ca, *args],
                              capture_output=True, text=True, timeout=60)

    def client(self, which, source="127.0.0.1", implicit=False):
        c = TlsClient(self.port(which), source, self.ca, implicit)
        self.addCleanup(c.close)
        return c

    def tls_session(self, which, source):
        c = self.client(which, source)
        self.assertEqual(c.reply(), "220 gw.test ESMTP\r\n")
        c.command("EHLO client.test")
        self.assertEqual(c.command("STARTTLS"), "220 2.0.0 Ready to start TLS\r\n")
        c.starttls()
        return c

    def assert_queued_by(self, output, mechanism, user=USER):
        m = re.search(r"<~ +250 2\.0\.0 Ok: queued as ([0-9A-F]+)", output)
        self.assertTrue(m, output)
        qid = m.group(1)
        self.gw.wait_log(rf": {qid}: client=unknown\[127\.0\.0\.\d+\], sasl_method={mechanism}, "
                         rf"sasl_username={re.escape(user)}$")
        content = self.gw.content(qid)
        self.assertRegex(content.split(b"\r\n\tfor")[0].decode(),
                         rf"^Received: from client\.test \(unknown \[127\.0\.0\.\d+\]\)\r\n"
                         rf"\t\(using TLSv1\.2 with cipher \S+\)\r\n\tby gw\.test \(smtpgw\) with ESMTPSA id {qid}$")
        return qid

    # --- STARTTLS and implicit TLS with each mechanism, from an address not in `clients` --------
    def test_swaks_starttls_plain_login_cram_md5(self):
        for i, mechanism in enumerate(["PLAIN", "LOGIN", "CRAM-MD5"]):
            with self.subTest(mechanism=mechanism):
                out = self.swaks(STARTTLS, "--tls", "--auth", mechanism, "--auth-user", USER, "--auth-password", PASSWORD,
                                 source=f"127.0.0.{20 + i}")
                self.assertIn("<~  235 2.7.0 Authentication successful", out.stdout, out.stdout + out.stderr)
                self.assert_queued_by(out.stdout, mechanism)

    def test_swaks_implicit_tls(self):
        out = self.swaks(IMPLICIT, "--tls-on-connect", "--auth", "PLAIN", "--auth-user", USER, "--auth-password", PASSWORD, source="127.0.0.23")
        self.assertIn("<~  220 gw.test ESMTP", out.stdout, out.stdout + out.stderr)
        self.assert_queued_by(out.stdout, "PLAIN")

    def msmtp(self, which, starttls, source):
        out = subprocess.run(["msmtp", "-d", "--host=127.0.0.1", f"--port={self.port(which)}", "--tls=on",
                              f"--tls-starttls={'on' if starttls else 'off'}", f"--tls-trust-file={self.ca}",
                              "--tls-host-override=gw.test", "--auth=scram-sha-256", f"--user={USER}",
                              f"--passwordeval=echo '{PASSWORD}'", "--domain=client.test", f"--source-ip={source}",
                              "--from=app@example.com", "someone@example.org"],
                             input="Subject: msmtp\n\nhello\n", capture_output=True, text=True, timeout=60)
        self.assertEqual(out.returncode, 0, out.stdout + out.stderr)
        self.assertIn("<-- 235 2.7.0 Authentication successful", out.stdout)
        m = re.search(r"<-- 250 2\.0\.0 Ok: queued as ([0-9A-F]+)", out.stdout)
        self.assertTrue(m, out.stdout)
        return m.group(1)

    def test_msmtp_scram_sha_256_over_starttls_and_implicit_tls(self):
        for which, starttls, source in [(STARTTLS, True, "127.0.0.24"), (IMPLICIT, False, "127.0.0.25")]:
            with self.subTest(starttls=starttls):
                qid = self.msmtp(which, starttls, source)
                self.gw.wait_log(rf": {qid}: client=unknown\[{re.escape(source)}\], sasl_method=SCRAM-SHA-256, "
                                 rf"sasl_username={re.escape(USER)}$")
                entry = next(e for e in self.gw.queue() if e["id"] == qid)
                self.assertEqual(entry["sender"], "app@example.com")
                self.assertIn(b"with ESMTPSA id " + qid.encode(), self.gw.content(qid))

    # --- plaintext ----------------------------------------------------------------------------
    def test_no_auth_in_plaintext(self):
        for which in (PLAIN, STARTTLS):
            with self.subTest(listener=which):
                c = self.client(which, "127.0.0.30")
                c.reply()
                ehlo = c.command("EHLO client.test")
                self.assertNotIn("AUTH", ehlo)
                self.assertEqual(c.command("AUTH PLAIN " + b64(f"\0{USER}\0{PASSWORD}")),
                                 "538 5.7.11 Encryption required for requested authentication mechanism\r\n")
                # Still a stranger: no relaying.
                self.assertEqual(c.command("MAIL FROM:<app@example.com>"), "250 2.1.0 Ok\r\n")
                self.assertEqual(c.command("RCPT TO:<someone@example.org>"),
                                 "554 5.7.1 <someone@example.org>: Relay access denied\r\n")
        out = self.swaks(PLAIN, "--auth", "PLAIN", "--auth-user", USER, "--auth-password", PASSWORD,
                         source="127.0.0.31")
        self.assertIn("Host did not advertise authentication", out.stdout + out.stderr)
        self.assertNotIn(" 235 ", out.stdout)

    def test_starttls_not_offered_where_tls_is_none(self):
        c = self.client(PLAIN, "127.0.0.32")
        c.reply()
        self.assertNotIn("STARTTLS", c.command("EHLO client.test"))
        self.assertEqual(c.command("STARTTLS"), "502 5.5.1 Error: command not implemented\r\n")

    # --- failures -------------------------------------------------------------------------------
    def test_wrong_password_and_unknown_user_get_535_and_no_relay(self):
        c = self.tls_session(STARTTLS, "127.0.0.40")
        self.assertIn("250-AUTH PLAIN LOGIN CRAM-MD5 SCRAM-SHA-256\r\n", c.command("EHLO client.test"))
        failed = "535 5.7.8 Error: authentication failed: authentication failure\r\n"
        self.assertEqual(c.command("AUTH PLAIN " + b64(f"\0{USER}\0not the password")), failed)
        # An unknown user looks exactly the same.
        self.assertEqual(c.command("AUTH PLAIN " + b64("\0nobody@gw.test\0whatever")), failed)
        self.assertEqual(c.command("MAIL FROM:<app@example.com>"), "250 2.1.0 Ok\r\n")
        self.assertEqual(c.command("RCPT TO:<someone@example.org>"),
                         "554 5.7.1 <someone@example.org>: Relay access denied\r\n")
        # Postfix's wording, which fail2ban's postfix-sasl filter knows.
        self.gw.wait_log(r"warning: unknown\[127\.0\.0\.40\]: SASL PLAIN authentication failed: [a-z ]+, "
                         rf"sasl_username={re.escape(USER)}$")
        self.gw.wait_log(r"warning: unknown\[127\.0\.0\.40\]: SASL PLAIN authentication failed: [a-z ]+, "
                         r"sasl_username=nobody@gw\.test$")
        self.gw.wait_log(r"NOQUEUE: reject: RCPT from unknown\[127\.0\.0\.40\]: 554 5\.7\.1")
        out = self.swaks(STARTTLS, "--tls", "--auth", "LOGIN", "--auth-user", USER, "--auth-password", "wrong",
                         source="127.0.0.41")
        self.assertIn("535 5.7.8", out.stdout)
        self.assertNotIn("queued as", out.stdout)

    def test_cancel_and_bad_base64(self):
        c = self.tls_session(STARTTLS, "127.0.0.42")
        c.command("EHLO client.test")
        self.assertEqual(c.command("AUTH LOGIN"), "334 VXNlcm5hbWU6\r\n")
        self.assertEqual(c.command("*"), "501 5.7.0 Authentication aborted\r\n")
        self.assertEqual(c.command("AUTH PLAIN %%%"), "501 5.5.2 Cannot decode response\r\n")
        self.assertEqual(c.command("AUTH GSSAPI"), "504 5.5.4 Unrecognized authentication type\r\n")
        # Then a good one still works on the same connection.
        self.assertEqual(c.command("AUTH PLAIN " + b64(f"\0{USER}\0{PASSWORD}")),
                         "235 2.7.0 Authentication successful\r\n")
        self.assertEqual(c.command("AUTH PLAIN " + b64(f"\0{USER}\0{PASSWORD}")),
                         "503 5.5.1 Error: already authenticated\r\n")

    def test_failures_per_client_address_are_limited(self):
        c = self.tls_session(STARTTLS, "127.0.0.43")
        c.command("EHLO client.test")
        for _ in range(5):
            self.assertTrue(c.command("AUTH PLAIN " + b64(f"\0{USER}\0guess")).startswith("535 5.7.8 "))
        self.assertEqual(c.command("AUTH PLAIN " + b64(f"\0{USER}\0{PASSWORD}")),
                         "421 4.7.0 gw.test Error: too many AUTH failures from 127.0.0.43\r\n")
        # A new connection from the same address is refused at AUTH too; another address is not.
        c2 = self.tls_session(STARTTLS, "127.0.0.43")
        c2.command("EHLO client.test")
        self.assertTrue(c2.command("AUTH PLAIN " + b64(f"\0{USER}\0{PASSWORD}")).startswith("421 4.7.0 "))
        c3 = self.tls_session(STARTTLS, "127.0.0.44")
        c3.command("EHLO client.test")
        self.assertEqual(c3.command("AUTH PLAIN " + b64(f"\0{USER}\0{PASSWORD}")),
                         "235 2.7.0 Authentication successful\r\n")
        self.gw.wait_log(r"warning: unknown\[127\.0\.0\.43\]: too many AUTH failures from this address")

    # --- auth: required -------------------------------------------------------------------------
    def test_auth_required_even_for_clients(self):
        for which, implicit in ((REQUIRED, False), (IMPLICIT, True)):
            with self.subTest(listener=which):
                if implicit:
                    c = self.client(which, "127.0.0.1", implicit=True)
                    c.reply()
                else:
                    c = self.tls_session(which, "127.0.0.1")
                c.command("EHLO client.test")
                self.assertEqual(c.command("MAIL FROM:<app@example.com>"), "530 5.7.0 Authentication required\r\n")
                self.assertEqual(c.command("AUTH PLAIN " + b64(f"\0{USER}\0{PASSWORD}")),
                                 "235 2.7.0 Authentication successful\r\n")
                self.assertEqual(c.command("MAIL FROM:<app@example.com>"), "250 2.1.0 Ok\r\n")
        # On the REQUIRED listener a plaintext MAIL is refused the same way.
        c = self.client(REQUIRED, "127.0.0.1")
        c.reply()
        c.command("EHLO client.test")
        self.assertEqual(c.command("MAIL FROM:<app@example.com>"), "530 5.7.0 Authentication required\r\n")

    # --- STARTTLS command injection (CVE-2011-0411 class) ---------------------------------------
    def test_commands_pipelined_after_starttls_are_discarded(self):
        c = self.client(STARTTLS, "127.0.0.50")
        c.reply()
        c.command("EHLO client.test")
        c.send("STARTTLS\r\nMAIL FROM:<injected@example.com>\r\nAUTH PLAIN " + b64(f"\0{USER}\0{PASSWORD}") + "\r\n")
        self.assertEqual(c.reply(), "220 2.0.0 Ready to start TLS\r\n")
        c.starttls()
        # The state was reset: a command before EHLO is refused, and no reply to the injected
        # commands ever arrives.
        self.assertEqual(c.command("MAIL FROM:<a@example.com>"), "503 5.5.1 Error: send HELO/EHLO first\r\n")
        c.command("EHLO client.test")
        self.assertEqual(c.command("RCPT TO:<someone@example.org>"), "503 5.5.1 Error: need MAIL command\r\n")
        self.assertEqual(c.command("MAIL FROM:<app@example.com>"), "250 2.1.0 Ok\r\n")
        self.assertEqual(c.command("RCPT TO:<someone@example.org>"),
                         "554 5.7.1 <someone@example.org>: Relay access denied\r\n")
        self.assertEqual(c.pending(), b"")
        self.assertFalse([l for l in self.gw.log_lines() if "injected@example.com" in l])

    def test_a_new_ehlo_is_required_and_offers_auth(self):
        c = self.tls_session(STARTTLS, "127.0.0.51")
        ehlo = c.command("EHLO client.test")
        self.assertNotIn("STARTTLS", ehlo)
        self.assertIn("250-AUTH PLAIN LOGIN CRAM-MD5 SCRAM-SHA-256\r\n", ehlo)
        self.assertEqual(c.command("STARTTLS"), "554 5.5.1 Error: TLS already active\r\n")

    # --- the certificate and protocol, as openssl sees them ------------------------------------
    def s_client(self, which, *args):
        starttls = ["-starttls", "smtp"] if which != IMPLICIT else []
        return subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{self.port(which)}", *starttls,
                               "-CAfile", self.ca, "-verify_hostname", "gw.test", "-verify_return_error", *args],
                              input="QUIT\n", capture_output=True, text=True, timeout=30)

    def test_openssl_negotiates_tls_1_2_with_the_configured_certificate(self):
        for which in (STARTTLS, IMPLICIT):
            with self.subTest(listener=which):
                out = self.s_client(which, "-tls1_2")
                self.assertEqual(out.returncode, 0, out.stdout + out.stderr)
                self.assertRegex(out.stdout, r"Protocol\s*: TLSv1\.2")
                self.assertRegex(out.stdout, r"subject=CN *= *gw\.test")
                self.assertRegex(out.stdout, r"issuer=CN *= *smtpgw Test CA")
                self.assertIn("Verify return code: 0 (ok)", out.stdout)
                self.assertRegex(out.stdout, r"Cipher\s*: ECDHE-(RSA|ECDSA)-(AES\d+-GCM-SHA\d+|CHACHA20-POLY1305)")
                self.assertIn("Secure Renegotiation IS supported", out.stdout)
        self.gw.wait_log(r"Anonymous TLS connection established from unknown\[127\.0\.0\.1\]: TLSv1\.2 with cipher ")

    def test_old_protocols_and_weak_ciphers_are_refused(self):
        out = self.s_client(STARTTLS, "-tls1_2", "-cipher", "AES128-SHA")  # no forward secrecy, CBC
        self.assertNotEqual(out.returncode, 0, out.stdout)
        self.gw.wait_log(r"warning: unknown\[127\.0\.0\.1\]: TLS handshake failed: SSL - The server has no "
                         r"ciphersuites in common with the client")
        out = self.s_client(IMPLICIT, "-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0")
        self.assertNotEqual(out.returncode, 0, out.stdout)

    # --- sasldb management ----------------------------------------------------------------------
    def test_user_add_list_delete_while_running(self):
        self.assertIn("user bob@example.com set in ", self.user("add", "bob@example.com", stdin="bob's pw\n"))
        listed = self.user("list").split()
        self.assertIn("alice", listed)
        self.assertIn("bob@example.com", listed)
        c = self.tls_session(STARTTLS, "127.0.0.60")
        c.command("EHLO client.test")
        self.assertEqual(c.command("AUTH PLAIN " + b64("\0bob@example.com\0bob's pw")),
                         "235 2.7.0 Authentication successful\r\n")
        self.assertIn("user bob@example.com deleted from ", self.user("delete", "bob@example.com"))
        self.assertNotIn("bob@example.com", self.user("list").split())
        c = self.tls_session(STARTTLS, "127.0.0.61")
        c.command("EHLO client.test")
        self.assertTrue(c.command("AUTH PLAIN " + b64("\0bob@example.com\0bob's pw")).startswith("535 5.7.8 "))

    # --- credentials never reach the log -------------------------------------------------------
    def test_no_credential_in_the_log_even_at_debug_level(self):
        self.swaks(STARTTLS, "--tls", "--auth", "PLAIN", "--auth-user", USER, "--auth-password", PASSWORD,
                   source="127.0.0.70")
        self.swaks(STARTTLS, "--tls", "--auth", "LOGIN", "--auth-user", USER, "--auth-password", PASSWORD,
                   source="127.0.0.71")
        c = self.tls_session(STARTTLS, "127.0.0.72")
        c.command("EHLO client.test")
        c.command("AUTH PLAIN " + b64(f"\0{USER}\0{PASSWORD}x"))
        self.gw.wait_log(r"sasl_method=LOGIN")
        self.gw.wait_log(r"unknown\[127\.0\.0\.72\]: SASL PLAIN authentication failed")
        log = "\n".join(self.gw.log_lines())
        self.assertIn(" < unknown[127.0.0.72]: AUTH PLAIN ***", log)  # debug lines are there
        for secret in (PASSWORD, b64(PASSWORD), b64(PASSWORD + "x"), b64(f"\0{USER}\0{PASSWORD}"),
                       b64(f"\0{USER}\0{PASSWORD}x"), b64(f"{USER}\0{USER}\0{PASSWORD}")):
            self.assertNotIn(secret, log)


class CertificateReloadTest(unittest.TestCase):
    def setUp(self):
        self.certs = tempfile.mkdtemp(prefix="smtpgw-certs-")
        subprocess.run([os.path.join(HERE, "../tools/make-certs"), self.certs, "gw.test"], check=True)
        self.cert, self.key = os.path.join(self.certs, "live.pem"), os.path.join(self.certs, "live.key")
        shutil.copy(os.path.join(self.certs, "gw.test.pem"), self.cert)
        shutil.copy(os.path.join(self.certs, "gw.test.key"), self.key)
        self.gw = Gateway(f"""
listen: [{{ address: "127.0.0.1:0", tls: starttls }}]
tls: {{ certificate: {self.cert}, key: {self.key} }}
""")
        self.gw.start()

    def tearDown(self):
        self.gw.cleanup()
        shutil.rmtree(self.certs, ignore_errors=True)

    def issuer(self):
        out = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{self.gw.port}", "-starttls", "smtp"],
                             input="QUIT\n", capture_output=True, text=True, timeout=30)
        m = re.search(r"issuer=CN *= *(.+)", out.stdout)
        self.assertTrue(m, out.stdout + out.stderr)
        return m.group(1).strip()

    def test_sighup_rereads_the_certificate_and_keeps_the_old_one_if_the_new_is_broken(self):
        self.assertEqual(self.issuer(), "smtpgw Test CA")
        shutil.copy(os.path.join(self.certs, "other.pem"), self.cert)
        shutil.copy(os.path.join(self.certs, "other.key"), self.key)
        self.gw.proc.send_signal(signal.SIGHUP)
        self.gw.wait_log(r"configuration reloaded from ")
        self.assertEqual(self.issuer(), "Someone Else CA")

        with open(self.key, "w") as f:
            f.write("not a key\n")
        self.gw.proc.send_signal(signal.SIGHUP)
        logged = self.gw.wait_log(r"TLS certificate not reloaded, keeping the old one: ")
        self.assertIn(self.key, logged)
        self.assertEqual(self.issuer(), "Someone Else CA")

    def test_a_broken_certificate_stops_the_start_with_the_reason(self):
        self.gw.stop()
        with open(self.cert, "w") as f:
            f.write("-----BEGIN CERTIFICATE-----\nnonsense\n-----END CERTIFICATE-----\n")
        proc = self.gw.start(expect_failure=True)
        self.assertNotEqual(proc.returncode, 0)
        self.assertIn(self.cert, proc.stderr.read().decode() + "\n".join(self.gw.log_lines()))


class BackEndTroubleTest(unittest.TestCase):
    """A sasldb that cannot be read is the server's problem: 454 to the client, the reason in the log."""

    def test_missing_sasldb(self):
        certs = tempfile.mkdtemp(prefix="smtpgw-certs-")
        self.addCleanup(shutil.rmtree, certs, True)
        subprocess.run([os.path.join(HERE, "../tools/make-certs"), certs, "gw.test"], check=True)
        # The certificate file holds the chain: the server certificate, then the CA.
        chain = os.path.join(certs, "chain.pem")
        with open(chain, "w") as f:
            for name in ("gw.test.pem", "ca.pem"):
                with open(os.path.join(certs, name)) as part:
                    f.write(part.read())
        gw = Gateway(f"""
listen: [{{ address: "127.0.0.1:0", tls: implicit, auth: optional }}]
tls: {{ certificate: {chain}, key: {certs}/gw.test.key }}
sasl: {{ sasldb: {certs}/no/such/sasldb2, mechanisms: [PLAIN] }}
""")
        self.addCleanup(gw.cleanup)
        gw.start()
        gw.wait_log(rf"warning: sasl\.sasldb {re.escape(certs)}/no/such/sasldb2: No such file or directory; "
                    r"every AUTH gets 454 4\.7\.0 until it can be read")
        out = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{gw.port}", "-showcerts"],
                             input="QUIT\n", capture_output=True, text=True, timeout=30)
        self.assertEqual(out.stdout.count("-----BEGIN CERTIFICATE-----"), 2, out.stdout)
        self.assertRegex(out.stdout, r"1 s:CN *= *smtpgw Test CA")
        c = TlsClient(gw.port, "127.0.0.80", os.path.join(certs, "ca.pem"), implicit=True)
        self.addCleanup(c.close)
        c.reply()
        c.command("EHLO client.test")
        self.assertEqual(c.command("AUTH PLAIN " + b64(f"\0{USER}\0{PASSWORD}")),
                         "454 4.7.0 Temporary authentication failure\r\n")
        gw.wait_log(r"warning: unknown\[127\.0\.0\.80\]: SASL PLAIN authentication problem: cannot read "
                    rf"sasl\.sasldb {re.escape(certs)}/no/such/sasldb2: No such file or directory")


if __name__ == "__main__":
    unittest.main()
