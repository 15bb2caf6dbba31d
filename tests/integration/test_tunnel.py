"""Scenario 14: the new side through an SSH tunnel.

Goal: with `new = { address, via = "gateway" }` and a real sshd as the gateway (ed25519 keys,
strict known_hosts), a switched client reaches new through a direct-tcpip channel: replies come
back, half-close travels through the channel, `tunnels --json` reports the pool, and sshd logs
the public-key login. A gateway whose host key is not in known_hosts is refused (no trust on
first use) and clients on that side are not served. A burst of clients spreads over the
tunnel's sessions, and those run on different event loops (threads), as `tunnels --json` shows.
"""

import json
import os
import socket
import unittest

from integration_support import SERVICE, IntegrationTest, daemon_config, service_config, tb, tunnel_table


def exchange(port: int, payload: bytes) -> bytes:
    with socket.create_connection((tb.HOST, port), timeout=20) as sock:
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)
        received = bytearray()
        while chunk := sock.recv(65536):
            received += chunk
        return bytes(received)


class TunnelTest(IntegrationTest):
    def start(self, known_hosts=None, new_port=None):
        self.sshd = self.bed.sshd()
        self.old, self.new = self.redis_pair()
        self.port = tb.free_port()
        new = {"address": f"{tb.HOST}:{new_port or self.new.port}", "via": "gateway"}
        config = daemon_config({SERVICE: service_config(self.port, self.old.port, new)},
                               tunnels={"gateway": tunnel_table(self.sshd, known_hosts)})
        self.daemon = self.bed.tunneld(config)
        if known_hosts is None:
            # The switch does not wait for the tunnel: a client sent before the first session is
            # up is refused (tunnel_down), which these scenarios do not test.
            self.eventually(lambda: self.tunnel()["sessions_up"] >= 1, 20, "a session up")

    def tunnel(self) -> dict:
        tunnels = json.loads(self.ctl_ok(self.daemon, "tunnels", "--json"))
        tunnels = tunnels.get("tunnels", tunnels)
        return next(t for t in tunnels if t["name"] == "gateway")

    def test_14a_switched_client_reaches_new_through_the_tunnel(self):
        self.start()
        self.ctl_ok(self.daemon, "switch", SERVICE, "--mode", "kill")
        for _ in range(10):
            self.assertEqual(tb.whoami(self.port), "new")
        self.eventually(lambda: self.sshd.accepted_count() >= 1, 10,
                        "sshd logs 'Accepted publickey'")
        tunnels = json.loads(self.ctl_ok(self.daemon, "tunnels", "--json"))
        tunnels = tunnels.get("tunnels", tunnels)
        gateway = next(t for t in tunnels if t["name"] == "gateway")
        self.assertEqual(gateway["sessions"], 2)
        self.assertGreaterEqual(gateway["sessions_up"], 1)
        for field in ("channels", "reconnects"):
            self.assertIn(field, gateway)
        svc = self.daemon.service(SERVICE)
        self.assertEqual(svc["new"]["via"], "gateway")

    def test_14b_half_close_travels_through_the_channel(self):
        echo = self.bed.echo_server(b"new:", mode="after_eof")
        self.start(new_port=echo.port)
        self.ctl_ok(self.daemon, "switch", SERVICE, "--mode", "kill")
        payload = os.urandom(256 * 1024)
        self.assertEqual(exchange(self.port, payload), b"new:" + payload)

    def test_14c_unknown_gateway_host_key_is_refused(self):
        empty = self.bed.dir / "empty_known_hosts"
        empty.write_text("")
        self.start(known_hosts=empty)
        self.assertEqual(tb.whoami(self.port), "old", "the direct side still works")
        self.ctl_ok(self.daemon, "switch", SERVICE, "--mode", "kill", "--force")
        client = tb.RespClient(self.port, timeout=15)
        self.addCleanup(client.close)
        try:
            reply = client.command("GET", "whoami")
        except (OSError, ConnectionError):
            reply = None
        self.assertIsNone(reply, "a client must not be served through an untrusted gateway")
        self.assertEqual(self.sshd.accepted_count(), 0, "no login to an untrusted gateway")

    def test_14d_a_burst_of_clients_spreads_over_sessions_on_different_loops(self):
        # Eight streams opened at once (iperf3 -P 8) on a service whose clients all go through
        # the tunnel: each client is accepted onto the loop of the session its channel opens
        # on, and the channels must not all land on one session (one thread, one core).
        self.sshd = self.bed.sshd()
        echo = self.bed.echo_server()
        self.port = tb.free_port()
        through = {"address": f"{tb.HOST}:{echo.port}", "via": "gateway"}
        config = daemon_config({SERVICE: service_config(self.port, through, through)},
                               tunnels={"gateway": tunnel_table(self.sshd)}, threads=2)
        self.daemon = self.bed.tunneld(config)
        self.eventually(lambda: self.tunnel()["sessions_up"] == 2, 20, "both sessions up")
        clients = [socket.create_connection((tb.HOST, self.port), timeout=20) for _ in range(8)]
        for c in clients:
            self.addCleanup(c.close)
        for i, c in enumerate(clients):
            c.sendall(b"%d" % i)
        for i, c in enumerate(clients):
            self.assertEqual(c.recv(16), b"%d" % i, "each stream is echoed through its channel")
        self.eventually(lambda: self.tunnel()["channels"] == 8, 10, "8 channels open")
        sessions = self.tunnel()["by_session"]
        self.assertEqual(len(sessions), 2, sessions)
        self.assertTrue(all(s["up"] and s["gateway"] == f"{tb.HOST}:{self.sshd.port}" for s in sessions),
                        sessions)
        self.assertEqual(sorted(s["loop"] for s in sessions), [0, 1], "one session per loop")
        # Least-loaded first: 4 + 4, or 5 + 3 when two loops chose at the same instant.
        self.assertGreaterEqual(min(s["channels"] for s in sessions), 3, sessions)
        table = self.ctl_ok(self.daemon, "tunnels")
        self.assertRegex(table, r"gateway .* 2/2 +8 \([345]\+[345]\)")
        for c in clients:
            c.close()
        self.eventually(lambda: self.tunnel()["channels"] == 0, 10, "channels closed")


if __name__ == "__main__":
    unittest.main()
