"""Scenario 6: split.

Goal: `tunnelctl split svc 50 --sticky` keeps every connection from one client address on one
side (and different addresses spread over both); a non-sticky 50 % split over 200 connections
reaches both sides; split is refused (exit 1, the reason names the kind) for kind = "redis".
"""

import socket
import unittest
from collections import Counter

from integration_support import SERVICE, IntegrationTest, daemon_config, service_config, tb


def whoami_from(port: int, source: str) -> str:
    sock = socket.create_connection((tb.HOST, port), timeout=5, source_address=(source, 0))
    with tb.RespClient(port, sock=sock) as client:
        return client.command("GET", "whoami")


class SplitTest(IntegrationTest):
    def test_6a_sticky_split_keeps_one_client_address_on_one_side(self):
        old, new = self.redis_pair()
        daemon, port = self.start_tcp_service(old.port, new.port)
        self.ctl_ok(daemon, "split", SERVICE, "50", "--sticky")
        svc = daemon.service(SERVICE)
        self.assertEqual(svc["active"], "split")
        self.assertEqual(svc["split_percent"], 50)
        self.assertTrue(svc.get("sticky"), svc)

        sides = Counter(tb.whoami(port) for _ in range(40))
        self.assertEqual(len(sides), 1, f"one address, several sides: {sides}")
        by_address = {}
        for last in range(2, 42):
            address = f"127.0.0.{last}"
            seen = {whoami_from(port, address) for _ in range(3)}
            self.assertEqual(len(seen), 1, f"{address} reached {seen}")
            by_address[address] = seen.pop()
        self.assertEqual(set(by_address.values()), {"old", "new"},
                         "40 client addresses at 50 % should reach both sides")

    def test_6b_split_without_sticky_spreads_connections_over_both_sides(self):
        old, new = self.redis_pair()
        daemon, port = self.start_tcp_service(old.port, new.port)
        self.ctl_ok(daemon, "split", SERVICE, "50")
        sides = Counter(tb.whoami(port) for _ in range(200))
        print(f"\n  200 connections at split 50: {dict(sides)}")
        self.assertEqual(set(sides), {"old", "new"})
        # binomial(200, 0.5): fewer than 40 on one side essentially never happens
        self.assertGreaterEqual(sides["old"], 40)
        self.assertGreaterEqual(sides["new"], 40)

    def test_6c_split_is_refused_for_kind_redis(self):
        old, new = self.redis_pair()
        port = tb.free_port()
        daemon = self.bed.tunneld(daemon_config(
            {SERVICE: service_config(port, old.port, new.port, kind="redis")}))
        result = daemon.ctl("split", SERVICE, "50")
        self.assertEqual(result.returncode, 1, result.stdout + result.stderr)
        self.assertIn("kind", (result.stdout + result.stderr).lower())
        svc = daemon.service(SERVICE)
        self.assertEqual(svc["active"], "old")
        self.assertEqual(tb.whoami(port), "old")


if __name__ == "__main__":
    unittest.main()
