"""The Debian package: built with CPack from the build directory, unpacked into a scratch root with
dpkg-deb (never installed on the machine), and checked the way a packager would."""
import gzip
import os
import re
import shutil
import subprocess
import tempfile
import unittest

from gwtest import BIN
from unit_sandbox import UnitSandbox

BUILD = os.path.dirname(os.path.abspath(BIN))


class Package:
    """The .deb, built once for this module: `deb`, and its files (`root`) and control files (`control`)."""
    out = deb = root = control = None


def setUpModule():
    Package.out = tempfile.mkdtemp(prefix="smtpgw-deb-")
    r = subprocess.run(["cpack", "-G", "DEB", "-B", Package.out], cwd=BUILD, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    [Package.deb] = [os.path.join(Package.out, n) for n in os.listdir(Package.out) if n.endswith(".deb")]
    Package.root = os.path.join(Package.out, "root")
    Package.control = os.path.join(Package.out, "control")
    subprocess.run(["dpkg-deb", "-x", Package.deb, Package.root], check=True)
    subprocess.run(["dpkg-deb", "-e", Package.deb, Package.control], check=True)


def tearDownModule():
    shutil.rmtree(Package.out, ignore_errors=True)


class PackageTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.deb, cls.root, cls.control = Package.deb, Package.root, Package.control

    def path(self, p):
        return os.path.join(self.root, p.lstrip("/"))

    def test_contents(self):
        listing = subprocess.run(["dpkg-deb", "-c", self.deb], capture_output=True, text=True, check=True).stdout
        for f in ["./usr/sbin/smtpgw", "./usr/lib/systemd/system/smtpgw.service", "./etc/smtpgw/smtpgw.yaml",
                  "./etc/logrotate.d/smtpgw", "./usr/share/man/man8/smtpgw.8.gz",
                  "./usr/share/man/man5/smtpgw.yaml.5.gz", "./usr/share/doc/smtpgw/README.md",
                  "./usr/share/doc/smtpgw/examples/exchange-online.yaml",
                  "./usr/share/doc/smtpgw/examples/elasticemail.yaml",
                  "./usr/share/doc/smtpgw/examples/exchange-connector.yaml",
                  "./usr/share/doc/smtpgw/examples/direct.yaml", "./usr/share/doc/smtpgw/sender-policy.md"]:
            self.assertIn(f, listing)
        self.assertRegex(listing, r"-rw-r----- root/root .* \./etc/smtpgw/smtpgw\.yaml")
        self.assertRegex(listing, r"-rwxr-xr-x root/root .* \./usr/sbin/smtpgw")

    def test_the_packaged_binary_runs_and_its_configuration_is_valid(self):
        version = subprocess.run([self.path("/usr/sbin/smtpgw"), "version"], capture_output=True, text=True, timeout=30)
        self.assertEqual(version.returncode, 0, version.stderr)
        self.assertRegex(version.stdout, r"^smtpgw \d+\.\d+\.\d+\n")
        check = subprocess.run([self.path("/usr/sbin/smtpgw"), "check-config", "-c", self.path("/etc/smtpgw/smtpgw.yaml")],
                               capture_output=True, text=True, timeout=30)
        self.assertEqual(check.returncode, 0, check.stdout + check.stderr)
        with open(self.path("/etc/smtpgw/smtpgw.yaml")) as f:
            config = f.read()
        self.assertRegex(config, r"(?m)^user: smtpgw\b")
        self.assertRegex(config, r"(?m)^queue: \{ dir: /var/spool/smtpgw \}")

    def test_control_files(self):
        with open(os.path.join(self.control, "control")) as f:
            control = f.read()
        self.assertRegex(control, r"(?m)^Package: smtpgw$")
        self.assertRegex(control, r"(?m)^Section: mail$")
        for dep in ("adduser", "libuv1", "libmbedtls14", "libsasl2-2", "libsasl2-modules", "libc-ares2", "libcurl4",
                    "libyaml-cpp0.7"):
            self.assertRegex(control, rf"(?m)^Depends: .*\b{re.escape(dep)}\b")
        with open(os.path.join(self.control, "conffiles")) as f:
            self.assertEqual(f.read().split(), ["/etc/smtpgw/smtpgw.yaml", "/etc/logrotate.d/smtpgw"])
        with open(os.path.join(self.control, "postinst")) as f:
            postinst = f.read()
        self.assertIn("adduser --system --group", postinst)
        self.assertIn("install -d -o smtpgw -g smtpgw -m 0750 /var/spool/smtpgw", postinst)
        for script in ("postinst", "prerm", "postrm"):
            self.assertEqual(os.stat(os.path.join(self.control, script)).st_mode & 0o777, 0o755)
            r = subprocess.run(["sh", "-n", os.path.join(self.control, script)], capture_output=True, text=True)
            self.assertEqual(r.returncode, 0, r.stderr)

    def test_the_service_is_hardened(self):
        with open(self.path("/usr/lib/systemd/system/smtpgw.service")) as f:
            unit = f.read()
        for line in ["ExecStart=/usr/sbin/smtpgw serve -c /etc/smtpgw/smtpgw.yaml",
                     "ExecReload=/usr/sbin/smtpgw check-config -c /etc/smtpgw/smtpgw.yaml",
                     "ExecReload=/bin/kill -HUP $MAINPID",
                     "NoNewPrivileges=yes", "ProtectSystem=strict", "ProtectHome=yes", "PrivateTmp=yes",
                     "ReadWritePaths=/var/spool/smtpgw /var/log/smtpgw", "SystemCallFilter=@system-service",
                     "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6"]:
            self.assertIn(line + "\n", unit)
        caps = re.search(r"(?m)^CapabilityBoundingSet=(.*)$", unit).group(1).split()
        self.assertIn("CAP_NET_BIND_SERVICE", caps)
        self.assertNotIn("CAP_SYS_ADMIN", caps)
        if shutil.which("systemd-analyze"):
            r = subprocess.run(["systemd-analyze", "verify", self.path("/usr/lib/systemd/system/smtpgw.service")],
                               capture_output=True, text=True, timeout=60)
            # Paths point into the real system, where the package is not installed.
            problems = [l for l in r.stderr.splitlines()
                        if l.strip() and "is not executable" not in l and "man " not in l]
            self.assertEqual(problems, [])

    def test_man_pages(self):
        for page, title in [("/usr/share/man/man8/smtpgw.8.gz", "SMTPGW"),
                            ("/usr/share/man/man5/smtpgw.yaml.5.gz", "SMTPGW.YAML")]:
            with gzip.open(self.path(page), "rt") as f:
                source = f.read()
            self.assertTrue(source.startswith(f".TH {title} "), source[:40])
            r = subprocess.run(["man", "--warnings", "-l", self.path(page)], capture_output=True, text=True,
                               timeout=60, env={**os.environ, "MANWIDTH": "100", "MAN_KEEP_FORMATTING": ""})
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertEqual(r.stderr, "")
            self.assertIn("NAME", r.stdout)
        with gzip.open(self.path("/usr/share/man/man8/smtpgw.8.gz"), "rt") as f:
            source = f.read()
        for command in ("serve", "check-config", "reload", "queue list", "queue flush", "queue delete", "probe",
                        "user add", "version"):
            self.assertIn(command.split()[0], source)


def listen_port(config):
    return int(re.search(r"address: \"?(?:[0-9.]+|\[[0-9a-f:]+\]):(\d+)", config).group(1))


def log_file(config):
    return re.search(r"(?ms)^log:.*?\bfile: *([^\s,}]+)", config).group(1)


@unittest.skipUnless(os.geteuid() == 0, "the unit's sandbox needs mount and network namespaces (root)")
class ExamplesUnderTheUnitTest(unittest.TestCase):
    """Every configuration the package ships, copied to /etc/smtpgw/smtpgw.yaml as the guides say,
    starts under the packaged unit as it is shipped (unit_sandbox.py reproduces its sandbox)."""

    @classmethod
    def setUpClass(cls):
        cls.root = Package.root
        cls.sandbox = UnitSandbox(cls.root)
        with open(os.path.join(Package.control, "postinst")) as f:
            cls.postinst = f.read()
        cls.scratch = tempfile.mkdtemp(prefix="smtpgw-examples-")

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.scratch, ignore_errors=True)

    def configurations(self):
        examples = os.path.join(self.root, "usr/share/doc/smtpgw/examples")
        paths = [os.path.join(examples, n) for n in sorted(os.listdir(examples))]
        self.assertEqual(len(paths), 5)
        return paths + [os.path.join(self.root, "etc/smtpgw/smtpgw.yaml")]

    def start(self, text):
        path = os.path.join(self.scratch, "smtpgw.yaml")
        with open(path, "w") as f:
            f.write(text)
        return self.sandbox.start(path, listen_port(text), log_file(text), self.postinst)

    def test_every_shipped_configuration_starts_under_the_unit(self):
        for path in self.configurations():
            with open(path) as f:
                text = f.read()
            with self.subTest(configuration=os.path.relpath(path, self.root)):
                log = log_file(text)
                self.assertTrue(any(log.startswith(p + "/") for p in self.sandbox.writable),
                                f"{log} is outside the unit's ReadWritePaths {self.sandbox.writable}")
                uid, out = self.start(text)
                self.assertRegex(out.get("check-config", ""), r"configuration is valid\n$", out)
                self.assertNotIn("check-config exit", out)
                self.assertEqual(out["status"].split()[1:], [str(uid)] * 4, out)
                self.assertIn("running as smtpgw (uid " + str(uid) + ")", out["log"])
                self.assertRegex(out["swaks"], r"<- +250 2\.0\.0 Ok: queued as [0-9A-F]+\n")
                self.assertRegex(out["log"], r"smtpgw/smtpd\[\d+\]: [0-9A-F]+: client=unknown\[127\.0\.0\.1\]")
                self.assertEqual(out["serve exit 0"], "", out)
                self.assertRegex(out["spool"], rf"-rw\S* +1 {uid} +\d+ +\d+ .* [0-9A-F]+\n", out)

    def test_check_config_names_what_the_unit_would_refuse(self):
        with open(os.path.join(self.root, "usr/share/doc/smtpgw/examples/direct.yaml")) as f:
            direct = f.read()
        old_log = direct.replace("/var/log/smtpgw/smtpgw.log", "/var/log/smtpgw.log")
        uid, out = self.start(old_log)
        self.assertIn("check-config exit 1", out)
        self.assertIn("error: log.file: cannot write /var/log/smtpgw.log: /var/log is on a read-only file system "
                      "(the packaged systemd unit lets smtpgw write only under /var/spool/smtpgw, /var/log/smtpgw "
                      "and /run/smtpgw)", out["check-config"])
        no_user = re.sub(r"(?m)^user: .*\n", "", direct)
        uid, out = self.start(no_user)
        self.assertIn("check-config exit 1", out)
        self.assertIn(": error: smtpgw would run as root: set user: to the account it should run as",
                      out["check-config"])


if __name__ == "__main__":
    unittest.main()
