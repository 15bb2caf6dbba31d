"""Scenario 86: two legacy hosts in front of one Redis pair; each runs tunneld, writers on both.

Goal: a migration moves a fleet one host at a time. `tunnelctl switch svc` on the first host
pauses, fences and promotes; the same command on the second host then finds the servers already
switched (new a primary continuing old's lineage, old its fenced replica), checks that and flips
that host at once, without --force: its history says adopted. Rollback goes the same way, the
first host rolling the servers back, the second adopting. After each, both hosts route to the
one writable primary and no write acknowledged to a client of either host is missing on it.
"""

import json
import time
import unittest

from integration_support import SERVICE, IntegrationTest, daemon_config, service_config, tb
from test_redis_cutover import Writer, missing_keys


class TwoHostsTest(IntegrationTest):
    def start(self):
        self.old = self.bed.redis("old")
        self.new = self.bed.redis("new", replicaof=self.old)
        self.hosts = []
        for _ in range(2):
            port = tb.free_port()
            daemon = self.bed.tunneld(daemon_config({SERVICE: service_config(
                port, self.old.port, self.new.port, kind="redis", max_lag="1MiB", mode="pause",
                pause_timeout="10s", probe_interval="250ms",
                fence="replicaof", fence_replicaof=f"{tb.HOST}:{self.new.port}")}))
            self.hosts.append((daemon, port))
        for daemon, _ in self.hosts:
            self.eventually(lambda d=daemon: d.service(SERVICE)["lag"]["link"] == "up", 20,
                            "the lag probe sees the replica link up")

    def writers(self, prefix):
        started = [Writer(port, f"{prefix}{i}", threads=4).start() for i, (_, port) in enumerate(self.hosts)]
        for writer in started:
            self.addCleanup(writer._stop.set)
            self.eventually(lambda w=writer: w.attempts > 50, 20, "writes through tunneld")
        return started

    def run_on(self, daemon, *args):
        result = daemon.ctl(*args, timeout=60)
        output = result.stdout + result.stderr
        self.assertEqual(result.returncode, 0, f"tunnelctl {' '.join(args)}:\n{output}")
        return output

    def last_history(self, daemon):
        result = daemon.ctl("history", SERVICE, "--json", check=True)
        return json.loads(result.stdout)["history"][-1]

    def assert_both_on(self, side, primary):
        for daemon, port in self.hosts:
            svc = daemon.service(SERVICE)
            self.assertEqual(svc["active"], side, svc)
            with tb.RespClient(port, timeout=10) as client:
                self.assertIn(f"tcp_port:{primary.port}", client.command("INFO", "server"))
                self.assertEqual(client.command("SET", f"through-{port}-on-{side}", "1"), "OK")
        self.assertEqual(primary.info_replication()["role"], "master")

    def test_86_second_host_adopts_the_switch_and_the_rollback(self):
        self.start()
        (first, _), (second, _) = self.hosts
        writers = self.writers("w")

        output = self.run_on(first, "switch", SERVICE)
        self.assertNotIn("adopt", output)
        self.eventually(lambda: self.old.info_replication()["role"] == "slave", 10,
                        "old follows new (fence = replicaof)")
        output = self.run_on(second, "switch", SERVICE)
        self.assertIn("adopting, nothing is changed on them", output,
                      "the second host says it adopts the switch")
        entry = self.last_history(second)
        self.assertIs(entry["adopted"], True, entry)
        self.assertIs(entry["forced"], False, entry)
        self.assertIs(self.last_history(first)["adopted"], False)
        self.assertIs(second.service(SERVICE)["last_switch"]["adopted"], True)
        self.assert_both_on("new", self.new)
        with self.assertRaises(tb.RespError, msg="old refuses writes"):
            self.old.cli("SET", "split-brain", "1")

        output = self.run_on(first, "rollback", SERVICE)
        self.assertNotIn("adopt", output)
        output = self.run_on(second, "rollback", SERVICE)
        self.assertIn("adopting, nothing is changed on them", output,
                      "the second host says it adopts the rollback")
        entry = self.last_history(second)
        self.assertEqual(entry["action"], "rollback", entry)
        self.assertIs(entry["adopted"], True, entry)
        self.assert_both_on("old", self.old)
        with self.assertRaises(tb.RespError, msg="new refuses writes"):
            self.new.cli("SET", "split-brain", "1")

        time.sleep(0.2)
        for writer in writers:
            writer.stop()
        acked = [key for writer in writers for key in writer.acked]
        self.assertEqual(missing_keys(self.old, acked), [],
                         "every write acknowledged on either host is on the primary")
        summary = ", ".join(f"host {i + 1}: {len(w.acked)} acked, {w.errors} errors"
                                for i, w in enumerate(writers))
        print(f"\nRESULT 86 two hosts: {summary}; 0 lost")


if __name__ == "__main__":
    unittest.main()
