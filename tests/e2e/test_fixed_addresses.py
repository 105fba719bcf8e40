"""The suite runs two test files at a time (ctest -j2), so an address and port written into one
file (a gateway's listener, a Postfix, a scripted server) must not be written into another: the
two would race for the same socket, and whichever came second would fail now and then.

Every "127.A.B.C:PORT", ("127.A.B.C", PORT) and "host: 127.A.B.C, port: PORT" in the e2e files is
collected, also where the address is a constant (SMTP_HOST = "127.0.0.42") given its port where
it is used. Port 0 (the kernel picks), port 9 (discard: the placeholder upstream of held routes,
never connected to) and addresses without a port (client sources, DNS data) are not listeners.
Ports that a file computes at run time are not seen here; the helpers pick free ports themselves."""
import collections
import glob
import os
import re
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
ADDRESS = r"(127(?:\.\d{1,3}){3})"
PATTERNS = [re.compile(r"\b" + ADDRESS + r":(\d+)"),                          # "127.0.0.61:2587"
            re.compile(r"[\"']" + ADDRESS + r"[\"']\s*,\s*(\d+)"),             # ("127.0.0.74", 2525)
            re.compile(r"\bhost:\s*" + ADDRESS + r"\s*,\s*port:\s*(\d+)")]  # YAML: host: 127.0.3.2, port: 2525


def fixed_addresses(text):
    found = set()
    for pattern in PATTERNS:
        for m in pattern.finditer(text):
            found.add((m.group(1), int(m.group(2))))
    # An address kept in a constant (SMTP_HOST = "127.0.0.42") and given its port where it is used.
    for m in re.finditer(r"^([A-Z_][A-Z0-9_]*)\s*=\s*[\"']" + ADDRESS + r"[\"']", text, re.M):
        name, address = m.group(1), m.group(2)
        for use in (r"\b" + name + r"\s*,\s*(\d+)",                     # ScriptedSmtp(SMTP_HOST, 2525)
                    r"\{" + name + r"\}:(\d+)",                        # f"{RELAY}:2525"
                    r"host:\s*\{" + name + r"\}\s*,\s*port:\s*(\d+)"):  # host: {RELAY}, port: 2525
            for u in re.finditer(use, text):
                found.add((address, int(u.group(1))))
    return {f"{a}:{p}" for a, p in found if p not in (0, 9)}


def shared(texts):
    """{address: [files]} for every address written into more than one of `texts` ({file: text})."""
    users = collections.defaultdict(list)
    for name, text in sorted(texts.items()):
        for address in fixed_addresses(text):
            users[address].append(name)
    return {a: names for a, names in users.items() if len(names) > 1}


class FixedAddressesTest(unittest.TestCase):
    def test_no_address_is_written_into_two_files(self):
        texts = {}
        for path in glob.glob(os.path.join(HERE, "*.py")):
            if os.path.basename(path) != os.path.basename(__file__):
                with open(path) as f:
                    texts[os.path.basename(path)] = f.read()
        self.assertGreater(len(texts), 20)
        # The scan sees the forms the files use: a sample of each must be found.
        every = set().union(*(fixed_addresses(t) for t in texts.values()))
        self.assertIn("127.0.0.61:2587", every)  # a Postfix listener in master.cf
        self.assertIn("127.0.0.74:2525", every)  # a tuple constant
        self.assertIn("127.0.3.3:2525", every)  # an upstream in YAML
        self.assertIn("127.0.0.77:2525", every)  # a constant: Postfix("relay.console.test", RELAY, 2525)
        self.assertEqual(shared(texts), {}, "use an address no other e2e file uses")

    def test_a_collision_is_found(self):
        found = shared({
            "a.py": 'listen: [{ address: "127.0.0.61:2525" }]\nsource = "127.0.0.9"\n',
            "b.py": 'Postfix("relay.example.test", "127.0.0.61", 2525)\nPEER = ("127.0.0.9", 0)\n',
            "c.py": "UPSTREAM = ('127.0.0.62', 2525)  # 127.0.0.61 as DNS data only\n",
            "d.py": "upstreams: { up: { host: 127.0.0.62, port: 2526 } }\n",
            "e.py": "upstreams: { up: { host: 127.0.0.62, port: 2526, security: none } }\n",
            "f.py": 'SMTP_HOST = "127.0.0.63"\nsmtp = ScriptedSmtp(SMTP_HOST, 2525)\n',
            "g.py": 'RELAY = "127.0.0.63"\nupstreams: {{ relay: {{ host: {RELAY}, port: 2525 }} }}\n',
            "h.py": 'SOURCE = "127.0.0.63"\nc = connect(source=SOURCE)\n',
        })
        self.assertEqual(found, {"127.0.0.61:2525": ["a.py", "b.py"], "127.0.0.62:2526": ["d.py", "e.py"],
                                 "127.0.0.63:2525": ["f.py", "g.py"]})


if __name__ == "__main__":
    unittest.main()
