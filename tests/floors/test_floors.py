"""The floors of the tree hold in the build (CMakeLists.txt): a folder may include only itself and
the folders below it, and nothing goes around that with a relative path.

1. A copy of the source tree is configured and built as users build it; a file of gateway/common/
   that includes a header of gateway/smtpd/ does not compile, and neither does one that reaches it
   with "..". The same file unchanged compiles.
2. Every pair of folders, with the compiler flags the build gives a file of the lower one: a header
   of a higher folder is not found, a header of an allowed folder compiles.
"""
import json
import os
import shlex
import shutil
import subprocess
import tempfile
import unittest
from concurrent.futures import ThreadPoolExecutor

SOURCE = os.environ.get("SMTPGW_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "../.."))
BUILD = os.environ.get("SMTPGW_BUILD_DIR", os.path.join(SOURCE, "build"))

LEAVES = ["conf", "tls", "auth"]
GATEWAY = ["gateway/common", "gateway/dns", "gateway/smtp", "gateway/queue", "gateway/smtpd", "gateway/ops"]
# What each folder may include besides itself: the architecture, as docs/architecture.md draws it.
ALLOWED = {
    "conf": [],
    "tls": [],
    "auth": [],
    "gateway/common": ["conf"],
    "gateway/dns": ["conf", "gateway/common"],
    "gateway/smtp": ["conf", "tls", "auth", "gateway/common", "gateway/dns"],
    "gateway/queue": ["conf", "tls", "auth", "gateway/common", "gateway/dns", "gateway/smtp"],
    "gateway/smtpd": ["conf", "tls", "auth", "gateway/common", "gateway/dns", "gateway/smtp", "gateway/queue"],
    "gateway/ops": LEAVES + GATEWAY,
}
MISSING = "No such file or directory"


def first_header(folder):
    return folder + "/" + sorted(n for n in os.listdir(os.path.join(SOURCE, folder)) if n.endswith(".hpp"))[0]


class FloorsInARealBuild(unittest.TestCase):
    """The project's own CMakeLists.txt on a scratch copy of the tree."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="smtpgw-floors-")
        cls.src = os.path.join(cls.tmp, "src")
        os.makedirs(cls.src)
        for entry in ["CMakeLists.txt", "cmake", "conf", "tls", "auth", "gateway", "docs", "README.md"]:
            copy = shutil.copytree if os.path.isdir(os.path.join(SOURCE, entry)) else shutil.copy
            copy(os.path.join(SOURCE, entry), os.path.join(cls.src, entry))
        cls.build = os.path.join(cls.tmp, "build")
        r = subprocess.run(["cmake", "-S", cls.src, "-B", cls.build, "-G", "Ninja", "-DSMTPGW_TESTS=OFF"],
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stdout + r.stderr
        cls.file = os.path.join(cls.src, "gateway/common/json.cpp")
        with open(cls.file) as f:
            cls.original = f.read()

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def build_json_object(self, include=None):
        text = self.original if include is None else f'#include "{include}"\n' + self.original
        with open(self.file, "w") as f:
            f.write(text)
        return subprocess.run(["cmake", "--build", self.build, "--target",
                               "CMakeFiles/smtpgw_common.dir/gateway/common/json.cpp.o"],
                              capture_output=True, text=True, timeout=300)

    def test_the_file_as_it_is_builds(self):
        r = self.build_json_object()
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)

    def test_common_including_smtpd_does_not_build(self):
        r = self.build_json_object("gateway/smtpd/server.hpp")
        self.assertNotEqual(r.returncode, 0)
        self.assertIn(f"gateway/smtpd/server.hpp: {MISSING}", r.stdout + r.stderr)

    def test_a_relative_path_around_the_floors_does_not_build(self):
        for include in ["../smtpd/server.hpp", "gateway/common/../smtpd/server.hpp"]:
            with self.subTest(include=include):
                r = self.build_json_object(include)
                self.assertNotEqual(r.returncode, 0)
                self.assertIn(f'gateway/common/json.cpp: #include "{include}": name the header from the top of '
                              "the tree", r.stdout + r.stderr)


class EveryPairOfFloors(unittest.TestCase):
    """The flags of a real file of each folder, from the build's compile_commands.json."""

    @classmethod
    def setUpClass(cls):
        with open(os.path.join(BUILD, "compile_commands.json")) as f:
            cls.commands = json.load(f)
        cls.tmp = tempfile.mkdtemp(prefix="smtpgw-floors-")

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def flags_of(self, folder):
        prefix = os.path.realpath(os.path.join(SOURCE, folder)) + "/"
        for entry in self.commands:
            if os.path.realpath(entry["file"]).startswith(prefix):
                args = shlex.split(entry["command"])
                out, skip = [], False
                for a in args[1:]:
                    if skip:
                        skip = False
                    elif a in ("-o", "-MF", "-MT", "-MQ"):
                        skip = True
                    elif a not in ("-c", "-MD", "-MMD") and os.path.realpath(a) != os.path.realpath(entry["file"]):
                        out.append(a)
                return args[0], entry["directory"], out
        self.fail(f"no file of {folder} in compile_commands.json")

    def compile(self, folder, header):
        compiler, directory, flags = self.flags_of(folder)
        probe = os.path.join(self.tmp, folder.replace("/", "_") + "--" + header.replace("/", "_") + ".cpp")
        with open(probe, "w") as f:
            f.write(f'#include "{header}"\n')
        r = subprocess.run([compiler, *flags, "-fsyntax-only", probe], cwd=directory, capture_output=True,
                           text=True, timeout=300)
        return r.returncode, r.stderr

    def test_each_folder_sees_only_itself_and_the_folders_below_it(self):
        folders = LEAVES + GATEWAY
        cases = [(f, g) for f in folders for g in folders]
        with ThreadPoolExecutor(max_workers=2) as pool:
            results = list(pool.map(lambda c: self.compile(c[0], first_header(c[1])), cases))
        for (folder, other), (status, errors) in zip(cases, results):
            header = first_header(other)
            with self.subTest(folder=folder, includes=header):
                if other == folder or other in ALLOWED[folder]:
                    self.assertEqual(status, 0, errors)
                else:
                    self.assertNotEqual(status, 0)
                    self.assertIn(f"{header}: {MISSING}", errors)


if __name__ == "__main__":
    unittest.main()
