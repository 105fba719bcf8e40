"""DKIM signing, end to end: keys made by `smtpgw dkim keygen`, messages relayed through real
Postfix upstreams, signatures checked by two independent verifiers (dkimverify from python3-dkim,
opendkim-testmsg from opendkim-tools) that fetch the public keys from dnsmasq.

  relay-a     Postfix at 127.0.7.1:2525 (offers 8BITMIME)
  relay-b     Postfix at 127.0.7.2:2525 without 8BITMIME: 8-bit mail is converted on the way
  dnsmasq     127.0.7.53:53; the verifiers run in a mount namespace whose resolv.conf names it
  sign.example.com     keys s2026 (RSA 2048) and e2026 (Ed25519): every message is signed twice
  other.example.com    key old, whose published record holds another key (the doctor FAILs it)
"""
import os
import re
import socket
import stat
import subprocess
import tempfile
import unittest

from gwtest import BIN, Gateway, queued_id, wait_for
from peers import Dnsmasq, Postfix

DNS_ADDRESS = "127.0.7.53"


def read(path):
    with open(path) as f:
        return f.read()


def keygen(*args):
    r = subprocess.run([BIN, "dkim", "keygen", *args], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    return r


def record_of(keygen_output):
    """The TXT value keygen printed for a web form."""
    m = re.search(r"(?m)^(v=DKIM1; k=\S+; p=\S+)$", keygen_output)
    assert m, keygen_output
    return m.group(1)


def txt_option(name, value):
    # dnsmasq: each comma-separated part is one string of the record (at most 255 octets each).
    parts = [value[i:i + 250] for i in range(0, len(value), 250)]
    return f"--txt-record={name}," + ",".join(parts)


def raw_send(gw, sender, rcpts, data):
    """One SMTP transaction with exactly these DATA octets (the final dot is added here)."""
    s = socket.create_connection((gw.host, gw.port), timeout=15)
    f = s.makefile("rb")

    def reply():
        lines = []
        while True:
            line = f.readline().decode()
            lines.append(line)
            if len(line) < 4 or line[3] != "-":
                return "".join(lines)

    assert reply().startswith("220")
    for cmd in [b"EHLO client.test", f"MAIL FROM:<{sender}>".encode()] + [f"RCPT TO:<{r}>".encode() for r in rcpts]:
        s.sendall(cmd + b"\r\n")
        r = reply()
        assert r.startswith("250"), (cmd, r)
    s.sendall(b"DATA\r\n")
    assert reply().startswith("354")
    s.sendall(data + b".\r\n")
    r = reply()
    assert r.startswith("250"), r
    s.sendall(b"QUIT\r\n")
    s.close()
    return queued_id(r)


@unittest.skipUnless(os.geteuid() == 0, "Postfix peers, port 53 and mount namespaces need root")
class DkimTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp(prefix="smtpgw-dkim-")
        cls.rsa_key = os.path.join(cls.dir, "keys", "sign.example.com.s2026.key")
        cls.ed_key = os.path.join(cls.dir, "keys", "sign.example.com.e2026.key")
        cls.old_key = os.path.join(cls.dir, "keys", "other.example.com.old.key")
        cls.rsa_out = keygen("sign.example.com", "s2026", "--out", cls.rsa_key).stdout
        cls.ed_out = keygen("sign.example.com", "e2026", "--type", "ed25519", "--out", cls.ed_key).stdout
        keygen("other.example.com", "old", "--out", cls.old_key)
        stranger = keygen("other.example.com", "x", "--out", os.path.join(cls.dir, "stranger.key")).stdout
        cls.dns = Dnsmasq([
            "--local=/example.com/",
            txt_option("s2026._domainkey.sign.example.com", record_of(cls.rsa_out)),
            txt_option("e2026._domainkey.sign.example.com", record_of(cls.ed_out)),
            txt_option("old._domainkey.other.example.com", record_of(stranger)),
            "--txt-record=_dmarc.sign.example.com,v=DMARC1; p=reject; adkim=r; aspf=r",
            "--txt-record=_dmarc.other.example.com,v=DMARC1; p=quarantine",
            "--txt-record=spf.example.com,v=spf1 ip4:127.0.7.0/24 -all",
            "--txt-record=_dmarc.spf.example.com,v=DMARC1; p=reject",
        ], port=53, address=DNS_ADDRESS).start()
        cls.a = Postfix("relay-a.test", "127.0.7.1", 2525).start()
        cls.b = Postfix("relay-b.test", "127.0.7.2", 2525, extra_main_cf="smtpd_discard_ehlo_keywords = 8bitmime\n").start()

    @classmethod
    def tearDownClass(cls):
        cls.a.cleanup()
        cls.b.cleanup()
        cls.dns.cleanup()
        subprocess.run(["rm", "-rf", cls.dir])

    def gateway(self, more_keys="", start=True):
        gw = Gateway(f"""sender:
  rewrite:
    - {{ from: "*@scanner.local", to: scans@sign.example.com }}
    - {{ from: "*@billing.local", to: bills@spf.example.com }}
  header_from: rewrite
routes:
  - {{ to: seven.test, via: relay-b }}
  - {{ to: "*", via: relay-a }}
upstreams:
  relay-a: {{ host: 127.0.7.1, port: 2525, security: none }}
  relay-b: {{ host: 127.0.7.2, port: 2525, security: none }}
dns: {{ servers: ["{DNS_ADDRESS}:53"], timeout: 1s, attempts: 1 }}
dkim:
{more_keys}  - {{ domain: sign.example.com, selector: s2026, key_file: {self.rsa_key} }}
  - {{ domain: sign.example.com, selector: e2026, key_file: {self.ed_key} }}
  - {{ domain: other.example.com, selector: old, key_file: {self.old_key} }}
queue: {{ dir: {{spool}}, retry: [1s] }}
""")
        if start:
            gw.start()
        self.addCleanup(gw.cleanup)
        return gw

    def verify(self, raw, what):
        """Both signatures pass both verifiers, which fetch the keys from dnsmasq."""
        with tempfile.TemporaryFile() as f:
            f.write(raw)
            for index in (0, 1):
                f.seek(0)
                r = self.dns.run_with_resolver(["dkimverify", "--index", str(index)], stdin=f, capture_output=True,
                                               timeout=30)
                self.assertEqual(r.returncode, 0, f"{what}: dkimverify --index {index}: {r.stdout!r} {r.stderr!r}")
                self.assertIn(b"signature ok", r.stdout)
            f.seek(0)
            r = self.dns.run_with_resolver(["opendkim-testmsg"], stdin=f, capture_output=True, timeout=30)
            self.assertEqual(r.returncode, 0, f"{what}: opendkim-testmsg: {r.stdout!r} {r.stderr!r}")
            self.assertEqual(r.stdout + r.stderr, b"", what)

    def signatures(self, msg):
        sigs = msg.get_all("DKIM-Signature") or []
        return {re.search(r"a=([\w-]+)", s).group(1): re.sub(r"\s+", "", s) for s in sigs}

    def test_rewritten_from_is_signed_and_verifies(self):
        gw = self.gateway()
        data = (b"From: Scanner <scanner@scanner.local>\r\n"
                b"To: first@a.test,\r\n"
                b"\tsecond@a.test,\r\n"
                b"  Third Person <third@a.test>\r\n"
                b"Cc: fourth@a.test\r\n"
                b"Subject: scan 1\r\n"
                b"\r\n"
                b"Scanned page attached.\r\n"
                b"..a line that starts with a dot\r\n"
                b"\r\n\r\n")
        qid = raw_send(gw, "scanner@scanner.local", ["first@a.test"], data)
        msg = self.a.wait_subject("scan 1")
        self.assertEqual(msg["From"], "Scanner <scans@sign.example.com>")
        self.assertIn(b"\n.a line that starts with a dot\n", msg.raw)
        self.assertEqual(len(msg.get_all("DKIM-Signature")), 2)
        sigs = self.signatures(msg)
        self.assertEqual(set(sigs), {"rsa-sha256", "ed25519-sha256"})
        for s in sigs.values():
            self.assertIn("d=sign.example.com", s)
            self.assertIn("c=relaxed/relaxed", s)
            # From: is oversigned (once more than it occurs), and so is Reply-To:, which the
            # rewriting added.
            h = re.search(r";h=([^;]+)", s).group(1).lower().split(":")
            self.assertEqual(h.count("from"), 2, s)
            self.assertEqual(h.count("reply-to"), 2, s)
            self.assertEqual(h.count("to"), 2, s)
        self.verify(msg.raw, "rewritten From:")
        gw.wait_log(rf"smtp\[\d+\]: {qid}: DKIM-Signature field added \(s=s2026, d=sign\.example\.com\)")
        gw.wait_log(rf"smtp\[\d+\]: {qid}: DKIM-Signature field added \(s=e2026, d=sign\.example\.com\)")

    def test_two_to_fields_are_both_signed(self):
        gw = self.gateway()
        raw_send(gw, "office@sign.example.com", ["first@a.test"],
                 b"From: office@sign.example.com\r\nTo: first@a.test\r\nTo: second@a.test\r\n"
                 b"Subject: two To fields\r\n\r\nhello\r\n")
        msg = self.a.wait_subject("two To fields")
        for s in self.signatures(msg).values():
            self.assertEqual(re.search(r";h=([^;]+)", s).group(1).lower().split(":").count("to"), 3, s)
        with tempfile.TemporaryFile() as f:
            f.write(msg.raw)
            for index in (0, 1):
                f.seek(0)
                r = self.dns.run_with_resolver(["dkimverify", "--index", str(index)], stdin=f, capture_output=True,
                                               timeout=30)
                self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
            # libopendkim's verifier holds to RFC 5322 3.6 (one To: at most) and refuses the
            # message itself before it looks at any signature.
            f.seek(0)
            r = self.dns.run_with_resolver(["opendkim-testmsg"], stdin=f, capture_output=True, timeout=30)
            self.assertIn(b"dkim_chunk(): Syntax error", r.stderr)

    def test_eight_bit_content_downgraded_on_the_way_verifies(self):
        gw = self.gateway()
        body = "Grüße aus der Poststelle: Änderung übermittelt.\r\n".encode()
        data = (b"From: Office <office@sign.example.com>\r\n"
                b"To: someone@seven.test\r\n"
                b"Subject: umlaut\r\n"
                b"MIME-Version: 1.0\r\n"
                b"Content-Type: text/plain; charset=utf-8\r\n"
                b"Content-Transfer-Encoding: 8bit\r\n"
                b"\r\n" + body * 3)
        qid = raw_send(gw, "office@sign.example.com", ["someone@seven.test"], data)
        msg = self.b.wait_subject("umlaut")
        self.assertEqual(msg["Content-Transfer-Encoding"], "quoted-printable")
        self.assertIn(b"Gr=C3=BC=C3=9Fe", msg.raw)
        self.assertEqual(set(self.signatures(msg)), {"rsa-sha256", "ed25519-sha256"})
        self.verify(msg.raw, "8-bit downgraded")
        gw.wait_log(rf"{qid}: to=<someone@seven\.test>, relay=127\.0\.7\.2\[127\.0\.7\.2\]:2525, .*status=sent")

    def test_long_header_line_broken_by_delivery_verifies(self):
        gw = self.gateway()
        words = " ".join(f"word{i:04d}" for i in range(200))  # one 1,800-octet line
        data = (b"From: office@sign.example.com\r\n"
                b"To: someone@a.test\r\n"
                b"Subject: long header\r\n"
                b"X-Long: " + words.replace(" ", "").encode() + b"\r\n"
                b"\r\n"
                b"body line " + b"x" * 1500 + b"\r\n")
        raw_send(gw, "office@sign.example.com", ["someone@a.test"], data)
        msg = self.a.wait_subject("long header")
        self.assertIn(b"\r\n ", msg.raw.replace(b"\n", b"\r\n").split(b"\r\n\r\n", 1)[1])  # the body line was broken
        self.verify(msg.raw, "long lines")

    def test_message_without_body_or_final_line_break_verifies(self):
        gw = self.gateway()
        # A header section alone: no empty line, no body.
        raw_send(gw, "office@sign.example.com", ["someone@a.test"],
                 b"From: office@sign.example.com\r\nTo: someone@a.test\r\nSubject: headers only\r\n")
        # A last line that its client did not end: the terminator's <CR><LF> ends it.
        raw_send(gw, "office@sign.example.com", ["someone@a.test"],
                 b"From: office@sign.example.com\r\nSubject: no final newline\r\n\r\nlast line, unended\r\n")
        for subject in ("headers only", "no final newline"):
            msg = self.a.wait_subject(subject)
            self.assertEqual(set(self.signatures(msg)), {"rsa-sha256", "ed25519-sha256"}, subject)
            self.verify(msg.raw, subject)

    def test_from_outside_the_signing_domains_is_not_signed(self):
        gw = self.gateway()
        qid = raw_send(gw, "app@elsewhere.example.net", ["someone@a.test"],
                       b"From: app@elsewhere.example.net\r\nSubject: unsigned\r\n\r\nhi\r\n")
        msg = self.a.wait_subject("unsigned")
        self.assertIsNone(msg["DKIM-Signature"])
        gw.wait_log(rf"{qid}: to=<someone@a\.test>.*status=sent")
        self.assertFalse([l for l in gw.log_lines() if "DKIM-Signature" in l and qid in l])
        # A subdomain signs with its parent's keys (relaxed alignment).
        raw_send(gw, "app@eu.sign.example.com", ["someone@a.test"],
                 b"From: app@eu.sign.example.com\r\nSubject: subdomain\r\n\r\nhi\r\n")
        msg = self.a.wait_subject("subdomain")
        self.assertIn("d=sign.example.com", self.signatures(msg)["rsa-sha256"])
        self.verify(msg.raw, "subdomain")

    def test_reload_with_an_unusable_key_keeps_signing_with_the_old_ones(self):
        gw = self.gateway()
        tiny = self.openssl_key("reload-tiny.key", 512)
        with open(gw.config_path) as f:
            text = f.read()
        with open(gw.config_path, "w") as f:
            f.write(text.replace(self.rsa_key, tiny))
        r = gw.run("reload")
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertIn("reload refused, keeping the running configuration: dkim[0] (sign.example.com): "
                      f"{tiny} is an RSA key of 512 bits", r.stdout)
        raw_send(gw, "office@sign.example.com", ["someone@a.test"],
                 b"From: office@sign.example.com\r\nSubject: after reload\r\n\r\nhi\r\n")
        msg = self.a.wait_subject("after reload")
        self.assertEqual(set(self.signatures(msg)), {"rsa-sha256", "ed25519-sha256"})
        self.verify(msg.raw, "after a refused reload")

    def test_a_header_section_over_the_bound_goes_unsigned(self):
        # The signing pass holds a message's header section until its end: at most 1 MiB. A
        # client that sends more gets its message delivered, unsigned, with a warning.
        gw = self.gateway()
        pad = b"".join(b"X-Pad-%05d: " % i + b"p" * 990 + b"\r\n" for i in range(1100))
        qid = raw_send(gw, "office@sign.example.com", ["someone@a.test"],
                       b"From: office@sign.example.com\r\nSubject: huge header\r\n" + pad + b"\r\nbody\r\n")
        gw.wait_log(rf"smtp\[\d+\]: warning: {qid}: not DKIM-signed: its header section is over 1024 KiB$")
        gw.wait_log(rf"{qid}: to=<someone@a\.test>, relay=127\.0\.7\.1\[127\.0\.7\.1\]:2525, .*status=sent", 30)
        self.assertFalse([l for l in gw.log_lines() if f"{qid}: DKIM-Signature field added" in l])

    # --- keygen, check-config, doctor ------------------------------------------------------------
    def test_keygen_writes_a_private_key_and_never_replaces_one(self):
        self.assertEqual(stat.S_IMODE(os.stat(self.rsa_key).st_mode), 0o600)
        self.assertIn("BEGIN PRIVATE KEY", read(self.rsa_key))
        self.assertIn("s2026._domainkey.sign.example.com. IN TXT (", self.rsa_out)
        self.assertIn("(rsa-sha256, 2048 bits)", self.rsa_out)
        self.assertIn("(ed25519-sha256, 256 bits)", self.ed_out)
        self.assertIn(f"- {{ domain: sign.example.com, selector: s2026, key_file: {self.rsa_key} }}", self.rsa_out)
        # Zone-file strings are at most 255 octets.
        for s in re.findall(r'"([^"]*)"', self.rsa_out):
            self.assertLessEqual(len(s), 255)
        before = read(self.rsa_key)
        r = subprocess.run([BIN, "dkim", "keygen", "sign.example.com", "s2026", "--out", self.rsa_key],
                           capture_output=True, text=True)
        self.assertEqual(r.returncode, 1)
        self.assertIn("keys are not replaced", r.stderr)
        self.assertEqual(read(self.rsa_key), before)
        r = subprocess.run([BIN, "dkim", "keygen", "sign.example.com", "s1", "--bits", "1024"], capture_output=True,
                           text=True)
        self.assertEqual(r.returncode, 2)
        self.assertIn("at least 2048", r.stderr)

    def check_config(self, dkim_entry, user="root"):
        d = tempfile.mkdtemp(dir=self.dir)
        path = os.path.join(d, "c.yaml")
        with open(path, "w") as f:
            f.write(f"hostname: mail.sign.example.com\nuser: {user}\nqueue: {{ dir: {d}/spool }}\n"
                    f"dkim:\n  - {dkim_entry}\n")
        return subprocess.run([BIN, "check-config", "-c", path], capture_output=True, text=True, timeout=30)

    def openssl_key(self, name, bits, mode=0o600):
        path = os.path.join(self.dir, name)
        subprocess.run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", f"rsa_keygen_bits:{bits}", "-out", path],
                       check=True, capture_output=True)
        os.chmod(path, mode)
        return path

    def test_check_config_judges_key_files(self):
        ok = self.check_config(f"{{ domain: sign.example.com, selector: s2026, key_file: {self.rsa_key} }}")
        self.assertEqual(ok.returncode, 0, ok.stdout)
        self.assertNotIn("warning", ok.stdout)
        # Root's own key: read at start, but not at a reload as the gateway's account.
        r = self.check_config(f"{{ domain: sign.example.com, selector: s2026, key_file: {self.rsa_key} }}", "nobody")
        self.assertEqual(r.returncode, 0, r.stdout)
        self.assertIn(f"warning: dkim[0].key_file: {self.rsa_key} cannot be read by nobody, the account the gateway "
                      f"runs as: it starts, but every reload is refused; chown nobody {self.rsa_key}", r.stdout)
        missing = self.check_config("{ domain: sign.example.com, selector: s1, key_file: /nonexistent/k.key }")
        self.assertEqual(missing.returncode, 1)
        self.assertRegex(missing.stdout, r"error: dkim\[0\]\.key_file: cannot read /nonexistent/k\.key: "
                                         r"No such file or directory")
        readable = self.openssl_key("readable.key", 2048, 0o644)
        r = self.check_config(f"{{ domain: sign.example.com, selector: s1, key_file: {readable} }}")
        self.assertEqual(r.returncode, 0, r.stdout)
        self.assertRegex(r.stdout, rf"warning: dkim\[0\]\.key_file: {re.escape(readable)} can be read by every user "
                                   r"on this machine \(mode 0644\); chmod 600")
        short = self.openssl_key("short.key", 1024)
        r = self.check_config(f"{{ domain: sign.example.com, selector: s1, key_file: {short} }}")
        self.assertEqual(r.returncode, 0, r.stdout)
        self.assertRegex(r.stdout, r"warning: dkim\[0\]\.key_file: .* is an RSA key of 1024 bits; RFC 8301 asks "
                                   r"for 2048 bits or more")
        tiny = self.openssl_key("tiny.key", 512)
        r = self.check_config(f"{{ domain: sign.example.com, selector: s1, key_file: {tiny} }}")
        self.assertEqual(r.returncode, 1, r.stdout)
        self.assertRegex(r.stdout, r"error: dkim\[0\]\.key_file: .* is an RSA key of 512 bits; verifiers ignore")
        garbage = os.path.join(self.dir, "garbage.key")
        with open(garbage, "w") as f:
            f.write("not a key\n")
        os.chmod(garbage, 0o600)
        r = self.check_config(f"{{ domain: sign.example.com, selector: s1, key_file: {garbage} }}")
        self.assertEqual(r.returncode, 1, r.stdout)
        self.assertIn("not a PEM private key", r.stdout)
        r = self.check_config(f"{{ domain: sign.example.com, selector: 'bad selector', key_file: {self.rsa_key} }}")
        self.assertEqual(r.returncode, 1, r.stdout)
        self.assertIn('"bad selector" is not a selector', r.stdout)
        # serve refuses to start with a key it cannot sign with.
        gw = Gateway(f"dkim:\n  - {{ domain: sign.example.com, selector: s1, key_file: {tiny} }}\n")
        self.addCleanup(gw.cleanup)
        p = gw.start(expect_failure=True)
        self.assertEqual(p.returncode, 1)
        self.assertIn("is an RSA key of 512 bits", p.stderr.read().decode())

    def test_doctor_checks_published_keys_and_dmarc(self):
        gw = self.gateway(start=False)
        r = gw.run("doctor", "--ip", "127.0.7.9")
        out = r.stdout
        self.assertRegex(out, r"(?m)^PASS  DKIM s2026\._domainkey\.sign\.example\.com: the published record holds "
                              r"the key of .*sign\.example\.com\.s2026\.key \(rsa-sha256, 2048 bits\)$")
        self.assertRegex(out, r"(?m)^PASS  DKIM e2026\._domainkey\.sign\.example\.com: .*\(ed25519-sha256, 256 bits\)$")
        m = re.search(r"(?m)^FAIL  DKIM old\._domainkey\.other\.example\.com: (.*)$", out)
        self.assertTrue(m, out)
        self.assertIn("another public key than the key file's", m.group(1))
        published = self.expected_record(self.old_key)
        self.assertIn(f'publish "{published}"', m.group(1))
        self.assertRegex(out, r"(?m)^PASS  DMARC sign\.example\.com: p=reject; mail from sign\.example\.com is "
                              r"DKIM-signed by sign\.example\.com \(aligned\)$")
        # A key whose record does not verify aligns nothing.
        # (A warning here, as the routes go through upstreams, which might sign.)
        self.assertRegex(out, r"(?m)^WARN  DMARC other\.example\.com: p=quarantine; mail from other\.example\.com has "
                              r"neither an aligned DKIM signature nor an aligned SPF pass, so receivers file it as spam; "
                              r"its signatures by other\.example\.com will not verify until the DKIM record above is "
                              r"mended \(routes go through upstreams; this matters for direct delivery only\)$")
        # Unsigned, but the rewritten envelope sender passes SPF and From: carries it.
        self.assertRegex(out, r"(?m)^PASS  SPF spf\.example\.com: 127\.0\.7\.9 is authorized")
        self.assertRegex(out, r"(?m)^PASS  DMARC spf\.example\.com: p=reject; mail from spf\.example\.com passes SPF "
                              r"as the rewritten envelope sender, which From: carries \(aligned; not signed, so forwarded "
                              r"copies fail; sign it: smtpgw dkim keygen spf\.example\.com SELECTOR")
        self.assertEqual(r.returncode, 1)  # the mismatched key fails the run
        j = gw.run("doctor", "--ip", "127.0.7.9", "--json")
        self.assertIn('"check":"DKIM old._domainkey.other.example.com"', j.stdout)

    def expected_record(self, key_file):
        der = subprocess.run(["openssl", "pkey", "-in", key_file, "-pubout", "-outform", "DER"], capture_output=True,
                             check=True).stdout
        import base64
        return "v=DKIM1; k=rsa; p=" + base64.b64encode(der).decode()

    def test_doctor_fails_a_missing_record(self):
        missing = os.path.join(self.dir, "keys", "nowhere.key")
        if not os.path.exists(missing):
            keygen("sign.example.com", "nowhere", "--out", missing)
        gw = self.gateway(f"  - {{ domain: sign.example.com, selector: nowhere, key_file: {missing} }}\n", start=False)
        r = gw.run("doctor", "--ip", "127.0.7.9")
        self.assertRegex(r.stdout, r"(?m)^FAIL  DKIM nowhere\._domainkey\.sign\.example\.com: no TXT record; publish "
                                   r"\"v=DKIM1; k=rsa; p=")


if __name__ == "__main__":
    unittest.main()
