"""Shared pieces of the integration tests: a test case with a bed, redis pairs, configs.

Every test starts its own sealed bed (tools/tunneld_testbed.py): real redis-servers (and sshd,
postgres where needed) on loopback, a real tunneld driven through tunnelctl. The binaries come
from TUNNELD_BIN / TUNNELCTL_BIN (set by ctest) or build/default.
"""

from __future__ import annotations

import http.client
import os
import secrets
import socket
import sys
import threading
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


class Writer:
    """`threads` writers, each with its own connection through `port` (reconnecting on error),
    writing unique keys `prefix:T:N` with a unique value (`value_of(key)`); every +OK is recorded
    in `acked` as it comes. `pace` seconds between a writer's writes (0: as fast as it can)."""

    def __init__(self, port: int, prefix: str, threads: int = 8, timeout: float = 15.0,
                 pace: float = 0.0):
        self.port = port
        self.prefix = prefix
        self.timeout = timeout
        self.pace = pace
        self.token = secrets.token_hex(4)  # values differ between runs with the same prefix
        self.acked: list[str] = []
        self.errors = 0
        self.error_samples: dict[str, int] = {}
        self.max_latency = 0.0  # the longest a write waited for its reply
        self.max_gap = 0.0      # the longest a writer went without an acknowledged write
        self.attempts = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True)
                         for i in range(threads)]

    def value_of(self, key: str) -> str:
        return f"{self.token}:{key}"

    def start(self) -> "Writer":
        for t in self._threads:
            t.start()
        return self

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        alive = [t for t in self._threads if t.is_alive()]
        if alive:
            raise AssertionError(f"{len(alive)} writer threads still stuck after {timeout}s")

    def _error(self, what: str) -> None:
        with self._lock:
            self.errors += 1
            key = what[:60]
            self.error_samples[key] = self.error_samples.get(key, 0) + 1

    def _run(self, index: int) -> None:
        conn = None
        n = 0
        last_ack = time.monotonic()
        while not self._stop.is_set():
            if conn is None:
                try:
                    conn = tb.RespClient(self.port, timeout=self.timeout)
                except OSError as e:
                    self._error(f"connect: {type(e).__name__}")
                    time.sleep(0.05)
                    continue
            key = f"{self.prefix}:{index}:{n}"
            n += 1
            started = time.monotonic()
            try:
                reply = conn.command("SET", key, self.value_of(key))
            except tb.RespError as e:
                self._error(f"reply: {e}")
                time.sleep(0.01)
                continue
            except (OSError, ConnectionError) as e:
                self._error(f"io: {type(e).__name__}")
                conn.close()
                conn = None
                continue
            finally:
                now = time.monotonic()
                with self._lock:
                    self.attempts += 1
                    self.max_latency = max(self.max_latency, now - started)
                    self.max_gap = max(self.max_gap, now - last_ack)
            if reply == "OK":
                last_ack = now
                with self._lock:
                    self.acked.append(key)
            else:
                self._error(f"unexpected reply {reply!r}")
            if self.pace:
                time.sleep(self.pace)
        if conn is not None:
            conn.close()

    def acknowledged(self) -> list[str]:
        """A copy of the keys acknowledged so far."""
        with self._lock:
            return list(self.acked)

    def summary(self) -> str:
        return (f"acked={len(self.acked)} attempts={self.attempts} errors={self.errors} "
                f"max_latency={self.max_latency * 1000:.0f}ms samples={self.error_samples}")


def missing_keys(redis: tb.Redis, keys: list[str], value_of=None) -> list[str]:
    """The keys of `keys` that `redis` does not have (or, with `value_of`, does not hold with
    the value `value_of(key)`)."""
    missing = []
    with redis.client(timeout=30) as c:
        for i in range(0, len(keys), 500):
            chunk = keys[i:i + 500]
            if value_of is None:
                if c.command("EXISTS", *chunk) != len(chunk):
                    missing += [k for k in chunk if c.command("EXISTS", k) != 1]
                continue
            values = c.command("MGET", *chunk)
            missing += [k for k, v in zip(chunk, values) if v != value_of(k)]
    return missing
