"""Scenario 88: tunneld SIGKILLed in the middle of a postgres switch with a fence_command.

Goal: postgres has no built-in fence; with `fence_command` (here: old made read-only with
`ALTER SYSTEM SET default_transaction_read_only` and a reload) it runs before the promotion. A
switch cut short by SIGKILL while a slow promote_command runs (the hook promotes the standby
after tunneld died) is finished forward by the restarted tunneld: clients reach new, a writable
primary; old refuses writes (fenced by fence_command before the promotion); every insert
committed through tunneld before and during the switch is on new.
  88a: killed while promote_command runs: finished forward.
  88b: killed while a slow fence_command runs (new not promoted yet): undone by the restarted
       tunneld, and `unfence_command` lifts the fence: clients write to old again.
  88c: no crash, a promote_command that fails after the fence: the switch fails, unfence_command
       runs, old takes writes again; without it the answer says the fence stays.
"""

import json
import os
import signal
import unittest

from integration_support import SERVICE, IntegrationTest, daemon_config, service_config, tb
from test_postgres_cutover import InsertWriter


class PostgresSwitchCrashTest(IntegrationTest):
    def setUp(self):
        super().setUp()
        self.old = self.bed.postgres("primary", extra_conf=["synchronous_commit = on"])
        self.old.query("create table cutover (id text primary key)")
        self.new = self.bed.standby_of(self.old, "standby")
        self.credentials = self.bed.dir / "postgres.conninfo"
        self.credentials.write_text("user=postgres dbname=postgres\n")
        os.chmod(self.credentials, 0o600)
        self.port = tb.free_port()

    def start(self, **hooks):
        self.daemon = self.bed.tunneld(daemon_config({SERVICE: service_config(
            self.port, self.old.port, self.new.port, kind="postgres", max_lag="1MiB",
            pause_timeout="15s", drain_timeout="2s", probe_interval="250ms",
            probe_timeout="2s", credentials_file=str(self.credentials), **hooks)}))
        self.eventually(lambda: self.daemon.service(SERVICE)["lag"]["link"] == "up", 20,
                        "the lag probe sees the standby streaming")
        self.writer = InsertWriter(self.port, threads=2).start()
        self.addCleanup(self.writer._stop.set)
        self.eventually(lambda: self.writer.attempts >= 10, 30, "inserts under way")

    def sql(self, server: tb.Postgres, statement: str) -> str:
        """A hook's command line: one statement on `server` with psql."""
        return " ".join(f"'{arg}'" if " " in arg else arg
                        for arg in server.psql_argv(statement))

    def read_only(self, on: bool = True) -> str:
        return (self.sql(self.old, f"alter system set default_transaction_read_only = {'on' if on else 'off'}")
                + " && " + self.sql(self.old, "select pg_reload_conf()"))

    def assert_takes_writes(self, server: tb.Postgres) -> None:
        server.query("insert into cutover (id) values ('after-unfence')")

    def kill_during(self, step: str):
        switch = self.daemon.ctl_async("switch", SERVICE, "--mode", "pause")
        self.addCleanup(switch.communicate, timeout=30)

        def hook_running():
            record = json.loads(self.daemon.state_file.read_text())["services"][SERVICE]
            journal = record.get("journal") or {}
            return journal.get("step") == step and journal.get("hook_pgid")
        self.eventually(hook_running, 30, f"the journal names step {step} and its running hook",
                        interval=0.01)
        self.daemon.process.send_signal(signal.SIGKILL)
        self.daemon.process.wait(10)
        self.daemon.process.stop()  # the hook runs on in its own process group
        self.daemon.start()
        self.eventually(lambda: self.daemon.service(SERVICE)["state"] == "serving", 40,
                        "recovery ends serving")

    def finish_writes(self, active: tb.Postgres) -> None:
        """Stops the writers once some inserts were committed after the recovery; every
        committed one must be on `active`."""
        before = self.writer.attempts
        self.eventually(lambda: self.writer.attempts > before + 5, 30, "inserts after the recovery")
        self.writer.stop()
        rows = set(active.query("select id from cutover").split())
        missing = [k for k in self.writer.committed if k not in rows]
        self.assertGreater(len(self.writer.committed), 5, self.writer.summary())
        self.assertEqual(missing, [], f"{len(missing)} committed inserts not on {active.name}: "
                                      f"{self.writer.summary()}")

    def assert_refuses_writes(self, server: tb.Postgres) -> None:
        with self.assertRaises(tb.BedError, msg=f"{server.name} refuses writes") as refused:
            server.query("insert into cutover (id) values ('split-brain')")
        self.assertIn("read-only", str(refused.exception))

    def test_88a_killed_during_a_slow_promotion_finishes_forward(self):
        self.start(fence_command=self.read_only(),
                   promote_command="sleep 1.5; " + self.sql(self.new, "select pg_promote()"))
        self.kill_during("promote")
        svc = self.daemon.service(SERVICE)
        self.assertEqual(svc["active"], "new", svc)
        self.assertIn("finishing it forward", self.daemon.log_text())
        self.assertFalse(self.new.in_recovery(), "new promoted")
        self.finish_writes(self.new)
        self.assert_refuses_writes(self.old)

    def test_88b_killed_during_a_slow_fence_is_undone_and_unfenced(self):
        self.start(fence_command="sleep 1.5; " + self.read_only(), unfence_command=self.read_only(on=False))
        self.kill_during("fence")
        svc = self.daemon.service(SERVICE)
        self.assertEqual(svc["active"], "old", svc)
        self.eventually(lambda: "undone" in self.daemon.log_text(), 10, "the log says the switch was undone")
        self.eventually(lambda: "old unfenced: unfence_command exited 0" in self.daemon.log_text(), 20,
                        "unfence_command ran")
        self.assertTrue(self.new.in_recovery(), "new was never promoted")
        self.finish_writes(self.old)
        self.assert_takes_writes(self.old)

    def test_88c_failed_promotion_after_the_fence_runs_unfence_command(self):
        self.start(fence_command=self.read_only(), unfence_command=self.read_only(on=False),
                   promote_command="echo no promotion today >&2; exit 3")
        result = self.daemon.ctl("switch", SERVICE, "--mode", "pause", check=False)
        self.assertNotEqual(result.returncode, 0, result.stdout + result.stderr)
        self.assertIn("promote_command", result.stdout + result.stderr)
        self.eventually(lambda: "old unfenced: unfence_command exited 0" in self.daemon.log_text(), 20,
                        "unfence_command ran after the failed promotion")
        self.assertEqual(self.daemon.service(SERVICE)["active"], "old")
        self.assertTrue(self.new.in_recovery(), "new was never promoted")
        self.finish_writes(self.old)
        self.assert_takes_writes(self.old)


if __name__ == "__main__":
    unittest.main()
