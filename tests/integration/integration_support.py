"""Shared pieces of the integration tests: a test case with a bed, redis pairs, configs.

Every test starts its own sealed bed (tools/tunneld_testbed.py): real redis-servers (and sshd,
postgres where needed) on loopback, a real tunneld driven through tunnelctl. The binaries come
from TUNNELD_BIN / TUNNELCTL_BIN (set by ctest) or build/default.
"""

from __future__ import annotations

import http.client
import os
import socket
import sys
import time
import unittest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))

import tunneld_testbed as tb  # noqa: E402

SERVICE = "svc"


def service_config(listen_port: int, old, new, kind: str = "tcp", **extra) -> dict:
    """A [services.svc] table; `old`/`new` are ports (direct) or backend strings/dicts."""
    def backend(value):
        return f"{tb.HOST}:{value}" if isinstance(value, int) else value
    table = {"kind": kind, "listen": f"{tb.HOST}:{listen_port}", "old": backend(old),
             "new": backend(new)}
    table.update(extra)
    return table


def daemon_config(services: dict, tunnels: dict | None = None, **daemon) -> dict:
    settings = {"log_level": "debug", "shutdown_timeout": "5s"}
    settings.update(daemon)
    config = {"daemon": settings}
    if tunnels:
        config["tunnels"] = tunnels
    config["services"] = services
    return config


class IntegrationTest(unittest.TestCase):
    """A test with its own bed; on failure the tunneld log tail goes to stderr."""

    def setUp(self) -> None:
        for binary in (tb.tunneld_bin(), tb.tunnelctl_bin()):
            self.assertTrue(binary.exists(), f"{binary} not built (set TUNNELD_BIN/TUNNELCTL_BIN)")
        self.bed = tb.TestBed()
        self.addCleanup(self.bed.close)

    def tearDown(self) -> None:
        result = getattr(getattr(self, "_outcome", None), "result", None)
        problems = (getattr(result, "failures", []) or []) + (getattr(result, "errors", []) or [])
        if any(test is self for test, _ in problems):
            for piece in self.bed.pieces:
                if isinstance(piece, tb.Tunneld):
                    code = piece.process.poll() if piece.process else None
                    state = "running" if code is None else f"EXITED with {code}"
                    sys.stderr.write(f"\n--- tunneld {state}; {piece.log} (tail)\n"
                                     f"{tb.log_tail(piece.log, 60)}\n")

    # ---- pieces

    def redis_pair(self) -> tuple[tb.Redis, tb.Redis]:
        """Two independent redis-servers; `GET whoami` answers "old" or "new"."""
        old = self.bed.redis("old")
        new = self.bed.redis("new")
        old.cli("SET", "whoami", "old")
        new.cli("SET", "whoami", "new")
        return old, new

    def postgres_standby_pair(self) -> tuple[tb.Postgres, tb.Postgres, Path]:
        """A postgres primary (synchronous_commit on: an acknowledged commit is in its WAL) with
        table `cutover (id text primary key)`, its streaming standby, and a 0600 credentials file
        for tunneld's probes."""
        old = self.bed.postgres("primary", extra_conf=["synchronous_commit = on"])
        old.query("create table cutover (id text primary key)")
        new = self.bed.standby_of(old, "standby")
        credentials = self.bed.dir / "postgres.conninfo"
        credentials.write_text("user=postgres dbname=postgres\n")
        os.chmod(credentials, 0o600)
        return old, new, credentials

    def start_tcp_service(self, old_port: int, new_port: int, daemon_settings: dict | None = None,
                          **service) -> tuple[tb.Tunneld, int]:
        """tunneld with one kind = "tcp" service `svc`; returns (daemon, listen port)."""
        port = tb.free_port()
        config = daemon_config({SERVICE: service_config(port, old_port, new_port, **service)},
                               **(daemon_settings or {}))
        return self.bed.tunneld(config), port

    # ---- assertions

    def ctl_ok(self, daemon: tb.Tunneld, *args, timeout: float = 60) -> str:
        result = daemon.ctl(*args, timeout=timeout)
        self.assertEqual(result.returncode, 0,
                         f"tunnelctl {' '.join(map(str, args))} failed:\n"
                         f"{result.stdout}{result.stderr}")
        return result.stdout

    def eventually(self, predicate, timeout: float, what: str, interval: float = 0.05):
        """Polls until `predicate()` is truthy; fails the test at the deadline."""
        deadline = time.monotonic() + timeout
        last = None
        while True:
            try:
                last = predicate()
                if last:
                    return last
            except Exception as e:  # noqa: BLE001 - "not yet"
                last = e
            if time.monotonic() >= deadline:
                self.fail(f"not within {timeout}s: {what} (last: {last!r})")
            time.sleep(interval)

    def service_status(self, daemon: tb.Tunneld) -> dict:
        return daemon.service(SERVICE)

    def assert_closed_within(self, client: tb.RespClient | socket.socket, timeout: float,
                             what: str) -> None:
        sock = client.sock if isinstance(client, tb.RespClient) else client
        self.assertTrue(tb.connection_closed(sock, timeout), f"{what}: still open after {timeout}s")


def exchange(port: int, payload: bytes, timeout: float = 20) -> bytes:
    """One client: sends `payload`, half-closes, returns everything read until EOF."""
    with socket.create_connection((tb.HOST, port), timeout=timeout) as sock:
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)
        received = bytearray()
        while chunk := sock.recv(65536):
            received += chunk
        return bytes(received)


def answers(client: tb.RespClient) -> str | None:
    """`GET whoami` on an existing connection; None if it fails (closed, reset, timeout)."""
    try:
        return client.command("GET", "whoami")
    except (OSError, ConnectionError, tb.RespError):
        return None


def service_metric(daemon: tb.Tunneld, name: str, labels: str = "") -> float | None:
    """The sample `name{service="svc"LABELS}` of the daemon's /metrics (its `health_port`), or
    None when there is none; `labels` goes on after the service label (',outcome="committed"')."""
    connection = http.client.HTTPConnection(tb.HOST, daemon.health_port, timeout=10)
    try:
        connection.request("GET", "/metrics")
        text = connection.getresponse().read().decode()
    finally:
        connection.close()
    prefix = f'{name}{{service="{SERVICE}"{labels}}} '
    for line in text.splitlines():
        if line.startswith(prefix):
            return float(line[len(prefix):])
    return None


def tunnel_table(sshd: tb.Sshd, known_hosts=None) -> dict:
    """A [tunnels.X] table for the bed's sshd: short keepalive and reconnect for tests."""
    return {"address": f"{tb.HOST}:{sshd.port}", "user": sshd.user,
            "identity": str(sshd.user_key), "known_hosts": str(known_hosts or sshd.known_hosts),
            "sessions": 2, "keepalive": "1s", "keepalive_max_missed": 3,
            "connect_timeout": "5s", "reconnect_max": "2s"}


# The redis writer and its check live in the test bed, shared with tools/demo.py.
Writer = tb.RedisWriter
missing_keys = tb.missing_keys
