"""Scenario 4: pause budgets.

Goal: a pause is bounded. With pause_timeout = 1s a held client is released to the previous
(old) side by itself, without `resume`. A pause switch on kind = "tcp" has nothing to wait
for, so it holds, flips and releases to new (exit 0). A pause switch whose budget runs out
reports failure (exit 1) and leaves the old side active: we make the budget run out with a
kind = "redis" service whose new backend is a replica with its master link down (lag unknown,
the gate fails closed); the daemon may also refuse it up front, which is exit 1 as well.
"""

import time
import unittest

from integration_support import SERVICE, IntegrationTest, daemon_config, service_config, tb


class PauseTimeoutTest(IntegrationTest):
    def test_4a_pause_auto_resumes_on_old_side_after_pause_timeout(self):
        old, new = self.redis_pair()
        daemon, port = self.start_tcp_service(old.port, new.port, pause_timeout="1s")
        self.ctl_ok(daemon, "pause", SERVICE)  # no --timeout: the service's pause_timeout

        client = tb.RespClient(port, timeout=15)
        self.addCleanup(client.close)
        sent = time.monotonic()
        self.assertEqual(client.command("GET", "whoami"), "old")
        held = time.monotonic() - sent
        print(f"\n  held {held:.2f}s with pause_timeout 1s")
        self.assertLess(held, 10)
        self.eventually(lambda: daemon.service(SERVICE)["state"] == "serving", 5,
                        "state back to serving")
        self.assertEqual(daemon.service(SERVICE)["active"], "old")

    def test_4b_pause_switch_on_tcp_holds_then_flips_to_new(self):
        old, new = self.redis_pair()
        daemon, port = self.start_tcp_service(old.port, new.port, pause_timeout="5s")
        self.ctl_ok(daemon, "switch", SERVICE, "--mode", "pause")
        svc = daemon.service(SERVICE)
        self.assertEqual(svc["active"], "new")
        self.assertEqual(svc["state"], "serving")
        self.assertEqual(tb.whoami(port), "new")

    def test_4c_pause_switch_whose_budget_runs_out_fails_and_stays_on_old(self):
        old = self.bed.redis("old")
        old.cli("SET", "whoami", "old")
        # a replica of a port nobody listens on: master_link_status stays down
        new = self.bed.redis("new", extra_args=["--replicaof", tb.HOST, str(tb.free_port())])
        port = tb.free_port()
        config = daemon_config({SERVICE: service_config(
            port, old.port, new.port, kind="redis", pause_timeout="1s", probe_interval="250ms")})
        daemon = self.bed.tunneld(config)

        started = time.monotonic()
        result = daemon.ctl("switch", SERVICE, "--mode", "pause", timeout=60)
        took = time.monotonic() - started
        print(f"\n  pause switch answered after {took:.2f}s: {result.stdout}{result.stderr}")
        self.assertEqual(result.returncode, 1, result.stdout + result.stderr)
        self.assertTrue((result.stdout + result.stderr).strip(), "failure must give a reason")
        svc = daemon.service(SERVICE)
        self.assertEqual(svc["active"], "old")
        self.assertEqual(svc["state"], "serving")
        self.assertEqual(tb.whoami(port), "old")


if __name__ == "__main__":
    unittest.main()
