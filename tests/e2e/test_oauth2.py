"""OAuth 2.0 client credentials built in (upstreams.NAME.auth.oauth2): the gateway gets its
XOAUTH2 tokens from a token endpoint (a local HTTPS one in the manner of the Microsoft identity
platform, token_endpoint.py) with a client secret or a certificate-signed client assertion,
keeps them until shortly before they expire, and names each endpoint error with its fix. The
SMTP side is a scripted server that accepts XOAUTH2 only with a token the endpoint issued and
that has not expired."""
import base64
import os
import re
import subprocess
import tempfile
import time
import unittest

from gwtest import BIN, Gateway, queued_id, wait_for
from scripted import Script, ScriptedSmtp
from token_endpoint import App, TokenEndpoint

HERE = os.path.dirname(os.path.abspath(__file__))
SMTP_HOST = "127.0.0.67"  # no other test listens here (tests run two at a time)
SECRET = "s3cret~Value.of-the_app"


class OAuth2Test(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp(prefix="smtpgw-oauth2-")
        cls.certs = os.path.join(cls.dir, "certs")
        subprocess.run([os.path.join(HERE, "../tools/make-certs"), cls.certs, "localhost"], check=True)
        cls.secret_file = cls.write("app.secret", SECRET + "\n")
        cls.wrong_secret_file = cls.write("wrong.secret", "the-secret-id-not-its-value\n")

    @classmethod
    def write(cls, name, text):
        path = os.path.join(cls.dir, name)
        with open(path, "w") as f:
            f.write(text)
        os.chmod(path, 0o600)
        return path

    def setUp(self):
        self.endpoint = TokenEndpoint(os.path.join(self.certs, "localhost.pem"),
                                      os.path.join(self.certs, "localhost.key"))
        self.smtp = ScriptedSmtp(SMTP_HOST, 2525, Script(ehlo=("250-scripted.test", "250-PIPELINING",
                                                               "250 AUTH LOGIN XOAUTH2"),
                                                         xoauth2=self.endpoint.valid))
        self.gw = None

    def tearDown(self):
        if self.gw:
            self.gw.cleanup()
        self.smtp.close()
        self.endpoint.close()

    def oauth2(self, client_id="app-1", tenant="contoso.onmicrosoft.com", credential=None, endpoint=None):
        credential = credential or f"client_secret_file: {self.secret_file}"
        endpoint = endpoint or self.endpoint.url(tenant)
        return (f"{{ tenant: {tenant}, client_id: {client_id}, {credential}, token_endpoint: \"{endpoint}\", "
                f"ca_file: {self.certs}/ca.pem }}")

    def start(self, upstreams, routes=None):
        """upstreams: name -> the oauth2 mapping; each gets mail for NAME.test."""
        routes = routes or "".join(f"  - {{ to: {name}.test, via: {name} }}\n" for name in upstreams)
        ups = "".join(f"""  {name}:
    host: {SMTP_HOST}
    port: 2525
    security: none
    auth: {{ username: scanner@contoso.com, allow_plaintext: true, oauth2: {o} }}
""" for name, o in upstreams.items())
        self.gw = Gateway(f"""routes:
{routes}upstreams:
{ups}delivery: {{ connection_reuse: 0s }}
queue: {{ dir: {{spool}}, retry: [1h] }}
""")
        self.gw.start()

    def send(self, to, subject="scan"):
        r = self.gw.swaks("--from", "printer@site.example", "--to", to, "--header", f"Subject: {subject}")
        self.assertEqual(r.returncode, 0, r.stdout)
        return queued_id(r.stdout)

    def line(self, qid, rcpt, status, timeout=30):
        return self.gw.wait_log(rf"smtp\[\d+\]: {qid}: to=<{re.escape(rcpt)}>, .*status={status} ", timeout=timeout)

    def tokens_offered(self):
        """The bearer tokens of every AUTH XOAUTH2, in order."""
        out = []
        for session in list(self.smtp.sessions):
            for c in session:
                if c.startswith("AUTH XOAUTH2 "):
                    decoded = base64.b64decode(c.split(" ")[2]).decode()
                    self.assertTrue(decoded.startswith("user=scanner@contoso.com\x01auth=Bearer "), decoded)
                    out.append(decoded.split("auth=Bearer ")[1].rstrip("\x01"))
        return out

    def assert_no_secret_logged(self):
        log = "\n".join(self.gw.log_lines())
        self.assertNotIn(SECRET, log)
        for token in self.endpoint.issued:
            self.assertNotIn(token, log)
            self.assertNotIn(token.split(".")[1], log)

    # --- the token's life ------------------------------------------------------------------------
    def test_first_fetch_reuse_and_refresh_before_expiry(self):
        self.endpoint.lifetime = 10  # fetched again ahead of time once 5 s (half its life) are left
        self.endpoint.apps["app-1"] = App(secret=SECRET)
        self.start({"exo": self.oauth2()})
        started = time.monotonic()
        q1 = self.send("a@exo.test")
        self.line(q1, "a@exo.test", "sent")
        self.gw.wait_log(r"smtp\[\d+\]: OAuth 2\.0 token for client app-1 from https://localhost:\d+/contoso\."
                         r"onmicrosoft\.com/oauth2/v2\.0/token, expires in 10 s")
        form = self.endpoint.fetches()[0]
        self.assertEqual((form["grant_type"], form["client_id"], form["client_secret"], form["scope"]),
                         ("client_credentials", "app-1", SECRET, "https://outlook.office365.com/.default"))
        q2 = self.send("b@exo.test")
        self.line(q2, "b@exo.test", "sent")
        self.assertEqual(len(self.endpoint.fetches()), 1)  # the token in memory is used again
        first = self.tokens_offered()
        self.assertEqual(len(first), 2)
        self.assertEqual(first[0], first[1])
        # Into the second half of its life: the message goes with the token in memory, and the
        # next one is fetched meanwhile.
        time.sleep(max(0, 6 - (time.monotonic() - started)))
        q3 = self.send("c@exo.test")
        self.line(q3, "c@exo.test", "sent")
        wait_for(lambda: len(self.endpoint.fetches()) == 2, timeout=5, what="the token fetched ahead of time")
        self.assertEqual(self.tokens_offered()[2], first[0])
        q4 = self.send("d@exo.test")
        self.line(q4, "d@exo.test", "sent")
        fourth = self.tokens_offered()[3]
        self.assertNotEqual(fourth, first[0])
        self.assertTrue(self.endpoint.valid(fourth))
        self.assertEqual(len(self.endpoint.fetches()), 2)
        self.assertEqual(len(self.smtp.messages), 4)
        self.assertFalse([l for l in self.gw.log_lines() if "status=deferred" in l])
        self.assert_no_secret_logged()

    def test_fetched_again_after_535(self):
        self.endpoint.apps["app-1"] = App(secret=SECRET)
        self.start({"exo": self.oauth2()})
        q1 = self.send("a@exo.test")
        self.line(q1, "a@exo.test", "sent")
        # Revoked on the server's side, though not expired: Exchange answers 535 5.7.3.
        self.endpoint.revoke(self.tokens_offered()[0])
        q2 = self.send("b@exo.test")
        self.line(q2, "b@exo.test", "sent")
        offered = self.tokens_offered()
        self.assertEqual(len(offered), 3)  # the revoked one twice (two messages), then a new one
        self.assertEqual(offered[1], offered[0])
        self.assertTrue(self.endpoint.valid(offered[2]))
        self.assertEqual(len(self.endpoint.fetches()), 2)
        # One connection for the second message: the refused token (535 5.7.3), then the new one.
        auths = [[c for c in s if c.startswith("AUTH XOAUTH2 ")] for s in self.smtp.sessions]
        self.assertEqual([len(a) for a in auths if a], [1, 2])
        self.assertFalse([l for l in self.gw.log_lines() if "status=deferred" in l])

    def test_client_assertion_signed_with_the_certificate(self):
        self.endpoint.apps["app-cert"] = App(certificate=os.path.join(self.certs, "client.pem"))
        credential = f"certificate_file: {self.certs}/client.pem, key_file: {self.certs}/client.key"
        self.start({"exo": self.oauth2("app-cert", credential=credential)})
        q = self.send("a@exo.test")
        self.line(q, "a@exo.test", "sent")
        form = self.endpoint.fetches()[0]
        self.assertNotIn("client_secret", form)
        self.assertEqual(form["client_assertion_type"], "urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
        self.assertEqual(len(self.smtp.messages), 1)

    # --- what goes wrong, named with its fix -------------------------------------------------------
    def test_endpoint_errors_are_named_in_the_deferral_queue_list_and_probe(self):
        ep = self.endpoint
        ep.apps["app-1"] = App(secret=SECRET)
        ep.apps["expired"] = App(secret=SECRET, secret_expired=True)
        ep.apps["no-grant"] = App(secret=SECRET, grant_allowed=False)
        ep.apps["no-role"] = App(secret=SECRET, roles=())
        ep.apps["graph"] = App(secret=SECRET, audience="https://graph.microsoft.com")
        ep.apps["other-cert"] = App(certificate=os.path.join(self.certs, "localhost.pem"))
        client_cert = f"certificate_file: {self.certs}/client.pem, key_file: {self.certs}/client.key"
        cases = {
            "wrongsecret": (self.oauth2(credential=f"client_secret_file: {self.wrong_secret_file}"),
                            "AADSTS7000215 invalid_client (Invalid client secret provided); the client secret is "
                            "wrong: auth.oauth2.client_secret_file must hold the secret's Value"),
            "expired": (self.oauth2("expired"), "AADSTS7000222 invalid_client (The provided client secret keys for "
                        "app 'expired' are expired); the client secret has expired: create a new one"),
            "unknownapp": (self.oauth2("nobody"), "AADSTS700016 unauthorized_client (Application with identifier "
                           "'nobody' was not found in the directory 'contoso.onmicrosoft.com'); application nobody "
                           "is not known in tenant contoso.onmicrosoft.com"),
            "unknowntenant": (self.oauth2(tenant="nowhere.onmicrosoft.com"), "AADSTS90002 invalid_request (Tenant "
                              "'nowhere.onmicrosoft.com' not found); tenant nowhere.onmicrosoft.com does not exist"),
            "nogrant": (self.oauth2("no-grant"), "unauthorized_client (The client does not have permission to use "
                        "this grant type); the application may not use the client credentials grant"),
            "norole": (self.oauth2("no-role"), "carries no SMTP.SendAsApp role (roles: none): give the application "
                       "the Office 365 Exchange Online application permission SMTP.SendAsApp and grant admin consent"),
            "graph": (self.oauth2("graph"), "is for https://graph.microsoft.com, not https://outlook.office365.com: "
                      "set auth.oauth2.scope to https://outlook.office365.com/.default"),
            "othercert": (self.oauth2("other-cert", credential=client_cert), "AADSTS700027 invalid_client (Client "
                          "assertion failed signature validation); the client assertion was not accepted: upload "
                          "the certificate"),
            "down": (self.oauth2(endpoint="https://localhost:1/contoso.onmicrosoft.com/oauth2/v2.0/token"),
                     "OAuth 2.0 token request failed: cannot reach https://localhost:1/contoso.onmicrosoft.com/"
                     "oauth2/v2.0/token: Failed to connect to localhost port 1"),
        }
        self.start({name: o for name, (o, _) in cases.items()})
        ids = {name: self.send(f"x@{name}.test") for name in cases}
        for name, (_, reason) in cases.items():
            line = self.line(ids[name], f"x@{name}.test", "deferred")
            self.assertIn(f"dsn=4.7.0, status=deferred (SASL authentication to {SMTP_HOST}[{SMTP_HOST}] not "
                          "attempted: ", line)
            self.assertIn(reason, line)
        queued = {m["recipients"][0]["address"]: m["recipients"][0]["reason"] for m in self.gw.queue()}
        for name, (_, reason) in cases.items():
            self.assertIn(reason, queued[f"x@{name}.test"])
        self.assertEqual(self.tokens_offered(), [])  # no AUTH was tried with a token that cannot work
        self.assertEqual(self.smtp.messages, [])
        # probe names it too, after the token step.
        r = subprocess.run([BIN, "probe", "expired", "-c", self.gw.config_path], capture_output=True, text=True,
                           timeout=60)
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertIn(f"token: {ep.url()} (tenant contoso.onmicrosoft.com, client expired, client secret, scope "
                      "https://outlook.office365.com/.default)\n", r.stdout)
        self.assertIn("verdict: NOT compatible: SASL authentication not attempted: OAuth 2.0 token request refused "
                      f"by {ep.url()}: AADSTS7000222", r.stdout)
        self.assertNotIn(SECRET, r.stdout + r.stderr)
        self.assert_no_secret_logged()

    def test_probe_shows_the_token_step_never_the_token(self):
        self.endpoint.apps["app-1"] = App(secret=SECRET)
        self.start({"exo": self.oauth2()})
        r = subprocess.run([BIN, "probe", "exo", "-c", self.gw.config_path], capture_output=True, text=True,
                           timeout=60)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        out = r.stdout
        self.assertIn("mechanism: XOAUTH2 (the first of the default order that the server offers)\n", out)
        self.assertRegex(out, r"token: fetched, expires \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC \(in 3[56]\d\d s\), "
                              r"audience https://outlook\.office365\.com, tenant ID "
                              r"11111111-2222-3333-4444-555555555555, roles SMTP\.SendAsApp\n")
        self.assertIn("AUTH: 235 2.7.0 Authentication successful\n", out)
        self.assertTrue(out.endswith("verdict: compatible\n"), out)
        [token] = self.endpoint.issued
        self.assertNotIn(token.split(".")[1], out + r.stderr)
        self.assertNotIn(SECRET, out + r.stderr)

    def test_an_endpoint_that_floods_is_cut_off(self):
        self.endpoint.apps["app-1"] = App(secret=SECRET)
        self.endpoint.flood = True  # a megabyte of answer
        self.start({"exo": self.oauth2()})
        q = self.send("a@exo.test")
        line = self.line(q, "a@exo.test", "deferred")
        self.assertIn(f"OAuth 2.0 token request failed: the answer from {self.endpoint.url()} is longer than 64 KiB",
                      line)
        self.assertEqual(self.tokens_offered(), [])

    def test_endpoint_that_never_answers_does_not_hold_other_mail(self):
        # A listener that accepts and says nothing: the fetch waits off the loop, other upstreams
        # deliver meanwhile, and the gateway stops at once.
        import socket
        silent = socket.socket()
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        self.addCleanup(silent.close)
        port = silent.getsockname()[1]
        self.endpoint.apps["app-1"] = App(secret=SECRET)
        self.start({"stuck": self.oauth2(endpoint=f"https://localhost:{port}/contoso.onmicrosoft.com/oauth2/v2.0/token"),
                    "exo": self.oauth2()})
        self.send("a@stuck.test")
        started = time.monotonic()
        q = self.send("b@exo.test")
        self.line(q, "b@exo.test", "sent")
        self.assertLess(time.monotonic() - started, 5)
        started = time.monotonic()
        self.assertEqual(self.gw.stop(), 0)
        self.assertLess(time.monotonic() - started, 5)


class OAuth2ConfigTest(unittest.TestCase):
    def check(self, oauth2):
        d = tempfile.mkdtemp(prefix="smtpgw-oauth2-config-")
        path = os.path.join(d, "smtpgw.yaml")
        with open(path, "w") as f:
            f.write(f"""user: root
hostname: gw.example.com
listen: [{{ address: "127.0.0.1:0" }}]
routes: [{{ to: "*", via: exo }}]
upstreams:
  exo:
    host: smtp.office365.com
    port: 587
    security: mandatory
    verify: true
    auth:
      username: scanner@contoso.com
      oauth2: {oauth2}
queue: {{ dir: {d}/spool }}
""")
        return subprocess.run([BIN, "check-config", "-c", path], capture_output=True, text=True, timeout=30)

    def test_mistakes_are_reported(self):
        r = self.check("{ tenant: contoso.onmicrosoft.com }")
        self.assertEqual(r.returncode, 1)
        self.assertIn("upstreams.exo.auth.oauth2.client_id: missing; the application (client) ID", r.stdout)
        self.assertIn("upstreams.exo.auth.oauth2: give client_secret_file, or certificate_file with key_file",
                      r.stdout)
        r = self.check("{ client_id: a, client_secret_file: /nonexistent/secret, token_endpoint: http://x/token }")
        self.assertEqual(r.returncode, 1)
        self.assertIn("upstreams.exo.auth.oauth2.token_endpoint: must be an https:// URL", r.stdout)
        self.assertIn("upstreams.exo.auth.oauth2.client_secret_file: ", r.stdout)
        r = self.check("{ tenant: 'a/b', client_id: a, certificate_file: /etc/hostname }")
        self.assertEqual(r.returncode, 1)
        self.assertIn("\"a/b\" is not a tenant ID or domain name", r.stdout)
        self.assertIn("certificate_file and key_file go together", r.stdout)

    def test_a_key_of_another_certificate_is_reported(self):
        d = tempfile.mkdtemp(prefix="smtpgw-oauth2-certs-")
        subprocess.run([os.path.join(HERE, "../tools/make-certs"), d, "localhost"], check=True)
        r = self.check(f"{{ tenant: contoso.onmicrosoft.com, client_id: a, certificate_file: {d}/client.pem, "
                       f"key_file: {d}/localhost.key }}")
        self.assertEqual(r.returncode, 1, r.stdout)
        self.assertIn(f"upstreams.exo.auth.oauth2: the key {d}/localhost.key does not belong to the certificate "
                      f"{d}/client.pem", r.stdout)
        r = self.check(f"{{ tenant: contoso.onmicrosoft.com, client_id: a, certificate_file: {d}/client.pem, "
                       f"key_file: {d}/client.key }}")
        self.assertEqual(r.returncode, 0, r.stdout)


if __name__ == "__main__":
    unittest.main()
