"""Scenarios 130-138: one `tunnelctl switch` acts on the whole fleet (`[fleet]`, docs/fleet.md).

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
 133. The coordinator killed (SIGKILL) in phase switch: another member takes the switch over
      and finishes it on new; started again, the killed member comes up on new.
 134. `pause` typed on one member holds new clients on every member; `resume` typed on another
      releases them everywhere.
 136. etcd stopped under load: `tunnelctl switch` is refused with the reason, every member's
      writers go on without an error, health says WARNING and the reachable metric is 0; etcd
      started again, every member registers again and a switch runs.
 137. etcd stopped in phase switch, after every member acknowledged and before the commit: the
      coordinator's switch ends unresolved, never two writable primaries meanwhile; etcd started
      again, the coordinator resolves its own switch and every member ends on new, no acknowledged
      write lost.
 138. A switch typed during a fleet-wide pause is refused up front (nothing claimed, the pause
      kept), naming `tunnelctl resume`; `tunnelctl check` lists every member's readiness and
      fails meanwhile; after the resume `switch --dry-run` passes and the switch runs.
 139. The coordinator's promotion obeyed but new stopped answering before it could say so: the
      coordinator ends `unresolved` (old stays fenced, its clients refused), the others are
      released onto old, which refuses writes: never a second writable primary. `tunnelctl
      resolve svc --to new` on the coordinator takes every member to new (the next epoch,
      committed on new), with no acknowledged write lost.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import unittest

from integration_support import (SERVICE, IntegrationTest, Writer, daemon_config, missing_keys,
                                 service_config, service_metric, tb)

FLEET = "bed"
MEMBERS = ("a", "b", "c")
PAUSE_TIMEOUT = 5.0


class FleetSwitchTest(IntegrationTest):
    def setUp(self):
        super().setUp()
        self.etcd = self.bed.etcd()
        self.old = self.bed.redis("old")
        # new replicates through a relay that 133 stalls (its catch-up then waits)
        self.relay = tb.StallableRelay(self.old.port)
        self.addCleanup(self.relay.stop)
        self.new = self.bed.redis("new")
        self.new.cli("REPLICAOF", tb.HOST, str(self.relay.port))
        self.new.wait_link_up()
        self.members = {name: self.start_member(name) for name in MEMBERS}
        self.eventually(lambda: all(len(self.listing(d)["services"][0]["members"]) == 3
                                    for d in self.members.values()), 30,
                        "every member lists all three")
        for daemon in self.members.values():
            self.wait_in_sync(daemon)

    def start_member(self, name: str, **extra) -> tb.Tunneld:
        port, health_port = tb.free_port(), tb.free_port()
        settings = {"max_lag": "1MiB", "pause_timeout": f"{PAUSE_TIMEOUT:.0f}s",
                    "probe_interval": "200ms", "probe_timeout": "1s", "fence": "replicaof",
                    "fence_replicaof": f"{tb.HOST}:{self.new.port}", **extra}
        config = daemon_config({SERVICE: service_config(port, self.old.port, self.new.port,
                                                        kind="redis", **settings)},
                               health_listen=f"{tb.HOST}:{health_port}")
        config["fleet"] = {"etcd": [self.etcd.url], "name": FLEET, "member": name,
                           "ack_timeout": "2s"}
        daemon = self.bed.tunneld(config)
        daemon.port, daemon.health_port = port, health_port
        return daemon


    def listing(self, daemon: tb.Tunneld) -> dict:
        return json.loads(self.ctl_ok(daemon, "fleet", SERVICE, "--json"))

    def wait_in_sync(self, daemon: tb.Tunneld) -> None:
        def in_sync():
            lag = daemon.service(SERVICE)["lag"]
            return lag and lag["link"] == "up" and lag["bytes"] == 0
        self.eventually(in_sync, 30, "the probe reports link up and lag 0B")

    def hold_new_behind(self) -> None:
        """Stalls the replication relay and writes a key to old that new cannot have until the
        relay flows, so a switch's catch-up waits (phase switch lasts) however the writers fell:
        their last write may have reached new before the stall."""
        self.relay.stall()
        self.assertEqual(self.old.cli("SET", "behind-the-stall", "1"), "OK")

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
        hold = re.search(r"epoch 1: (\d+) ms from the first hold to the last release", output)
        self.assertIsNotNone(hold, output)
        sys.stderr.write(f"\nRESULT 130 fleet hold (first hold to last release): {hold.group(1)} ms\n")
        a = self.members["a"]
        self.assertEqual(service_metric(a, "tunneld_fleet_switches_total", ',outcome="committed"'), 1)
        self.assertEqual(service_metric(a, "tunneld_fleet_last_switch_acks"), 3)
        self.assertGreater(service_metric(a, "tunneld_fleet_last_switch_hold_seconds"), 0)
        self.assertLessEqual(service_metric(a, "tunneld_fleet_last_switch_slowest_ack_seconds"), 2.0)
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
        self.assertEqual(service_metric(self.members["a"], "tunneld_fleet_switches_total", ',outcome="aborted"'), 1)
        self.assertEqual(service_metric(self.members["a"], "tunneld_fleet_last_switch_acks"), 2)
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

    def test_133_a_coordinator_killed_mid_switch_is_taken_over_and_the_switch_finished(self):
        epoch_key = f"/tunneld/{FLEET}/services/{SERVICE}/epoch"
        writer = Writer(self.members["b"].port, "t", threads=2, pace=0.01).start()
        self.addCleanup(writer._stop.set)
        time.sleep(0.5)
        self.hold_new_behind()  # the coordinator's catch-up waits: phase "switch" lasts seconds
        coordinator = self.members["a"]
        switch = subprocess.Popen(coordinator.ctl_argv("switch", SERVICE), stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        self.addCleanup(switch.kill)

        def in_phase_switch():
            record = self.etcd.get_prefix(epoch_key).get(epoch_key)
            return record and json.loads(record)["phase"] == "switch"
        self.eventually(in_phase_switch, 15, "the switch reaches phase switch", interval=0.01)
        coordinator.process.stop(timeout=5, sig=signal.SIGKILL)
        switch.wait(30)
        self.relay.flow()
        # The others resume on old at their pause budget, then one takes the switch over once a's
        # lease ended (about 10 s) and the takeover wait (15 s) passed, and finishes it on new.
        def committed_on_new():
            record = self.etcd.get_prefix(epoch_key).get(epoch_key)
            return record and json.loads(record)["phase"] == "committed" and json.loads(record)["side"] == "new"
        self.eventually(committed_on_new, 90, "the switch committed on new by a takeover")
        self.eventually(lambda: self.on("new", ("b", "c")), 20, "b and c on new")
        writer.stop()
        self.assertEqual(self.new.info_replication().get("role"), "master")
        self.assertTrue(self.refuses_writes(self.old), "old refuses writes")
        missing = missing_keys(self.new, writer.acked, writer.value_of)
        self.assertEqual(missing, [], f"{len(missing)} acknowledged writes missing on new; {writer.summary()}")
        takers = [n for n in ("b", "c") if "taking it over" in self.members[n].log_text()]
        self.assertGreaterEqual(len(takers), 1, "a member took the switch over")
        # The killed coordinator comes back onto new.
        coordinator.start()
        self.eventually(lambda: self.on("new", ("a",)), 30, "a, started again, is on new")

    def test_134_pause_and_resume_typed_on_one_member_act_on_every_member(self):
        self.ctl_ok(self.members["a"], "pause", SERVICE, "--timeout", "60s")
        self.eventually(lambda: all(d.service(SERVICE)["state"] == "paused" for d in self.members.values()), 10,
                        "every member paused")
        # A new client of c is held: its PING is answered only after the resume typed on b.
        held = socket.create_connection((tb.HOST, self.members["c"].port), timeout=20)
        self.addCleanup(held.close)
        held.sendall(b"PING\r\n")
        self.eventually(lambda: self.members["c"].service(SERVICE)["held"] == 1, 10, "c holds the new client")
        self.ctl_ok(self.members["b"], "resume", SERVICE)
        self.assertEqual(held.recv(64), b"+PONG\r\n")
        self.eventually(lambda: all(d.service(SERVICE)["state"] == "serving" for d in self.members.values()), 10,
                        "every member serving again")
        fleet_entries = [(e["action"], e["result"]) for e in json.loads(self.ctl_ok(
            self.members["c"], "history", SERVICE, "--json"))["history"] if e["user"] == "fleet"]
        self.assertEqual(fleet_entries, [("pause", "done"), ("resume", "done")])


    def writers_on_every_member(self, prefix: str) -> list[Writer]:
        writers = [Writer(d.port, f"{name}-{prefix}", threads=2, pace=0.01).start()
                   for name, d in self.members.items()]
        for w in writers:
            self.addCleanup(w._stop.set)
        return writers

    def writing(self, writers: list[Writer], more: int, what: str) -> None:
        """Waits until every writer has `more` acknowledged writes than now."""
        counts = [len(w.acked) for w in writers]
        self.eventually(lambda: all(len(w.acked) >= c + more for w, c in zip(writers, counts)), 30, what)

    def test_136_etcd_stopped_refuses_the_switch_and_traffic_keeps_flowing(self):
        writers = self.writers_on_every_member("etcd-down")
        self.writing(writers, 20, "writes on every member")
        self.etcd.stop()
        for daemon in self.members.values():
            self.eventually(lambda d=daemon: d.service(SERVICE)["fleet"] == "unreachable", 15,
                            "every member reports the fleet unreachable")
        result = self.members["a"].ctl("switch", SERVICE, timeout=30)
        output = result.stdout + result.stderr
        self.assertEqual(result.returncode, 1, output)
        self.assertIn("switch refused: the fleet is unreachable (etcd: ", output)
        self.assertIn(f"this member keeps serving {SERVICE} on old", output)
        check = self.members["b"].ctl("check", SERVICE)
        self.assertEqual(check.returncode, 1, check.stdout + check.stderr)
        self.assertIn("FAIL       fleet etcd reachable: etcd unreachable (", check.stdout)
        for daemon in self.members.values():
            health = daemon.ctl("health")
            self.assertEqual(health.returncode, 1, health.stdout)
            self.assertRegex(health.stdout, rf"^TUNNELD WARNING - fleet etcd unreachable \({SERVICE}\)")
            self.assertEqual(service_metric(daemon, "tunneld_fleet_etcd_reachable"), 0)
        self.writing(writers, 50, "writes on every member with etcd stopped")

        self.etcd.start()
        for daemon in self.members.values():
            self.eventually(lambda d=daemon: d.service(SERVICE)["fleet"] == "ok", 30, "etcd reachable again")
        self.eventually(lambda: all(len(self.listing(d)["services"][0]["members"]) == 3
                                    for d in self.members.values()), 30, "every member registered again")
        for daemon in self.members.values():
            self.assertEqual(service_metric(daemon, "tunneld_fleet_etcd_reachable"), 1)
            self.assertEqual(daemon.ctl("health").returncode, 0)
        self.writing(writers, 20, "writes after etcd came back")
        for w in writers:
            w.stop()
            self.assertEqual(w.errors, 0, w.summary())
            self.assertEqual(missing_keys(self.old, w.acked, w.value_of), [])
        self.assertTrue(self.on("old"))
        self.assertEqual(self.new.info_replication().get("role"), "slave", "nothing was promoted")
        # The fleet acts as one again.
        self.ctl_ok(self.members["b"], "switch", SERVICE, timeout=60)
        self.eventually(lambda: self.on("new"), 15, "every member on new")

    def test_137_etcd_stopped_between_the_acknowledgements_and_the_commit(self):
        epoch_key = f"/tunneld/{FLEET}/services/{SERVICE}/epoch"
        writer = Writer(self.members["b"].port, "mid", threads=2, pace=0.01).start()
        self.addCleanup(writer._stop.set)
        self.writing([writer], 20, "writes on b")
        self.hold_new_behind()  # the coordinator's catch-up waits: phase switch lasts until the relay flows
        switch = self.members["a"].ctl_async("switch", SERVICE)
        self.addCleanup(switch.kill)

        def in_phase_switch():
            record = self.etcd.get_prefix(epoch_key).get(epoch_key)
            return record and json.loads(record)["phase"] == "switch"
        self.eventually(in_phase_switch, 15, "every member acknowledged: phase switch", interval=0.01)
        # Killed, not stopped: at once, well within the coordinator's pause budget (5 s).
        self.etcd.process.stop(timeout=5, sig=signal.SIGKILL)
        self.relay.flow()  # the servers' part goes on without etcd; the commit cannot be written
        out, err = switch.communicate(timeout=90)
        self.assertEqual(switch.returncode, 1, out + err)
        self.assertIn("fleet switch epoch 1 unresolved", out + err)

        def one_primary():
            old_writable = not self.refuses_writes(self.old)
            new_primary = self.new.info_replication().get("role") == "master"
            return old_writable != new_primary
        # While etcd is away every member is on one side or the other, never two writable primaries.
        for _ in range(5):
            self.assertTrue(one_primary(), "exactly one writable primary")
            time.sleep(0.2)

        self.etcd.start()
        def committed_on_new():
            record = self.etcd.get_prefix(epoch_key).get(epoch_key)
            return record and (json.loads(record)["phase"], json.loads(record)["side"]) == ("committed", "new")
        self.eventually(committed_on_new, 60, "the coordinator resolved its switch: committed on new")
        self.eventually(lambda: self.on("new"), 30, "every member on new")
        self.assertIn("this member, which no longer runs it", self.members["a"].log_text())
        self.writing([writer], 20, "writes on new")
        writer.stop()
        self.assertEqual(self.new.info_replication().get("role"), "master")
        self.assertTrue(self.refuses_writes(self.old), "old refuses writes")
        missing = missing_keys(self.new, writer.acked, writer.value_of)
        self.assertEqual(missing, [], f"{len(missing)} acknowledged writes missing on new; {writer.summary()}")

    def test_138_a_switch_during_a_fleet_pause_is_refused_up_front(self):
        epoch_key = f"/tunneld/{FLEET}/services/{SERVICE}/epoch"
        self.ctl_ok(self.members["a"], "pause", SERVICE, "--timeout", "60s")
        self.eventually(lambda: all(d.service(SERVICE)["state"] == "paused" for d in self.members.values()), 10,
                        "every member paused")
        result = self.members["b"].ctl("switch", SERVICE, timeout=30)
        output = result.stdout + result.stderr
        self.assertEqual(result.returncode, 1, output)
        self.assertIn(f"switch refused: {SERVICE} is paused fleet-wide (by a, ", output)
        self.assertIn(f"Run `tunnelctl resume {SERVICE}` first", output)
        self.assertEqual(self.etcd.get_prefix(epoch_key), {}, "nothing was claimed")
        self.assertTrue(all(d.service(SERVICE)["state"] == "paused" for d in self.members.values()),
                        "the pause is kept")
        # `check` on a member shows every member's readiness (as their records in etcd say, each
        # written within a moment of its change) and fails while the pause lasts.
        def check_shows_every_member_paused():
            check = self.members["b"].ctl("check", SERVICE)
            return check.returncode == 1 and all(f"FAIL       fleet member {n}: on old, epoch 0, paused" in check.stdout
                                                 for n in MEMBERS) and check
        check = self.eventually(check_shows_every_member_paused, 10, "check lists every member paused")
        self.assertIn(f"FAIL       fleet-wide pause: switch refused: {SERVICE} is paused fleet-wide", check.stdout)
        self.ctl_ok(self.members["c"], "resume", SERVICE)
        self.eventually(lambda: self.on("old"), 10, "every member serving again")

        def dry_run_passes():
            dry = self.members["b"].ctl("switch", SERVICE, "--dry-run")
            return dry.returncode == 0 and all(f"PASS       fleet member {n}: on old, epoch 0, serving" in dry.stdout
                                               for n in MEMBERS) and dry
        dry = self.eventually(dry_run_passes, 10, "switch --dry-run passes every member")
        self.assertIn("PASS       fleet epoch: epoch 0 (no fleet switch yet), on old", dry.stdout)
        self.ctl_ok(self.members["b"], "switch", SERVICE, timeout=60)
        self.eventually(lambda: self.on("new"), 15, "every member on new")

    def test_139_a_promotion_the_coordinator_cannot_confirm_leaves_old_fenced_until_the_operator_resolves(self):
        # a's promotion obeys, then new stops answering (SIGSTOP) before the coordinator can see it.
        self.members["a"].sigterm()
        stop_new = (f"redis-cli -h {tb.HOST} -p {self.new.port} REPLICAOF NO ONE >/dev/null && "
                    f"kill -STOP {self.new.pid}")
        self.members["a"] = self.start_member("a", promote_command=stop_new)
        self.addCleanup(lambda: os.kill(self.new.pid, signal.SIGCONT))
        self.eventually(lambda: len(self.listing(self.members["b"])["services"][0]["members"]) == 3, 30,
                        "a registered again")
        self.wait_in_sync(self.members["a"])
        writers = [Writer(self.members[n].port, f"{n}-139", threads=2, pace=0.01).start() for n in ("b", "c")]
        for w in writers:
            self.addCleanup(w._stop.set)
        self.writing(writers, 20, "writes on b and c")

        result = self.members["a"].ctl("switch", SERVICE, timeout=90)
        output = result.stdout + result.stderr
        self.assertEqual(result.returncode, 1, output)
        self.assertIn("new may be a primary, so old stays fenced", output)
        self.assertEqual(self.members["a"].service(SERVICE)["state"], "unresolved")
        os.kill(self.new.pid, signal.SIGCONT)
        # The others end the hold on old, which refuses writes: never a second writable primary.
        self.eventually(lambda: all(self.members[n].service(SERVICE)["state"] == "serving"
                                    for n in ("b", "c")), 3 * PAUSE_TIMEOUT, "b and c released")
        self.assertEqual(self.new.info_replication().get("role"), "master", "new was promoted")
        self.assertTrue(self.refuses_writes(self.old), "old stays fenced")

        # The runbook: resolve on the coordinator; the answer goes to every member (a fleet switch
        # whose servers' part finds a there already).
        self.ctl_ok(self.members["a"], "resolve", SERVICE, "--to", "new", timeout=60)
        epoch_key = f"/tunneld/{FLEET}/services/{SERVICE}/epoch"
        record = json.loads(self.etcd.get_prefix(epoch_key)[epoch_key])
        self.assertEqual((record["epoch"], record["phase"], record["side"]), (2, "committed", "new"), record)
        self.eventually(lambda: self.on("new"), 15, "every member on new")
        self.writing(writers, 20, "writes on new")
        for w in writers:
            w.stop()
        self.assertTrue(self.refuses_writes(self.old), "old refuses writes")
        for w in writers:
            missing = missing_keys(self.new, w.acked, w.value_of)
            self.assertEqual(missing, [], f"{len(missing)} acknowledged writes missing on new; {w.summary()}")


if __name__ == "__main__":
    unittest.main()
