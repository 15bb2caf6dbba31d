"""The .deb: `cpack -G DEB` in the build directory, unpacked with `dpkg -x` into a scratch root.

Goal: an operator gets one package holding the daemon, tunnelctl, the systemd unit, its
sysusers/tmpfiles snippets, the example config and the runbook, at the paths systemd and Debian
expect, with maintainer scripts that are valid shell. The build directory comes from
TUNNELD_BUILD_DIR, else from TUNNELD_BIN (set by ctest: BUILD/daemon/tunneld).
"""

import os
import shutil
import subprocess
import tempfile
import unittest
from pathlib import Path

EXPECTED_FILES = [
    "usr/sbin/tunneld",
    "usr/bin/tunnelctl",
    "usr/lib/systemd/system/tunneld.service",
    "usr/lib/sysusers.d/tunneld.conf",
    "usr/lib/tmpfiles.d/tunneld.conf",
    "etc/tunneld/tunneld.toml.example",
    "usr/share/doc/tunneld/operations.md",
    "usr/share/doc/tunneld/control-protocol.md",
]


def build_dir() -> Path | None:
    if os.environ.get("TUNNELD_BUILD_DIR"):
        return Path(os.environ["TUNNELD_BUILD_DIR"])
    if os.environ.get("TUNNELD_BIN"):
        return Path(os.environ["TUNNELD_BIN"]).resolve().parents[1]
    return None


class PackageTest(unittest.TestCase):
    deb: Path
    root: Path
    scratch: Path

    @classmethod
    def setUpClass(cls):
        build = build_dir()
        if build is None or not (build / "CPackConfig.cmake").exists():
            raise unittest.SkipTest("no configured build directory (set TUNNELD_BUILD_DIR)")
        cls.scratch = Path(tempfile.mkdtemp(prefix="tunneld-deb-"))
        result = subprocess.run(["cpack", "-G", "DEB", "--config", str(build / "CPackConfig.cmake"),
                                 "-B", str(cls.scratch / "out")],
                                capture_output=True, text=True, timeout=600)
        if result.returncode != 0:
            shutil.rmtree(cls.scratch, True)
            raise AssertionError(f"cpack failed:\n{result.stdout}\n{result.stderr}")
        debs = sorted((cls.scratch / "out").glob("tunneld_*.deb"))
        if len(debs) != 1:
            shutil.rmtree(cls.scratch, True)
            raise AssertionError(f"expected one tunneld_*.deb, found {debs}")
        cls.deb = debs[0]
        cls.root = cls.scratch / "root"
        subprocess.run(["dpkg-deb", "-x", str(cls.deb), str(cls.root)], check=True, timeout=120)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.scratch, True)

    def field(self, name: str) -> str:
        return subprocess.run(["dpkg-deb", "-f", str(self.deb), name], capture_output=True, text=True,
                              check=True).stdout.strip()

    def test_1_control_fields(self):
        self.assertEqual(self.field("Package"), "tunneld")
        self.assertTrue(self.field("Maintainer"))
        self.assertTrue(self.field("Version"))
        if shutil.which("dpkg-shlibdeps"):
            # shlibdeps found the libraries the binaries link (libsystemd, prometheus-cpp's
            # core for /metrics, ...).
            depends = self.field("Depends")
            self.assertIn("libc6", depends)
            self.assertIn("libprometheus-cpp-core1.0", depends)
            self.assertNotIn("libprometheus-cpp-pull", depends, "Beast serves /metrics, not civetweb")

    def test_2_expected_files_are_unpacked(self):
        missing = [path for path in EXPECTED_FILES if not (self.root / path).is_file()]
        self.assertEqual(missing, [])
        self.assertTrue(os.access(self.root / "usr/sbin/tunneld", os.X_OK))

    def test_3_contents_list_paths_only_under_usr_and_etc(self):
        listing = subprocess.run(["dpkg-deb", "--contents", str(self.deb)], capture_output=True, text=True,
                                 check=True).stdout
        paths = [line.split()[-1].lstrip(".") for line in listing.splitlines() if line.strip()]
        for path in paths:
            self.assertTrue(path == "/" or path.startswith(("/usr/", "/etc/")), path)
        self.assertIn("/usr/lib/systemd/system/tunneld.service", paths)

    def test_4_maintainer_scripts_are_shell_and_conffiles_listed(self):
        control = self.scratch / "control"
        subprocess.run(["dpkg-deb", "-e", str(self.deb), str(control)], check=True, timeout=60)
        for script in ("postinst", "prerm", "postrm"):
            path = control / script
            self.assertTrue(path.is_file(), script)
            self.assertTrue(os.access(path, os.X_OK), script)
            subprocess.run(["sh", "-n", str(path)], check=True)
        self.assertIn("systemd-sysusers", (control / "postinst").read_text())
        self.assertEqual((control / "conffiles").read_text().split(), ["/etc/tunneld/tunneld.toml.example"])

    def test_5_unpacked_unit_passes_the_analyzer(self):
        unit = self.root / "usr/lib/systemd/system/tunneld.service"
        result = subprocess.run(["systemd-analyze", "security", "--offline=true", "--threshold=20", str(unit)],
                                capture_output=True, text=True, timeout=60)
        self.assertEqual(result.returncode, 0, result.stdout)


if __name__ == "__main__":
    unittest.main()
