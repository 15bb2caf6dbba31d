"""Scenario 14g: a tunnel over two SSH gateways.

Goal: with `address = [A, B]` (two real sshd on loopback, one known_hosts holding both host
keys), a switched service's clients go through both gateways. When A is SIGKILLed (listener and
session processes) or, separately, SIGSTOPped (a silent gateway), tunneld marks A down within
keepalive x keepalive_max_missed and from then on every new client is served through B: a
continuous connect loop counts failed connects and the longest gap without a served client,
and prints them. `tunnels --json`, `/metrics` and `tunnelctl health` (WARNING) show A down with
its last error. When A comes back its sessions return and channels spread over both again.
A gateway with a changed host key stays down while B serves; a redis switch whose gateway A
dies just before it probes and promotes through B.
"""

import json
import signal
import socket
import threading
import time
import unittest
import urllib.request

from integration_support import (SERVICE, IntegrationTest, daemon_config, exchange, service_config,
                                 tb)

# libssh2 sends a keepalive at most every 2 s: below a 3 s bound an idle session would be
# declared dead between two keepalive replies.
KEEPALIVE_S = 1
MAX_MISSED = 3
DETECTION_BOUND_S = KEEPALIVE_S * MAX_MISSED


class ConnectLoop:
    """Clients one after another (connect, send, half-close, read the reply) in a thread."""

    def __init__(self, port: int):
        self.port = port
        self.failures: list[tuple[float, str]] = []
        self.served = 0
        self.longest_gap = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        last_served = time.monotonic()
        n = 0
        while not self._stop.is_set():
            n += 1
            payload = f"client-{n}".encode()
            started = time.monotonic()
            try:
                reply = exchange(self.port, payload, timeout=10)
                ok = reply == b"new:" + payload
                why = "" if ok else f"reply {reply[:40]!r}"
            except OSError as e:
                ok, why = False, f"{type(e).__name__}: {e}"
            now = time.monotonic()
            if ok:
                self.served += 1
                self.longest_gap = max(self.longest_gap, now - last_served)
                last_served = now
            else:
                self.failures.append((started, why))
            time.sleep(0.02)
        self.longest_gap = max(self.longest_gap, time.monotonic() - last_served)


class TunnelGatewaysTest(IntegrationTest):
    def start(self, changed_key_of_a: bool = False, redis: bool = False) -> None:
        """Gateways A and B, tunnel `gw` over both, service `svc` with new through `gw`, switched
        to new (a tcp service to echo servers), or (`redis`) not switched, its new a replica of
        old. With `changed_key_of_a`, known_hosts holds another key for A."""
        self.a = self.bed.sshd()
        self.b = self.bed.sshd()
        # One identity for the tunnel: B accepts A's user key too.
        with open(self.b.authorized_keys, "a") as keys:
            keys.write(self.a.user_key_pub + "\n")
        known_hosts = self.bed.dir / "known_hosts_two"
        if changed_key_of_a:
            other = self.bed.dir / "other_host_key"
            tb._run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], "ssh-keygen")
            other_pub = " ".join(other.with_suffix(".pub").read_text().split()[:2])
            known_hosts.write_text(f"[{tb.HOST}]:{self.a.port} {other_pub}\n"
                                   + self.b.known_hosts.read_text())
        else:
            known_hosts.write_text(self.a.known_hosts.read_text() + self.b.known_hosts.read_text())
        if redis:
            self.old = self.bed.redis("old")
            self.new = self.bed.redis("new", replicaof=self.old)
            self.old.cli("SET", "counter", "41")
            self.new.wait_caught_up(self.old)
        else:
            self.old = self.bed.echo_server(b"old:", mode="after_eof")
            self.new = self.bed.echo_server(b"new:", mode="after_eof")
        self.port = tb.free_port()
        self.health_port = tb.free_port()
        tunnel = {"address": [f"{tb.HOST}:{self.a.port}", f"{tb.HOST}:{self.b.port}"],
                  "user": self.a.user, "identity": str(self.a.user_key),
                  "known_hosts": str(known_hosts), "sessions": 2,
                  "keepalive": f"{KEEPALIVE_S}s", "keepalive_max_missed": MAX_MISSED,
                  "connect_timeout": "5s", "reconnect_max": "2s"}
        new = {"address": f"{tb.HOST}:{self.new.port}", "via": "gw"}
        extra = {}
        if redis:
            extra = {"kind": "redis", "max_lag": "1MiB", "pause_timeout": "5s",
                     "probe_interval": "250ms", "probe_timeout": "2s", "fence": "replicaof",
                     "fence_replicaof": f"{tb.HOST}:{self.new.port}"}
        config = daemon_config({SERVICE: service_config(self.port, self.old.port, new, **extra)},
                               tunnels={"gw": tunnel},
                               health_listen=f"{tb.HOST}:{self.health_port}")
        self.daemon = self.bed.tunneld(config)
        up = 2 if changed_key_of_a else 4
        self.eventually(lambda: self.tunnel()["sessions_up"] == up, 20, f"{up} sessions up")
        if not redis:
            self.ctl_ok(self.daemon, "switch", SERVICE, "--mode", "kill")

    def tunnel(self) -> dict:
        tunnels = json.loads(self.ctl_ok(self.daemon, "tunnels", "--json"))
        tunnels = tunnels.get("tunnels", tunnels)
        return next(t for t in tunnels if t["name"] == "gw")

    def gateway(self, sshd: tb.Sshd) -> dict:
        return next(g for g in self.tunnel()["gateways"] if g["address"] == f"{tb.HOST}:{sshd.port}")

    def hold_clients(self, count: int) -> list[socket.socket]:
        """Clients that stay connected (the backend answers only after their EOF)."""
        clients = []
        for _ in range(count):
            sock = socket.create_connection((tb.HOST, self.port), timeout=10)
            self.addCleanup(sock.close)
            clients.append(sock)
        self.eventually(lambda: self.tunnel()["channels"] == count, 10, f"{count} channels open")
        return clients

    def lose_gateway_a(self, fault: str) -> None:
        self.start()
        status = self.tunnel()
        self.assertEqual(status["address"], f"{tb.HOST}:{self.a.port},{tb.HOST}:{self.b.port}")
        self.assertEqual([g["state"] for g in status["gateways"]], ["up", "up"])
        for field in ("name", "sessions", "sessions_up", "channels", "reconnects", "last_error"):
            self.assertIn(field, status)
        held = self.hold_clients(8)
        self.assertEqual([g["channels"] for g in self.tunnel()["gateways"]], [4, 4],
                         "channels spread over both gateways")

        with ConnectLoop(self.port) as loop:
            time.sleep(1)
            # The fault's time is taken once the signals are sent: finding sshd's session
            # processes (a /proc scan) takes milliseconds, and a client that connected meanwhile
            # had its channel opened on A before A was lost: an existing client, not a new one.
            if fault == "SIGKILL":
                for pid in [self.a.pid] + tb._proc_descendants(self.a.pid):
                    tb._signal_quietly(pid, signal.SIGKILL)
            else:
                self.a.sigstop()
                self.addCleanup(self.a.sigcont)
            lost_at = time.monotonic()
            self.eventually(lambda: self.gateway(self.a)["state"] == "down",
                            DETECTION_BOUND_S + 2, "gateway A marked down")
            detected_at = time.monotonic()
            time.sleep(DETECTION_BOUND_S + 1)  # new clients while A is gone
        # Clients on A have been cut; those on B are still connected.
        cut = [s for s in held if tb.connection_closed(s, 0.2)]
        detection = detected_at - lost_at
        after = [f for f in loop.failures if f[0] >= detected_at]
        print(f"\n{fault} of gateway A: detected after {detection * 1000:.0f} ms "
              f"(bound {DETECTION_BOUND_S * 1000} ms); connect loop: {loop.served} served, "
              f"{len(loop.failures)} failed connects ({len(after)} after detection), "
              f"longest gap {loop.longest_gap * 1000:.0f} ms")
        for started, why in loop.failures:
            print(f"  failed {started - lost_at:+.3f}s after the fault: {why}")
        self.assertLessEqual(detection, DETECTION_BOUND_S + 1)
        self.assertEqual(after, [], "a new client failed after A was marked down")
        # A new client is one that connected after A was lost: none of them may fail. The loop
        # runs one client at a time, so at most the one in flight when A went can be cut.
        new_clients_failed = [f for f in loop.failures if f[0] >= lost_at]
        self.assertEqual(new_clients_failed, [], "no new client failed at all")
        self.assertLessEqual(len(loop.failures), 1, "only the client in flight at the fault may be cut")
        self.assertGreater(loop.served, 20)
        self.assertEqual(len(cut), 4, "exactly A's clients are cut")

        gateway_a = self.gateway(self.a)
        self.assertNotEqual(gateway_a["last_error"], "")
        self.assertEqual(self.gateway(self.b)["state"], "up")
        health = self.daemon.ctl("health")
        self.assertEqual(health.returncode, 1, health.stdout + health.stderr)
        self.assertIn(f"gateway {tb.HOST}:{self.a.port} down", health.stdout)
        metrics = urllib.request.urlopen(f"http://{tb.HOST}:{self.health_port}/metrics",
                                         timeout=5).read().decode()
        self.assertIn(f'tunneld_tunnel_gateway_up{{tunnel="gw",gateway="{tb.HOST}:{self.a.port}"}} 0',
                      metrics)
        self.assertIn(f'tunneld_tunnel_gateway_up{{tunnel="gw",gateway="{tb.HOST}:{self.b.port}"}} 1',
                      metrics)
        log = tb.log_tail(self.daemon.log, 100000)
        self.assertIn(f"gateway={tb.HOST}:{self.a.port} state=down", log)
        lost = [line for line in log.splitlines() if "reason=gateway_lost" in line]
        # The held clients sent nothing; a connect-loop client whose channel was still closing on
        # A when it died may be logged too, but only after it had its whole reply.
        self.assertEqual(len([line for line in lost if " up=0B " in line]), 4,
                         "each cut held client says why\n" + "\n".join(lost))
        for line in lost:
            if " up=0B " not in line:
                self.assertNotIn(" down=0B ", line, "a connect-loop client lost before its reply")

        # A comes back: its sessions return and new clients spread over both again.
        for sock in held:
            sock.close()
        self.eventually(lambda: self.tunnel()["channels"] == 0, 10, "held clients closed")
        if fault == "SIGKILL":
            self.a.start()
        else:
            self.a.sigcont()
        self.eventually(lambda: self.gateway(self.a)["sessions_up"] == 2
                        and self.gateway(self.a)["state"] == "up", 20, "gateway A back up")
        self.hold_clients(8)
        self.assertEqual([g["channels"] for g in self.tunnel()["gateways"]], [4, 4],
                         "channels spread over both gateways again")
        self.assertEqual(self.daemon.ctl("health").returncode, 0)

    def test_14g1_killed_gateway_costs_no_new_client(self):
        self.lose_gateway_a("SIGKILL")

    def test_14g2_silent_gateway_costs_no_new_client(self):
        self.lose_gateway_a("SIGSTOP")

    def test_14g3_changed_host_key_keeps_that_gateway_down(self):
        self.start(changed_key_of_a=True)
        for n in range(20):
            self.assertEqual(exchange(self.port, b"x%d" % n), b"new:x%d" % n)
        self.eventually(lambda: self.gateway(self.a)["failures"] >= 4, 15,
                        "A refused again on each retry")
        gateway_a = self.gateway(self.a)
        self.assertEqual(gateway_a["state"], "down")
        self.assertEqual(gateway_a["sessions_up"], 0)
        self.assertIn("CHANGED host key", gateway_a["last_error"])
        self.assertEqual(self.a.accepted_count(), 0, "no login to a gateway with a changed key")
        health = self.daemon.ctl("health")
        self.assertEqual(health.returncode, 1, health.stdout)
        self.assertIn("CHANGED host key", health.stdout)

    def test_14g4_switch_probes_go_through_the_gateway_left(self):
        """The lag probe and the promotion reach the new redis through the tunnel: with A
        killed just before the switch, they go through B and the switch succeeds."""
        self.start(redis=True)
        self.eventually(lambda: self.daemon.service(SERVICE)["lag"]["link"] == "up", 15,
                        "the lag probe sees the replica link up through the tunnel")
        for pid in [self.a.pid] + tb._proc_descendants(self.a.pid):
            tb._signal_quietly(pid, signal.SIGKILL)
        self.ctl_ok(self.daemon, "switch", SERVICE, "--mode", "pause")
        svc = self.daemon.service(SERVICE)
        self.assertEqual(svc["active"], "new")
        self.assertEqual(self.new.info_replication()["role"], "master", "replica promoted")
        self.assertEqual(self.gateway(self.a)["state"], "down")
        with tb.RespClient(self.port) as client:
            self.assertEqual(client.command("INCR", "counter"), 42)
            self.assertIn(f"tcp_port:{self.new.port}", client.command("INFO", "server"))


if __name__ == "__main__":
    unittest.main()
