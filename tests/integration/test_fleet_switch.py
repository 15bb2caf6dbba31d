"""Scenarios 130-133: one `tunnelctl switch` acts on the whole fleet (`[fleet]`, docs/fleet.md).

Goal: with three tunneld members in front of one redis pair (old primary, new its replica) and a
writer on each member, `tunnelctl switch svc` typed on one member holds every member's clients,
switches the servers once (fence first, then promotion) and releases every member onto new;
`tunnelctl rollback svc` typed on another member comes back the same way. Real etcd, real
redis-servers, three real tunneld processes on loopback.
 130. Switch then rollback under load: every member ends on new (then old), no acknowledged write
      is lost, no write is refused by a server on any member (a cut connection is allowed), the
      side left behind refuses writes, and each member's history has the fleet's switch.
 131. A member that stops answering (SIGSTOP) before it acknowledges: the switch fails as
      aborted, the others are serving on old again within pause_timeout, nothing was promoted
      (new is still a replica, old takes writes).
 132. Two switches typed at once on two members: exactly one claims the epoch; the other is
      refused naming the member that holds it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import unittest

from integration_support import (SERVICE, IntegrationTest, Writer, daemon_config, missing_keys,
                                 service_config, tb)

FLEET = "bed"
MEMBERS = ("a", "b", "c")
PAUSE_TIMEOUT = 5.0


class FleetSwitchTest(IntegrationTest):
    def setUp(self):
        super().setUp()
        self.etcd = self.bed.etcd()
        self.old = self.bed.redis("old")
        self.new = self.bed.redis("new", replicaof=self.old)
        self.members = {name: self.start_member(name) for name in MEMBERS}
        self.eventually(lambda: all(len(self.listing(d)["services"][0]["members"]) == 3
                                    for d in self.members.values()), 30,
                        "every member lists all three")
        for daemon in self.members.values():
            self.wait_in_sync(daemon)

    def start_member(self, name: str) -> tb.Tunneld:
        port = tb.free_port()
        settings = {"max_lag": "1MiB", "pause_timeout": f"{PAUSE_TIMEOUT:.0f}s",
                    "probe_interval": "200ms", "probe_timeout": "1s", "fence": "replicaof",
                    "fence_replicaof": f"{tb.HOST}:{self.new.port}"}
        config = daemon_config({SERVICE: service_config(port, self.old.port, self.new.port,
                                                        kind="redis", **settings)})
        config["fleet"] = {"etcd": [self.etcd.url], "name": FLEET, "member": name,
                           "ack_timeout": "2s"}
        daemon = self.bed.tunneld(config)
        daemon.port = port
        return daemon

    def listing(self, daemon: tb.Tunneld) -> dict:
        return json.loads(self.ctl_ok(daemon, "fleet", SERVICE, "--json"))

    def wait_in_sync(self, daemon: tb.Tunneld) -> None:
        def in_sync():
            lag = daemon.service(SERVICE)["lag"]
            return lag and lag["link"] == "up" and lag["bytes"] == 0
        self.eventually(in_sync, 30, "the probe reports link up and lag 0B")

    def on(self, side: str, names=MEMBERS) -> bool:
        return all(self.members[n].service(SERVICE)["active"] == side and
                   self.members[n].service(SERVICE)["state"] == "serving" for n in names)

    def refuses_writes(self, redis: tb.Redis) -> bool:
        try:
            redis.cli("SET", "fence-check", "x")
        except tb.RespError as e:
            return "READONLY" in str(e) or "NOREPLICAS" in str(e)
        return False

    def refused_by_a_server(self, writer: Writer) -> dict:
        return {k: v for k, v in writer.error_samples.items() if k.startswith(("reply", "unexpected"))}

    def switch_under_load(self, on: str, *command: str) -> tuple[subprocess.CompletedProcess, list]:
        writers = [Writer(d.port, f"{name}-{command[0]}", threads=4).start()
                   for name, d in self.members.items()]
        for w in writers:
            self.addCleanup(w._stop.set)
        time.sleep(1.0)  # load before the switch
        result = self.members[on].ctl(*command, timeout=60)
        time.sleep(1.0)  # load after it
        for w in writers:
            w.stop()
        for w in writers:
            sys.stderr.write(f"\nRESULT 130 {' '.join(command)} on {on}: {w.summary()}\n")
        return result, writers

    def assert_all_on(self, primary: tb.Redis, left: tb.Redis, writers: list[Writer]) -> None:
        """Every member on `primary`'s side; every acknowledged write there, none refused by a
        server; `primary` the primary, `left` refusing writes."""
        side = "new" if primary is self.new else "old"
        self.eventually(lambda: self.on(side), 15, f"every member on {side}")
        for w in writers:
            self.assertGreater(len(w.acked), 20, w.summary())
            self.assertEqual(self.refused_by_a_server(w), {}, w.summary())
            missing = missing_keys(primary, w.acked, w.value_of)
            self.assertEqual(missing, [], f"{len(missing)} acknowledged writes missing on {side}")
        self.assertEqual(primary.info_replication().get("role"), "master")
        self.assertTrue(self.refuses_writes(left), "the side left behind refuses writes")

    # ---- scenarios

    def test_130_one_switch_moves_every_member_and_one_rollback_brings_them_back(self):
        result, writers = self.switch_under_load("a", "switch", SERVICE)
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        output = result.stdout + result.stderr
        self.assertIn("epoch 1 claimed", output)
        for name in MEMBERS:
            self.assertRegex(output, rf"epoch 1: {name} acknowledged after \d+ ms", output)
        self.assert_all_on(self.new, self.old, writers)
        def committed_nobody_behind():
            s = self.listing(self.members["c"])["services"][0]
            return (s["epoch"] == 1 and s["side"] == "new" and s["phase"] == "committed"
                    and not any(m["behind"] for m in s["members"]))
        self.eventually(committed_nobody_behind, 10, "epoch 1 committed on new, nobody behind")
        for name in ("b", "c"):
            fleet_entries = [e for e in json.loads(self.ctl_ok(self.members[name], "history", SERVICE,
                                                                "--json"))["history"]
                             if e["user"] == "fleet" and e["result"] == "done"]
            self.assertEqual([(e["to"], e["adopted"]) for e in fleet_entries], [("new", True)], fleet_entries)

        result, writers = self.switch_under_load("b", "rollback", SERVICE)
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        self.assert_all_on(self.old, self.new, writers)

    def test_131_a_member_that_does_not_acknowledge_aborts_the_switch(self):
        stopped = self.members["c"]
        self.addCleanup(lambda: tb._signal_quietly(stopped.process.pid, signal.SIGCONT))
        os.kill(stopped.process.pid, signal.SIGSTOP)
        started = time.monotonic()
        result = self.members["a"].ctl("switch", SERVICE, timeout=60)
        output = result.stdout + result.stderr
        self.assertEqual(result.returncode, 1, output)
        self.assertIn("aborted", output)
        self.assertIn("c", output)
        self.eventually(lambda: self.on("old", ("a", "b")), PAUSE_TIMEOUT, "a and b serve on old")
        self.assertLess(time.monotonic() - started, 2 * PAUSE_TIMEOUT + 5)
        self.assertEqual(self.new.info_replication().get("role"), "slave", "nothing was promoted")
        self.assertEqual(self.old.cli("SET", "old-writable", "1"), "OK")
        for name in ("a", "b"):
            with tb.RespClient(self.members[name].port, timeout=10) as c:
                self.assertEqual(c.command("SET", f"after-abort-{name}", "1"), "OK")
        os.kill(stopped.process.pid, signal.SIGCONT)
        self.eventually(lambda: self.on("old", ("c",)), 15, "c serves on old once it runs again")

    def test_132_two_switches_at_once_exactly_one_runs(self):
        # c holds no clients of its own for a while (stopped): the first switch is still holding
        # when the second claims, whatever the machine's speed.
        stopped = self.members["c"]
        self.addCleanup(lambda: tb._signal_quietly(stopped.process.pid, signal.SIGCONT))
        os.kill(stopped.process.pid, signal.SIGSTOP)
        results = {}

        def run(name):
            results[name] = self.members[name].ctl("switch", SERVICE, timeout=60)

        threads = [threading.Thread(target=run, args=(n,)) for n in ("a", "b")]
        for t in threads:
            t.start()
        for t in threads:
            t.join(90)
        os.kill(stopped.process.pid, signal.SIGCONT)
        outputs = {n: r.stdout + r.stderr for n, r in results.items()}
        claimed = [n for n, text in outputs.items() if "epoch 1 claimed" in text]
        self.assertEqual(len(claimed), 1, outputs)
        loser = "b" if claimed == ["a"] else "a"
        self.assertEqual(results[loser].returncode, 1, outputs[loser])
        self.assertIn(f"epoch 1 is held by {claimed[0]}", outputs[loser])
        self.eventually(lambda: self.on("old"), 15, "everyone on old (the switch aborted)")
        self.assertEqual(self.new.info_replication().get("role"), "slave", "nothing was promoted")


if __name__ == "__main__":
    unittest.main()
