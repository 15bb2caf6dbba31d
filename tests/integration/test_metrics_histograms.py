"""Scenarios 85-86: the histograms of /metrics, as Prometheus scrapes them from a real tunneld.

85. A pause-mode switch of a redis service (its new side a warm replica) holds new clients while
    the replica catches up and is promoted: afterwards `tunneld_switch_hold_seconds` of the
    service counts exactly that one hold, its buckets never decrease and end in +Inf = count, and
    its _sum is the hold `tunnelctl history` recorded, within the switch's own wall time. A
    rollback adds the second observation. `promtool check metrics` accepts the text.
86. Clients of a service whose new side is reached through an SSH tunnel (a real sshd): each
    opens one channel, and `tunneld_tunnel_channel_open_seconds_count` of the tunnel grows by the
    number of clients sent, with buckets that never decrease and a plausible _sum.
"""

import http.client
import json
import math
import re
import subprocess
import time
import unittest

from integration_support import SERVICE, IntegrationTest, daemon_config, service_config, tb

SAMPLE = re.compile(r"^([a-z_]+)(\{[^}]*\})? (\S+)$")


def scrape(port: int) -> tuple[str, dict[str, float]]:
    """The /metrics text and its samples by series text (`name{labels}`)."""
    connection = http.client.HTTPConnection(tb.HOST, port, timeout=10)
    try:
        connection.request("GET", "/metrics")
        response = connection.getresponse()
        body = response.read().decode()
        assert response.status == 200, (response.status, body)
    finally:
        connection.close()
    samples = {}
    for line in body.splitlines():
        if line.startswith("#") or not line:
            continue
        match = SAMPLE.match(line)
        assert match, f"not a sample line: {line!r}"
        samples[match.group(1) + (match.group(2) or "")] = float(match.group(3))
    return body, samples


def histogram(samples: dict[str, float], name: str, label: str) -> tuple[list[tuple[float, float]], float, float]:
    """The buckets [(le, cumulative count)] in le order, the count and the sum of one series."""
    buckets = []
    prefix = f"{name}_bucket{{{label},le=\""
    for series, value in samples.items():
        if series.startswith(prefix):
            bound = series[len(prefix):-2]
            buckets.append((math.inf if bound == "+Inf" else float(bound), value))
    buckets.sort()
    return buckets, samples[f"{name}_count{{{label}}}"], samples[f"{name}_sum{{{label}}}"]


class MetricsHistogramTest(IntegrationTest):
    def assert_well_formed(self, buckets: list[tuple[float, float]], count: float):
        self.assertGreaterEqual(len(buckets), 2, buckets)
        counts = [c for _, c in buckets]
        self.assertEqual(counts, sorted(counts), f"buckets never decrease: {buckets}")
        self.assertEqual(buckets[-1], (math.inf, count), "the +Inf bucket is the count")

    def test_85_a_pause_switch_is_one_observation_of_its_hold(self):
        old = self.bed.redis("old")
        new = self.bed.redis("new", replicaof=old)
        old.cli("SET", "k", "v")
        new.wait_caught_up(old)
        health, port = tb.free_port(), tb.free_port()
        daemon = self.bed.tunneld(daemon_config(
            {SERVICE: service_config(port, old.port, new.port, kind="redis", max_lag="1MiB",
                                     pause_timeout="5s", probe_interval="250ms", fence="replicaof",
                                     fence_replicaof=f"{tb.HOST}:{new.port}")},
            health_listen=f"{tb.HOST}:{health}"))
        label = f'service="{SERVICE}"'

        _, before = scrape(health)
        buckets, count, total = histogram(before, "tunneld_switch_hold_seconds", label)
        self.assertEqual((count, total), (0, 0), "the series is there at zero before any switch")
        self.assert_well_formed(buckets, 0)

        self.eventually(lambda: daemon.service(SERVICE)["lag"]["link"] == "up", 10, "the replica link up")
        started = time.monotonic()
        self.ctl_ok(daemon, "switch", SERVICE, "--mode", "pause")
        wall = time.monotonic() - started
        self.assertEqual(daemon.service(SERVICE)["active"], "new")

        body, after = scrape(health)
        buckets, count, total = histogram(after, "tunneld_switch_hold_seconds", label)
        self.assertEqual(count, 1, "one switch held clients once")
        self.assert_well_formed(buckets, 1)
        history = json.loads(daemon.ctl("history", SERVICE, "--json", check=True).stdout)["history"]
        held_ms = history[-1]["held_ms"]
        self.assertIsInstance(held_ms, int, history)
        self.assertAlmostEqual(total, held_ms / 1000, delta=0.0015, msg="_sum is the recorded hold")
        self.assertGreater(total, 0)
        self.assertLess(total, wall, "a hold fits inside the switch command")
        self.assertLessEqual(total, 5.0, "a hold never outlasts pause_timeout")
        first_bucket = next(le for le, c in buckets if c == 1)
        self.assertGreaterEqual(first_bucket, total, "the hold falls in the first bucket that counts it")
        print(f"\n  switch held clients {total * 1000:.1f} ms (le={first_bucket})")

        check = subprocess.run(["promtool", "check", "metrics"], input=body, capture_output=True,
                               text=True, timeout=60)
        self.assertEqual(check.returncode, 0, check.stdout + check.stderr)

        self.ctl_ok(daemon, "rollback", SERVICE)
        _, rolled_back = scrape(health)
        buckets, count, total_after = histogram(rolled_back, "tunneld_switch_hold_seconds", label)
        rollback_held = json.loads(daemon.ctl("history", SERVICE, "--json", check=True).stdout)["history"][-1]
        self.assertEqual(rollback_held["action"], "rollback")
        self.assertEqual(count, 1 + (rollback_held["held_ms"] is not None), rollback_held)
        self.assert_well_formed(buckets, count)
        self.assertGreaterEqual(total_after, total)

    def test_86_every_channel_opened_is_one_observation(self):
        sshd = self.bed.sshd()
        old, new = self.redis_pair()
        health, port = tb.free_port(), tb.free_port()
        tunnels = {"gateway": {"address": f"{tb.HOST}:{sshd.port}", "user": sshd.user,
                               "identity": str(sshd.user_key), "known_hosts": str(sshd.known_hosts),
                               "sessions": 2, "keepalive": "1s", "connect_timeout": "5s"}}
        daemon = self.bed.tunneld(daemon_config(
            {SERVICE: service_config(port, old.port, {"address": f"{tb.HOST}:{new.port}", "via": "gateway"})},
            tunnels=tunnels, health_listen=f"{tb.HOST}:{health}"))
        label = 'tunnel="gateway"'

        def sessions_up() -> int:
            return json.loads(daemon.ctl("tunnels", "--json", check=True).stdout)["tunnels"][0]["sessions_up"]

        self.eventually(lambda: sessions_up() == 2, 20, "both sessions up")
        _, before = scrape(health)
        self.assertEqual(histogram(before, "tunneld_tunnel_channel_open_seconds", label)[1], 0)

        self.ctl_ok(daemon, "switch", SERVICE, "--mode", "kill")
        # The switch may check the new backend through the tunnel (one channel each time).
        _, switched = scrape(health)
        opened_by_switch = histogram(switched, "tunneld_tunnel_channel_open_seconds", label)[1]
        clients = 7
        for _ in range(clients):
            self.assertEqual(tb.whoami(port), "new")

        _, after = scrape(health)
        buckets, count, total = histogram(after, "tunneld_tunnel_channel_open_seconds", label)
        self.assertEqual(count - opened_by_switch, clients, "one observation per channel opened")
        self.assert_well_formed(buckets, count)
        self.assertEqual(after[f"tunneld_tunnel_channel_open_failures_total{{{label}}}"], 0)
        self.assertGreater(total, 0)
        self.assertLess(total, count * 5.0, "no open took longer than connect_timeout")
        print(f"\n  {count:.0f} channel opens ({opened_by_switch:.0f} by the switch), "
              f"mean {total / count * 1000:.2f} ms")


if __name__ == "__main__":
    unittest.main()
