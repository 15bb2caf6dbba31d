"""Scenario: tunneld speaks the systemd notification protocol (Type=notify, WatchdogSec=).

Goal: with NOTIFY_SOCKET pointed at a test socket, a real tunneld sends READY=1 once it serves,
WATCHDOG=1 repeatedly when WATCHDOG_USEC is set, RELOADING=1 (with MONOTONIC_USEC) then READY=1
around a SIGHUP, and STOPPING=1 on SIGTERM.
"""

import os
import socket
import tempfile
import time
import unittest
from pathlib import Path

from integration_support import IntegrationTest


class NotifyTest(IntegrationTest):
    def setUp(self):
        super().setUp()
        directory = Path(tempfile.mkdtemp(prefix="tunneld-notify-"))
        self.socket_path = directory / "notify.sock"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(self.socket_path))
        self.addCleanup(lambda: (self.sock.close(), self.socket_path.unlink(missing_ok=True), directory.rmdir()))
        # The daemon inherits this process's environment (tools/tunneld_testbed.py).
        saved = {k: os.environ.get(k) for k in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")}
        self.addCleanup(lambda: [os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
                                 for k, v in saved.items()])
        os.environ["NOTIFY_SOCKET"] = str(self.socket_path)
        os.environ["WATCHDOG_USEC"] = "1000000"
        os.environ.pop("WATCHDOG_PID", None)
        old, new = self.redis_pair()
        self.daemon, self.port = self.start_tcp_service(old.port, new.port)

    def wait_for(self, prefix: str, timeout: float = 15.0) -> str:
        """The next datagram starting with `prefix`, skipping others (WATCHDOG=1 arrives anytime)."""
        deadline = time.monotonic() + timeout
        seen = []
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                message = self.sock.recv(4096).decode()
            except socket.timeout:
                break
            if message.startswith(prefix):
                return message
            seen.append(message)
        self.fail(f"no {prefix!r} within {timeout}s; saw {seen}")

    def test_1_ready_then_watchdog(self):
        self.wait_for("READY=1")
        self.wait_for("WATCHDOG=1", timeout=3)
        self.wait_for("WATCHDOG=1", timeout=3)

    def test_2_reload_sends_reloading_then_ready(self):
        self.wait_for("READY=1")
        self.daemon.sighup()
        message = self.wait_for("RELOADING=1")
        self.assertRegex(message, r"MONOTONIC_USEC=\d+")
        self.wait_for("READY=1")

    def test_3_sigterm_sends_stopping(self):
        self.wait_for("READY=1")
        self.daemon.sigterm(wait=False)
        self.wait_for("STOPPING=1")


if __name__ == "__main__":
    unittest.main()
