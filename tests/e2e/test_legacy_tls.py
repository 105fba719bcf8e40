"""TLS 1.0/1.1 and CBC suites for old devices, opt-in per listener (tls_protocols, tls_ciphers),
tried with openssl s_client and Python's ssl as such a device: refused by a default listener
with the reason and the setting in the log, accepted by a listener that opts in, counted by
client address in /metrics."""
import os
import re
import smtplib
import ssl
import subprocess
import tempfile
import unittest
import urllib.request
import warnings

from gwtest import Gateway
from peers import free_tcp_port

HERE = os.path.dirname(os.path.abspath(__file__))


class LegacyTlsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.certs = tempfile.mkdtemp(prefix="smtpgw-legacy-")
        subprocess.run([os.path.join(HERE, "../tools/make-certs"), cls.certs, "gw.test"], check=True)
        cls.metrics_port = free_tcp_port()
        cls.gw = Gateway(f"""listen:
  - {{ address: "127.0.0.1:0", tls: starttls }}
  - {{ address: "127.0.0.1:0", tls: starttls, tls_protocols: [tls1.0, tls1.1, tls1.2], tls_ciphers: legacy }}
  - {{ address: "127.0.0.1:0", tls: implicit, tls_protocols: [tls1.0, tls1.1, tls1.2], tls_ciphers: legacy }}
tls: {{ certificate: {cls.certs}/gw.test.pem, key: {cls.certs}/gw.test.key }}
metrics: {{ listen: "127.0.0.1:{cls.metrics_port}" }}
""")
        cls.gw.start()

    @classmethod
    def tearDownClass(cls):
        cls.gw.cleanup()

    def s_client(self, which, *args):
        starttls = ["-starttls", "smtp"] if which < 2 else []
        return subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{self.gw.ports[which]}", *starttls,
                               "-CAfile", f"{self.certs}/ca.pem", *args], input="QUIT\r\n", capture_output=True,
                              text=True, timeout=30)

    def legacy_client(self, version):
        """What an old printer's TLS stack accepts: one old version, whatever suites it has."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.load_verify_locations(f"{self.certs}/ca.pem")
        context.check_hostname = False  # the chain is checked; the name is gw.test, the address 127.0.0.1
        context.set_ciphers("DEFAULT@SECLEVEL=0")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # exactly what an old printer is
            context.minimum_version = context.maximum_version = version
        return context

    def test_tls_1_0_is_refused_by_default_with_the_setting_named(self):
        r = self.s_client(0, "-tls1", "-cipher", "DEFAULT@SECLEVEL=0")
        self.assertIn("alert protocol version", r.stderr + r.stdout)
        self.assertIn("Cipher is (NONE)", r.stdout)
        self.gw.wait_log(r"warning: unknown\[127\.0\.0\.1\]: TLS handshake failed: SSL - Handshake protocol not "
                         r"within min/max boundaries \(the client speaks an older TLS than this listener accepts; "
                         r"for a device that cannot be updated, a listener with tls_protocols: \[tls1\.0, tls1\.1, "
                         r"tls1\.2\] takes it\)")

    def test_cbc_only_client_is_refused_by_default_with_the_setting_named(self):
        r = self.s_client(0, "-tls1_2", "-cipher", "AES128-SHA")
        self.assertNotIn("Cipher is AES128-SHA", r.stdout)
        self.gw.wait_log(r"TLS handshake failed: .*\(the client offers only older cipher suites; for a device that "
                         r"cannot be updated, a listener with tls_ciphers: legacy takes it\)")
        r = self.s_client(1, "-tls1_2", "-cipher", "AES128-SHA")
        self.assertIn("Cipher is AES128-SHA", r.stdout, r.stdout + r.stderr)
        self.gw.wait_log(r"Anonymous TLS connection established from unknown\[127\.0\.0\.1\]: TLSv1\.2 with cipher "
                         r"TLS-RSA-WITH-AES-128-CBC-SHA")

    def test_a_listener_that_opts_in_takes_tls_1_0_and_1_1(self):
        r = self.s_client(1, "-tls1", "-cipher", "DEFAULT@SECLEVEL=0")
        self.assertIn("Protocol  : TLSv1\n", r.stdout, r.stdout + r.stderr)
        self.gw.wait_log(r"Anonymous TLS connection established from unknown\[127\.0\.0\.1\]: TLSv1\.0 with cipher "
                         r"TLS-ECDHE-RSA-WITH-AES-\d+-CBC-SHA")
        # A whole message from a TLS 1.1 device, TLS from the first byte.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            context = self.legacy_client(ssl.TLSVersion.TLSv1_1)
        with smtplib.SMTP_SSL("127.0.0.1", self.gw.ports[2], context=context, timeout=15) as s:
            self.assertEqual(s.sock.version(), "TLSv1.1")
            s.ehlo("printer.test")
            refused = s.sendmail("scanner@example.com", ["someone@example.com"], "Subject: scan\r\n\r\npage 1\r\n")
            self.assertEqual(refused, {})
        self.gw.wait_log(r"TLSv1\.1 with cipher TLS-ECDHE-RSA-WITH-AES-\d+-CBC-SHA")
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10).read().decode()
        for version in ("TLSv1.0", "TLSv1.1"):
            m = re.search(rf'(?m)^smtpgw_tls_legacy_sessions_total{{version="{re.escape(version)}",'
                          rf'client="127\.0\.0\.1"}} (\d+)$', metrics)
            self.assertTrue(m and int(m.group(1)) >= 1, metrics)

    def test_a_modern_client_still_gets_tls_1_2_with_aead(self):
        r = self.s_client(1)
        self.assertIn("Protocol  : TLSv1.2\n", r.stdout)
        self.assertRegex(r.stdout, r"Cipher is ECDHE-RSA-(AES\d+-GCM-SHA\d+|CHACHA20-POLY1305)\n")

    def test_check_config_warns(self):
        r = self.gw.run("check-config")
        self.assertEqual(r.returncode, 0, r.stdout)
        self.assertRegex(r.stdout, r"warning: listen\[1\] \(127\.0\.0\.1:0\) accepts TLS 1\.0 and 1\.1 \(deprecated "
                                   r"by RFC 8996\): only for devices that speak nothing newer")
        self.assertNotIn("listen[0]", r.stdout)


class LegacyTlsConfigTest(unittest.TestCase):
    def test_mistakes(self):
        gw = Gateway("""listen:
  - { address: "127.0.0.1:0", tls_protocols: [tls1.0] }
  - { address: "127.0.0.1:0", tls: starttls, tls_protocols: [tls1.0, tls1.2] }
  - { address: "127.0.0.1:0", tls: starttls, tls_protocols: [ssl3] }
tls: { certificate: /etc/hostname, key: /etc/hostname }
""")
        self.addCleanup(gw.cleanup)
        r = gw.run("check-config")
        self.assertEqual(r.returncode, 1)
        self.assertIn("listen[0]: tls_protocols and tls_ciphers need tls: starttls or implicit", r.stdout)
        self.assertIn("listen[1].tls_protocols: must be a range without gaps, e.g. [tls1.0, tls1.1, tls1.2]",
                      r.stdout)
        self.assertIn("listen[2].tls_protocols: \"ssl3\" is not one of tls1.0, tls1.1, tls1.2", r.stdout)


if __name__ == "__main__":
    unittest.main()
