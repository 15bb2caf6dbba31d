"""Scenario 8: the control socket checks its peers.

Goal: a peer with another uid (nobody) cannot operate tunneld. With the socket at its normal
mode 0660 the connect itself is refused; with the socket opened to everyone (chmod 0666) the
daemon's own SO_PEERCRED check must still answer `forbidden` and change nothing.
"""

import json
import os
import shutil
import subprocess
import sys
import unittest

from integration_support import SERVICE, IntegrationTest, tb

# tunnelctl words the refusal for people; the protocol reply carries code "forbidden"
REFUSAL = ("forbidden", "permission", "may not", "not allowed", "denied", "refused")

NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--"]

RAW_CLIENT = r"""
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.settimeout(10)
s.connect(sys.argv[1])
try:  # the daemon may answer and close before reading anything: EPIPE is not a failure
    s.sendall(b'{"cmd": "switch", "service": "svc", "mode": "kill"}\n')
except OSError:
    pass
data = b""
while not data.endswith(b"\n"):
    try:
        chunk = s.recv(4096)
    except OSError:
        break
    if not chunk:
        break
    data += chunk
print(data.decode().strip())
"""


class ControlSocketPeerTest(IntegrationTest):
    def setUp(self):
        super().setUp()
        old, new = self.redis_pair()
        self.daemon, self.port = self.start_tcp_service(old.port, new.port)
        os.chmod(self.daemon.dir, 0o755)  # nobody must reach the socket to be refused by it
        # nobody runs a copy beside the socket: the checkout may sit under a 0700 directory (a
        # clone into mktemp -d), and then "permission denied" would come from exec, not from the
        # control socket
        self.tunnelctl = self.daemon.dir / "tunnelctl"
        shutil.copy2(tb.tunnelctl_bin(), self.tunnelctl)
        os.chmod(self.tunnelctl, 0o755)
        reach = subprocess.run(NOBODY + ["test", "-x", str(self.tunnelctl)])
        self.assertEqual(reach.returncode, 0, f"nobody cannot run {self.tunnelctl}")

    def ctl_as_nobody(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(NOBODY + [str(self.tunnelctl), "--socket", str(self.daemon.control_socket),
                                        *args], capture_output=True, text=True, timeout=30)

    def test_8a_socket_mode_is_0660(self):
        mode = os.stat(self.daemon.control_socket).st_mode & 0o777
        self.assertEqual(mode, 0o660, oct(mode))

    def test_8b_tunnelctl_as_another_uid_is_refused(self):
        result = self.ctl_as_nobody("status")
        output = (result.stdout + result.stderr).lower()
        self.assertNotEqual(result.returncode, 0, output)
        self.assertTrue(any(word in output for word in REFUSAL), output)

    def test_8c_daemon_refuses_other_uid_even_when_socket_is_world_writable(self):
        os.chmod(self.daemon.control_socket, 0o666)
        result = self.ctl_as_nobody("switch", SERVICE, "--mode", "kill")
        output = (result.stdout + result.stderr).lower()
        self.assertNotEqual(result.returncode, 0, output)
        self.assertTrue(any(word in output for word in REFUSAL), output)

        python = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
        raw = subprocess.run(NOBODY + [python, "-c", RAW_CLIENT,
                                       str(self.daemon.control_socket)],
                             capture_output=True, text=True, timeout=30)
        self.assertTrue(raw.stdout.strip(), f"no reply line for a refused peer: {raw.stderr}")
        reply = json.loads(raw.stdout.strip().splitlines()[-1])
        self.assertIs(reply.get("ok"), False, reply)
        self.assertEqual(reply.get("code"), "forbidden", reply)

        self.assertEqual(self.daemon.service(SERVICE)["active"], "old")
        self.assertEqual(tb.whoami(self.port), "old")


if __name__ == "__main__":
    unittest.main()
