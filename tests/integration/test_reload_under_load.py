"""Scenario: SIGHUP reloads under load (issue 5, "a reload under load drops none of them").

Goal: eight clients stream a verified byte stream through a kind = "tcp" service while the
config is edited and reloaded several times: a service is added (its port starts answering),
another is removed (its port stops accepting while its live client keeps streaming), the
service's old backend address changes (new clients reach the new address, live clients keep
theirs). No streaming client is dropped or sees a corrupted byte. Finally `tunnelctl reload`
with an invalid config exits non-zero with the `PATH:LINE:COL: message` error, and the daemon
keeps serving with the config it had.
"""

from __future__ import annotations

import os
import random
import re
import socket
import threading
import time
import unittest

from integration_support import SERVICE, IntegrationTest, daemon_config, service_config, tb

CHUNK = 4096


class Streamer:
    """One client connection through `port` to an echo backend that greets with a one-byte
    prefix: sends seeded pseudo-random chunks and checks every echoed byte, until stopped."""

    def __init__(self, port: int, seed: int, timeout: float = 15.0):
        self.port = port
        self.rng = random.Random(seed)
        self.timeout = timeout
        self.prefix: bytes | None = None
        self.bytes_verified = 0
        self.error: str | None = None
        self._stop = threading.Event()
        self.sock = socket.create_connection((tb.HOST, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.prefix = self._exact(1)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _exact(self, n: int) -> bytes:
        data = bytearray()
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                raise ConnectionError(f"EOF after {len(data)} of {n} bytes")
            data += chunk
        return bytes(data)

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                payload = self.rng.randbytes(CHUNK)
                self.sock.sendall(payload)
                echoed = self._exact(CHUNK)
                if echoed != payload:
                    first = next(i for i in range(CHUNK) if echoed[i] != payload[i])
                    self.error = (f"corrupted echo at stream offset "
                                  f"{self.bytes_verified + first}")
                    return
                self.bytes_verified += CHUNK
                time.sleep(0.002)  # continuous, but leaves the slow machine some room
        except (OSError, ConnectionError) as e:
            self.error = f"{type(e).__name__}: {e} after {self.bytes_verified} bytes"

    def alive(self) -> bool:
        return self._thread.is_alive() and self.error is None

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(self.timeout + 5)
        try:
            self.sock.close()
        except OSError:
            pass

    def describe(self) -> str:
        return (f"port={self.port} prefix={self.prefix!r} verified={self.bytes_verified} "
                f"error={self.error}")


def greeting(port: int, timeout: float = 5.0) -> bytes:
    """Connects to `port`, reads the backend's one-byte prefix, checks one echo round trip."""
    with socket.create_connection((tb.HOST, port), timeout=timeout) as s:
        s.settimeout(timeout)
        prefix = s.recv(1)
        if not prefix:
            raise ConnectionError("closed before the greeting")
        s.sendall(b"ping")
        echoed = b""
        while len(echoed) < 4:
            chunk = s.recv(4 - len(echoed))
            if not chunk:
                raise ConnectionError("closed before the echo")
            echoed += chunk
        if echoed != b"ping":
            raise AssertionError(f"bad echo {echoed!r}")
        return prefix


def refuses(port: int) -> bool:
    try:
        with socket.create_connection((tb.HOST, port), timeout=2):
            return False
    except ConnectionRefusedError:
        return True


def listens_on(pid: int, port: int) -> bool:
    """Whether process `pid` has a TCP socket listening on `port` (its socket inodes against
    /proc/net/tcp): unlike a connect, not fooled by another program that took the port meanwhile
    or by a connect that picks `port` as its own source port and reaches itself."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue  # closed meanwhile
        if target.startswith("socket:["):
            inodes.add(target[len("socket:["):-1])
    with open("/proc/net/tcp") as table:
        next(table)
        for line in table:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port and inode in inodes:
                return True
    return False


class ReloadUnderLoadTest(IntegrationTest):
    def setUp(self):
        super().setUp()
        self.echo_a = self.bed.echo_server(prefix=b"A")
        self.echo_b = self.bed.echo_server(prefix=b"B")  # svc's new side (never active here)
        self.echo_c = self.bed.echo_server(prefix=b"C")  # svc's old side after the edit
        self.port = tb.free_port()        # svc
        self.gone_port = tb.free_port()   # service "gone", removed by a reload
        self.added_port = tb.free_port()  # service "added", added by a reload
        self.streamers: list[Streamer] = []
        self.addCleanup(self.stop_streamers)

    def stop_streamers(self) -> None:
        for s in self.streamers:
            s.stop()

    def config(self, svc_old: int, gone: bool, added: bool) -> dict:
        services = {SERVICE: service_config(self.port, svc_old, self.echo_b.port)}
        if gone:
            services["gone"] = service_config(self.gone_port, self.echo_a.port, self.echo_b.port)
        if added:
            services["added"] = service_config(self.added_port, self.echo_c.port,
                                               self.echo_b.port)
        return daemon_config(services)

    def assert_streaming(self, what: str, streamers: list[Streamer] | None = None,
                         progress_timeout: float = 10) -> None:
        """Every streamer is alive and verifies more bytes than it had when called."""
        streamers = self.streamers if streamers is None else streamers
        before = [s.bytes_verified for s in streamers]
        deadline = time.monotonic() + progress_timeout
        while time.monotonic() < deadline:
            dead = [s.describe() for s in streamers if not s.alive()]
            self.assertEqual(dead, [], f"{what}: streaming clients dropped or corrupted")
            if all(s.bytes_verified > b for s, b in zip(streamers, before)):
                return
            time.sleep(0.05)
        stuck = [s.describe() for s, b in zip(streamers, before) if s.bytes_verified <= b]
        self.fail(f"{what}: streaming clients made no progress in {progress_timeout}s: {stuck}")

    def reload_with_sighup(self, daemon: tb.Tunneld, config: dict) -> None:
        reloads = daemon.log_text().count("config reloaded from")
        daemon.write_config(config)
        daemon.sighup()
        self.eventually(lambda: daemon.log_text().count("config reloaded from") > reloads, 15,
                        "tunneld logs 'config reloaded from' after SIGHUP")

    def test_reloads_while_eight_clients_stream_drop_none(self):
        daemon = self.bed.tunneld(self.config(self.echo_a.port, gone=True, added=False))
        self.assertEqual(greeting(self.port), b"A")
        self.assertTrue(listens_on(daemon.pid, self.port), "tunneld listens on svc's port")
        self.assertFalse(listens_on(daemon.pid, self.added_port),
                         "tunneld listens on the not-yet-added service's port")

        for i in range(8):
            self.streamers.append(Streamer(self.port, seed=i))
        gone_client = Streamer(self.gone_port, seed=100)
        self.streamers.append(gone_client)
        self.assertEqual({s.prefix for s in self.streamers}, {b"A"})
        self.assert_streaming("before any reload")

        # 1: a service is added; its port starts answering
        self.reload_with_sighup(daemon, self.config(self.echo_a.port, gone=True, added=True))
        self.eventually(lambda: greeting(self.added_port) == b"C", 10,
                        "the added service's port answers")
        self.assert_streaming("after adding a service")

        # 2: a service is removed; its port stops accepting, its live client keeps working
        self.reload_with_sighup(daemon, self.config(self.echo_a.port, gone=False, added=True))
        self.eventually(lambda: refuses(self.gone_port), 10,
                        "the removed service's port refuses connections")
        self.assert_streaming("after removing a service (its live client included)")
        names = [s["name"] for s in daemon.status_json()["services"]]
        self.assertNotIn("gone", names)
        self.assertIn("added", names)

        # 3: svc's old backend address changes; new clients reach it, live ones keep theirs
        accepted_a = self.echo_a.accepted
        self.reload_with_sighup(daemon, self.config(self.echo_c.port, gone=False, added=True))
        self.eventually(lambda: greeting(self.port) == b"C", 10,
                        "new clients reach the changed old address")
        self.assert_streaming("after changing the backend address")
        self.assertEqual(self.echo_a.accepted, accepted_a,
                         "a live client was reconnected to the old address")
        self.assertEqual(daemon.service(SERVICE)["old"]["address"],
                         f"{tb.HOST}:{self.echo_c.port}")

        # 4: the same config again, twice in a row (repeated SIGHUPs are harmless)
        daemon.sighup()
        daemon.sighup()
        time.sleep(0.5)
        self.assert_streaming("after repeated SIGHUPs")

        # 5: an invalid config through `tunnelctl reload`: non-zero, PATH:LINE:COL, old config kept
        good_text = daemon.config_text
        bad_text = good_text.replace(f'listen = "{tb.HOST}:{self.added_port}"',
                                     f'listen = "{tb.HOST}:{self.added_port}"\n'
                                     'no_such_key = "x"', 1)
        self.assertNotEqual(bad_text, good_text)
        bad_line = bad_text.splitlines().index('no_such_key = "x"') + 1
        daemon.write_config(bad_text)
        result = daemon.ctl("reload", timeout=30)
        output = result.stdout + result.stderr
        self.assertNotEqual(result.returncode, 0, output)
        self.assertRegex(output, re.escape(f"{daemon.config_path}:{bad_line}:") + r"\d+: ",
                         f"no PATH:LINE:COL error for line {bad_line}:\n{output}")
        self.assertIn("no_such_key", output)
        self.assertTrue(daemon.running(), "tunneld died on an invalid reload")
        self.assertEqual(greeting(self.port), b"C")
        self.assertEqual(greeting(self.added_port), b"C")
        self.assertTrue(refuses(self.gone_port))
        self.assert_streaming("after an invalid reload")

        # the same invalid file by SIGHUP: still serving the old config
        daemon.sighup()
        time.sleep(1.0)
        self.assertTrue(daemon.running(), "tunneld died on an invalid SIGHUP")
        self.assertEqual(greeting(self.port), b"C")
        self.assert_streaming("after an invalid SIGHUP")

        # a good config again reloads fine through tunnelctl
        daemon.write_config(good_text)
        self.ctl_ok(daemon, "reload")
        self.assertEqual(greeting(self.port), b"C")
        self.assert_streaming("at the end")

        total = sum(s.bytes_verified for s in self.streamers)
        self.stop_streamers()
        errors = [s.describe() for s in self.streamers if s.error]
        self.assertEqual(errors, [])
        self.assertGreater(total, 9 * CHUNK * 10, "too little streamed to mean anything")


if __name__ == "__main__":
    unittest.main()
