"""TLS and AUTH towards upstreams, against a real Postfix with Cyrus SASL and a throwaway CA.

One Postfix (relay.example.test, 127.0.0.61) with several listeners:
  2525  relay by IP address, STARTTLS offered, no AUTH
  2587  STARTTLS; AUTH only after TLS; relaying only when authenticated
  465   TLS from the first byte; AUTH; relaying only when authenticated
  2526  no TLS at all; AUTH with CRAM-MD5 and DIGEST-MD5 only
  2527  no TLS at all; AUTH with PLAIN and LOGIN only
  2588  STARTTLS with a certificate from a CA the gateway does not trust
  2589  STARTTLS with an expired certificate
  2591  STARTTLS with TLS 1.3 only (the gateway's mbedTLS speaks TLS 1.2): the handshake fails
  2592  STARTTLS; relaying only for a client certificate it knows (permit_tls_clientcerts), as an
        Exchange Online connector that knows its senders by certificate
dnsmasq gives relay.example.test and wrongname.example.test (same address, the certificate
names only the first) to the gateway.
"""
import os
import re
import shutil
import subprocess
import tempfile
import unittest

from gwtest import Gateway, queued_id, wait_for
from peers import Dnsmasq, Postfix

HERE = os.path.dirname(os.path.abspath(__file__))
USER, PASSWORD = "relay@example.com", "relay pass 42"
AUTH_ONLY = "-o smtpd_sasl_auth_enable=yes -o smtpd_recipient_restrictions=permit_sasl_authenticated,reject"


@unittest.skipUnless(os.geteuid() == 0, "Postfix peers need root to start")
class UpstreamSecurityTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.certs = tempfile.mkdtemp(prefix="smtpgw-certs-")
        os.chmod(cls.certs, 0o755)
        subprocess.run([os.path.join(HERE, "../tools/make-certs"), cls.certs, "relay.example.test"], check=True)
        c = cls.certs
        fingerprint = subprocess.run(["openssl", "x509", "-in", f"{c}/client.pem", "-noout", "-fingerprint", "-sha256"],
                                     capture_output=True, text=True, check=True).stdout.split("=", 1)[1].strip()
        with open(f"{c}/relay_clientcerts", "w") as f:
            f.write(f"{fingerprint} smtpgw-client\n")
        cls.dns = Dnsmasq(["--host-record=relay.example.test,127.0.0.61",
                           "--host-record=wrongname.example.test,127.0.0.61"]).start()
        cls.relay = Postfix("relay.example.test", "127.0.0.61", 2525, extra_main_cf=f"""
smtpd_tls_cert_file = {c}/relay.example.test.pem
smtpd_tls_key_file = {c}/relay.example.test.key
smtpd_tls_security_level = may
smtpd_tls_auth_only = yes
smtpd_sasl_type = cyrus
smtpd_sasl_path = smtpd
""", services=[
            ("127.0.0.61:2587", AUTH_ONLY),
            ("127.0.0.61:465", "-o smtpd_tls_wrappermode=yes " + AUTH_ONLY),
            ("127.0.0.61:2526", "-o smtpd_tls_security_level=none -o smtpd_tls_auth_only=no -o smtpd_sasl_path=cram "
                                + AUTH_ONLY),
            ("127.0.0.61:2527", "-o smtpd_tls_security_level=none -o smtpd_tls_auth_only=no "
                                "-o smtpd_sasl_path=plain " + AUTH_ONLY),
            ("127.0.0.61:2588", f"-o smtpd_tls_cert_file={c}/other.pem -o smtpd_tls_key_file={c}/other.key"),
            ("127.0.0.61:2589", f"-o smtpd_tls_cert_file={c}/expired.pem -o smtpd_tls_key_file={c}/expired.key"),
            ("127.0.0.61:2591", "-o smtpd_tls_protocols=>=TLSv1.3 -o smtpd_tls_mandatory_protocols=>=TLSv1.3"),
            ("127.0.0.61:2592", f"-o smtpd_tls_ask_ccert=yes -o smtpd_tls_fingerprint_digest=sha256 "
                                "-o smtpd_tls_loglevel=1 "
                                f"-o relay_clientcerts=texthash:{c}/relay_clientcerts "
                                "-o smtpd_recipient_restrictions=permit_tls_clientcerts,reject"),
        ])
        users = {USER: PASSWORD}
        cls.relay.sasl(users)
        cls.relay.sasl(users, "CRAM-MD5 DIGEST-MD5", name="cram")
        cls.relay.sasl(users, "PLAIN LOGIN", name="plain")
        cls.relay.start()
        cls.secret = os.path.join(cls.certs, "relay.secret")
        with open(cls.secret, "w") as f:
            f.write(PASSWORD + "\n")
        cls.wrong = os.path.join(cls.certs, "wrong.secret")
        with open(cls.wrong, "w") as f:
            f.write("not the password\n")

    @classmethod
    def tearDownClass(cls):
        cls.relay.cleanup()
        cls.dns.cleanup()
        shutil.rmtree(cls.certs, ignore_errors=True)

    def tearDown(self):
        if getattr(self, "gw", None):
            self.gw.cleanup()

    def upstream(self, port, security, host="relay.example.test", verify=False, auth=None, ca=True):
        text = f"{{ host: {host}, port: {port}, security: {security}, verify: {'true' if verify else 'false'}"
        if ca:
            text += f", ca_file: {self.certs}/ca.pem"
        if auth:
            text += ", auth: { " + auth + " }"
        return text + " }"

    def auth(self, mechanisms="PLAIN", secret=None):
        return f"username: {USER}, password_file: {secret or self.secret}, mechanisms: [{mechanisms}]"

    def start(self, upstream):
        self.gw = Gateway(f"""routes: [{{ to: "*", via: up }}]
upstreams:
  up: {upstream}
dns: {{ servers: ["127.0.0.1:{self.dns.port}"], timeout: 1s, attempts: 1 }}
delivery: {{ timeouts: {{ helo: 3s }} }}
queue: {{ dir: {{spool}}, retry: [1h] }}
""")
        self.gw.start()

    def send(self, subject):
        r = self.gw.swaks("--from", "app@example.com", "--to", "someone@example.org", "--header", f"Subject: {subject}")
        self.assertEqual(r.returncode, 0, r.stdout)
        return queued_id(r.stdout)

    def outcome(self, qid, status):
        return self.gw.wait_log(rf"smtp\[\d+\]: {qid}: to=<someone@example\.org>, .*status={status} ", timeout=20)

    def delivered(self, subject):
        wait_for(lambda: [m for m in self.relay.messages() if m["Subject"] == subject], timeout=20,
                 what=f"'{subject}' at the relay")

    # --- what works ------------------------------------------------------------------------------
    def test_plaintext_relay_by_ip(self):
        self.start(self.upstream(2525, "none", host="127.0.0.61", ca=False))
        qid = self.send("by ip")
        self.assertIn("relay=127.0.0.61[127.0.0.61]:2525", self.outcome(qid, "sent"))
        self.delivered("by ip")

    def test_starttls_and_auth_after_tls_every_mechanism(self):
        for mech in ("PLAIN", "LOGIN", "CRAM-MD5", "DIGEST-MD5", "SCRAM-SHA-256"):
            with self.subTest(mech=mech):
                self.start(self.upstream(2587, "mandatory", verify=True, auth=self.auth(mech)))
                qid = self.send(f"starttls {mech}")
                self.outcome(qid, "sent")
                self.gw.wait_log(r"Verified TLS connection established to relay\.example\.test\[127\.0\.0\.61\]:2587: "
                                 r"TLSv1\.2 with cipher ")
                self.delivered(f"starttls {mech}")
                self.assertRegex(self.relay.log(), rf"sasl_method={mech}, sasl_username={re.escape(USER)}")
                self.gw.cleanup()
                self.gw = None

    def test_a_client_certificate_the_relay_knows(self):
        self.start(self.upstream(2592, "mandatory", verify=True)[:-2] +
                   f", tls: {{ certificate: {self.certs}/client.pem, key: {self.certs}/client.key }} }}")
        qid = self.send("by certificate")
        self.assertIn("relay=relay.example.test[127.0.0.61]:2592", self.outcome(qid, "sent"))
        self.delivered("by certificate")
        # Postfix saw the certificate ("Untrusted": it was given no CA to check it against;
        # without one it logs "Anonymous") and relayed for it.
        self.assertRegex(self.relay.log(), r"Untrusted TLS connection established from localhost\[127\.0\.0\.1\]: "
                                           r"TLSv1\.2 with cipher ")

    def test_without_the_client_certificate_the_relay_refuses(self):
        self.start(self.upstream(2592, "mandatory", verify=True))
        qid = self.send("no certificate")
        line = self.outcome(qid, "bounced")
        self.assertIn("said: 554 5.7.1 <someone@example.org>: Recipient address rejected: Access denied (in reply to "
                      "RCPT TO command) "
                      "(the server does not relay for this gateway: allow its address there, authenticate (auth:), "
                      "or send a client certificate it knows (upstreams.up.tls))", line)

    def test_a_client_key_that_is_not_the_certificates(self):
        self.start(self.upstream(2592, "mandatory", verify=True)[:-2] +
                   f", tls: {{ certificate: {self.certs}/client.pem, key: {self.certs}/other.key }} }}")
        problem = f"the key {self.certs}/other.key does not belong to the certificate {self.certs}/client.pem"
        qid = self.send("wrong key")
        self.assertIn(f"client TLS configuration problem: {problem}", self.outcome(qid, "deferred"))
        r = self.gw.run("check-config")
        self.assertEqual(r.returncode, 1)
        self.assertRegex(r.stdout, rf"smtpgw\.yaml:\d+:\d+: error: upstreams\.up\.tls: {re.escape(problem)}")

    def test_implicit_tls(self):
        self.start(self.upstream(465, "implicit", verify=True, auth=self.auth("PLAIN")))
        qid = self.send("implicit")
        self.outcome(qid, "sent")
        self.delivered("implicit")

    def test_cram_md5_without_tls(self):
        self.start(self.upstream(2526, "none", auth=self.auth("CRAM-MD5, DIGEST-MD5")))
        qid = self.send("cram")
        self.outcome(qid, "sent")
        self.delivered("cram")

    def test_opportunistic_falls_back_to_plaintext_without_credentials(self):
        self.start(self.upstream(2591, "opportunistic"))
        qid = self.send("fallback")
        self.gw.wait_log(r"relay\.example\.test\[127\.0\.0\.61\]: Cannot start TLS: handshake failure: .*; trying again "
                         r"without TLS")
        self.outcome(qid, "sent")
        self.delivered("fallback")

    # --- every incompatibility, with its reason -------------------------------------------------------
    def deferred(self, upstream, dsn, reason):
        self.start(upstream)
        qid = self.send("incompatible")
        line = self.outcome(qid, "deferred")
        self.assertIn(f"dsn={dsn}, status=deferred ({reason}", line)
        [entry] = self.gw.queue()
        self.assertTrue(entry["recipients"][0]["reason"].startswith(reason), entry["recipients"][0]["reason"])
        return line

    def test_auth_only_after_starttls(self):
        self.deferred(self.upstream(2587, "none", auth=self.auth()), "4.7.0",
                      "SASL authentication failed: server relay.example.test[127.0.0.61] offered no AUTH on this "
                      "connection (no TLS); credentials are configured in upstreams.up.auth; it offers STARTTLS, and "
                      "servers usually offer AUTH only after it: set security: opportunistic or mandatory in upstreams.up")

    def test_no_common_mechanism(self):
        self.deferred(self.upstream(2526, "none", auth=self.auth("PLAIN, LOGIN")), "4.7.0",
                      "SASL authentication failed: server relay.example.test[127.0.0.61] offered no compatible "
                      "authentication mechanisms for this type of connection security: the server offered CRAM-MD5 "
                      "DIGEST-MD5, upstreams.up.auth.mechanisms allows PLAIN LOGIN, no TLS")

    def test_only_clear_text_mechanisms_without_tls(self):
        self.deferred(self.upstream(2527, "none", auth=self.auth("PLAIN, LOGIN")), "4.7.0",
                      "SASL authentication failed: server relay.example.test[127.0.0.61] and upstreams.up.auth.mechanisms "
                      "have only PLAIN LOGIN in common, which send the password in clear, and TLS is not active")

    def test_tls_required_but_not_offered(self):
        self.deferred(self.upstream(2526, "mandatory"), "4.7.4",
                      "TLS is required, but was not offered by host relay.example.test[127.0.0.61] (security: "
                      "mandatory in upstreams.up)")

    def test_handshake_failure_with_mbedtls_reason(self):
        line = self.deferred(self.upstream(2591, "mandatory"), "4.7.5",
                             "Cannot start TLS: handshake failure with relay.example.test[127.0.0.61]: ")
        self.assertRegex(line, r"handshake failure with [^:]+: \S.*\)$")

    def test_certificate_unknown_issuer(self):
        self.deferred(self.upstream(2588, "mandatory", verify=True), "4.7.5",
                      f"Server certificate not verified: unknown issuer: \"CN=Someone Else CA\" is not a CA in "
                      f"{self.certs}/ca.pem")

    def test_certificate_expired(self):
        self.deferred(self.upstream(2589, "mandatory", verify=True), "4.7.5",
                      "Server certificate not verified: certificate has expired (not after 2020-02-01 00:00:00 UTC)")

    def test_certificate_name_mismatch(self):
        self.deferred(self.upstream(2587, "mandatory", host="wrongname.example.test", verify=True), "4.7.5",
                      "Server certificate not verified: name mismatch: expected wrongname.example.test, the "
                      "certificate names relay.example.test")

    def test_plaintext_level_to_a_tls_port(self):
        self.deferred(self.upstream(465, "mandatory"), "4.4.2",
                      "conversation with relay.example.test[127.0.0.61] timed out while receiving the initial server "
                      "greeting (port 465 usually expects TLS from the first byte: set security: implicit in "
                      "upstreams.up)")

    def test_implicit_to_a_plaintext_port(self):
        self.deferred(self.upstream(2587, "implicit"), "4.7.5",
                      "Cannot start TLS: host relay.example.test[127.0.0.61] greeted in plaintext: it expects "
                      "STARTTLS, not TLS from the first byte")

    def test_auth_refused(self):
        line = self.deferred(self.upstream(2587, "mandatory", auth=self.auth("PLAIN", secret=self.wrong)), "4.7.8",
                             "SASL authentication failed; server relay.example.test[127.0.0.61] said: 535 5.7.8 Error: "
                             "authentication failed")
        self.assertIn("(check the user name and the password in upstreams.up.auth)", line)
        # Never a secret in the log.
        log = "\n".join(self.gw.log_lines())
        self.assertNotIn("not the password", log)
        self.assertNotIn(PASSWORD, log)

    # --- smtpgw probe --------------------------------------------------------------------------------
    def probe(self, *args):
        return subprocess.run([os.environ.get("SMTPGW_BIN", "../../build/smtpgw"), "probe", *args, "-c",
                               self.gw.config_path], capture_output=True, text=True, timeout=60)

    def test_probe_compatible_upstream(self):
        self.start(self.upstream(2587, "mandatory", verify=True, auth=self.auth("CRAM-MD5, PLAIN")))
        r = self.probe("up")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        out = r.stdout
        self.assertIn("probe: relay.example.test:2587 (upstream up, security mandatory, verify yes, auth as "
                      f"{USER})\n", out)
        self.assertIn("greeting: 220 relay.example.test ESMTP Postfix\n", out)
        self.assertRegex(out, r"EHLO: .*STARTTLS")
        self.assertIn("AUTH offered: (none)\n", out)
        self.assertIn("STARTTLS: 220 2.0.0 Ready to start TLS\n", out)
        self.assertRegex(out, r"TLS: TLSv1\.2 with cipher \S+\n")
        self.assertIn("certificate: subject CN=relay.example.test\n", out)
        self.assertIn("certificate: issuer CN=smtpgw Test CA\n", out)
        self.assertIn("certificate: names relay.example.test\n", out)
        self.assertIn("verification: ok (chain and name relay.example.test)\n", out)
        self.assertRegex(out, r"AUTH offered after TLS: PLAIN LOGIN CRAM-MD5 DIGEST-MD5")
        self.assertIn("mechanism: CRAM-MD5 (the first of CRAM-MD5 PLAIN that the server offers)\n", out)
        self.assertIn("AUTH: 235 2.7.0 Authentication successful\n", out)
        self.assertTrue(out.endswith("verdict: compatible\n"), out)

    def test_probe_ad_hoc_incompatible(self):
        self.start(self.upstream(2525, "none", host="127.0.0.61", ca=False))
        r = self.probe("relay.example.test:2587", "--security", "none", "--user", USER, "--password-file", self.secret)
        self.assertEqual(r.returncode, 1, r.stdout)
        self.assertIn("AUTH offered: (none)\n", r.stdout)
        self.assertIn("verdict: NOT compatible: SASL authentication failed: server relay.example.test[127.0.0.61] "
                      "offered no AUTH on this connection (no TLS)", r.stdout)
        r = self.probe("relay.example.test:2588", "--security", "mandatory", "--verify", "--ca-file",
                       f"{self.certs}/ca.pem")
        self.assertEqual(r.returncode, 1)
        self.assertIn("verification: failed: unknown issuer", r.stdout)
        self.assertIn("verdict: NOT compatible: Server certificate not verified: unknown issuer", r.stdout)


if __name__ == "__main__":
    unittest.main()
