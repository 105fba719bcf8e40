"""Helpers for end-to-end tests: run the real smtpgw binary on loopback and talk to it.

Each Gateway gets its own temporary directory (configuration, spool, log) and listens on a
port the kernel picks (listen address 127.0.0.1:0); the port is read from the log line the
gateway writes when it starts listening.
"""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import unittest

HOLD = ('routes: [{ to: "*", via: hold }]\n'
        'upstreams: { hold: { host: 127.0.0.1, port: 9, security: none } }\n')

BIN = os.environ.get("SMTPGW_BIN", os.path.join(os.path.dirname(__file__), "../../build/smtpgw"))


def wait_for(predicate, timeout=10.0, interval=0.02, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}")


class Gateway:
    def __init__(self, config="", listen="127.0.0.1:0", hostname="gw.test", directory=None, log_options=""):
        self.dir = directory or tempfile.mkdtemp(prefix="smtpgw-e2e-")
        self.spool = os.path.join(self.dir, "spool")
        self.log_path = os.path.join(self.dir, "smtpgw.log")
        self.config_path = os.path.join(self.dir, "smtpgw.yaml")
        self.proc = None
        self.port = None
        self.clients = []
        self.log_options = log_options  # more keys of log:, e.g. "format: json"
        self.write_config(config, listen, hostname)

    def write_config(self, extra="", listen="127.0.0.1:0", hostname="gw.test", log_level="info"):
        more = f", {self.log_options}" if self.log_options else ""
        text = f"hostname: {hostname}\nlog: {{ file: {self.log_path}, level: {log_level}{more} }}\n"
        # Top-level keys the test's text does not give (a key at the start of a line: `listen:`
        # inside `metrics:` is not the listener list).
        def given(key):
            return re.search(rf"(?m)^{key}:", extra)
        if not given("queue"):
            text += f"queue: {{ dir: {self.spool}, retry: [1h] }}\n"
        if not given("listen"):
            text += f"listen: [{{ address: \"{listen}\" }}]\n"
        if not given("user") and os.geteuid() == 0:
            text += "user: root\n"  # a configuration file started as root must say whom to run as
        if not given("routes"):
            # Unless a test says where mail goes, it goes nowhere: an upstream on a closed port, so
            # that accepted messages stay queued (deferred) and the tests never touch the real DNS.
            text += HOLD
        with open(self.config_path, "w") as f:
            f.write(text + extra.replace("{spool}", self.spool))

    def start(self, expect_failure=False, preexec_fn=None):
        lines_before = len(self.log_lines())
        if self.proc:  # a restart
            self.proc.stdout.close()
            self.proc.stderr.close()
        self.proc = subprocess.Popen([BIN, "serve", "-c", self.config_path],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=preexec_fn)
        if expect_failure:
            self.proc.wait(timeout=10)
            return self.proc
        started = wait_for(lambda: self._started(lines_before), what="the gateway to start")
        listening = re.findall(r"listening on (\S+) \(port (\d+)\)", "\n".join(started))
        self.host = listening[0][0].rsplit(":", 1)[0].strip("[]")
        self.port = int(listening[0][1])
        self.ports = [int(p) for _, p in listening]  # in the order of `listen:`
        return self.proc

    def _started(self, skip):
        if self.proc.poll() is not None:
            raise AssertionError("smtpgw exited: " + self.proc.stderr.read().decode(errors="replace"))
        lines = self.log_lines()[skip:]
        if any(" started, " in l for l in lines):
            return lines
        return None

    def stop(self, sig=signal.SIGTERM, timeout=20):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=timeout)
        return self.proc.returncode if self.proc else None

    def kill(self):
        self.proc.kill()
        self.proc.wait(timeout=10)

    def cleanup(self):
        """Stops a running gateway with SIGTERM and insists on a clean exit (status 0: no sanitizer
        report, no leak), then removes everything."""
        for c in self.clients:
            c.close()
        problem = None
        if self.proc:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    if self.proc.wait(timeout=30) != 0:
                        problem = f"smtpgw exited with {self.proc.returncode}: " + \
                            self.proc.stderr.read().decode(errors="replace")[-4000:]
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
                    problem = "smtpgw did not stop within 30 s of SIGTERM"
            self.proc.stdout.close()
            self.proc.stderr.close()
        shutil.rmtree(self.dir, ignore_errors=True)
        if problem:
            raise AssertionError(problem)

    # --- what a user looks at ---------------------------------------------------------------
    def log_lines(self):
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read().splitlines()
        except FileNotFoundError:
            return []

    def wait_log(self, pattern, timeout=10):
        rx = re.compile(pattern)
        return wait_for(lambda: next((l for l in self.log_lines() if rx.search(l)), None), timeout,
                        what=f"log line /{pattern}/")

    def run(self, *args):
        return subprocess.run([BIN, *args, "-c", self.config_path], capture_output=True, text=True, timeout=30)

    def queue(self):
        out = self.run("queue", "list", "--json")
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)

    def content(self, qid):
        """The stored content of a queued message: the start of its spool file, up to the size its
        trailer gives (the envelope follows it)."""
        with open(os.path.join(self.spool, "queue", qid), "rb") as f:
            data = f.read()
        trailer = data[-32:]
        assert trailer.startswith(b"smtpgw-content "), trailer
        return data[:int(trailer[15:31], 16)]

    def swaks(self, *args, timeout=60):
        return subprocess.run(["swaks", "--server", self.host, "--port", str(self.port), "--hide-informational", *args],
                              capture_output=True, text=True, timeout=timeout)

    def connect(self, source="127.0.0.1"):
        c = Client(self.host, self.port, source)
        self.clients.append(c)
        return c


class Client:
    """A scripted SMTP client on a raw socket: exact bytes out, replies in."""

    def __init__(self, host, port, source="127.0.0.1", timeout=15):
        self.sock = socket.create_connection((host, port), timeout=timeout, source_address=(source, 0))
        self.buf = b""

    def send(self, data):
        if isinstance(data, str):
            data = data.encode()
        self.sock.sendall(data)

    def reply(self):
        """One whole reply, all its lines, as text; '' at end of stream."""
        lines = []
        while True:
            while b"\r\n" not in self.buf:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return "".join(lines)
                self.buf += chunk
            line, self.buf = self.buf.split(b"\r\n", 1)
            text = line.decode(errors="replace")
            lines.append(text + "\r\n")
            if len(text) < 4 or text[3] == " ":
                return "".join(lines)

    def command(self, line):
        self.send(line + "\r\n")
        return self.reply()

    def closed(self):
        try:
            return self.sock.recv(1) == b""
        except ConnectionResetError:
            return True

    def close(self):
        self.sock.close()


def strip_received(content):
    """The stored message without the Received: header the gateway put in front."""
    assert content.startswith(b"Received: "), content[:80]
    lines = content.split(b"\r\n")
    i = 1
    while lines[i].startswith((b"\t", b" ")):
        i += 1
    return b"\r\n".join(lines[i:])


class GatewayTest(unittest.TestCase):
    """Starts one gateway per test with the class's CONFIG; stops and removes it afterwards."""
    CONFIG = ""

    def setUp(self):
        self.gw = Gateway(self.CONFIG)
        self.gw.start()

    def tearDown(self):
        self.gw.cleanup()

    def transaction(self, client, sender="app@example.com", rcpts=("someone@example.org",), body=None):
        self.assertTrue(client.command(f"MAIL FROM:<{sender}>").startswith("250 "))
        for r in rcpts:
            self.assertTrue(client.command(f"RCPT TO:<{r}>").startswith("250 "))
        self.assertTrue(client.command("DATA").startswith("354 "))
        client.send(body if body is not None else "Subject: t\r\n\r\nhello\r\n.\r\n")
        return client.reply()


def queued_id(reply):
    m = re.search(r"queued as ([0-9A-F]+)", reply)
    assert m, reply
    return m.group(1)
