"""Scenario 87: tunneld SIGKILLed at each step of a redis rollback.

Goal: a rollback (new -> old) cut short by SIGKILL at any of its server steps is finished or
undone by the restarted tunneld so that the side clients reach is the one writable primary, the
other side refuses writes, and every write acknowledged through tunneld (writers run through
the switch, the rollback and the crash) is on that primary with its value.

The rollback runs no hook, so its steps are widened by a delaying relay (tools/delay_relay,
150 ms each way) between tunneld and each redis-server: every command tunneld sends takes 300 ms,
and the test, watching the servers directly, kills tunneld as soon as a step has taken effect
and before the next one can arrive.
  87a: new's writes paused (a canary write on new blocks): undone, clients stay on new.
  87b: new fenced (min-replicas-to-write 100): undone, new's fence lifted.
  87c: old promoted (role:master), its min-replicas-to-write not restored yet: finished
       forward, old takes writes, new is made a replica of old.
  87d: new a replica of old: finished forward.
"""

import signal
import unittest

from integration_support import (SERVICE, IntegrationTest, Writer, daemon_config, missing_keys,
                                 service_config, tb)

DELAY_MS = 150


class RollbackCrashTest(IntegrationTest):
    def setUp(self):
        super().setUp()
        self.old = self.bed.redis("old")
        self.new = self.bed.redis("new", replicaof=self.old)
        old_relay = self.bed.delay_relay(self.old.port, DELAY_MS)
        new_relay = self.bed.delay_relay(self.new.port, DELAY_MS)
        self.port = tb.free_port()
        self.daemon = self.bed.tunneld(daemon_config({SERVICE: service_config(
            self.port, old_relay.port, new_relay.port, kind="redis", max_lag="1MiB",
            pause_timeout="20s", probe_interval="250ms", probe_timeout="3s",
            fence="replicaof", fence_replicaof=f"{tb.HOST}:{self.new.port}",
            rollback_replicaof=f"{tb.HOST}:{self.old.port}")}))
        self.eventually(lambda: self.daemon.service(SERVICE)["lag"]["link"] == "up", 20,
                        "the lag probe sees the replica link up")
        self.writer = Writer(self.port, "w", threads=2, timeout=60, pace=0.01).start()
        self.addCleanup(self.writer.stop, 90)
        self.eventually(lambda: len(self.writer.acked) > 20, 20, "writes acknowledged on old")
        self.ctl_ok(self.daemon, "switch", SERVICE, "--mode", "pause", timeout=90)
        self.old.wait_link_up(20)  # fence_replicaof: old follows new, warm for the rollback
        self.old.wait_caught_up(self.new, 20)
        self.eventually(lambda: len(self.writer.acked) > 60, 20, "writes acknowledged on new")

    def kill_when(self, reached, what: str) -> None:
        rollback = self.daemon.ctl_async("rollback", SERVICE)
        self.addCleanup(rollback.communicate, timeout=30)
        self.eventually(reached, 30, what, interval=0.005)
        self.daemon.process.send_signal(signal.SIGKILL)
        self.daemon.process.wait(10)
        self.daemon.process.stop()
        self.daemon.start()

    def assert_one_writable_primary(self, active: tb.Redis, other: tb.Redis) -> None:
        self.eventually(lambda: self.daemon.service(SERVICE)["state"] == "serving", 40,
                        "recovery ends serving")
        self.assertEqual(self.daemon.service(SERVICE)["active"],
                         "old" if active is self.old else "new")
        acked_before = len(self.writer.acked)
        self.eventually(lambda: len(self.writer.acked) > acked_before + 20, 20,
                        "writers acknowledged again after the recovery")
        self.writer.stop(90)
        with tb.RespClient(self.port) as client:
            self.assertIn(f"tcp_port:{active.port}", client.command("INFO", "server"))
            self.assertEqual(client.command("SET", "after-recovery", "1"), "OK")
        self.assertEqual(active.info_replication()["role"], "master")
        with self.assertRaises(tb.RespError, msg="the other server refuses writes"):
            other.cli("SET", "split-brain", "1")
        keys = self.writer.acknowledged()
        missing = missing_keys(active, keys, self.writer.value_of)
        self.assertEqual(missing, [], f"{len(missing)} of {len(keys)} acknowledged writes are not "
                                      f"on {active.name}: {self.writer.summary()}")

    def new_paused(self) -> bool:
        try:
            with tb.RespClient(self.new.port, timeout=0.05) as client:
                client.command("SET", "pause-probe", "1")
            return False
        except OSError:
            return True  # the write waits: new's writes are paused

    def min_replicas(self, redis: tb.Redis) -> str:
        return redis.cli("CONFIG", "GET", "min-replicas-to-write")[1]

    def test_87a_killed_with_new_paused_is_undone(self):
        self.kill_when(self.new_paused, "new's writes paused")
        self.assert_one_writable_primary(self.new, self.old)
        self.assertIn("undone", self.daemon.log_text())

    def test_87b_killed_with_new_fenced_is_undone(self):
        self.kill_when(lambda: self.min_replicas(self.new) == "100", "new fenced")
        self.assert_one_writable_primary(self.new, self.old)
        self.assertEqual(self.min_replicas(self.new), "0", "new's fence lifted")
        self.assertIn("undone", self.daemon.log_text())

    def test_87c_killed_with_old_promoted_finishes_forward(self):
        self.kill_when(lambda: self.old.info_replication()["role"] == "master", "old promoted")
        self.assert_one_writable_primary(self.old, self.new)
        self.assertEqual(self.min_replicas(self.old), "0", "old's fence from the switch lifted")
        self.assertIn("finishing it forward", self.daemon.log_text())
        # ... and new follows old, as the rollback that died would have made it: a fenced primary
        # left behind comes back writable when it restarts (the switch campaign found that).
        self.eventually(lambda: f"master_port:{self.old.port}" in self.new.cli("INFO", "replication"), 20,
                        "new made a replica of old (rollback_replicaof)")

    def test_87d_killed_with_new_following_old_finishes_forward(self):
        self.kill_when(lambda: self.new.info_replication()["role"] == "slave", "new follows old")
        self.assert_one_writable_primary(self.old, self.new)
        self.assertIn(f"master_port:{self.old.port}", self.new.cli("INFO", "replication"))
        self.assertIn("finishing it forward", self.daemon.log_text())


if __name__ == "__main__":
    unittest.main()
