"""Scenario 85: tunneld SIGKILLed in the middle of a redis pause switch.

Goal: a switch whose step is widened by a slow hook is cut short by SIGKILL (as systemd would
see a crash). The state file then holds the journal; the restarted tunneld waits for the hook
still running from before, asks both servers, and finishes or undoes the switch so that the side
clients reach is the one writable primary, the other refuses writes, and the write acknowledged
before the switch is there.
  85a: killed while promote_command runs (it promotes new after tunneld died): finished forward.
  85b: killed while fence_command runs (before any promotion): undone, old takes writes again.
  85c: killed while fence_command runs, and new crashes too (unreachable at the restart): the
       switch is unresolved, clients are refused; `tunnelctl resolve svc --to old` routes them
       to old again (and tunneld keeps running: it crashed on resolve before).
"""

import json
import signal
import subprocess
import time
import unittest

from integration_support import SERVICE, IntegrationTest, daemon_config, service_config, tb


class SwitchCrashTest(IntegrationTest):
    def start(self, **hooks):
        self.old = self.bed.redis("old")
        self.new = self.bed.redis("new", replicaof=self.old)
        self.old.cli("SET", "acknowledged", "before-switch")
        self.new.wait_caught_up(self.old)
        self.port = tb.free_port()
        self.daemon = self.bed.tunneld(daemon_config({SERVICE: service_config(
            self.port, self.old.port, self.new.port, kind="redis", max_lag="1MiB",
            pause_timeout="10s", probe_interval="250ms",
            fence="replicaof", fence_replicaof=f"{tb.HOST}:{self.new.port}", **hooks)}))
        self.eventually(lambda: self.daemon.service(SERVICE)["lag"]["link"] == "up", 10,
                        "the lag probe sees the replica link up")

    def journal_step(self):
        try:
            record = json.loads(self.daemon.state_file.read_text())["services"][SERVICE]
        except (OSError, ValueError, KeyError):
            return None
        return (record.get("journal") or {}).get("step")

    def kill_during(self, step: str, before_restart=lambda: None):
        switch = subprocess.Popen(self.daemon.ctl_argv("switch", SERVICE, "--mode", "pause"),
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.addCleanup(switch.wait, 10)
        self.eventually(lambda: self.journal_step() == step, 10, f"the journal names step {step}",
                        interval=0.01)
        time.sleep(0.2)  # inside the hook
        self.daemon.process.send_signal(signal.SIGKILL)
        self.daemon.process.wait(10)
        self.assertEqual(self.journal_step(), step, "the journal outlives the crash")
        before_restart()
        self.daemon.start()

    def assert_one_writable_primary(self, active, other):
        self.eventually(lambda: self.daemon.service(SERVICE)["state"] == "serving", 20,
                        "recovery ends serving")
        svc = self.daemon.service(SERVICE)
        self.assertEqual(svc["active"], "new" if active is self.new else "old", svc)
        # The journal is removed by the state file write that follows the recovery.
        self.eventually(lambda: self.journal_step() is None, 5, "the journal is cleared once recovered")
        with tb.RespClient(self.port) as client:
            self.assertIn(f"tcp_port:{active.port}", client.command("INFO", "server"))
            self.assertEqual(client.command("GET", "acknowledged"), "before-switch")
            self.assertEqual(client.command("SET", "after-recovery", "1"), "OK")
        self.assertEqual(active.info_replication()["role"], "master")
        with self.assertRaises(tb.RespError, msg="the other server refuses writes"):
            other.cli("SET", "split-brain", "1")

    def test_85a_killed_during_a_slow_promotion_finishes_forward(self):
        self.start(promote_command=f"sleep 1.5; redis-cli -p {self.new_port_placeholder()} replicaof no one")
        self.kill_during("promote")
        self.assert_one_writable_primary(self.new, self.old)
        self.assertTrue(self.daemon.service(SERVICE)["fenced"])
        self.assertIn("finishing it forward", self.daemon.log_text())

    def test_85b_killed_during_a_slow_fence_is_undone(self):
        self.start(fence_command="sleep 1.5")
        self.kill_during("fence")
        self.assert_one_writable_primary(self.old, self.new)
        self.assertFalse(self.daemon.service(SERVICE)["fenced"])
        self.assertIn("undone", self.daemon.log_text())

    def test_85c_unresolved_switch_is_resolved_by_the_operator(self):
        self.start(fence_command="sleep 1.5")
        self.kill_during("fence", before_restart=self.new.kill)
        # Recovery looks again for 10s before it gives up on an unreachable server.
        self.eventually(lambda: self.daemon.service(SERVICE)["state"] == "unresolved", 30,
                        "the switch is unresolved while new is unreachable")
        self.assertIn("tunnelctl resolve", self.daemon.service(SERVICE)["problem"])
        with self.assertRaises((tb.RespError, OSError, ConnectionError), msg="clients refused"):
            with tb.RespClient(self.port, timeout=5) as client:
                client.command("GET", "acknowledged")
        self.new.start(replicaof=f"{tb.HOST}:{self.old.port}")
        out = self.ctl_ok(self.daemon, "resolve", SERVICE, "--to", "old")
        self.assertIn("ACTIVE", out)
        self.assertIn("resolve to old by the operator", self.daemon.log_text())
        self.assertTrue(self.daemon.running(), "tunneld survives the resolve")
        self.assert_one_writable_primary(self.old, self.new)

    def new_port_placeholder(self):
        return "$(echo $TUNNELD_NEW | cut -d: -f2)"


if __name__ == "__main__":
    unittest.main()
