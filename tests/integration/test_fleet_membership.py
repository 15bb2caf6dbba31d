"""Scenarios 120-124: a fleet's membership over a real etcd (`[fleet]`, docs/fleet.md).

Goal: each tunneld with `[fleet]` keeps a lease-bound record per service in etcd and watches
the fleet; an operator sees every member with `tunnelctl fleet`, and monitoring sees when etcd
is away, while traffic never depends on it. Three tunneld members share one etcd started by
the bed on loopback; each serves a `kind = "tcp"` service in front of two echo servers.
 120. Every member lists all three (side old, epoch 0, serving, 0 held, a recent heartbeat,
      nobody behind), as JSON and as a table; `status --json` says `epoch: 0`, `fleet: "ok"`.
 121. A member stopped with SIGTERM leaves at once (its lease revoked); one killed with SIGKILL
      stays listed until its lease expires, then disappears from the others' listing.
 122. Fault: etcd stopped. Status says `fleet: "unreachable"`, `tunnelctl health` is WARNING
      naming the service, /metrics says `tunneld_fleet_etcd_reachable 0`, `tunnelctl fleet`
      still answers (with what was last seen), and clients are still served. etcd started
      again: `fleet: "ok"` and all three listed.
 123. The fleet's committed epoch moves on (epoch 1 on new, written to etcd as a coordinator
      would): every member follows it onto new and runs epoch 1, nobody is listed behind (a member
      that cannot follow is listed behind: test_fleet_join 128).
 124. A single host without `[fleet]`: `epoch` and `fleet` are null, `tunnelctl fleet` is
      refused, health is OK and /metrics has no fleet samples: exactly as before.
 125. A reload that adds a service makes the member publish a record for it and follow its
      committed epoch; one that removes it deletes that record, and the other service is untouched.
"""

from __future__ import annotations

import http.client
import json
import signal
import time
import unittest

from integration_support import SERVICE, IntegrationTest, daemon_config, exchange, service_config, tb

FLEET = "bed"
MEMBERS = ("a", "b", "c")
EXTRA = "extra"


class FleetMembershipTest(IntegrationTest):
    def setUp(self):
        super().setUp()
        self.old = self.bed.echo_server(b"old")
        self.new = self.bed.echo_server(b"new")

    def member_config(self, name: str | None, etcd: tb.Etcd | None, port: int, health_port: int,
                      extra_port: int | None = None) -> dict:
        services = {SERVICE: service_config(port, self.old.port, self.new.port)}
        if extra_port is not None:
            services[EXTRA] = service_config(extra_port, self.old.port, self.new.port)
        config = daemon_config(services, health_listen=f"{tb.HOST}:{health_port}")
        if etcd is not None:
            config["fleet"] = {"etcd": [etcd.url], "name": FLEET, "member": name}
        return config

    def start_member(self, name: str | None, etcd: tb.Etcd | None = None) -> tb.Tunneld:
        port, health_port = tb.free_port(), tb.free_port()
        daemon = self.bed.tunneld(self.member_config(name, etcd, port, health_port))
        daemon.port, daemon.health_port = port, health_port
        return daemon

    def start_fleet(self) -> tuple[tb.Etcd, dict[str, tb.Tunneld]]:
        etcd = self.bed.etcd()
        members = {name: self.start_member(name, etcd) for name in MEMBERS}
        return etcd, members

    def listing(self, daemon: tb.Tunneld) -> dict:
        return json.loads(self.ctl_ok(daemon, "fleet", "--json"))

    def member_names(self, daemon: tb.Tunneld) -> list[str]:
        services = {s["name"]: s for s in self.listing(daemon)["services"]}
        return [m["name"] for m in services.get(SERVICE, {"members": []})["members"]]

    def metrics(self, daemon: tb.Tunneld) -> str:
        connection = http.client.HTTPConnection(tb.HOST, daemon.health_port, timeout=10)
        try:
            connection.request("GET", "/metrics")
            return connection.getresponse().read().decode()
        finally:
            connection.close()

    def test_120_every_member_lists_the_whole_fleet(self):
        _, members = self.start_fleet()
        for daemon in members.values():
            self.eventually(lambda d=daemon: self.member_names(d) == list(MEMBERS), 15,
                            "every member listed by every member")
        listing = self.listing(members["a"])
        self.assertEqual((listing["fleet"], listing["member"], listing["etcd"]), (FLEET, "a", "ok"))
        service = listing["services"][0]
        self.assertEqual((service["name"], service["epoch"], service["side"], service["phase"]),
                         (SERVICE, 0, "old", "committed"))
        now_ms = time.time() * 1000
        for member in service["members"]:
            self.assertEqual((member["side"], member["epoch"], member["state"], member["held"], member["behind"]),
                             ("old", 0, "serving", 0, False), member)
            self.assertLess(abs(now_ms - member["last_seen"]), 30_000, member)

        table = self.ctl_ok(members["b"], "fleet")
        self.assertIn(f"fleet {FLEET}, this member b, etcd ok", table)
        self.assertIn(f"{SERVICE}: epoch 0 committed on old\n", table)
        self.assertIn("SERVICE  MEMBER  SIDE  EPOCH  STATE    HELD  LAST_SEEN", table)
        for name in MEMBERS:
            self.assertRegex(table, rf"\n{SERVICE}\s+{name}\s+old\s+0\s+serving\s+0\s+\S+ ago\s+-")

        status = members["c"].service(SERVICE)
        self.assertEqual((status["epoch"], status["fleet"]), (0, "ok"))
        health = members["c"].ctl("health")
        self.assertEqual(health.returncode, 0, health.stdout)

    def test_121_a_stopped_member_leaves_at_once_a_killed_one_when_its_lease_expires(self):
        _, members = self.start_fleet()
        self.eventually(lambda: self.member_names(members["a"]) == list(MEMBERS), 15, "all three listed")

        self.assertEqual(members["b"].sigterm(timeout=30), 0)
        # A clean stop revokes the lease: gone well before any lease TTL (10 s) could expire.
        self.eventually(lambda: self.member_names(members["a"]) == ["a", "c"], 3, "b gone at once")

        members["c"].send_signal(signal.SIGKILL)
        members["c"].wait_exit(10)
        killed_at = time.monotonic()
        self.assertEqual(self.member_names(members["a"]), ["a", "c"],
                         "a killed member stays listed while its lease lives")
        self.eventually(lambda: self.member_names(members["a"]) == ["a"], 25, "c gone after its lease expired")
        self.assertGreater(time.monotonic() - killed_at, 3, "it went with its lease, not with its connection")

    def test_122_etcd_stopped_is_reported_and_traffic_keeps_flowing(self):
        etcd, members = self.start_fleet()
        a = members["a"]
        self.eventually(lambda: self.member_names(a) == list(MEMBERS), 15, "all three listed")

        etcd.stop()
        self.eventually(lambda: a.service(SERVICE)["fleet"] == "unreachable", 10, "status says unreachable")
        self.assertEqual(a.service(SERVICE)["epoch"], 0, "the epoch it runs is kept")
        health = a.ctl("health")
        self.assertEqual(health.returncode, 1, health.stdout)
        self.assertRegex(health.stdout, rf"^TUNNELD WARNING - fleet etcd unreachable \({SERVICE}\)")
        self.assertIn(f'tunneld_fleet_etcd_reachable{{service="{SERVICE}"}} 0\n', self.metrics(a))
        listing = self.listing(a)
        self.assertEqual(listing["etcd"], "unreachable")
        self.assertTrue(listing["error"], listing)
        self.assertIn("etcd unreachable (", self.ctl_ok(a, "fleet"))
        for daemon in members.values():
            self.assertEqual(exchange(daemon.port, b"ping"), b"oldping", "clients are served without etcd")

        etcd.start()
        for daemon in members.values():
            self.eventually(lambda d=daemon: d.service(SERVICE)["fleet"] == "ok", 20, "etcd reachable again")
        self.eventually(lambda: self.member_names(a) == list(MEMBERS), 15, "all three listed again")
        self.assertIn(f'tunneld_fleet_etcd_reachable{{service="{SERVICE}"}} 1\n', self.metrics(a))
        self.assertEqual(a.ctl("health").returncode, 0)

    def test_123_members_follow_the_committed_epoch(self):
        etcd, members = self.start_fleet()
        self.eventually(lambda: self.member_names(members["a"]) == list(MEMBERS), 15, "all three listed")
        etcd.put(f"/tunneld/{FLEET}/services/{SERVICE}/epoch",
                 json.dumps({"epoch": 1, "side": "new", "phase": "committed"}))

        def followed():
            service = self.listing(members["b"])["services"][0]
            return service["epoch"] == 1 and all((m["side"], m["epoch"], m["behind"]) == ("new", 1, False)
                                                  for m in service["members"])
        self.eventually(followed, 15, "every member on new at epoch 1, nobody behind")
        table = self.ctl_ok(members["b"], "fleet", SERVICE)
        self.assertIn(f"{SERVICE}: epoch 1 committed on new\n", table)
        # What a member records in etcd is what it runs: new, epoch 1.
        def record():
            value = json.loads(etcd.get_prefix(f"/tunneld/{FLEET}/services/{SERVICE}/members/")
                               [f"/tunneld/{FLEET}/services/{SERVICE}/members/c"])
            return (value["side"], value["epoch"], value["state"])
        self.eventually(lambda: record() == ("new", 1, "serving"), 10, "c's record says new, epoch 1")
        for daemon in members.values():
            self.assertEqual(exchange(daemon.port, b"ping"), b"newping")

    def test_125_a_reload_adds_and_removes_a_service_in_the_fleet(self):
        etcd, members = self.start_fleet()
        a = members["a"]
        self.eventually(lambda: self.member_names(a) == list(MEMBERS), 15, "all three listed")
        members_of = lambda service: f"/tunneld/{FLEET}/services/{service}/members/"  # noqa: E731

        extra_port = tb.free_port()
        a.write_config(self.member_config("a", etcd, a.port, a.health_port, extra_port))
        self.ctl_ok(a, "reload")
        self.eventually(lambda: list(etcd.get_prefix(members_of(EXTRA))) == [members_of(EXTRA) + "a"], 10,
                        "a's record for the added service in etcd")
        services = {s["name"]: s for s in self.listing(a)["services"]}
        self.assertEqual([m["name"] for m in services[EXTRA]["members"]], ["a"])
        self.assertEqual(exchange(extra_port, b"ping"), b"oldping")

        # The added service's committed epoch is watched: a follows it onto new.
        etcd.put(f"/tunneld/{FLEET}/services/{EXTRA}/epoch",
                 json.dumps({"epoch": 1, "side": "new", "phase": "committed"}))
        self.eventually(lambda: a.service(EXTRA)["active"] == "new", 10, "a follows the added service's epoch")
        self.assertEqual(exchange(extra_port, b"ping"), b"newping")
        self.assertEqual(a.service(SERVICE)["active"], "old", "the other service stays where it was")

        a.write_config(self.member_config("a", etcd, a.port, a.health_port))
        self.ctl_ok(a, "reload")
        self.eventually(lambda: not etcd.get_prefix(members_of(EXTRA)), 10,
                        "a's record for the removed service deleted")
        self.assertEqual(sorted(etcd.get_prefix(members_of(SERVICE))),
                         [members_of(SERVICE) + name for name in MEMBERS], "the other service's records stay")
        self.assertEqual([s["name"] for s in self.listing(a)["services"]], [SERVICE])
        self.assertEqual(exchange(a.port, b"ping"), b"oldping")

    def test_124_a_single_host_without_fleet_is_unchanged(self):
        daemon = self.start_member(None)
        status = daemon.service(SERVICE)
        self.assertIsNone(status["epoch"])
        self.assertIsNone(status["fleet"])
        refused = daemon.ctl("fleet")
        self.assertEqual(refused.returncode, 1)
        self.assertIn("not a member of a fleet", refused.stderr)
        self.assertEqual(daemon.ctl("health").returncode, 0)
        metrics = self.metrics(daemon)
        self.assertIn("# TYPE tunneld_fleet_etcd_reachable gauge", metrics)
        self.assertNotIn("tunneld_fleet_etcd_reachable{", metrics)
        self.assertNotIn("tunneld_fleet_epoch{", metrics)


if __name__ == "__main__":
    unittest.main()
