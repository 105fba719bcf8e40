"""`smtpgw doctor` against a DNS server (dnsmasq) serving A, PTR, MX, TXT (SPF) and blocklist
records, and a real Postfix upstream. The names are under doc.example.com, not .test: the doctor
rightly fails a sender or hostname in a reserved top-level domain. All addresses are loopback.

  gw.doc.example.com     A 127.0.3.1, PTR 127.0.3.1 -> gw.doc.example.com, SPF "v=spf1 a -all"
  good.doc.example.com          SPF ip4:127.0.3.0/24 -all, MX mx.good.doc.example.com
  bad.doc.example.com           SPF -all (127.0.3.1 is not allowed), MX mx.good.doc.example.com
  loose.doc.example.com         no SPF, no MX, an address
  nullmx.doc.example.com        null MX
  127.0.3.1          listed in bl.doc.example.com (127.0.0.2, with a TXT reason); not in clean.doc.example.com
  127.0.3.9          PTR stranger.doc.example.com, which does not resolve back
  upstreams          live: Postfix at 127.0.3.2:2525; dead: 127.0.3.3:2525
"""
import json
import os
import subprocess
import unittest

from gwtest import Gateway, queued_id
from peers import Dnsmasq, Postfix

DNS = [
    "--local=/in-addr.arpa/", "--local=/doc.example.com/", "--local=/example.com/",
    "--host-record=gw.doc.example.com,127.0.3.1",
    '--txt-record=gw.doc.example.com,v=spf1 a -all',
    '--txt-record=good.doc.example.com,v=spf1 ip4:127.0.3.0/24 -all',
    '--txt-record=_dmarc.good.doc.example.com,v=DMARC1; p=reject; rua=mailto:dmarc@good.doc.example.com',
    "--mx-host=good.doc.example.com,mx.good.doc.example.com,10", "--host-record=mx.good.doc.example.com,127.0.3.5",
    '--txt-record=bad.doc.example.com,v=spf1 ip4:192.0.2.0/24 -all',
    "--mx-host=bad.doc.example.com,mx.good.doc.example.com,10",
    "--address=/loose.doc.example.com/127.0.3.6",
    "--mx-host=nullmx.doc.example.com,.,0",
    "--address=/1.3.0.127.bl.doc.example.com/127.0.0.2",
    '--txt-record=1.3.0.127.bl.doc.example.com,Listed for testing: see https://bl.doc.example.com/',
    "--ptr-record=9.3.0.127.in-addr.arpa,stranger.doc.example.com",
]


def config(dns_port, rewrite, upstreams="live", direct=True):
    ups = {"live": "live: { host: 127.0.3.2, port: 2525, security: none }",
           "dead": "dead: { host: 127.0.3.3, port: 2525, security: none }"}
    return f"""sender:
  rewrite:
{"".join(f'    - {{ from: "*@{i}.local", to: {t} }}' + chr(10) for i, t in enumerate(rewrite))}routes: [{{ to: "*", via: {"direct" if direct else "live"} }}]
upstreams: {{ {", ".join(ups[u] for u in upstreams.split())} }}
dns: {{ servers: ["127.0.0.1:{dns_port}"], timeout: 1s, attempts: 1 }}
doctor: {{ dnsbl: [bl.doc.example.com, clean.doc.example.com] }}
"""


@unittest.skipUnless(os.geteuid() == 0, "Postfix peers need root to start")
class DoctorTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dns = Dnsmasq(DNS).start()
        cls.relay = Postfix("live.doc.example.com", "127.0.3.2", 2525).start()

    @classmethod
    def tearDownClass(cls):
        cls.relay.cleanup()
        cls.dns.cleanup()

    def doctor(self, text, ip="127.0.3.1", hostname="gw.doc.example.com"):
        gw = Gateway(text, hostname=hostname)
        self.addCleanup(gw.cleanup)
        out = gw.run("doctor", "--ip", ip)
        return out.returncode, out.stdout.splitlines()

    def line(self, lines, prefix):
        found = [l for l in lines if l.split(": ", 1)[0].split(None, 1)[-1] == prefix]
        self.assertEqual(len(found), 1, (prefix, lines))
        return found[0]

    def test_everything_in_order(self):
        rc, lines = self.doctor(config(self.dns.port, ["scans@good.doc.example.com"]))
        self.assertEqual(lines[0], "smtpgw doctor: gw.doc.example.com, sending from 127.0.3.1")
        self.assertEqual(self.line(lines, "hostname"), "PASS  hostname: gw.doc.example.com resolves to 127.0.3.1")
        self.assertEqual(self.line(lines, "reverse DNS"),
                         "PASS  reverse DNS: 127.0.3.1 has PTR gw.doc.example.com, which resolves back to it")
        self.assertEqual(self.line(lines, "SPF HELO gw.doc.example.com"),
                         'PASS  SPF HELO gw.doc.example.com: 127.0.3.1 is authorized by a ("v=spf1 a -all")')
        self.assertEqual(self.line(lines, "SPF good.doc.example.com"),
                         'PASS  SPF good.doc.example.com: 127.0.3.1 is authorized by ip4:127.0.3.0/24 '
                         '("v=spf1 ip4:127.0.3.0/24 -all")')
        self.assertEqual(self.line(lines, "blocklist clean.doc.example.com"), "PASS  blocklist clean.doc.example.com: 127.0.3.1 is not listed")
        self.assertEqual(self.line(lines, "sender scans@good.doc.example.com"),
                         "PASS  sender scans@good.doc.example.com: good.doc.example.com has MX mx.good.doc.example.com")
        self.assertEqual(self.line(lines, "upstream live"), "PASS  upstream live: 127.0.3.2:2525: compatible")
        self.assertEqual(self.line(lines, "DMARC good.doc.example.com"),
                         "PASS  DMARC good.doc.example.com: p=reject; mail from good.doc.example.com passes SPF as the "
                         "rewritten envelope sender, aligned where From: is in good.doc.example.com too (header_from: "
                         "rewrite makes it so for all; not signed, so forwarded copies fail; sign it: smtpgw dkim keygen "
                         "good.doc.example.com SELECTOR, then dkim: - { domain: good.doc.example.com, selector: "
                         "SELECTOR, key_file: ... })")
        # The one problem: the address is on bl.doc.example.com.
        self.assertEqual(self.line(lines, "blocklist bl.doc.example.com"),
                         "FAIL  blocklist bl.doc.example.com: 127.0.3.1 is listed (127.0.0.2: Listed for testing: see "
                         "https://bl.doc.example.com/); request removal at the list's site")
        self.assertEqual(lines[-1], "-- 1 FAIL, 0 WARN, 8 PASS")
        self.assertEqual(rc, 1)

    def test_json_has_the_same_findings(self):
        text = config(self.dns.port, ["scans@good.doc.example.com"])
        rc, lines = self.doctor(text)
        gw = Gateway(text, hostname="gw.doc.example.com")
        self.addCleanup(gw.cleanup)
        out = gw.run("doctor", "--ip", "127.0.3.1", "--json")
        self.assertEqual(out.returncode, rc)
        report = json.loads(out.stdout)
        self.assertEqual((report["hostname"], report["address"]), ("gw.doc.example.com", "127.0.3.1"))
        self.assertEqual((report["fail"], report["warn"], report["pass"]), (1, 0, 8))
        # Each line of the text report is one check of the JSON, in the same order.
        self.assertEqual([f"{c['level']}  {c['check']}: {c['text']}" for c in report["checks"]], lines[1:-1])

    def test_each_problem_is_named_with_its_fix(self):
        rc, lines = self.doctor(config(self.dns.port, ["x@bad.doc.example.com", "y@loose.doc.example.com", "z@nullmx.doc.example.com",
                                                       "n@printer.local"], upstreams="dead"), ip="127.0.3.9")
        self.assertEqual(rc, 1)
        self.assertEqual(self.line(lines, "reverse DNS"),
                         "FAIL  reverse DNS: 127.0.3.9 has PTR stranger.doc.example.com, which does not resolve back to it; "
                         "publish an A record for the name, or change the PTR")
        self.assertEqual(self.line(lines, "SPF bad.doc.example.com"),
                         'FAIL  SPF bad.doc.example.com: 127.0.3.9 is not authorized (-all) ("v=spf1 ip4:192.0.2.0/24 -all"); '
                         "add ip4:127.0.3.9 to the SPF record of bad.doc.example.com")
        self.assertEqual(self.line(lines, "SPF loose.doc.example.com"),
                         'WARN  SPF loose.doc.example.com: loose.doc.example.com has no SPF record; publish one, e.g. "v=spf1 '
                         'ip4:127.0.3.9 -all"')
        self.assertEqual(self.line(lines, "blocklist bl.doc.example.com"), "PASS  blocklist bl.doc.example.com: 127.0.3.9 is not listed")
        self.assertEqual(self.line(lines, "sender y@loose.doc.example.com"),
                         "PASS  sender y@loose.doc.example.com: loose.doc.example.com has no MX but an address (127.0.3.6)")
        self.assertEqual(self.line(lines, "sender z@nullmx.doc.example.com"),
                         "FAIL  sender z@nullmx.doc.example.com: nullmx.doc.example.com publishes a null MX (it accepts no mail), so "
                         "replies and bounces are lost; use another address")
        self.assertRegex(self.line(lines, "sender n@printer.local"),
                         r"^FAIL  sender n@printer\.local: \.local is not a public domain: no server on the Internet")
        self.assertRegex(self.line(lines, "upstream dead"),
                         r"^FAIL  upstream dead: 127\.0\.3\.3:2525: NOT compatible: connect to 127\.0\.3\.3\[127\.0\.3\.3\]"
                         r":2525: Connection refused \(smtpgw probe dead shows the whole conversation\)$")
        self.assertNotIn("SPF printer.local", "\n".join(lines))  # not a public domain: no SPF check
        # No DMARC record: receivers judge for themselves.
        self.assertEqual(self.line(lines, "DMARC bad.doc.example.com"),
                         "WARN  DMARC bad.doc.example.com: no DMARC record at _dmarc.bad.doc.example.com; receivers "
                         "apply their own judgement; publish one, starting with \"v=DMARC1; p=none; "
                         "rua=mailto:dmarc-reports@bad.doc.example.com\" to see reports first")

    def test_without_direct_delivery_address_findings_are_warnings(self):
        rc, lines = self.doctor(config(self.dns.port, ["x@bad.doc.example.com"], direct=False), ip="127.0.3.9")
        self.assertEqual(rc, 0, lines)
        self.assertRegex(self.line(lines, "SPF bad.doc.example.com"), r"^WARN  .*\(routes go through upstreams; this matters "
                                                            r"for direct delivery only\)$")
        self.assertRegex(self.line(lines, "reverse DNS"), r"^WARN  ")

    def test_a_hostname_that_does_not_resolve(self):
        rc, lines = self.doctor(config(self.dns.port, ["scans@good.doc.example.com"]), hostname="nothere.doc.example.com")
        self.assertEqual(rc, 1)
        self.assertEqual(self.line(lines, "hostname"),
                         "FAIL  hostname: nothere.doc.example.com does not resolve; publish an A record for it pointing "
                         "at the sending address")
        self.assertRegex(self.line(lines, "reverse DNS"), r"^WARN  reverse DNS: 127\.0\.3\.1 has PTR gw\.doc\.example\.com "
                                                          r"\(confirmed\), not the hostname nothere\.doc\.example\.com; "
                                                          r"set hostname: gw\.doc\.example\.com, or change the PTR$")


    # The same records name the clients when dns.client_names is on.
    def test_client_names_are_looked_up_and_confirmed(self):
        gw = Gateway(f'dns: {{ servers: ["127.0.0.1:{self.dns.port}"], timeout: 1s, attempts: 1, client_names: true }}\n'
                     'clients: [127.0.0.0/8]\n')
        self.addCleanup(gw.cleanup)
        gw.start()
        for source in ("127.0.3.1", "127.0.3.9", "127.0.0.7"):
            c = gw.connect(source)
            self.assertEqual(c.reply(), "220 gw.test ESMTP\r\n")
            c.command("QUIT")
        gw.wait_log(r"smtpd\[\d+\]: connect from gw\.doc\.example\.com\[127\.0\.3\.1\]$")
        gw.wait_log(r"warning: hostname stranger\.doc\.example\.com does not resolve to address 127\.0\.3\.9$")
        gw.wait_log(r"connect from unknown\[127\.0\.3\.9\]$")
        gw.wait_log(r"connect from unknown\[127\.0\.0\.7\]$")
        r = subprocess.run(["swaks", "--server", "127.0.0.1", "--port", str(gw.port), "--local-interface", "127.0.3.1",
                            "--helo", "printer.lan", "--from", "a@doc.example.com", "--to", "b@doc.example.com"],
                           capture_output=True, text=True, timeout=60)
        qid = queued_id(r.stdout)
        gw.wait_log(rf"{qid}: client=gw\.doc\.example\.com\[127\.0\.3\.1\]$")
        self.assertIn(b"Received: from printer.lan (gw.doc.example.com [127.0.3.1])", gw.content(qid))


if __name__ == "__main__":
    unittest.main()
