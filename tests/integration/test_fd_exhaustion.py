"""Scenario: running out of file descriptors (issue 2: "Running out of file descriptors must not
spin the CPU or stop accepting for good").

Goal: tunneld started with a low fd limit (`prlimit --nofile=64:64`) gets more clients than its
descriptors allow. While it is exhausted it must not spin (its utime+stime over 2 s stays well
under half a core), and once the clients close, new clients are served again: the accept loop
did not stop for good, and clients left in the backlog meanwhile are taken without another
connection having to arrive. The control socket answers again too.
"""

from __future__ import annotations

import os
import socket
import time
import unittest
from pathlib import Path

from integration_support import SERVICE, IntegrationTest, daemon_config, service_config, tb

FD_LIMIT = 64
CLIENTS = 100
MAX_CPU_FRACTION = 0.25  # of one core, over the 2 s sample while exhausted


def cpu_seconds(pid: int) -> float:
    """utime + stime of `pid` (all its threads) in seconds, from /proc/PID/stat."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rfind(")") + 2:].split()
    # fields[0] is field 3 (state); utime is field 14, stime field 15
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def echo_round_trip(port: int, timeout: float = 5.0) -> bool:
    """A fresh client: the backend's greeting, then one echoed message."""
    with socket.create_connection((tb.HOST, port), timeout=timeout) as s:
        s.settimeout(timeout)
        if s.recv(1) != b"E":
            return False
        s.sendall(b"hello")
        data = b""
        while len(data) < 5:
            chunk = s.recv(5 - len(data))
            if not chunk:
                return False
            data += chunk
        return data == b"hello"


class FdExhaustionTest(IntegrationTest):
    def setUp(self):
        super().setUp()
        self.echo = self.bed.echo_server(prefix=b"E")
        self.port = tb.free_port()
        config = daemon_config({SERVICE: service_config(self.port, self.echo.port,
                                                        self.echo.port)})
        self.daemon = self.bed.tunneld(config, start=False)
        # The bed's launcher has no rlimit knob: start the same binary and config file under
        # prlimit (which execs, so the pid is tunneld's) and hand the process to the bed.
        with open(self.daemon.log, "ab") as log:
            log.write(f"=== starting tunneld with nofile={FD_LIMIT}\n".encode())
        self.daemon.process = tb.Process(
            ["prlimit", f"--nofile={FD_LIMIT}:{FD_LIMIT}", "--", str(tb.tunneld_bin()),
             "--config", str(self.daemon.config_path)], self.daemon.log)
        self.daemon.wait_ready()
        self.clients: list[socket.socket] = []
        self.addCleanup(self.close_clients)

    def close_clients(self) -> None:
        for c in self.clients:
            try:
                c.close()
            except OSError:
                pass
        self.clients = []

    def test_exhausted_descriptors_do_not_spin_and_accepting_resumes(self):
        pid = self.daemon.pid
        limits = Path(f"/proc/{pid}/limits").read_text()
        self.assertRegex(limits, rf"Max open files\s+{FD_LIMIT}\s+{FD_LIMIT}", limits)
        self.assertTrue(echo_round_trip(self.port), "not served before exhaustion")
        baseline = open_fds(pid)
        self.assertLess(baseline, FD_LIMIT - 10, f"{baseline} fds open at start")

        # A client served before exhaustion: it has its greeting before the others connect (else
        # the others' accepts may take the descriptor its backend connection needs).
        first = socket.create_connection((tb.HOST, self.port), timeout=5)
        first.settimeout(5)
        self.clients.append(first)
        self.assertEqual(first.recv(1), b"E")
        # More clients than descriptors: each served client costs tunneld two (client, backend).
        # A client accepted into the last free descriptor fails its backend connect (EMFILE) and
        # is closed, giving the descriptor back; when accepts run ahead of connects, a burst can
        # end that way with the backlog drained and tunneld below its limit. So clients keep
        # coming, as they would in production, until tunneld holds what it can.
        def connect_more(n: int) -> None:
            for _ in range(n):
                s = socket.create_connection((tb.HOST, self.port), timeout=5)
                s.settimeout(5)
                self.clients.append(s)

        connect_more(CLIENTS - 1)
        deadline = time.monotonic() + 20
        while open_fds(pid) < FD_LIMIT - 2:
            self.assertLess(time.monotonic(), deadline,
                            f"tunneld never came near its fd limit ({FD_LIMIT}): "
                            f"{open_fds(pid)} open after {len(self.clients)} clients")
            time.sleep(0.2)
            if open_fds(pid) < FD_LIMIT - 2:
                connect_more(10)
        time.sleep(1.0)  # let accepts settle into the exhausted state
        self.assertTrue(self.daemon.running(), "tunneld died when out of descriptors")
        self.eventually(lambda: "Too many open files" in self.daemon.log_text(), 10,
                        "tunneld logs the EMFILE accept failure")

        # While exhausted: no spinning.
        cpu_before, wall_before = cpu_seconds(pid), time.monotonic()
        time.sleep(2.0)
        cpu_after, wall_after = cpu_seconds(pid), time.monotonic()
        fraction = (cpu_after - cpu_before) / (wall_after - wall_before)
        print(f"\nRESULT fd exhaustion: {open_fds(pid)} fds open (limit {FD_LIMIT}), "
              f"cpu {fraction * 100:.1f}% of one core over 2 s")
        self.assertGreaterEqual(open_fds(pid), FD_LIMIT - 4, "no longer exhausted")
        self.assertLess(fraction, MAX_CPU_FRACTION,
                        f"tunneld used {fraction * 100:.0f}% of a core while out of fds")

        # The client served before exhaustion still works meanwhile.
        first.sendall(b"still")
        self.assertEqual(first.recv(5), b"still")

        # Clients that come while tunneld is exhausted wait in the backlog. Once the others close,
        # each is taken from the backlog without a further connection arriving to wake the accept
        # loop (its wait completes only on a new arrival): served, or closed if the descriptor
        # that freed first went to its accept and none was left for its backend. None waits on.
        waiting = []
        for _ in range(3):
            w = socket.create_connection((tb.HOST, self.port), timeout=5)
            w.settimeout(15)
            waiting.append(w)
        holding, self.clients = self.clients, waiting
        for c in holding:
            c.close()
        for w in waiting:
            try:
                greeting = w.recv(1)
            except TimeoutError:
                self.fail("a client that waited in the backlog was never accepted after "
                          "descriptors freed up (no new connection came to wake the accept loop)")
            except ConnectionResetError:
                greeting = b""
            self.assertIn(greeting, (b"E", b""))

        # Clients close: accepting resumes, new clients are served, control socket answers.
        self.close_clients()
        self.eventually(lambda: echo_round_trip(self.port, timeout=2), 20,
                        "a new client served after the clients closed")
        self.eventually(lambda: open_fds(pid) <= baseline + 4, 20,
                        "tunneld's descriptors back near the baseline")
        for _ in range(10):
            self.assertTrue(echo_round_trip(self.port), "a new client not served")
        self.ctl_ok(self.daemon, "status")
        self.assertTrue(self.daemon.running())
        cpu_idle = cpu_seconds(pid)
        time.sleep(1.0)
        self.assertLess(cpu_seconds(pid) - cpu_idle, MAX_CPU_FRACTION,
                        "tunneld keeps burning CPU after recovering")


if __name__ == "__main__":
    unittest.main()
