"""A local OAuth 2.0 token endpoint in the manner of the Microsoft identity platform, for the
client credentials flow: POST /TENANT/oauth2/v2.0/token over HTTPS.

It checks what Entra ID checks: the tenant, the application (client ID), its client secret, or
its client assertion (an RS256 JWT whose x5t names a registered certificate, signed by that
certificate's key, for this endpoint as audience, not expired). It issues short-lived JWT access
tokens (audience and roles as configured per application) and answers errors with Entra ID's
JSON and AADSTS codes. `valid(token)` tells a scripted SMTP server whether a token is one it
issued and has not expired.
"""
import base64
import hashlib
import http.server
import json
import ssl
import threading
import time
import urllib.parse

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding

EXCHANGE = "https://outlook.office365.com"


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(text):
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def aad_error(status, error, code, text):
    return status, {"error": error,
                    "error_description": f"AADSTS{code}: {text}\r\nTrace ID: 0000\r\nTimestamp: 2026-12-02 00:00:00Z",
                    "error_codes": [code], "timestamp": "2026-12-02 00:00:00Z", "trace_id": "0000"}


class App:
    """An app registration: a secret and/or a certificate, and what its tokens say."""

    def __init__(self, secret=None, certificate=None, roles=("SMTP.SendAsApp",), audience=EXCHANGE,
                 secret_expired=False, grant_allowed=True):
        self.secret = secret
        self.certificate = certificate  # PEM path
        self.roles = list(roles)
        self.audience = audience
        self.secret_expired = secret_expired
        self.grant_allowed = grant_allowed


class TokenEndpoint:
    def __init__(self, certfile, keyfile, address="127.0.0.1", port=0, lifetime=3600):
        self.tenants = {"contoso.onmicrosoft.com": "11111111-2222-3333-4444-555555555555"}
        self.apps = {}  # client_id -> App
        self.lifetime = lifetime
        self.flood = False  # answer with far more than any token endpoint sends
        self.requests = []  # (tenant, form) per request
        self.issued = {}  # token -> expiry (time.time())
        self.lock = threading.Lock()
        endpoint = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers.get("Content-Length", 0))
                form = dict(urllib.parse.parse_qsl(self.rfile.read(length).decode()))
                status, body = endpoint.answer(self.path, form)
                data = json.dumps(body).encode()
                if endpoint.flood:
                    data = b'{"access_token":"' + b"x" * (1 << 20) + b'"}' 
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer((address, port), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(certfile, keyfile)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, tenant="contoso.onmicrosoft.com"):
        return f"https://localhost:{self.port}/{tenant}/oauth2/v2.0/token"

    def close(self):
        self.server.shutdown()
        self.server.server_close()

    def valid(self, token):
        with self.lock:
            expiry = self.issued.get(token)
        return expiry is not None and time.time() < expiry

    def revoke(self, token):
        with self.lock:
            self.issued.pop(token, None)

    def fetches(self, client_id=None):
        with self.lock:
            return [f for _, f in self.requests if client_id is None or f.get("client_id") == client_id]

    def answer(self, path, form):
        parts = path.split("/")
        tenant = parts[1] if len(parts) == 5 and parts[2:] == ["oauth2", "v2.0", "token"] else None
        with self.lock:
            self.requests.append((tenant, form))
        if tenant not in self.tenants:
            return aad_error(400, "invalid_request", 90002, f"Tenant '{tenant}' not found. Check to make sure you "
                             "have the correct tenant ID and are signing into the correct cloud.")
        if form.get("grant_type") != "client_credentials":
            return aad_error(400, "unsupported_grant_type", 70003, "The app requested an unsupported grant type.")
        client_id = form.get("client_id", "")
        app = self.apps.get(client_id)
        if app is None:
            return aad_error(400, "unauthorized_client", 700016, f"Application with identifier '{client_id}' was "
                             f"not found in the directory '{tenant}'. This can happen if the application has not "
                             "been installed by the administrator of the tenant.")
        if "client_assertion" in form:
            problem = self.check_assertion(app, client_id, tenant, form)
            if problem:
                return aad_error(401, "invalid_client", 700027, f"Client assertion failed signature validation. "
                                 f"({problem})")
        elif "client_secret" in form:
            if app.secret_expired:
                return aad_error(401, "invalid_client", 7000222, f"The provided client secret keys for app "
                                 f"'{client_id}' are expired. Visit the Azure portal to create new keys for your app.")
            if form["client_secret"] != app.secret:
                return aad_error(401, "invalid_client", 7000215, "Invalid client secret provided. Ensure the secret "
                                 "being sent in the request is the client secret value, not the client secret ID.")
        else:
            return aad_error(401, "invalid_client", 7000218, "The request body must contain the following "
                             "parameter: 'client_assertion' or 'client_secret'.")
        if not app.grant_allowed:
            return 400, {"error": "unauthorized_client",
                         "error_description": "The client does not have permission to use this grant type."}
        if form.get("scope") != EXCHANGE + "/.default":
            return aad_error(400, "invalid_scope", 1002012, f"The provided value for scope {form.get('scope')} is "
                             "not valid.")
        with self.lock:
            n = len(self.issued) + 1
            expiry = int(time.time()) + self.lifetime
            claims = {"aud": app.audience, "iss": f"https://sts.windows.net/{self.tenants[tenant]}/",
                      "tid": self.tenants[tenant], "appid": client_id, "roles": app.roles, "exp": expiry}
            token = ".".join([b64url(b'{"typ":"JWT","alg":"RS256"}'), b64url(json.dumps(claims).encode()),
                              b64url(f"signature-{n}".encode())])
            self.issued[token] = expiry
        return 200, {"token_type": "Bearer", "expires_in": self.lifetime, "ext_expires_in": self.lifetime,
                     "access_token": token}

    def check_assertion(self, app, client_id, tenant, form):
        if form.get("client_assertion_type") != "urn:ietf:params:oauth:client-assertion-type:jwt-bearer":
            return "wrong client_assertion_type"
        if not app.certificate:
            return "no certificate registered"
        try:
            header_b64, payload_b64, signature_b64 = form["client_assertion"].split(".")
            header = json.loads(b64url_decode(header_b64))
            claims = json.loads(b64url_decode(payload_b64))
        except ValueError:
            return "not a JWT"
        with open(app.certificate, "rb") as f:
            cert = x509.load_pem_x509_certificate(f.read())
        thumbprint = b64url(hashlib.sha1(cert.public_bytes(serialization.Encoding.DER)).digest())
        if header.get("alg") != "RS256" or header.get("x5t") != thumbprint:
            return f"x5t {header.get('x5t')} is not the registered certificate {thumbprint}"
        try:
            cert.public_key().verify(b64url_decode(signature_b64), f"{header_b64}.{payload_b64}".encode(),
                                     padding.PKCS1v15(), hashes.SHA256())
        except Exception:
            return "signature does not verify"
        now = time.time()
        if claims.get("aud") != self.url(tenant) or claims.get("iss") != client_id or claims.get("sub") != client_id:
            return f"aud/iss/sub wrong: {claims}"
        if not claims.get("jti") or not claims.get("exp", 0) > now or claims.get("nbf", now + 1) > now + 5:
            return f"times or jti wrong: {claims}"
        return None
