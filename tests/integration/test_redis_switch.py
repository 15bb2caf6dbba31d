"""Scenario 15: a kind = "redis" service moved to its replica and back.

Goal: with the new redis a warm replica of the old master, `tunnelctl switch svc --mode pause`
gates on lag, promotes the replica, fences the old master (fence = "replicaof"), flips and
exits 0; clients then write through tunneld to the new master. `status --json` shows the lag
link and `fenced`. `tunnelctl rollback svc` brings clients back to a writable old master.
"""

import json
import unittest

from integration_support import SERVICE, IntegrationTest, daemon_config, service_config, tb


class RedisSwitchTest(IntegrationTest):
    def setUp(self):
        super().setUp()
        self.old = self.bed.redis("old")
        self.new = self.bed.redis("new", replicaof=self.old)
        self.old.cli("SET", "counter", "41")
        self.new.wait_caught_up(self.old)
        self.port = tb.free_port()
        self.daemon = self.bed.tunneld(self.config())

    def config(self, probe_interval: str = "250ms") -> dict:
        return daemon_config({SERVICE: service_config(
            self.port, self.old.port, self.new.port, kind="redis", max_lag="1MiB",
            pause_timeout="5s", probe_interval=probe_interval,
            fence="replicaof", fence_replicaof=f"{tb.HOST}:{self.new.port}")})

    def test_15a_status_reports_replication_link_up(self):
        self.eventually(lambda: self.daemon.service(SERVICE)["lag"]["link"] == "up", 10,
                        "the lag probe sees the replica link up")
        lag = self.daemon.service(SERVICE)["lag"]
        self.assertIsInstance(lag["bytes"], int)
        self.assertFalse(self.daemon.service(SERVICE)["fenced"])

    def test_15b_pause_switch_promotes_replica_fences_old_and_clients_write_to_new(self):
        self.eventually(lambda: self.daemon.service(SERVICE)["lag"]["link"] == "up", 10,
                        "the lag probe sees the replica link up")
        self.ctl_ok(self.daemon, "switch", SERVICE, "--mode", "pause")

        svc = self.daemon.service(SERVICE)
        self.assertEqual(svc["active"], "new")
        self.assertTrue(svc["fenced"])
        self.assertEqual(self.new.info_replication()["role"], "master", "replica promoted")
        with tb.RespClient(self.port) as client:
            self.assertEqual(client.command("INCR", "counter"), 42)
            self.assertEqual(client.command("INFO", "server").count(f"tcp_port:{self.new.port}"),
                             1, "the client is on the new redis")
        # fenced: the old master follows the new one and refuses writes
        self.assertEqual(self.old.info_replication()["role"], "slave")
        with self.assertRaises(tb.RespError):
            self.old.cli("SET", "written-to-old", "1")

    def test_15c_rollback_brings_clients_back_to_a_writable_old(self):
        self.eventually(lambda: self.daemon.service(SERVICE)["lag"]["link"] == "up", 10,
                        "the lag probe sees the replica link up")
        self.ctl_ok(self.daemon, "switch", SERVICE, "--mode", "pause")
        self.ctl_ok(self.daemon, "rollback", SERVICE)

        self.assertEqual(self.daemon.service(SERVICE)["active"], "old")
        with tb.RespClient(self.port) as client:
            self.assertIn(f"tcp_port:{self.old.port}", client.command("INFO", "server"))
            self.assertEqual(client.command("SET", "after-rollback", "1"), "OK")

    def test_15d_rollback_after_a_restart_and_a_reload_gives_old_its_min_replicas_back(self):
        # An operator's durability setting on old: writes need one replica (new is it).
        self.old.cli("CONFIG", "SET", "min-replicas-to-write", "1")
        self.eventually(lambda: self.daemon.service(SERVICE)["lag"]["link"] == "up", 10,
                        "the lag probe sees the replica link up")
        self.ctl_ok(self.daemon, "switch", SERVICE, "--mode", "pause")
        self.assertEqual(self.old.cli("CONFIG", "GET", "min-replicas-to-write"),
                         ["min-replicas-to-write", "100"], "old fenced")
        saved = json.loads(self.daemon.state_file.read_text())["services"][SERVICE]
        self.assertEqual(saved.get("min_replicas_before_fence"), {"old": 1}, saved)

        # Neither a restart nor a reload forgets what old had before the fence.
        self.daemon.restart()
        self.daemon.write_config(self.config(probe_interval="200ms"))  # a changed service reloads
        self.ctl_ok(self.daemon, "reload")
        self.eventually(lambda: "settings reloaded" in self.daemon.log_text(), 10, "the reload")
        self.eventually(lambda: self.daemon.service(SERVICE)["lag"]["link"] == "up", 10,
                        "the lag probe sees old following new")
        self.ctl_ok(self.daemon, "rollback", SERVICE)
        self.assertEqual(self.old.cli("CONFIG", "GET", "min-replicas-to-write"),
                         ["min-replicas-to-write", "1"], "old has the operator's setting back")


if __name__ == "__main__":
    unittest.main()
