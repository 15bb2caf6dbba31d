"""Scenarios 125-128: a member joining and leaving its fleet (`[fleet]`, docs/fleet.md).

Goal: a member takes the side its fleet committed in etcd, whenever it reaches etcd (at start, or
when it gets through again after being cut off), and says so in status and history; without etcd
it keeps serving on the side of its own state file and refuses the commands that act on the
whole fleet, saying why and what to do. Real etcd and tunneld members on loopback, each with a
`kind = "tcp"` service in front of two echo servers (a tcp route flip has no servers' part).
 125. The fleet committed epoch 1 on new before a member started: it starts on old (its state
      file), flips to new at once, runs epoch 1, is not listed as behind, its history has the
      flip by "fleet" naming the epoch, and `tunneld_fleet_follows_total` counts it.
 126. A member cut off from etcd (its own path to etcd broken, the others' not) keeps serving on
      old, says `fleet: "unreachable"` and refuses `switch`, `rollback`, `pause` and `resume`
      with the reason; the fleet commits epoch 1 on new meanwhile (the connected member follows);
      once the path is back the cut-off member flips to new at once.
 127. etcd unreachable at start: a member whose state file says new starts on new, refuses a
      switch, and when etcd comes back with no switch ever committed it stays on new (it never
      silently reverts to the default old).
 128. Members that cannot follow (their service paused: a pause typed on one member pauses the
      fleet) stay on old and are listed as behind (and counted in
      `tunneld_fleet_members_behind`); resumed (typed on another member), they follow within
      seconds.
"""

from __future__ import annotations

import json
import unittest

from integration_support import (SERVICE, IntegrationTest, daemon_config, exchange, service_config,
                                 service_metric, tb)

FLEET = "bed"
EPOCH_KEY = f"/tunneld/{FLEET}/services/{SERVICE}/epoch"
FLEET_WIDE = (("switch", SERVICE), ("rollback", SERVICE), ("pause", SERVICE), ("resume", SERVICE))


class FleetJoinTest(IntegrationTest):
    def setUp(self):
        super().setUp()
        self.old = self.bed.echo_server(b"old")
        self.new = self.bed.echo_server(b"new")

    def start_member(self, name: str, etcd_url: str | None) -> tb.Tunneld:
        port, health_port = tb.free_port(), tb.free_port()
        config = daemon_config({SERVICE: service_config(port, self.old.port, self.new.port, mode="kill")},
                               health_listen=f"{tb.HOST}:{health_port}")
        if etcd_url is not None:
            config["fleet"] = {"etcd": [etcd_url], "name": FLEET, "member": name}
        daemon = self.bed.tunneld(config)
        daemon.port, daemon.health_port = port, health_port
        return daemon


    def commit(self, etcd: tb.Etcd, epoch: int, side: str) -> None:
        """What a coordinator's commit leaves in etcd."""
        etcd.put(EPOCH_KEY, json.dumps({"epoch": epoch, "side": side, "phase": "committed"}))

    def fleet_history(self, daemon: tb.Tunneld) -> list[dict]:
        return [e for e in json.loads(self.ctl_ok(daemon, "history", SERVICE, "--json"))["history"]
                if e["user"] == "fleet"]

    def on(self, daemon: tb.Tunneld, side: str, epoch: int | None = None) -> bool:
        status = daemon.service(SERVICE)
        return status["active"] == side and (epoch is None or status["epoch"] == epoch)

    def assert_refused_fleet_wide(self, daemon: tb.Tunneld, side: str) -> None:
        for command in FLEET_WIDE:
            refused = daemon.ctl(*command)
            self.assertEqual(refused.returncode, 1, (command, refused.stdout, refused.stderr))
            self.assertIn(f"{command[0]} refused: the fleet is unreachable (etcd: ", refused.stderr)
            self.assertIn(f"this member keeps serving {SERVICE} on {side}", refused.stderr)
            self.assertIn("Bring etcd back", refused.stderr)
        self.assertEqual(daemon.service(SERVICE)["state"], "serving", "nothing was paused or switched")
        refusals = [e for e in json.loads(self.ctl_ok(daemon, "history", SERVICE, "--json"))["history"]
                    if e["result"] == "refused" and "fleet is unreachable" in e["reason"]]
        self.assertEqual(len(refusals), len(FLEET_WIDE), "each refusal is in the history")

    def test_125_a_member_starting_after_a_fleet_switch_takes_the_committed_side(self):
        etcd = self.bed.etcd()
        self.commit(etcd, 1, "new")
        daemon = self.start_member("a", etcd.url)
        self.eventually(lambda: self.on(daemon, "new", 1), 15, "the member flipped to new, epoch 1")
        self.assertEqual(exchange(daemon.port, b"ping"), b"newping")
        history = self.fleet_history(daemon)
        self.assertEqual(len(history), 1, history)
        self.assertEqual((history[0]["action"], history[0]["from"], history[0]["to"], history[0]["result"]),
                         ("switch", "old", "new", "done"))
        self.assertIn(f"fleet {FLEET} committed epoch 1 on new while this member was away", history[0]["reason"])

        def listed_in_step():
            service = json.loads(self.ctl_ok(daemon, "fleet", "--json"))["services"][0]
            return [(m["name"], m["side"], m["epoch"], m["behind"]) for m in service["members"]] == \
                [("a", "new", 1, False)]
        self.eventually(listed_in_step, 10, "its record says new, epoch 1, not behind")
        self.assertEqual(service_metric(daemon, "tunneld_fleet_follows_total"), 1)
        self.eventually(lambda: (service_metric(daemon, "tunneld_fleet_members"),
                                 service_metric(daemon, "tunneld_fleet_members_behind")) == (1, 0), 10,
                        "metrics: one member, none behind")

        daemon.restart()
        self.eventually(lambda: daemon.service(SERVICE)["fleet"] == "ok", 15, "back in the fleet")
        self.assertTrue(self.on(daemon, "new"), "a restart stays on new")
        self.eventually(lambda: self.on(daemon, "new", 1), 10, "epoch 1 again")
        self.assertEqual(len(self.fleet_history(daemon)), 1, "nothing to follow after the restart")

    def test_126_a_member_cut_off_keeps_serving_refuses_and_follows_when_back(self):
        etcd = self.bed.etcd()
        a = self.start_member("a", etcd.url)
        relay = tb.StallableRelay(int(etcd.url.rsplit(":", 1)[1]))
        try:
            b = self.start_member("b", f"http://{tb.HOST}:{relay.port}")
            for daemon in (a, b):
                self.eventually(lambda d=daemon: d.service(SERVICE)["fleet"] == "ok", 15, "both reach etcd")

            relay.cut()
            self.eventually(lambda: b.service(SERVICE)["fleet"] == "unreachable", 15, "b is cut off")
            self.assert_refused_fleet_wide(b, "old")
            self.assertEqual(exchange(b.port, b"ping"), b"oldping", "b serves on old without etcd")

            self.commit(etcd, 1, "new")
            self.eventually(lambda: self.on(a, "new", 1), 15, "a, connected, follows the fleet")
            self.assertEqual(exchange(b.port, b"ping"), b"oldping", "b cannot know yet: still old")
            self.assertTrue(self.on(b, "old"))

            relay.mend()
            self.eventually(lambda: self.on(b, "new", 1), 20, "b flips to new as soon as it gets through")
            self.assertEqual(exchange(b.port, b"ping"), b"newping")
            history = self.fleet_history(b)
            self.assertEqual([(e["from"], e["to"], e["result"]) for e in history], [("old", "new", "done")])
            self.assertEqual(b.service(SERVICE)["fleet"], "ok")
        finally:
            relay.stop()

    def test_127_etcd_unreachable_at_start_keeps_the_state_files_side(self):
        alone = self.start_member("a", None)
        self.ctl_ok(alone, "switch", SERVICE)
        self.assertEqual(alone.sigterm(timeout=30), 0)

        etcd = self.bed.etcd()
        etcd.stop()
        daemon = alone
        daemon.write_config(daemon_config(
            {SERVICE: service_config(daemon.port, self.old.port, self.new.port, mode="kill")})
            | {"fleet": {"etcd": [etcd.url], "name": FLEET, "member": "a"}})
        daemon.start()
        status = daemon.service(SERVICE)
        self.assertEqual((status["active"], status["fleet"]), ("new", "unreachable"))
        self.assertEqual(exchange(daemon.port, b"ping"), b"newping")
        self.assert_refused_fleet_wide(daemon, "new")

        etcd.start()
        self.eventually(lambda: daemon.service(SERVICE)["fleet"] == "ok", 20, "etcd reached")

        def record():
            members = etcd.get_prefix(f"/tunneld/{FLEET}/services/{SERVICE}/members/")
            value = members.get(f"/tunneld/{FLEET}/services/{SERVICE}/members/a")
            return value and json.loads(value)
        self.eventually(lambda: record() and record()["side"] == "new", 10, "its record says new")
        self.assertTrue(self.on(daemon, "new", 0), "no switch was ever committed: it stays on new")
        self.assertEqual(self.fleet_history(daemon), [])
        self.assertEqual(exchange(daemon.port, b"ping"), b"newping")

    def test_128_a_member_that_cannot_follow_is_behind_until_it_can(self):
        etcd = self.bed.etcd()
        a, c = self.start_member("a", etcd.url), self.start_member("c", etcd.url)
        for daemon in (a, c):
            self.eventually(lambda d=daemon: d.service(SERVICE)["fleet"] == "ok", 15, "both reach etcd")
        # A pause typed on c pauses the whole fleet (a too): neither can follow.
        self.ctl_ok(c, "pause", SERVICE, "--timeout", "60s")
        self.eventually(lambda: all(d.service(SERVICE)["state"] == "paused" for d in (a, c)), 10, "both paused")

        self.commit(etcd, 1, "new")

        def behind():
            service = json.loads(self.ctl_ok(a, "fleet", "--json"))["services"][0]
            return {m["name"]: (m["side"], m["epoch"], m["behind"]) for m in service["members"]}
        self.eventually(lambda: behind() == {"a": ("old", 0, True), "c": ("old", 0, True)}, 10,
                        "a and c, paused, are listed behind")
        self.eventually(lambda: (service_metric(a, "tunneld_fleet_members"),
                                 service_metric(a, "tunneld_fleet_members_behind")) == (2, 2), 10,
                        "metrics: two members, both behind")
        self.assertEqual(service_metric(a, "tunneld_fleet_follows_total"), 0)

        self.ctl_ok(a, "resume", SERVICE)
        for daemon in (a, c):
            self.eventually(lambda d=daemon: self.on(d, "new", 1), 15, "each follows once resumed")
        self.eventually(lambda: behind() == {"a": ("new", 1, False), "c": ("new", 1, False)}, 10, "nobody behind")
        self.eventually(lambda: service_metric(a, "tunneld_fleet_members_behind") == 0, 10, "metrics: none behind")
        for daemon in (a, c):
            self.assertEqual(service_metric(daemon, "tunneld_fleet_follows_total"), 1)

if __name__ == "__main__":
    unittest.main()
