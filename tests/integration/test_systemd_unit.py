"""The systemd unit and its sysusers/tmpfiles snippets, checked with systemd's own tools.

Goal: `systemd/tunneld.service` is a valid Type=notify unit (systemd-analyze verify), its
sandbox scores an exposure of 2.0 or lower (systemd-analyze security --offline=true
--threshold=20), it keeps the settings operators rely on, and the sysusers/tmpfiles snippets
create the tunneld user and directories in a scratch root. No running systemd is needed.
"""

import os
import re
import shutil
import subprocess
import tempfile
import unittest
from pathlib import Path

SYSTEMD_DIR = Path(__file__).resolve().parents[2] / "systemd"
UNIT = SYSTEMD_DIR / "tunneld.service"
MAX_EXPOSURE = 2.0


def unit_settings(path: Path) -> dict[str, list[str]]:
    """Every `Key=value` of the unit, values in order (a key may appear more than once)."""
    settings: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, _, value = line.partition("=")
        settings.setdefault(key.strip(), []).append(value.strip())
    return settings


class SystemdUnitTest(unittest.TestCase):
    def setUp(self):
        self.scratch = Path(tempfile.mkdtemp(prefix="tunneld-unit-"))
        self.addCleanup(shutil.rmtree, self.scratch, True)

    def unit_with_existing_binary(self) -> Path:
        """The unit with ExecStart pointing at a binary that exists here (verify checks it)."""
        binary = os.environ.get("TUNNELD_BIN")
        if not binary or not Path(binary).exists():
            binary = "/bin/true"
        copy = self.scratch / "tunneld.service"
        copy.write_text(UNIT.read_text().replace("/usr/sbin/tunneld", str(Path(binary).resolve())))
        return copy

    def test_1_verify_reports_nothing(self):
        result = subprocess.run(["systemd-analyze", "verify", str(self.unit_with_existing_binary())],
                                capture_output=True, text=True, timeout=60)
        self.assertEqual(result.returncode, 0, result.stderr)
        complaints = [line for line in result.stderr.splitlines() if "tunneld.service" in line]
        self.assertEqual(complaints, [])

    def test_2_security_exposure_is_at_most_2_0(self):
        result = subprocess.run(["systemd-analyze", "security", "--offline=true", "--threshold=20", str(UNIT)],
                                capture_output=True, text=True, timeout=60)
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        match = re.search(r"Overall exposure level for tunneld\.service: ([0-9.]+)", result.stdout)
        self.assertIsNotNone(match, result.stdout)
        self.assertLessEqual(float(match.group(1)), MAX_EXPOSURE, result.stdout)

    def test_3_unit_keeps_the_operational_contract(self):
        settings = unit_settings(UNIT)
        expected = {
            "Type": "notify",
            "ExecStart": "/usr/sbin/tunneld --config /etc/tunneld/tunneld.toml",
            "ExecReload": "/bin/kill -HUP $MAINPID",
            "WatchdogSec": "30s",
            "RuntimeDirectory": "tunneld",
            "RuntimeDirectoryMode": "0750",
            "StateDirectory": "tunneld",
            "User": "tunneld",
            "Group": "tunneld",
            "LimitNOFILE": "65536",
            "Restart": "on-failure",
            "NoNewPrivileges": "yes",
            "ProtectSystem": "strict",
            "CapabilityBoundingSet": "",
            "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
        }
        for key, value in expected.items():
            self.assertIn(key, settings, key)
            self.assertEqual(settings[key][-1], value, key)
        self.assertIn("@system-service", settings["SystemCallFilter"])
        # Backends and gateways may be anywhere: an address deny list would cut them off.
        self.assertNotIn("IPAddressDeny", settings)
        # PrivateUsers= would map every peer of the control socket to nobody, breaking the
        # SO_PEERCRED check.
        self.assertNotIn("PrivateUsers", settings)

    def test_4_sysusers_and_tmpfiles_prepare_a_scratch_root(self):
        root = self.scratch / "root"
        (root / "etc").mkdir(parents=True)
        subprocess.run(["systemd-sysusers", f"--root={root}", str(SYSTEMD_DIR / "tunneld.sysusers")],
                       check=True, capture_output=True, timeout=60)
        passwd = (root / "etc/passwd").read_text()
        self.assertRegex(passwd, r"(?m)^tunneld:x:\d+:\d+:tunneld daemon:/var/lib/tunneld:")
        uid = int(re.search(r"(?m)^tunneld:x:(\d+):(\d+):", passwd).group(1))
        gid = int(re.search(r"(?m)^tunneld:x:\d+:(\d+):", passwd).group(1))

        subprocess.run(["systemd-tmpfiles", f"--root={root}", "--create", str(SYSTEMD_DIR / "tunneld.tmpfiles")],
                       check=True, capture_output=True, timeout=60)
        etc = (root / "etc/tunneld").stat()
        self.assertEqual(etc.st_mode & 0o777, 0o750)
        self.assertEqual((etc.st_uid, etc.st_gid), (0, gid))
        state = (root / "var/lib/tunneld").stat()
        self.assertEqual(state.st_mode & 0o777, 0o750)
        self.assertEqual((state.st_uid, state.st_gid), (uid, gid))


if __name__ == "__main__":
    unittest.main()
