"""Real peers for end-to-end tests: Postfix instances (as MX hosts and as upstream relays) and
dnsmasq serving MX and A records, all on loopback addresses.

Each Postfix instance is a complete Postfix with its own configuration, queue and log
directories, listening on ADDRESS:PORT and delivering every accepted message into one Maildir,
where Return-Path: shows the envelope sender and Delivered-To: the recipient. Recipient
addresses starting with reject550@ or defer450@ get those replies at RCPT (check_recipient_access).
"""
import email
import email.policy
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time

from gwtest import wait_for

ACCESS = ("/^reject550@/ 550 5.1.1 User unknown\n"
          "/^defer450@/ 450 4.2.0 Mailbox busy, try again later\n")

MASTER_CF = """\
{listen} inet n - n - - smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000    0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
virtual   unix  -       n       n       -       -       virtual
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
"""


def port_open(address, port):
    try:
        with socket.create_connection((address, port), timeout=0.5):
            return True
    except OSError:
        return False


class Postfix:
    """One Postfix instance: `postfix -c DIR start` with everything under DIR."""

    def __init__(self, name, address, port, extra_main_cf="", services=()):
        """services: extra smtpd listeners, as (ADDRESS:PORT, "-o name=value ..."), for example
        TLS from the first byte or AUTH only after STARTTLS."""
        self.name, self.address, self.port = name, address, port
        self.services = list(services)
        self.dir = tempfile.mkdtemp(prefix=f"smtpgw-postfix-{name}-")
        os.chmod(self.dir, 0o755)
        self.conf = os.path.join(self.dir, "conf")
        self.maildir = os.path.join(self.dir, "mail", "maildir")
        for d in ("conf", "queue", "data", "mail"):
            os.makedirs(os.path.join(self.dir, d), exist_ok=True)
        shutil.chown(os.path.join(self.dir, "data"), "postfix")
        shutil.chown(os.path.join(self.dir, "mail"), "nobody")
        self.log_path = os.path.join(self.dir, "maillog")
        self.access_path = os.path.join(self.conf, "access")
        self.set_access(ACCESS)
        with open(os.path.join(self.conf, "domains"), "w") as f:
            f.write("/./ OK\n")  # every domain is delivered into the Maildir
        with open(os.path.join(self.conf, "master.cf"), "w") as f:
            f.write(MASTER_CF.format(listen=f"{address}:{port}"))
            for listen, options in self.services:
                f.write(f"{listen} inet n - n - - smtpd {options}\n")
        self.write_main_cf(extra_main_cf)

    def write_main_cf(self, extra=""):
        nobody = subprocess.run(["id", "-u", "nobody"], capture_output=True, text=True).stdout.strip()
        nogroup = subprocess.run(["id", "-g", "nobody"], capture_output=True, text=True).stdout.strip()
        with open(os.path.join(self.conf, "main.cf"), "w") as f:
            f.write(f"""compatibility_level = 3.6
queue_directory = {self.dir}/queue
data_directory = {self.dir}/data
mail_owner = postfix
myhostname = {self.name}
mydomain = {self.name}
smtpd_banner = $myhostname ESMTP Postfix
inet_interfaces = loopback-only
inet_protocols = ipv4
mydestination =
local_recipient_maps =
alias_maps =
mynetworks = 127.0.0.0/8
virtual_mailbox_domains = regexp:{self.conf}/domains
virtual_mailbox_base = {self.dir}/mail
virtual_mailbox_maps = static:maildir/
virtual_uid_maps = static:{nobody}
virtual_gid_maps = static:{nogroup}
maillog_file = {self.log_path}
maillog_file_prefixes = {self.dir}
smtpd_recipient_restrictions = check_recipient_access regexp:{self.access_path}, permit_mynetworks, reject
message_size_limit = 52428800
virtual_mailbox_limit = 0
{extra}""")

    def sasl(self, users, mechanisms="PLAIN LOGIN CRAM-MD5 DIGEST-MD5 SCRAM-SHA-1 SCRAM-SHA-256", name="smtpd"):
        """Cyrus SASL for smtpd with a sasldb of `users` ({name: password}); `name` is the
        smtpd_sasl_path a service selects. Debian's Postfix reads CONFIG_DIR/sasl/NAME.conf."""
        os.makedirs(os.path.join(self.conf, "sasl"), exist_ok=True)
        db = os.path.join(self.conf, f"sasldb-{name}")
        with open(os.path.join(self.conf, "sasl", name + ".conf"), "w") as f:
            f.write(f"pwcheck_method: auxprop\nauxprop_plugin: sasldb\nsasldb_path: {db}\nmech_list: {mechanisms}\n")
        for user, password in users.items():
            subprocess.run(["saslpasswd2", "-f", db, "-u", self.name, "-p", "-c", user], input=password.encode(),
                           check=True)
        os.chmod(db, 0o644)

    def set_access(self, rules):
        with open(self.access_path, "w") as f:
            f.write(rules)

    def postfix(self, *args):
        return subprocess.run(["postfix", "-c", self.conf, *args], capture_output=True, text=True, timeout=60)

    def start(self):
        r = self.postfix("start")
        if r.returncode != 0:
            raise AssertionError(f"postfix {self.name} did not start: {r.stderr}\n{self.log()}")
        wait_for(lambda: port_open(self.address, self.port), timeout=20, what=f"postfix {self.name} to listen")
        return self

    def stop(self):
        self.postfix("stop")
        wait_for(lambda: not port_open(self.address, self.port), timeout=20, what=f"postfix {self.name} to stop")

    def reload(self):
        self.postfix("reload")
        time.sleep(0.5)

    def cleanup(self):
        if port_open(self.address, self.port):
            self.postfix("stop")
        shutil.rmtree(self.dir, ignore_errors=True)

    def log(self):
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def messages(self):
        """Every message delivered so far, parsed, oldest first."""
        files = sorted(glob.glob(os.path.join(self.maildir, "new", "*")) +
                       glob.glob(os.path.join(self.maildir, "cur", "*")), key=os.path.getmtime)
        out = []
        for path in files:
            with open(path, "rb") as f:
                raw = f.read()
            msg = email.message_from_bytes(raw, policy=email.policy.compat32)
            msg.raw = raw
            out.append(msg)
        return out

    def wait_messages(self, n, timeout=30):
        return wait_for(lambda: (lambda m: m if len(m) >= n else None)(self.messages()), timeout=timeout,
                        what=f"{n} message(s) in the Maildir of {self.name}")

    def wait_subject(self, subject, timeout=30):
        """The first delivered message with this Subject, once it is in the Maildir (Postfix
        delivers a moment after it answered 250)."""
        return wait_for(lambda: next((m for m in self.messages() if m["Subject"] == subject), None), timeout=timeout,
                        what=f"'{subject}' in the Maildir of {self.name}")

    def delivered_to(self, address):
        return [m for m in self.messages() if m["Delivered-To"] == address]


class Dnsmasq:
    """dnsmasq on 127.0.0.1:PORT, authoritative for .test: unknown names get NXDOMAIN.

    records: a list of dnsmasq options, e.g. "--mx-host=example.test,mx1.example.test,10",
    "--host-record=mx1.example.test,127.0.0.11".
    """

    def __init__(self, records, port=None, address="127.0.0.1"):
        """address: another loopback address, with port 53, serves programs that read
        /etc/resolv.conf (see resolv_conf)."""
        self.fixed_port = port
        self.address = address
        self.port = port or free_udp_port()
        self.records = records
        self.proc = None

    def start(self, attempts=5):
        # dnsmasq listens on UDP and TCP; a port free for UDP may be taken for TCP by a connection
        # another test has open, and then dnsmasq exits: try another port.
        for attempt in range(attempts):
            self.proc = subprocess.Popen(
                ["dnsmasq", "--keep-in-foreground", f"--port={self.port}", f"--listen-address={self.address}",
                 "--bind-interfaces", "--no-resolv", "--no-hosts", "--no-negcache", "--local=/test/",
                 "--pid-file=", *self.records],
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            try:
                wait_for(self._answers, timeout=10, what="dnsmasq to answer")
                return self
            except AssertionError:
                if self.fixed_port or attempt == attempts - 1:
                    raise
                if self.proc.poll() is None:
                    self.proc.kill()
                    self.proc.wait()
                self.proc.stderr.close()
                self.port = free_udp_port()
        return self

    def _answers(self):
        if self.proc.poll() is not None:
            raise AssertionError(f"dnsmasq exited with {self.proc.returncode} on port {self.port}: " +
                                 self.proc.stderr.read().decode())
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.settimeout(0.2)
        query = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x04test\x00\x00\x06\x00\x01"
        try:
            s.sendto(query, (self.address, self.port))
            s.recvfrom(512)
            return True
        except OSError:
            return False
        finally:
            s.close()

    def run_with_resolver(self, argv, **kw):
        """Runs a program that resolves through /etc/resolv.conf (a DKIM verifier) with this
        server as its only name server: in a mount namespace of its own, where a resolv.conf
        naming this address is mounted over the system's. Needs port 53."""
        assert self.port == 53, "programs reading resolv.conf need port 53"
        fd, resolv = tempfile.mkstemp(prefix="smtpgw-resolv-")
        with os.fdopen(fd, "w") as f:
            f.write(f"nameserver {self.address}\noptions attempts:1 timeout:2\n")
        os.chmod(resolv, 0o644)
        try:
            return subprocess.run(["unshare", "--mount", "sh", "-c",
                                   'mount --bind "$0" /etc/resolv.conf && exec "$@"', resolv, *argv], **kw)
        finally:
            os.unlink(resolv)

    def cleanup(self):
        if self.proc:
            self.proc.terminate()
            self.proc.wait(timeout=10)
            self.proc.stderr.close()


def free_udp_port():
    """A port free on 127.0.0.1 for both UDP and TCP (dnsmasq takes both)."""
    while True:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            t.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue
        finally:
            t.close()
            s.close()


def free_tcp_port(address="127.0.0.1"):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind((address, 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Slapd:
    """OpenLDAP's slapd on 127.0.0.1:PORT with an mdb database for dc=example,dc=test, people
    under ou=people (uid, userPassword), and an admin that may search them."""

    SUFFIX = "dc=example,dc=test"
    ADMIN, ADMIN_PASSWORD = "cn=admin,dc=example,dc=test", "directory-admin"

    def __init__(self, people):
        self.dir = tempfile.mkdtemp(prefix="smtpgw-slapd-")
        self.port = free_tcp_port()
        self.people = people  # uid -> password
        self.proc = None

    def start(self):
        os.makedirs(os.path.join(self.dir, "data"))
        conf = os.path.join(self.dir, "slapd.conf")
        with open(conf, "w") as f:
            f.write(f"""include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
modulepath /usr/lib/ldap
moduleload back_mdb
pidfile {self.dir}/slapd.pid
database mdb
maxsize 10485760
suffix "{self.SUFFIX}"
rootdn "{self.ADMIN}"
rootpw {self.ADMIN_PASSWORD}
directory {self.dir}/data
""")
        # -d keeps slapd in the foreground, so the test owns the process.
        self.proc = subprocess.Popen(["slapd", "-f", conf, "-h", f"ldap://127.0.0.1:{self.port}/", "-d", "0"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        wait_for(lambda: port_open("127.0.0.1", self.port), timeout=15, what="slapd to listen")
        entries = [f"dn: {self.SUFFIX}\nobjectClass: dcObject\nobjectClass: organization\no: Example\ndc: example\n",
                   f"dn: ou=people,{self.SUFFIX}\nobjectClass: organizationalUnit\nou: people\n"]
        for uid, password in self.people.items():
            entries.append(f"dn: uid={uid},ou=people,{self.SUFFIX}\nobjectClass: inetOrgPerson\nuid: {uid}\n"
                           f"cn: {uid}\nsn: {uid}\nuserPassword: {password}\n")
        r = subprocess.run(["ldapadd", "-x", "-H", f"ldap://127.0.0.1:{self.port}/", "-D", self.ADMIN, "-w",
                            self.ADMIN_PASSWORD], input="\n".join(entries), capture_output=True, text=True,
                           timeout=30)
        assert r.returncode == 0, r.stderr
        return self

    def cleanup(self):
        if self.proc:
            self.proc.terminate()
            self.proc.wait(timeout=10)
        shutil.rmtree(self.dir, ignore_errors=True)


class Saslauthd:
    """Cyrus's saslauthd with its LDAP backend against `slapd`: it finds a user by uid and checks
    the password by binding as that user. The socket is DIR/mux."""

    def __init__(self, slapd):
        self.slapd = slapd
        self.dir = tempfile.mkdtemp(prefix="smtpgw-saslauthd-")
        self.socket = os.path.join(self.dir, "mux")
        self.proc = None

    def start(self):
        conf = os.path.join(self.dir, "saslauthd.conf")
        with open(conf, "w") as f:
            f.write(f"""ldap_servers: ldap://127.0.0.1:{self.slapd.port}/
ldap_search_base: ou=people,{self.slapd.SUFFIX}
ldap_filter: (uid=%u)
ldap_bind_dn: {self.slapd.ADMIN}
ldap_password: {self.slapd.ADMIN_PASSWORD}
""")
        # -d: in the foreground; -m: the directory of the socket "mux"; -n 1: one process. A
        # session of its own: when it stops, saslauthd signals its whole process group.
        self.proc = subprocess.Popen(["saslauthd", "-a", "ldap", "-O", conf, "-m", self.dir, "-d", "-n", "1"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        wait_for(lambda: os.path.exists(self.socket), timeout=10, what="saslauthd's socket")
        return self

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)

    def cleanup(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class Haproxy:
    """HAProxy (Debian's haproxy) in TCP mode, in the foreground, with its own configuration and
    an admin socket for `show stat`. `backend` is the text of the backend section."""

    def __init__(self, bind, backend):
        self.dir = tempfile.mkdtemp(prefix="smtpgw-haproxy-")
        self.socket = os.path.join(self.dir, "admin.sock")
        self.conf = os.path.join(self.dir, "haproxy.cfg")
        with open(self.conf, "w") as f:
            f.write(f"""global
    stats socket {self.socket} mode 600 level admin
defaults
    mode tcp
    timeout connect 2s
    timeout client 60s
    timeout server 60s
    retries 3
    option redispatch
frontend smtp
    bind {bind}
    default_backend gateways
backend gateways
{backend}
""")
        self.proc = None

    def start(self):
        check = subprocess.run(["haproxy", "-c", "-f", self.conf], capture_output=True, text=True)
        if check.returncode != 0:
            raise AssertionError("haproxy configuration: " + check.stdout + check.stderr)
        self.proc = subprocess.Popen(["haproxy", "-db", "-f", self.conf], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)
        wait_for(lambda: os.path.exists(self.socket), timeout=10, what="haproxy's admin socket")
        return self

    def command(self, line):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(5)
        s.connect(self.socket)
        s.sendall(line.encode() + b"\n")
        out = b""
        while chunk := s.recv(65536):
            out += chunk
        s.close()
        return out.decode()

    def servers(self):
        """{server name: status} of the backend, e.g. {"gw1": "UP", "gw2": "DOWN"}."""
        lines = self.command("show stat").splitlines()
        header = lines[0].lstrip("# ").split(",")
        out = {}
        for line in lines[1:]:
            row = dict(zip(header, line.split(",")))
            if row.get("pxname") == "gateways" and row.get("svname") not in ("BACKEND", "FRONTEND", None):
                out[row["svname"]] = row["status"]
        return out

    def cleanup(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
        if self.proc:
            self.proc.stderr.close()
        shutil.rmtree(self.dir, ignore_errors=True)
