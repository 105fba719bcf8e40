"""The packaged systemd unit, reproduced without systemd: a mount and network namespace in which
the whole file system is read-only except the unit's ReadWritePaths and RuntimeDirectory, the
directories the package's postinst creates exist with its owners and modes, and the smtpgw account
exists (an /etc/passwd and /etc/group of the namespace's own). The host is left as it was.

In it, a configuration is started as the unit starts it: ExecStartPre, then ExecStart as root in
the background. The gateway's log is read, one message is sent to its first listener with swaks,
and SIGTERM stops it. Needs root (mount and network namespaces)."""
import os
import re
import shlex
import subprocess
import tempfile

CONFIG = "/etc/smtpgw/smtpgw.yaml"


def unit_setting(unit, key):
    return [m.group(1) for m in re.finditer(rf"(?m)^{key}=(.*)$", unit)]


def free_id(path):
    with open(path) as f:
        used = {int(line.split(":")[2]) for line in f if line.count(":") >= 3}
    return next(i for i in range(999, 100, -1) if i not in used)


class UnitSandbox:
    def __init__(self, root):
        """`root`: the package unpacked with dpkg-deb -x."""
        self.root = root
        with open(os.path.join(root, "usr/lib/systemd/system/smtpgw.service")) as f:
            self.unit = f.read()
        self.writable = " ".join(unit_setting(self.unit, "ReadWritePaths")).split()
        self.writable += ["/run/" + d for d in " ".join(unit_setting(self.unit, "RuntimeDirectory")).split()]
        self.binary = os.path.join(root, "usr/sbin/smtpgw")

    def command(self, key, config):
        [line] = unit_setting(self.unit, key)
        return line.replace("/usr/sbin/smtpgw", self.binary).replace(CONFIG, config)

    def setup_script(self, postinst, scratch):
        uid, gid = free_id("/etc/passwd"), free_id("/etc/group")
        with open("/etc/passwd") as f, open(os.path.join(scratch, "passwd"), "w") as out:
            out.write(f.read() + f"smtpgw:x:{uid}:{gid}:smtpgw relay:/var/spool/smtpgw:/usr/sbin/nologin\n")
        with open("/etc/group") as f, open(os.path.join(scratch, "group"), "w") as out:
            out.write(f.read() + f"smtpgw:x:{gid}:\n")
        parents = sorted({os.path.dirname(p) for p in self.writable})
        lines = ["set -eu", "ip link set lo up"]
        lines += [f"mount --bind {shlex.quote(os.path.join(scratch, n))} /etc/{n}" for n in ("passwd", "group")]
        # Scratch file systems where the unit's paths go, so that nothing is created on the host.
        lines += [f"mount -t tmpfs -o mode=0755 tmpfs {p}" for p in parents]
        lines += ["install -d -m 0755 " + " ".join(self.writable)]
        for d in " ".join(unit_setting(self.unit, "RuntimeDirectory")).split():
            mode = (unit_setting(self.unit, "RuntimeDirectoryMode") or ["0755"])[0]
            lines.append(f"chmod {mode} /run/{d}")
        # What the package's postinst creates, with its owners and modes.
        lines += [l.strip() for l in postinst.splitlines() if l.strip().startswith("install -d ")]
        # ProtectSystem=strict: everything read-only but ReadWritePaths (and RuntimeDirectory).
        lines += [f"mount --bind {p} {p}" for p in self.writable]
        lines += [f"mount -o remount,bind,ro {p}" for p in ["/"] + parents]
        return "\n".join(lines), uid

    def start(self, config, port, log_file, postinst):
        """Runs `config` as the unit would; returns (uid of smtpgw, {section: text})."""
        with tempfile.TemporaryDirectory(prefix="smtpgw-unit-") as scratch:
            setup, uid = self.setup_script(postinst, scratch)
            log = shlex.quote(log_file)
            script = f"""{setup}
echo "== check-config"
{self.command("ExecStartPre", config)} 2>&1 || {{ echo "== check-config exit $?"; exit 0; }}
set +e
{self.command("ExecStart", config)} 2>&1 &
pid=$!
for i in $(seq 100); do
    grep -q ' started, ' {log} 2>/dev/null && break
    kill -0 $pid 2>/dev/null || break
    sleep 0.1
done
echo "== status"; grep '^Uid:' /proc/$pid/status || true
echo "== swaks"
swaks --server 127.0.0.1 --port {port} --from app@example.com --to someone@example.org --timeout 10 2>&1 || true
kill -TERM $pid; wait $pid; echo "== serve exit $?"
echo "== log"; cat {log} 2>&1 || true
echo "== spool"; ls -ln /var/spool/smtpgw/queue 2>&1 || true
"""
            r = subprocess.run(["unshare", "--mount", "--net", "--propagation", "private", "sh", "-c", script],
                               capture_output=True, text=True, timeout=120)
        sections, name = {}, "setup"
        for line in (r.stdout + r.stderr).splitlines(keepends=True):
            m = re.match(r"^== (.*)$", line)
            if m:
                name = m.group(1)
                sections[name] = ""
            else:
                sections[name] = sections.get(name, "") + line
        return uid, sections
