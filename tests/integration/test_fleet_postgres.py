"""Scenario 135: one `tunnelctl switch` moves a fleet's postgres service (`[fleet]`, docs/fleet.md).

Goal: with three tunneld members in front of one postgres primary and its streaming standby, a
writer on each member, and a `fence_command` that makes old refuse writes, `tunnelctl switch svc`
typed on one member holds every member, fences old (the fence_command runs once, on the
coordinator), promotes new, and releases every member onto it: every insert committed through
any member is on new, none was refused as read-only, and old refuses writes after. A fleet-wide
postgres rollback is not supported: `tunnelctl rollback svc` is refused with the reason, nothing
is claimed and every member stays on new. Real etcd, real postgres pair, three tunneld processes.
"""

from __future__ import annotations

import json
import re
import sys
import unittest

from integration_support import SERVICE, IntegrationTest, daemon_config, service_config, tb
from test_postgres_cutover import InsertWriter

FLEET = "bed"
MEMBERS = ("a", "b", "c")


class FleetPostgresTest(IntegrationTest):
    def setUp(self):
        super().setUp()
        self.etcd = self.bed.etcd()
        self.old, self.new, self.credentials = self.postgres_standby_pair()
        self.fenced = self.bed.dir / "fence-runs"
        self.members = {name: self.start_member(name) for name in MEMBERS}
        self.eventually(lambda: all(len(self.listing(d)["services"][0]["members"]) == 3
                                    for d in self.members.values()), 30, "every member lists all three")
        for daemon in self.members.values():
            self.eventually(lambda d=daemon: (d.service(SERVICE)["lag"] or {}).get("link") == "up", 30,
                            "the lag probe sees the standby streaming")

    def sql(self, statement: str) -> str:
        """A hook's command line: one statement on old with psql."""
        return " ".join(f"'{arg}'" if " " in arg else arg for arg in self.old.psql_argv(statement))

    def start_member(self, name: str) -> tb.Tunneld:
        port = tb.free_port()
        fence = (f"echo \"$TUNNELD_STEP $TUNNELD_OLD\" >> {self.fenced} && "
                 + self.sql("alter system set default_transaction_read_only = on")
                 + " && " + self.sql("select pg_reload_conf()"))
        config = daemon_config({SERVICE: service_config(
            port, self.old.port, self.new.port, kind="postgres", max_lag="1MiB", pause_timeout="15s",
            drain_timeout="2s", probe_interval="250ms", probe_timeout="2s",
            credentials_file=str(self.credentials), fence_command=fence)})
        config["fleet"] = {"etcd": [self.etcd.url], "name": FLEET, "member": name, "ack_timeout": "3s"}
        daemon = self.bed.tunneld(config)
        daemon.port = port
        return daemon

    def listing(self, daemon: tb.Tunneld) -> dict:
        return json.loads(self.ctl_ok(daemon, "fleet", SERVICE, "--json"))

    def on(self, side: str) -> bool:
        return all(d.service(SERVICE)["active"] == side and d.service(SERVICE)["state"] == "serving"
                   for d in self.members.values())

    def epoch_record(self) -> dict:
        key = f"/tunneld/{FLEET}/services/{SERVICE}/epoch"
        return json.loads(self.etcd.get_prefix(key)[key])

    def test_135_one_switch_moves_every_member_onto_the_promoted_standby_and_rollback_is_refused(self):
        writers = {name: InsertWriter(d.port, threads=2, prefix=f"{name}w").start() for name, d in self.members.items()}
        for w in writers.values():
            self.addCleanup(w._stop.set)
        self.eventually(lambda: all(w.attempts >= 5 for w in writers.values()), 60, "inserts on every member")

        result = self.members["a"].ctl("switch", SERVICE, timeout=90)
        output = result.stdout + result.stderr
        self.assertEqual(result.returncode, 0, output)
        self.assertIn("epoch 1 claimed", output)
        for name in MEMBERS:
            self.assertRegex(output, rf"epoch 1: {name} acknowledged after \d+ ms")
        hold = re.search(r"epoch 1: (\d+) ms from the first hold to the last release", output)
        self.assertIsNotNone(hold, output)
        sys.stderr.write(f"\nRESULT 135 postgres fleet hold (first hold to last release): {hold.group(1)} ms\n")
        self.eventually(lambda: self.on("new"), 20, "every member serving on new")

        # Inserts after the switch go on through every member, onto new.
        counts = {name: w.attempts for name, w in writers.items()}
        self.eventually(lambda: all(w.attempts > counts[n] + 5 for n, w in writers.items()), 60,
                        "inserts after the switch on every member")
        for w in writers.values():
            w.stop()
        rows = set(self.new.query("select id from cutover").split())
        for name, w in writers.items():
            sys.stderr.write(f"\nRESULT 135 writer on {name}: {w.summary()}\n")
            self.assertGreater(len(w.committed), 10, w.summary())
            missing = [k for k in w.committed if k not in rows]
            self.assertEqual(missing, [], f"{len(missing)} committed inserts through {name} not on new")
            # A cut connection is allowed (old's clients are drained, then cut); a refusal is not.
            refused = {k: v for k, v in w.error_samples.items() if "read-only" in k}
            self.assertEqual(refused, {}, f"writes refused by fenced old through {name}: {w.summary()}")

        self.assertFalse(self.new.in_recovery(), "new promoted")
        runs = self.fenced.read_text().splitlines()
        self.assertEqual(runs, [f"fence {tb.HOST}:{self.old.port}"], "fence_command ran once, on old")
        with self.assertRaises(tb.BedError, msg="old refuses writes") as refused:
            self.old.query("insert into cutover (id) values ('split-brain')")
        self.assertIn("read-only", str(refused.exception))
        record = self.epoch_record()
        self.assertEqual((record["epoch"], record["side"], record["phase"]), (1, "new", "committed"))

        # A fleet-wide postgres rollback is refused before anything is claimed.
        result = self.members["b"].ctl("rollback", SERVICE, timeout=30)
        output = result.stdout + result.stderr
        self.assertEqual(result.returncode, 1, output)
        self.assertIn("a fleet-wide postgres rollback is not supported", output)
        self.assertNotIn("claimed", output)
        record = self.epoch_record()
        self.assertEqual((record["epoch"], record["side"], record["phase"]), (1, "new", "committed"))
        self.assertTrue(self.on("new"), "every member still on new")
        self.assertEqual(self.fenced.read_text().splitlines(), runs, "no second fence")


if __name__ == "__main__":
    unittest.main()
