"""The console in a real browser: headless Chromium driven by Selenium (Debian's chromium,
chromium-driver and python3-selenium) against a running gateway whose upstream is a real Postfix.
An admin signs in, finds a deferred message with its Info, holds and releases it, brings the
upstream back, presses Retry now and sees the message leave the queue; searches the Email Log
for the recipient; probes the upstream; runs the doctor. What strangers wrote (subject, sender,
the server's words) stays text. A screenshot of each page is kept in $SMTPGW_ARTIFACTS/console/."""
import os
import re
import subprocess
import unittest

from gwtest import BIN, Gateway, queued_id, wait_for
from peers import Dnsmasq, Postfix, free_tcp_port

PASSWORD = "correct horse battery"
HOSTILE = '<script>alert(1)</script>"><img src=x onerror=alert(2)>'
RELAY = "127.0.0.77"

try:
    from selenium import webdriver
    from selenium.common.exceptions import NoAlertPresentException, WebDriverException
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait
except ImportError:  # scripts/deps installs python3-selenium for /usr/bin/python3
    webdriver = None


def artifacts():
    d = os.path.join(os.environ.get("SMTPGW_ARTIFACTS", "/tmp/smtpgw-test-artifacts"), "console")
    os.makedirs(d, exist_ok=True)
    return d


@unittest.skipUnless(os.geteuid() == 0, "Postfix peers need root to start")
@unittest.skipIf(webdriver is None, "python3-selenium is not installed (scripts/deps)")
class ConsoleInBrowserTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        # The doctor asks DNS: a local server that knows nothing, so it answers at once.
        cls.dns = Dnsmasq(["--local=/test/", "--local=/in-addr.arpa/"]).start()
        cls.relay = Postfix("relay.console.test", RELAY, 2525)  # started later in the test
        cls.port = free_tcp_port()
        cls.gw = Gateway()
        cls.gw.write_config(f"""routes: [{{ to: "*", via: relay }}]
upstreams: {{ relay: {{ host: {RELAY}, port: 2525, security: none }} }}
dns: {{ servers: ["127.0.0.1:{cls.dns.port}"], timeout: 1s, attempts: 1 }}
admin: {{ listen: "127.0.0.1:{cls.port}", accounts: {cls.gw.dir}/admins }}
""")
        r = subprocess.run([BIN, "admin", "add", "alice", "-c", cls.gw.config_path], input=PASSWORD + "\n",
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr
        cls.gw.start()
        options = webdriver.ChromeOptions()
        options.binary_location = "/usr/bin/chromium"
        for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                  "--window-size=1400,1000", "--lang=en-GB"):
            options.add_argument(a)
        cls.browser = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
        cls.browser.set_page_load_timeout(150)

    @classmethod
    def tearDownClass(cls):
        cls.browser.quit()
        cls.gw.cleanup()
        cls.relay.cleanup()
        cls.dns.cleanup()

    def open(self, path):
        self.browser.get(f"http://127.0.0.1:{self.port}{path}")

    def shot(self, name):
        self.browser.save_screenshot(os.path.join(artifacts(), name + ".png"))

    def text(self, css="main"):
        return self.browser.find_element(By.CSS_SELECTOR, css).text

    def press(self, element):
        """Clicks a link or a button and waits for the page it leads to (a doctor run takes a while)."""
        old = self.browser.find_element(By.TAG_NAME, "html")
        element.click()

        def left(_):
            try:
                old.is_enabled()
                return False
            except WebDriverException:  # stale, or (Chromium's words) no longer in the document
                return True
        WebDriverWait(self.browser, 150).until(left)

    def click(self, css, within=None):
        self.press((within or self.browser).find_element(By.CSS_SELECTOR, css))

    def button(self, label, within=None):
        self.press((within or self.browser).find_element(By.XPATH, f".//main//button[text()='{label}']"
                                                         if within is None else f".//button[text()='{label}']"))

    def assert_inert(self):
        """Nothing a stranger wrote ran or became an element."""
        with self.assertRaises(NoAlertPresentException):
            self.browser.switch_to.alert.text
        self.assertEqual(self.browser.find_elements(By.CSS_SELECTOR, "main img, main script"), [])

    def test_an_admin_works_the_queue_in_a_browser(self):
        b = self.browser
        r = self.gw.swaks("--from", "scanner@example.com", "--to", "someone@dest.test",
                          "--header", "Subject: " + HOSTILE)
        self.assertEqual(r.returncode, 0, r.stdout)
        qid = queued_id(r.stdout)
        self.gw.wait_log(rf"{qid}: to=<someone@dest\.test>, .*status=deferred")

        # Sign in: a wrong password first.
        self.open("/queue")
        self.assertTrue(b.current_url.endswith("/login"))
        b.find_element(By.NAME, "name").send_keys("alice")
        b.find_element(By.NAME, "password").send_keys("wrong")
        self.click("form button")
        self.assertIn("Wrong name or password.", self.text())
        self.open("/login")
        b.find_element(By.NAME, "name").send_keys("alice")
        b.find_element(By.NAME, "password").send_keys(PASSWORD)
        self.shot("01-sign-in")
        self.click("form button")

        # Overview: counts, charts and the upstream's health.
        self.assertTrue(b.current_url.endswith("/overview"), b.current_url)
        self.assertIn("1 message(s) in the queue, 0 held", self.text("#summary"))
        charts = b.find_elements(By.CSS_SELECTOR, "svg.chart")
        self.assertEqual(len(charts), 2)
        self.assertIn("received 1", charts[0].text)
        self.assertIn("deferred 1", charts[0].text)
        self.assertEqual(len(charts[0].find_elements(By.TAG_NAME, "polyline")), 5)
        dest = self.text("table.dest")
        self.assertIn(f"relay {RELAY}:2525 (none)", dest)
        self.assertIn(f"connection refused connect to {RELAY}[{RELAY}]:2525: Connection refused", dest)
        self.shot("02-overview")

        # Email Queue: the message, why it waits and what to do about it.
        self.click("nav a[href='/queue']")
        row = b.find_element(By.ID, "m-" + qid)
        self.assertIn("connection refused", row.find_element(By.CSS_SELECTOR, "td.info b").text)
        self.assertIn("nothing listens there: check the port, and that the server runs", row.text)
        self.assertIn("scanner@example.com", row.text)
        self.assert_inert()
        self.shot("03-queue")

        # Message: envelope, headers (the subject as text), its log lines.
        self.click(f"a[href='/message?id={qid}']", row)
        self.assertIn("Subject: " + HOSTILE, self.text("pre.headers"))
        self.assertRegex(self.text("pre.log"), rf"{qid}: to=<someone@dest\.test>, relay=none, .*status=deferred")
        self.assert_inert()
        self.shot("04-message")

        # Hold, then release, from the message's page.
        self.button("Hold")
        self.assertIn(f"{qid} is on hold", self.text("p.note"))
        row = b.find_element(By.ID, "m-" + qid)
        self.assertIn("held", row.find_element(By.CSS_SELECTOR, "span.held").text)
        wait_for(lambda: {m["id"]: m for m in self.gw.queue()}[qid]["held"], what="the hold on disk")
        self.shot("05-held")
        self.button("Release", row)
        self.assertIn(f"{qid} is released", self.text("p.note"))
        wait_for(lambda: not {m["id"]: m for m in self.gw.queue()}[qid]["held"], what="the release on disk")

        # The upstream comes back; Retry now; the message leaves the queue.
        self.relay.start()
        self.button("Retry now", b.find_element(By.ID, "m-" + qid))
        self.assertIn(f"{qid} is being tried now", self.text("p.note"))
        self.gw.wait_log(rf"{qid}: to=<someone@dest\.test>, relay={re.escape(RELAY)}.*status=sent", timeout=30)
        wait_for(lambda: self.open("/queue") or not b.find_elements(By.ID, "m-" + qid), timeout=10,
                 what="the message to leave the Email Queue page")
        self.assertIn("0 of 0 message(s)", self.text())
        wait_for(lambda: self.relay.delivered_to("someone@dest.test"), what="the message at the upstream")
        self.shot("06-queue-empty")

        # Email Log: the recipient's lines, newest first, filtered by status.
        self.click("nav a[href='/log']")
        b.find_element(By.NAME, "q").send_keys("someone@dest.test")
        Select(b.find_element(By.NAME, "status")).select_by_value("sent")
        self.click("main form button")
        lines = self.text("pre.log").splitlines()
        self.assertEqual(len(lines), 1, lines)
        self.assertRegex(lines[0], rf"smtp\[\d+\]: {qid}: to=<someone@dest\.test>, relay=.*status=sent \(250 ")
        with open(self.gw.log_path) as f:  # exactly as logged
            self.assertIn(lines[0] + "\n", f.read())
        Select(b.find_element(By.NAME, "status")).select_by_value("")
        self.click("main form button")
        lines = self.text("pre.log").splitlines()
        self.assertEqual([("sent" in l, "deferred" in l) for l in lines[:2]], [(True, False), (False, True)])
        self.shot("07-email-log")

        # Upstreams: probe the relay.
        self.click("nav a[href='/upstreams']")
        self.assertIn("healthy", self.text("table.dest"))
        self.click("table.dest form button")
        self.assertIn("Probe of relay", self.text("#probe-relay"))
        report = self.text("pre.probe")
        self.assertIn(f"probe: {RELAY}:2525", report)
        self.assertIn("greeting: 220 relay.console.test ESMTP Postfix\n", report)
        self.assertIn("verdict: compatible", report)
        self.shot("08-upstreams")

        # Doctor: run it and read its checks.
        self.click("nav a[href='/doctor']")
        self.assertIn("Not run yet.", self.text())
        self.click("main form button")
        summary = self.text("#doctor-summary")
        self.assertRegex(summary, r"^gw\.test \[.*\]: \d+ FAIL, \d+ WARN, \d+ PASS$")
        rows = b.find_elements(By.CSS_SELECTOR, "table.doctor tr")
        self.assertGreater(len(rows), 3)
        levels = {r.find_element(By.TAG_NAME, "b").text for r in rows}
        self.assertLessEqual(levels, {"PASS", "WARN", "FAIL"})
        self.assertIn("upstream relay", self.text("table.doctor"))
        self.shot("09-doctor")
        self.gw.wait_log(r"console\[\d+\]: alice: doctor finished: exit status \d")

        # Sign out: the pages are closed again.
        self.click("header form button")
        self.open("/overview")
        self.assertTrue(b.current_url.endswith("/login"))


if __name__ == "__main__":
    unittest.main()
