"""Scenarios 81-84: the dry run (`tunnelctl check`, `switch --dry-run`) and the switch history.

Goal: an operator can run every guardrail of a switch without changing anything, and learn
afterwards who switched what and how it went.
 81. A healthy redis pair (new a warm replica of old): `check` exits 0 with every guardrail PASS
     and the plan; the servers' roles and settings, tunneld's route and its state file are exactly
     as before; nothing is recorded in the history.
 82. A lagging replica (its replication stream stalled, old written on): `check` and
     `switch --dry-run` exit 1 with the lag gate FAIL, and nothing changes.
 83. A new server whose ACL forbids REPLICAOF: `check` exits 1 naming the promotion, while the
     real switch would have failed halfway.
 85. A fence_command without an unfence_command: `check` lists both hooks as unchecked (a dry
     run never runs a hook) and says that an undone switch would leave old fenced by hand.
 84. A switch and a rollback are in `tunnelctl history` with the operator (root, uid 0), the
     sides, the mode, how long clients were held and the result; the history survives a restart
     of tunneld and appears in /status.
"""

from __future__ import annotations

import json
import unittest

from integration_support import IntegrationTest, daemon_config, service_config, tb

SERVICE = "redis"


class DryRunAndHistoryTest(IntegrationTest):
    def start(self, relay: bool = False, **extra: str) -> None:
        self.old = self.bed.redis("old")
        if relay:
            self.relay = tb.StallableRelay(self.old.port)
            self.addCleanup(self.relay.stop)
            self.new = self.bed.redis("new")
            self.new.cli("REPLICAOF", tb.HOST, self.relay.port)
            self.new.wait_link_up()
        else:
            self.new = self.bed.redis("new", replicaof=self.old)
        self.port = tb.free_port()
        settings = {"max_lag": "64KiB", "pause_timeout": "5s", "probe_interval": "200ms",
                    "probe_timeout": "1s", "fence": "replicaof",
                    "fence_replicaof": f"{tb.HOST}:{self.new.port}", **extra}
        self.daemon = self.bed.tunneld(daemon_config(
            {SERVICE: service_config(self.port, self.old.port, self.new.port, kind="redis", **settings)}))
        self.eventually(lambda: (s := self.daemon.service(SERVICE))["lag"]["link"] == "up"
                        and s["lag"]["bytes"] == 0, 20, "probe sees the replica in sync")

    def servers_state(self) -> dict:
        """What a dry run must leave alone, on both servers and in tunneld."""
        state = {}
        for name, redis in (("old", self.old), ("new", self.new)):
            info = redis.info_replication()
            state[name] = {"role": info.get("role"),
                           "min-replicas-to-write": redis.cli("CONFIG", "GET", "min-replicas-to-write"),
                           "replica-read-only": redis.cli("CONFIG", "GET", "replica-read-only")}
        svc = self.daemon.service(SERVICE)
        state["tunneld"] = {k: svc[k] for k in ("active", "state", "fenced", "split_percent")}
        state["state_file"] = (self.daemon.state_file.read_bytes() if self.daemon.state_file.exists()
                               else None)
        return state

    def test_81_check_passes_on_a_healthy_pair_and_changes_nothing(self):
        self.start()
        before = self.servers_state()
        result = self.daemon.ctl("check", SERVICE, timeout=60)
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        out = result.stdout
        for line in ("PASS       lag gate", "PASS       old reachable, credentials accepted",
                     "PASS       new is a replica of old", "PASS       new accepts REPLICAOF NO ONE (promote)",
                     "PASS       old accepts CLIENT PAUSE WRITE", "PASS       old accepts CONFIG REWRITE",
                     "PASS       state file writable",
                     "PASS       estimated hold within pause_timeout",
                     "result: the switch would proceed; nothing was changed"):
            self.assertIn(line, out)
        self.assertIn("plan:", out)
        self.assertIn("promote new: REPLICAOF NO ONE", out)
        self.assertEqual(self.servers_state(), before)
        report = json.loads(self.daemon.ctl("check", SERVICE, "--json", timeout=60).stdout)
        self.assertTrue(report["would_proceed"])
        self.assertGreater(report["estimated_hold_ms"], 0)
        self.assertEqual(self.servers_state(), before)
        self.assertEqual(self.daemon.status_json()["history"], [], "a dry run is not a switch")
        print(f"\nRESULT 81 estimated hold {report['estimated_hold_ms']}ms")

    def test_82_lagging_replica_is_refused_by_check_and_dry_run(self):
        self.start(relay=True)
        self.relay.stall()
        with self.old.client() as c:
            for i in range(200):
                c.command("SET", f"lag:{i}", "x" * 1024)
        self.eventually(lambda: (self.daemon.service(SERVICE)["lag"]["bytes"] or 0) > 64 * 1024, 20,
                        "the probe sees the replica more than max_lag behind")
        before = self.servers_state()
        for args in (("check", SERVICE), ("switch", SERVICE, "--dry-run")):
            result = self.daemon.ctl(*args, timeout=60)
            self.assertEqual(result.returncode, 1, result.stdout + result.stderr)
            self.assertIn("FAIL       lag gate", result.stdout)
            self.assertIn("the switch would be refused", result.stdout)
        self.assertEqual(self.servers_state(), before)
        self.relay.flow()

    def test_83_a_server_that_refuses_replicaof_is_named(self):
        self.start()
        self.new.cli("ACL", "SETUSER", "default", "-replicaof")
        before = self.servers_state()
        result = self.daemon.ctl("check", SERVICE, timeout=60)
        self.assertEqual(result.returncode, 1, result.stdout + result.stderr)
        self.assertRegex(result.stdout, r"FAIL       new accepts REPLICAOF NO ONE \(promote\): .*replicaof")
        self.assertEqual(self.servers_state(), before)

    def test_85_a_fence_command_without_unfence_command_is_named(self):
        marker = self.bed.dir / "fence-ran"
        self.start(fence_command=f"touch {marker}")
        result = self.daemon.ctl("check", SERVICE, timeout=60)
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        self.assertIn("UNCHECKED  fence_command: a dry run does not run hooks", result.stdout)
        self.assertIn("UNCHECKED  unfence_command: not set: a switch undone after fence_command ran leaves old "
                      "fenced until it is lifted by hand", result.stdout)
        self.assertFalse(marker.exists(), "a dry run never runs fence_command")

    def test_84_history_records_who_switched_and_survives_a_restart(self):
        self.start()
        self.assertEqual(self.daemon.ctl("switch", SERVICE, timeout=60).returncode, 0)
        self.assertEqual(self.daemon.ctl("rollback", SERVICE, timeout=60).returncode, 0,
                         self.daemon.log_text()[-3000:])
        refused = self.daemon.ctl("split", SERVICE, "10", timeout=30)
        self.assertEqual(refused.returncode, 1, "split is for kind = tcp only")

        def entries() -> list[dict]:
            return json.loads(self.daemon.ctl("history", SERVICE, "--json", check=True).stdout)["history"]

        history = entries()
        self.assertEqual([h["action"] for h in history], ["switch", "rollback", "split"])
        switch, rollback, split = history
        for h in (switch, rollback):
            self.assertEqual((h["uid"], h["user"], h["result"], h["mode"]), (0, "root", "done", "pause"))
            self.assertIsNotNone(h["held_ms"])
            self.assertGreaterEqual(h["held_ms"], 0)
        self.assertEqual((switch["from"], switch["to"]), ("old", "new"))
        self.assertEqual((rollback["from"], rollback["to"]), ("new", "old"))
        self.assertEqual(split["result"], "refused")
        self.assertTrue(split["reason"])
        table = self.daemon.ctl("history", check=True).stdout
        self.assertIn("root (0)", table)

        self.daemon.restart()
        self.assertEqual(entries(), history)
        self.assertEqual(self.daemon.status_json()["history"], history)
        print(f"\nRESULT 84 held switch {switch['held_ms']}ms rollback {rollback['held_ms']}ms")


if __name__ == "__main__":
    unittest.main()
