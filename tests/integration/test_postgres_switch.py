"""Scenario 16: a kind = "postgres" service moved to its standby.

Goal: with the new postgres a streaming standby of the old primary (pg_basebackup -R),
`tunnelctl switch svc --mode pause` gates on LSN equality, promotes the standby, flips and
exits 0; psql through tunneld then reaches a writable new primary. Probe credentials come from
a file named in the config (never the config text).
"""

import os
import subprocess
import unittest

from integration_support import SERVICE, IntegrationTest, daemon_config, service_config, tb


def psql(port: int, sql: str) -> str:
    result = subprocess.run(["psql", "-X", "-h", tb.HOST, "-p", str(port), "-U", "postgres",
                             "-d", "postgres", "-At", "-v", "ON_ERROR_STOP=1", "-c", sql],
                            capture_output=True, text=True, timeout=30)
    if result.returncode != 0:
        raise AssertionError(f"psql through tunneld: {result.stderr.strip()}")
    return result.stdout.strip()


class PostgresSwitchTest(IntegrationTest):
    def setUp(self):
        super().setUp()
        self.old = self.bed.postgres("primary")
        self.old.query("create table t(x int); insert into t values (1)")
        self.new = self.bed.postgres("standby", standby_of=self.old)
        credentials = self.bed.dir / "postgres.conninfo"
        credentials.write_text("user=postgres dbname=postgres\n")
        os.chmod(credentials, 0o600)
        self.port = tb.free_port()
        self.daemon = self.bed.tunneld(daemon_config({SERVICE: service_config(
            self.port, self.old.port, self.new.port, kind="postgres", pause_timeout="10s",
            probe_interval="250ms", credentials_file=str(credentials))}))

    def test_16_pause_switch_promotes_standby_and_clients_write_to_new(self):
        self.assertEqual(psql(self.port, "select inet_server_port()"), str(self.old.port))
        self.eventually(lambda: self.daemon.service(SERVICE)["lag"]["link"] == "up", 15,
                        "the lag probe sees the standby streaming")
        self.ctl_ok(self.daemon, "switch", SERVICE, "--mode", "pause", timeout=60)

        self.assertEqual(self.daemon.service(SERVICE)["active"], "new")
        self.assertFalse(self.new.in_recovery(), "standby promoted")
        self.assertEqual(psql(self.port, "select inet_server_port()"), str(self.new.port))
        psql(self.port, "insert into t values (2)")
        self.assertEqual(psql(self.port, "select count(*) from t"), "2")


if __name__ == "__main__":
    unittest.main()
