"""The admin console over HTTP, as a browser speaks to it: sign-in (accounts made with
`smtpgw admin add`), the Email Queue with its Info column and its actions, the JSON API, and
the defences: escaping of what strangers wrote, CSRF tokens, locked-out guessing, security
headers, sessions that end."""
import concurrent.futures
import http.client
import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import tempfile
import unittest
import urllib.parse

from gwtest import BIN, Gateway, queued_id, wait_for
from peers import free_tcp_port
from scripted import Script, ScriptedSmtp

PASSWORD = "correct horse battery"
HOSTILE = '<script>alert(1)</script>"><img src=x onerror=alert(2)>'


class Browser:
    """Cookies and redirects as a browser keeps them, from one source address."""

    def __init__(self, port, source="127.0.0.1"):
        self.port, self.source, self.cookies = port, source, {}

    def request(self, method, path, form=None, headers=None):
        c = http.client.HTTPConnection("127.0.0.1", self.port, source_address=(self.source, 0), timeout=15)
        h = dict(headers or {})
        if self.cookies:
            h["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        body = None
        if form is not None:
            body = urllib.parse.urlencode(form)
            h["Content-Type"] = "application/x-www-form-urlencoded"
        c.request(method, path, body=body, headers=h)
        r = c.getresponse()
        r.text = r.read().decode()
        for cookie in r.headers.get_all("Set-Cookie") or []:
            name, value = cookie.split(";", 1)[0].split("=", 1)
            if "Max-Age=0" in cookie:
                self.cookies.pop(name, None)
            else:
                self.cookies[name] = value
        c.close()
        return r

    def sign_in(self, name="alice", password=PASSWORD):
        return self.request("POST", "/login", {"name": name, "password": password})

    def csrf(self):
        page = self.request("GET", "/queue").text
        return re.search(r'name="csrf" value="([0-9a-f]{64})"', page).group(1)


class ConsoleTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        # The upstream refuses recipients at hostile.test for now, with words a stranger chose.
        cls.smtp = ScriptedSmtp("127.0.0.76", 2525, Script(replies={"RCPT TO:<HOSTILE": f"451 4.3.0 {HOSTILE}"}))
        cls.port = free_tcp_port()
        cls.gw = Gateway()
        cls.gw.write_config(f"""routes:
  - {{ to: hostile.test, via: scripted }}
  - {{ to: "*", via: hold }}
upstreams:
  scripted: {{ host: 127.0.0.76, port: 2525, security: none }}
  hold: {{ host: 127.0.0.1, port: 9, security: none }}
admin: {{ listen: "127.0.0.1:{cls.port}", accounts: {cls.gw.dir}/admins }}
""")
        r = subprocess.run([BIN, "admin", "add", "alice", "-c", cls.gw.config_path], input=PASSWORD + "\n",
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr
        cls.gw.start()

    @classmethod
    def tearDownClass(cls):
        cls.gw.cleanup()
        cls.smtp.close()

    def send(self, to, sender="app@example.com"):
        r = self.gw.swaks("--from", sender, "--to", to, "--header", "Subject: " + HOSTILE)
        self.assertEqual(r.returncode, 0, r.stdout)
        return queued_id(r.stdout)

    def test_every_page_has_its_json(self):
        qid = self.send("api@example.org")
        self.gw.wait_log(rf"{qid}: to=<api@example\.org>, .*status=deferred")
        b = Browser(self.port)
        b.sign_in()
        overview = json.loads(b.request("GET", "/api/overview").text)
        self.assertGreaterEqual(sum(m["received"] for m in overview["minutes"]), 1)
        self.assertGreaterEqual(sum(m["deferred"] for m in overview["minutes"]), 1)
        hold = {d["destination"]: d for d in overview["destinations"]}["upstream:hold"]
        self.assertTrue(hold["dead"])
        self.assertEqual(hold["reason"], "connect to 127.0.0.1[127.0.0.1]:9: Connection refused")
        message = json.loads(b.request("GET", "/api/message?id=" + qid).text)
        self.assertTrue(message["queued"])
        self.assertEqual(message["envelope"]["recipients"][0]["address"], "api@example.org")
        self.assertIn("Subject: " + HOSTILE, message["headers"])
        self.assertTrue(any(re.search(rf"{qid}: to=<api@example\.org>, .*status=deferred", l) for l in message["log"]))
        self.assertTrue(any(f"{qid}: client=" in l for l in message["log"]))
        log = json.loads(b.request("GET", f"/api/log?q={qid}&status=deferred").text)
        self.assertEqual(len(log["lines"]), 1)
        with open(self.gw.log_path) as f:
            self.assertIn(log["lines"][0] + "\n", f.read())
        self.assertEqual(json.loads(b.request("GET", f"/api/log?q={qid}&status=sent").text)["lines"], [])
        upstreams = json.loads(b.request("GET", "/api/upstreams").text)
        self.assertEqual(sorted(u["name"] for u in upstreams), ["hold", "scripted"])
        self.assertEqual(b.request("GET", "/api/log?status=delivered").status, 400)
        self.assertEqual(b.request("GET", "/api/log?page=x").status, 400)
        self.assertEqual(b.request("GET", "/api/message?id=../../etc/passwd").status, 400)
        gone = json.loads(b.request("GET", "/api/message?id=ABCDEF123456").text)
        self.assertEqual((gone["queued"], gone["log"]), (False, []))
        # Running the doctor or a probe is an action: it needs the session's token.
        self.assertEqual(b.request("POST", "/api/doctor", {}).status, 403)
        self.assertEqual(b.request("POST", "/api/probe", {"name": "hold"}).status, 403)
        csrf = b.csrf()
        self.assertEqual(b.request("POST", "/api/probe", {"name": "nonesuch", "csrf": csrf}).status, 404)
        probe = json.loads(b.request("POST", "/api/probe", {"name": "hold", "csrf": csrf}).text)
        self.assertFalse(probe["ok"])
        self.assertIn("Connection refused", probe["output"])
        upstreams = {u["name"]: u for u in json.loads(b.request("GET", "/api/upstreams").text)}
        self.assertEqual(upstreams["hold"]["probe"]["by"], "alice")
        self.assertIsNone(upstreams["scripted"]["probe"])

    def test_pages_need_a_session(self):
        b = Browser(self.port)
        r = b.request("GET", "/queue")
        self.assertEqual((r.status, r.headers["Location"]), (303, "/login"))
        r = b.request("GET", "/api/queue")
        self.assertEqual(r.status, 401)
        for path in ("/api/overview", "/api/log?q=x", "/api/message?id=ABCDEF123456", "/api/doctor", "/api/upstreams"):
            self.assertEqual(b.request("GET", path).status, 401, path)
        for path in ("/overview", "/log", "/message?id=ABCDEF123456", "/doctor", "/upstreams"):
            self.assertEqual(b.request("GET", path).headers["Location"], "/login", path)
        self.assertEqual(b.request("POST", "/api/doctor", {}).status, 401)
        r = b.request("POST", "/queue/action", {"id": "ABCDEF123456", "action": "delete"})
        self.assertEqual(r.status, 303)  # to the sign-in page; nothing done

    def test_sign_in_queue_info_and_actions(self):
        qid = self.send("someone@example.org")
        self.gw.wait_log(rf"{qid}: to=<someone@example\.org>, .*status=deferred")
        b = Browser(self.port)
        r = b.sign_in()
        self.assertEqual((r.status, r.headers["Location"]), (303, "/overview"))
        cookie = r.headers["Set-Cookie"]
        self.assertRegex(cookie, r"^smtpgw_session=[0-9a-f]{64}; Path=/; HttpOnly; SameSite=Strict$")
        self.gw.wait_log(r"console\[\d+\]: alice from 127\.0\.0\.1: signed in")
        page = b.request("GET", "/queue")
        self.assertEqual(page.status, 200)
        for header, value in (("X-Frame-Options", "DENY"), ("X-Content-Type-Options", "nosniff"),
                              ("Cache-Control", "no-store")):
            self.assertEqual(page.headers[header], value)
        self.assertIn("frame-ancestors 'none'", page.headers["Content-Security-Policy"])
        self.assertNotIn("'unsafe-inline'", page.headers["Content-Security-Policy"])
        row = re.search(rf'<tr id="m-{qid}">.*?</tr>', page.text).group(0)
        self.assertIn("<b>connection refused</b>nothing listens there: check the port, and that the server runs", row)
        self.assertIn("connect to 127.0.0.1[127.0.0.1]:9: Connection refused", row)
        api = json.loads(b.request("GET", "/api/queue?q=" + qid).text)
        self.assertEqual([m["id"] for m in api], [qid])
        self.assertEqual(api[0]["info"]["category"], "connection refused")

        # Actions need the session's token.
        r = b.request("POST", "/queue/action", {"id": qid, "action": "hold"})
        self.assertEqual(r.status, 403)
        r = b.request("POST", "/queue/action", {"id": qid, "action": "hold", "csrf": "0" * 64})
        self.assertEqual(r.status, 403)
        csrf = b.csrf()
        r = b.request("POST", "/queue/action", {"id": qid, "action": "hold", "csrf": csrf})
        self.assertEqual(r.status, 303)
        self.assertEqual(urllib.parse.unquote(r.headers["Location"]), f"/queue?note={qid} is on hold")
        self.gw.wait_log(rf"console\[\d+\]: alice from 127\.0\.0\.1: hold {qid}")
        wait_for(lambda: {m["id"]: m for m in self.gw.queue()}[qid]["held"], what="the hold on disk")
        page = b.request("GET", r.headers["Location"]).text  # where the browser goes next
        self.assertIn(f'<p class="note">{qid} is on hold</p>', page)
        row = re.search(rf'<tr id="m-{qid}">.*?</tr>', page).group(0)
        self.assertIn('<span class="held">held</span>', row)
        self.assertIn('value="release"', row)
        self.assertNotIn('value="retry"', row)
        # The filter: held ones, or those waiting for one kind of reason.
        shown = lambda show: f'id="m-{qid}"' in b.request("GET", "/queue?show=" + urllib.parse.quote(show)).text
        self.assertEqual((shown("held"), shown("connection refused")), (True, False))
        b.request("POST", "/queue/action", {"id": qid, "action": "release", "csrf": csrf})
        # `queue list` reads the spool: the envelope's rewrite follows the action.
        wait_for(lambda: not {m["id"]: m for m in self.gw.queue()}[qid]["held"], what="the release on disk")
        self.assertEqual((shown("held"), shown("connection refused"), shown("lookup error")), (False, True, False))
        r = b.request("POST", "/queue/action", {"id": qid, "action": "delete", "csrf": csrf})
        self.assertEqual(r.status, 303)
        self.gw.wait_log(rf"qmgr\[\d+\]: {qid}: removed")
        self.assertNotIn(qid, {m["id"] for m in self.gw.queue()})

        # Signed out: the session is gone, the old cookie opens nothing.
        old = dict(b.cookies)
        r = b.request("POST", "/logout", {"csrf": csrf})
        self.assertEqual(r.status, 303)
        b.cookies = old
        self.assertEqual(b.request("GET", "/queue").status, 303)

    def test_what_strangers_wrote_is_inert(self):
        qid = self.send("hostile@hostile.test")
        self.gw.wait_log(rf"{qid}: to=<hostile@hostile\.test>, .*status=deferred")
        b = Browser(self.port)
        b.sign_in()
        page = b.request("GET", "/queue?q=" + urllib.parse.quote(HOSTILE)).text
        self.assertIn(qid, page)
        self.assertNotIn("<script>", page)
        self.assertNotIn("<img", page)
        self.assertIn("&lt;script&gt;alert(1)&lt;/script&gt;&quot;&gt;&lt;img src=x onerror=alert(2)&gt;", page)
        # The search box shows the query escaped too.
        self.assertIn('value="&lt;script&gt;', page)

    def test_guessing_is_locked_out(self):
        b = Browser(self.port, source="127.0.0.77")
        for i in range(5):
            r = b.sign_in(password=f"guess {i}")
            self.assertEqual(r.status, 401, i)
            self.assertIn("Wrong name or password.", r.text)
        self.gw.wait_log(r"console\[\d+\]: warning: failed sign-in as alice from 127\.0\.0\.77")
        r = b.sign_in()  # even the right password, for now
        self.assertEqual(r.status, 429)
        self.assertNotIn("smtpgw_session", b.cookies)
        # Another address is not locked out; an unknown name is refused like a wrong password.
        other = Browser(self.port, source="127.0.0.78")
        self.assertEqual(other.sign_in(name="mallory").status, 401)
        self.assertEqual(other.sign_in().status, 303)
        self.assertNotIn(PASSWORD, "\n".join(self.gw.log_lines()))

    def test_parallel_guesses_do_not_pass_the_limit(self):
        # Eight guesses at once from one address (its connection limit): at most five are checked.
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            codes = list(pool.map(lambda i: Browser(self.port, source="127.0.0.79").sign_in(password=f"p{i}").status,
                                  range(8)))
        self.assertLessEqual(codes.count(401), 5, codes)
        self.assertEqual(codes.count(401) + codes.count(429), 8, codes)
        self.assertEqual(Browser(self.port, source="127.0.0.79").sign_in().status, 429)

    def test_requests_are_bounded(self):
        # A body over 64 KiB is refused; the connection is not kept busy with it.
        b = Browser(self.port, source="127.0.0.79")
        r = b.request("POST", "/login", {"name": "alice", "password": "x" * 100000})
        self.assertEqual(r.status, 413)
        # At most 8 connections from one address: the 9th is closed at once.
        held = []
        for _ in range(8):
            s = socket.create_connection(("127.0.0.1", self.port), source_address=("127.0.0.80", 0), timeout=5)
            held.append(s)
        self.addCleanup(lambda: [s.close() for s in held])
        extra = socket.create_connection(("127.0.0.1", self.port), source_address=("127.0.0.80", 0), timeout=5)
        self.addCleanup(extra.close)
        try:
            extra.sendall(b"GET /login HTTP/1.1\r\nHost: x\r\n\r\n")
            answer = extra.recv(100)
        except ConnectionResetError:
            answer = b""
        self.assertEqual(answer, b"")
        # Others are served meanwhile.
        self.assertEqual(Browser(self.port, source="127.0.0.81").request("GET", "/login").status, 200)


class ConsoleConfigTest(unittest.TestCase):
    def test_plain_http_beyond_loopback_is_refused(self):
        gw = Gateway('admin: { listen: "0.0.0.0:8025" }\n')
        self.addCleanup(gw.cleanup)
        r = gw.run("check-config")
        self.assertEqual(r.returncode, 1)
        self.assertIn("admin.listen: 0.0.0.0:8025 can be reached from other hosts, so the console speaks HTTPS with "
                      "the tls: certificate: give tls: { certificate, key }, or listen on 127.0.0.1", r.stdout)
        gw.write_config('admin: { listen: "0.0.0.0:8025", https: false }\n')
        r = gw.run("check-config")
        self.assertEqual(r.returncode, 1)
        self.assertIn("admin.https: 0.0.0.0:8025 can be reached from other hosts: the console does not speak plain "
                      "HTTP there", r.stdout)


class ConsoleHttpsTest(unittest.TestCase):
    """HTTPS with the tls: certificate (from tools/make-certs' throwaway CA): on by default beyond
    loopback, asked for here with https: true since tests listen on loopback only."""

    def test_https_with_the_tls_certificate(self):
        certs = tempfile.mkdtemp(prefix="smtpgw-certs-")
        self.addCleanup(shutil.rmtree, certs, True)
        subprocess.run([os.path.join(os.path.dirname(__file__), "../tools/make-certs"), certs, "gw.test"], check=True)
        port = free_tcp_port()
        gw = Gateway()
        self.addCleanup(gw.cleanup)
        gw.write_config(f"""tls: {{ certificate: {certs}/gw.test.pem, key: {certs}/gw.test.key }}
admin: {{ listen: "127.0.0.1:{port}", https: true, accounts: {gw.dir}/admins }}
""")
        r = subprocess.run([BIN, "admin", "add", "alice", "-c", gw.config_path], input=PASSWORD + "\n",
                           capture_output=True, text=True, timeout=30)
        self.assertEqual(r.returncode, 0, r.stderr)
        gw.start()
        gw.wait_log(rf"console\[\d+\]: console on https://127\.0\.0\.1:{port}/")
        context = ssl.create_default_context(cafile=f"{certs}/ca.pem")
        context.check_hostname = False  # the certificate names gw.test; the test reaches 127.0.0.1
        c = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=15)
        c.request("POST", "/login", body=urllib.parse.urlencode({"name": "alice", "password": PASSWORD}),
                  headers={"Content-Type": "application/x-www-form-urlencoded"})
        r = c.getresponse()
        r.read()
        self.assertEqual(r.status, 303)
        self.assertRegex(r.headers["Set-Cookie"], r"^smtpgw_session=[0-9a-f]{64}; Path=/; HttpOnly; SameSite=Strict; "
                                                  r"Secure$")
        self.assertEqual(r.headers["Strict-Transport-Security"], "max-age=31536000")
        self.assertEqual(c.sock.getpeercert()["subject"][-1][0][1], "gw.test")
        c.close()
        # Plain HTTP gets no page: only a TLS handshake is answered.
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(b"GET /login HTTP/1.1\r\nHost: x\r\n\r\n")
            try:
                answer = s.recv(4096)
            except ConnectionResetError:
                answer = b""
            self.assertNotIn(b"HTTP/1.1 200", answer)
        r = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--cacert", f"{certs}/ca.pem",
                            "--resolve", f"gw.test:{port}:127.0.0.1", f"https://gw.test:{port}/healthz"],
                           capture_output=True, text=True, timeout=30)
        self.assertEqual(r.stdout, "200")


class LargeQueuePagesTest(unittest.TestCase):
    """The Email Queue of more messages than a page holds: 500 a page, oldest first, in the page
    and in its JSON, with the count of all that match and a way to the next page."""

    MESSAGES = 520

    @classmethod
    def setUpClass(cls):
        cls.port = free_tcp_port()
        cls.gw = Gateway()
        cls.gw.write_config(f"""admin: {{ listen: "127.0.0.1:{cls.port}", accounts: {cls.gw.dir}/admins }}
queue: {{ dir: {{spool}}, retry: [1h] }}
""")
        r = subprocess.run([BIN, "admin", "add", "alice", "-c", cls.gw.config_path], input=PASSWORD + "\n",
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr
        cls.gw.start()
        r = subprocess.run(["smtp-source", "-s", "5", "-m", str(cls.MESSAGES), "-l", "300", "-f", "app@example.com",
                            "-t", "someone@example.org", f"{cls.gw.host}:{cls.gw.port}"],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        wait_for(lambda: sum(" status=deferred " in l for l in cls.gw.log_lines()) >= cls.MESSAGES, timeout=60,
                 what="every first attempt")

    @classmethod
    def tearDownClass(cls):
        cls.gw.cleanup()

    def test_pages_of_the_queue(self):
        b = Browser(self.port)
        b.sign_in()
        oldest_first = [m["id"] for m in sorted(self.gw.queue(), key=lambda m: (m["arrival"], m["id"]))]
        self.assertEqual(len(oldest_first), self.MESSAGES)

        r = b.request("GET", "/api/queue")
        first = json.loads(r.text)
        self.assertEqual((r.headers["X-Page"], r.headers["X-Total-Count"]), ("1", str(self.MESSAGES)))
        self.assertEqual(r.headers["Link"], '</api/queue?q=&show=&page=2>; rel="next"')
        r = b.request("GET", "/api/queue?page=2")
        second = json.loads(r.text)
        self.assertNotIn("Link", r.headers)
        self.assertEqual(len(first), 500)
        self.assertEqual([m["id"] for m in first + second], oldest_first)
        self.assertEqual(json.loads(b.request("GET", "/api/queue?page=3").text), [])

        page = b.request("GET", "/queue").text
        self.assertIn(f"<p>{self.MESSAGES} of {self.MESSAGES} message(s), the first 500 shown.</p>", page)
        self.assertIn('<a href="/queue?q=&amp;show=&amp;page=2">Later</a>', page)
        self.assertEqual(re.findall(r'<tr id="m-([0-9A-F]+)"', page), oldest_first[:500])
        page = b.request("GET", "/queue?page=2").text
        self.assertIn(f"<p>{self.MESSAGES} of {self.MESSAGES} message(s), 501 to {self.MESSAGES} shown.</p>", page)
        self.assertIn('<a href="/queue?q=&amp;show=&amp;page=1">Earlier</a>', page)
        self.assertEqual(re.findall(r'<tr id="m-([0-9A-F]+)"', page), oldest_first[500:])
        # A search narrows the count; a page that is no number is refused.
        page = b.request("GET", "/queue?q=" + oldest_first[7]).text
        self.assertIn(f"<p>1 of {self.MESSAGES} message(s).</p>", page)
        for path in ("/queue?page=x", "/api/queue?page=-1"):
            self.assertEqual(b.request("GET", path).status, 400, path)


if __name__ == "__main__":
    unittest.main()
