"""Scenarios 41-46: lag-gated Redis cutover (issue 4) with real redis-servers.

Goal: `tunnelctl switch redis` (mode pause) on a kind = "redis" service whose new backend is a
replica of old loses no acknowledged write: a writer with many connections through tunneld's
port records every +OK, and afterwards every acknowledged key is on the new primary while the
old primary refuses writes (fenced). The lag gate refuses with the link down and with lag above
max_lag, `--force` overrides it (logged), an exhausted pause budget leaves everything on old with
no client stuck and nothing lost, and a rollback after a switch loses nothing. The first scenario
also runs with new reached `via` an SSH tunnel through the test bed's sshd.

Each test prints one line "RESULT ..." with the measured pause and the client-visible errors.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading
import time
import unittest

from integration_support import (IntegrationTest, Writer, daemon_config, missing_keys,
                                 service_config, tb, tunnel_table)

SERVICE = "redis"


# --------------------------------------------------------------------------------------------
# helpers




def held_ms(text: str) -> int | None:
    match = re.search(r"released held clients to \w+ after (\d+)ms", text) or \
        re.search(r"clients released to \w+ after (\d+)ms", text) or \
        re.search(r"clients held (\d+)ms", text)
    return int(match.group(1)) if match else None


class RedisCutoverTest(IntegrationTest):
    """old = primary, new = replica of old (directly, or through a StallableRelay)."""

    via_tunnel = False

    def start(self, relay: bool = False, **service) -> None:
        self.old = self.bed.redis("old")
        if relay:
            self.relay = tb.StallableRelay(self.old.port)
            self.addCleanup(self.relay.stop)
            self.new = self.bed.redis("new")
            self.new.cli("REPLICAOF", tb.HOST, self.relay.port)
            self.new.wait_link_up()
        else:
            self.new = self.bed.redis("new", replicaof=self.old)
        # a stopped replica must be continued before teardown can stop it
        self.addCleanup(lambda: tb._signal_quietly(self.new.pid, signal.SIGCONT))
        self.port = tb.free_port()
        settings = {"max_lag": "1MiB", "pause_timeout": "5s", "probe_interval": "200ms",
                    "probe_timeout": "1s", "fence": "replicaof",
                    "fence_replicaof": f"{tb.HOST}:{self.new.port}"}
        settings.update(service)
        tunnels = None
        new_backend = self.new.port
        if self.via_tunnel:
            self.sshd = self.bed.sshd()
            tunnels = {"gateway": tunnel_table(self.sshd)}
            new_backend = {"address": f"{tb.HOST}:{self.new.port}", "via": "gateway"}
        config = daemon_config({SERVICE: service_config(self.port, self.old.port, new_backend,
                                                        kind="redis", **settings)},
                               tunnels=tunnels)
        self.daemon = self.bed.tunneld(config)

    def svc(self) -> dict:
        return self.daemon.service(SERVICE)

    def wait_in_sync(self, timeout: float = 20) -> dict:
        def in_sync():
            s = self.svc()
            return s if s["lag"]["link"] == "up" and s["lag"]["bytes"] == 0 else None
        return self.eventually(in_sync, timeout, "probe reports link up and lag 0B")

    def switch(self, *args, timeout: float = 60) -> subprocess.CompletedProcess:
        started = time.monotonic()
        result = self.daemon.ctl(*args, timeout=timeout)
        self.elapsed = time.monotonic() - started
        self.output = result.stdout + result.stderr
        return result

    def assert_refuses_writes(self, redis: tb.Redis) -> str:
        with self.assertRaises(tb.RespError) as caught:
            redis.cli("SET", "fence-check", "x")
        message = str(caught.exception)
        self.assertRegex(message, r"READONLY|NOREPLICAS", message)
        return message

    def report(self, scenario: str, writer: Writer | None, held: int | None) -> None:
        line = f"\nRESULT {scenario}: pause={held}ms"
        if writer is not None:
            line += f" {writer.summary()}"
        sys.stderr.write(line + "\n")


# --------------------------------------------------------------------------------------------
# scenarios


class RedisCutoverDirectTest(RedisCutoverTest):
    def run_switch_under_load(self, label: str) -> None:
        self.wait_in_sync()
        writer = Writer(self.port, "w").start()
        self.addCleanup(lambda: writer._stop.set())
        time.sleep(1.0)  # load before the switch
        result = self.switch("switch", SERVICE)
        time.sleep(1.0)  # load after the switch
        writer.stop()
        self.assertEqual(result.returncode, 0, self.output)
        held = held_ms(self.output)
        self.report(f"41 {label} switch under load", writer, held)
        self.assertGreater(len(writer.acked), 100, writer.summary())
        self.assertIsNotNone(held, f"no 'released held clients' in progress:\n{self.output}")

        missing = missing_keys(self.new, writer.acked)
        self.assertEqual(missing, [], f"{len(missing)} acknowledged writes missing on new "
                                      f"(e.g. {missing[:5]}); {writer.summary()}")
        self.assertEqual(self.new.info_replication().get("role"), "master")
        self.assert_refuses_writes(self.old)
        svc = self.svc()
        self.assertEqual(svc["active"], "new", svc)
        self.assertIs(svc["fenced"], True, svc)
        self.assertEqual(svc["state"], "serving", svc)
        # new clients reach the new primary and may write
        with tb.RespClient(self.port, timeout=10) as c:
            self.assertEqual(c.command("SET", "after-switch", "1"), "OK")
            self.assertEqual(c.command("CONFIG", "GET", "port")[1], str(self.new.port))

    def test_41_switch_under_load_loses_no_acknowledged_write_and_fences_old(self):
        self.start()
        self.run_switch_under_load("direct")

    def test_42_gate_refuses_with_the_replication_link_down(self):
        self.start()
        self.wait_in_sync()
        self.new.cli("REPLICAOF", "NO", "ONE")
        self.eventually(lambda: self.svc()["lag"]["link"] != "up", 10, "probe sees the link down")
        result = self.switch("switch", SERVICE)
        self.assertEqual(result.returncode, 1, self.output)
        self.assertRegex(self.output, r"(?i)link", self.output)
        svc = self.svc()
        self.assertEqual(svc["active"], "old", svc)
        self.assertIs(svc["fenced"], False, svc)
        with tb.RespClient(self.port, timeout=10) as c:
            self.assertEqual(c.command("CONFIG", "GET", "port")[1], str(self.old.port))
            self.assertEqual(c.command("SET", "still-old", "1"), "OK")
        self.report("42 link down refused", None, None)

    def make_lag(self) -> dict:
        """Stalls the replication stream and writes on old until the probe reports lag > 0B."""
        self.wait_in_sync()
        self.relay.stall()
        with self.old.client() as c:
            for i in range(200):
                c.command("SET", f"lag:{i}", "x" * 100)

        def lagging():
            s = self.svc()
            return s if s["lag"]["bytes"] and s["lag"]["bytes"] > 0 else None
        return self.eventually(lagging, 10, "probe reports lag above 0B")

    def test_43_gate_refuses_with_lag_above_max_lag(self):
        self.start(relay=True, max_lag="0B")
        svc = self.make_lag()
        self.assertEqual(svc["lag"]["link"], "up", svc)  # lag, not a broken link
        result = self.switch("switch", SERVICE)
        self.assertEqual(result.returncode, 1, self.output)
        self.assertRegex(self.output, r"(?i)lag|max_lag", self.output)
        svc = self.svc()
        self.assertEqual(svc["active"], "old", svc)
        self.assertEqual(self.new.info_replication().get("role"), "slave")
        self.assertEqual(self.old.cli("SET", "ok", "1"), "OK")
        self.report("43 lag above max_lag refused", None, None)

    def test_44_force_overrides_the_gate_and_is_logged(self):
        self.start(relay=True, max_lag="0B")
        self.make_lag()
        refused = self.switch("switch", SERVICE)
        self.assertEqual(refused.returncode, 1, self.output)
        writer = Writer(self.port, "f", threads=4).start()
        self.addCleanup(lambda: writer._stop.set())
        self.eventually(lambda: len(writer.acked) + writer.attempts > 50, 10, "writes on old")
        proc = self.daemon.ctl_async("switch", SERVICE, "--force")
        # let the replica catch up once the forced switch is under way (pausing old's writes)
        time.sleep(0.5)
        self.relay.flow()
        try:
            stdout, stderr = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            stdout, stderr = proc.communicate()
            self.fail(f"forced switch did not finish in 60s: {stdout}{stderr}")
        writer.stop()
        output = stdout + stderr
        self.assertEqual(proc.returncode, 0, output)
        self.assertRegex(self.daemon.log_text(), r"(?i)forced", "daemon log does not say forced")
        self.assertIn("forced", output.lower())
        self.assertEqual(missing_keys(self.new, writer.acked), [])
        svc = self.svc()
        self.assertEqual(svc["active"], "new", svc)
        self.report("44 forced switch", writer, held_ms(output))

    def test_45_pause_budget_exhausted_leaves_everything_on_old(self):
        self.start(pause_timeout="1s")
        self.wait_in_sync()
        writer = Writer(self.port, "p").start()
        self.addCleanup(lambda: writer._stop.set())
        time.sleep(0.5)
        self.new.process.send_signal(signal.SIGSTOP)
        started = time.monotonic()
        proc = self.daemon.ctl_async("switch", SERVICE, "--force")
        # a client arriving during the hold
        self.eventually(lambda: self.svc()["state"] == "switching", 5, "switch holds clients")
        late = tb.RespClient(self.port, timeout=20)
        self.addCleanup(late.close)
        late.send("CONFIG", "GET", "port")
        try:
            stdout, stderr = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            stdout, stderr = proc.communicate()
            self.fail(f"switch with an exhausted budget still running after 30s: {stdout}{stderr}")
        elapsed = time.monotonic() - started
        output = stdout + stderr
        self.assertEqual(proc.returncode, 1, output)
        self.assertLess(elapsed, 15, f"switch took {elapsed:.1f}s with a 1s budget")
        answer = late.read_reply()  # answered after the hold (timeout 20s: not stuck)
        self.assertEqual(answer[1], str(self.old.port), "held client answered by old")
        time.sleep(0.5)
        writer.stop()
        self.new.process.send_signal(signal.SIGCONT)
        held = held_ms(output)
        self.report("45 pause budget exhausted", writer, held)
        svc = self.svc()
        self.assertEqual(svc["active"], "old", svc)
        self.assertIs(svc["fenced"], False, svc)
        self.assertEqual(svc["state"], "serving", svc)
        self.assertEqual(self.old.cli("SET", "writable-again", "1"), "OK")
        self.assertEqual(self.old.info_replication().get("role"), "master")
        self.assertEqual(missing_keys(self.old, writer.acked), [], writer.summary())
        self.assertGreater(len(writer.acked), 0)
        # the writer kept working through old after the failed switch
        with tb.RespClient(self.port, timeout=10) as c:
            self.assertEqual(c.command("SET", "after-failed-switch", "1"), "OK")
            self.assertEqual(c.command("CONFIG", "GET", "port")[1], str(self.old.port))
        self.new.wait_link_up(20)
        self.assertEqual(self.new.info_replication().get("role"), "slave")

    def test_46_rollback_after_a_switch_loses_nothing(self):
        self.start()
        self.wait_in_sync()
        writer = Writer(self.port, "r").start()
        self.addCleanup(lambda: writer._stop.set())
        time.sleep(0.5)
        result = self.switch("switch", SERVICE)
        self.assertEqual(result.returncode, 0, self.output)
        switch_held = held_ms(self.output)
        time.sleep(1.0)  # writes land on new through tunneld
        self.assertEqual(self.svc()["active"], "new")
        result = self.switch("rollback", SERVICE)
        rollback_output = self.output
        time.sleep(0.5)
        writer.stop()
        self.assertEqual(result.returncode, 0, rollback_output)
        rollback_held = held_ms(rollback_output)
        self.report(f"46 rollback (switch pause={switch_held}ms)", writer, rollback_held)
        missing = missing_keys(self.old, writer.acked)
        self.assertEqual(missing, [], f"{len(missing)} acknowledged writes missing on old "
                                      f"after rollback; {writer.summary()}")
        self.assertEqual(self.old.info_replication().get("role"), "master")
        svc = self.svc()
        self.assertEqual(svc["active"], "old", svc)
        self.assertIs(svc["fenced"], False, svc)
        self.assertEqual(self.old.cli("SET", "old-writable", "1"), "OK")
        self.assert_refuses_writes(self.new)


class RedisCutoverTunnelTest(RedisCutoverTest):
    """Scenario 41 with new reached through an SSH tunnel (the probes go the same way)."""

    via_tunnel = True

    def test_41t_switch_via_tunnel_loses_no_acknowledged_write(self):
        self.start()
        # A tunnelled probe that never reports the replica in sync is the failure to report.
        self.wait_in_sync(timeout=20)
        self.run_switch_under_load("via tunnel")
        self.assertEqual(self.svc()["new"]["via"], "gateway")
        self.assertGreaterEqual(self.sshd.accepted_count(), 1, "sshd logged no public-key login")
        tunnels = self.daemon.ctl("tunnels", "--json", check=True).stdout
        self.assertIn("gateway", tunnels)


# the tunnel variant reuses the direct scenario body
RedisCutoverTunnelTest.run_switch_under_load = RedisCutoverDirectTest.run_switch_under_load


if __name__ == "__main__":
    unittest.main()
