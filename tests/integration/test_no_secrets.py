"""Scenario: no secret ever shows (issue 5 item 6; DESIGN.md "never appear in logs").

Goal: a random canary password sits in every credential file the config names. For kind =
"redis", two real redis-servers require it (`requirepass`, set with CONFIG SET right after start
because the bed waits on an unauthenticated PING); new is a replica of old with `masterauth`.
tunneld (log_level debug) is driven through probes, a refused switch (replication link down), a
successful `tunnelctl switch` (default pause mode, lag gate, promotion, fence), status and
status --json, tunnels, health, /metrics /status /readyz /healthz over HTTP, a reload (tunnelctl
and SIGHUP), a rollback and SIGTERM. The canary must never appear in tunneld's stdout/stderr,
any tunnelctl output, any HTTP body, or the state file. Clients also AUTH through the proxy, so
a payload dump would show too.

Wrong-password variants (redis, and postgres with scram-sha-256 auth): the probe and the refused
switch name the problem (AUTH / authentication failed) without the password.
"""

from __future__ import annotations

import http.client
import os
import secrets
import signal
import subprocess
import unittest
from pathlib import Path

from integration_support import IntegrationTest, daemon_config, service_config, tb

SERVICE = "redis"


def canary(label: str) -> str:
    return f"canary-{label}-{secrets.token_hex(12)}"


def auth_client(port: int, password: str, timeout: float = 10) -> tb.RespClient:
    client = tb.RespClient(port, timeout=timeout)
    if client.command("AUTH", password) != "OK":
        raise AssertionError("AUTH through the proxy failed")
    return client


def auth_cli(redis: tb.Redis, password: str, *args) -> object:
    with auth_client(redis.port, password) as c:
        return c.command(*args)


class NoSecretsTest(IntegrationTest):
    def setUp(self):
        super().setUp()
        self.collected: list[tuple[str, str]] = []
        self.health_port = tb.free_port()

    # ---- helpers

    def write_credentials(self, name: str, text: str) -> Path:
        path = self.bed.dir / name
        path.write_text(text)
        os.chmod(path, 0o600)
        return path

    def keep(self, label: str, text: str) -> str:
        self.collected.append((label, text))
        return text

    def ctl(self, *args, timeout: float = 60) -> subprocess.CompletedProcess:
        result = self.daemon.ctl(*args, timeout=timeout)
        self.keep(f"tunnelctl {' '.join(map(str, args))}", result.stdout + result.stderr)
        return result

    def http(self, path: str) -> tuple[int, str]:
        connection = http.client.HTTPConnection(tb.HOST, self.health_port, timeout=10)
        try:
            connection.request("GET", path)
            response = connection.getresponse()
            body = response.read().decode(errors="replace")
            self.keep(f"GET {path}", body)
            return response.status, body
        finally:
            connection.close()

    def read_everything(self) -> None:
        for args in (("status",), ("status", "--json"), ("status", SERVICE),
                     ("status", SERVICE, "--json"), ("tunnels",), ("tunnels", "--json"),
                     ("health",)):
            self.ctl(*args)
        for path in ("/healthz", "/readyz", "/metrics", "/status"):
            self.http(path)

    def assert_never_seen(self, *secret_values: str) -> None:
        """No collected output, nor the daemon's log or state file, holds a secret."""
        places = list(self.collected)
        for piece in self.bed.pieces:
            if isinstance(piece, tb.Tunneld):
                places.append((f"tunneld log {piece.log}", piece.log_text()))
                if piece.state_file.exists():
                    places.append((f"state file {piece.state_file}",
                                   piece.state_file.read_text(errors="replace")))
        self.assertGreater(len(places), 10)
        for secret in secret_values:
            leaks = []
            for label, text in places:
                for number, line in enumerate(text.splitlines(), 1):
                    if secret in line:
                        leaks.append(f"{label} line {number}: {line.replace(secret, '<CANARY>')}")
            self.assertEqual(leaks, [], f"the canary password leaked ({len(leaks)} lines)")

    def svc(self) -> dict:
        return self.daemon.service(SERVICE)

    # ---- redis

    def redis_pair_with_password(self, password: str) -> None:
        self.old = self.bed.redis("old")
        self.new = self.bed.redis("new", replicaof=self.old)
        for redis in (self.new, self.old):  # masterauth first: a fenced old replicates from new
            redis.cli("CONFIG", "SET", "masterauth", password)
        for redis in (self.old, self.new):
            redis.cli("CONFIG", "SET", "requirepass", password)
        with self.assertRaises(tb.RespError):
            self.old.cli("GET", "x")  # the password is really required now
        auth_cli(self.old, password, "SET", "whoami", "old")

    def start_redis_daemon(self, credentials: Path) -> None:
        self.port = tb.free_port()
        settings = {"max_lag": "1MiB", "pause_timeout": "5s", "probe_interval": "200ms",
                    "probe_timeout": "1s", "fence": "replicaof",
                    "fence_replicaof": f"{tb.HOST}:{self.new.port}",
                    "credentials_file": str(credentials)}
        self.config = daemon_config(
            {SERVICE: service_config(self.port, self.old.port, self.new.port, kind="redis",
                                     **settings)},
            health_listen=f"{tb.HOST}:{self.health_port}")
        self.daemon = self.bed.tunneld(self.config)

    def test_redis_canary_never_appears_across_probe_switch_status_reload_sigterm(self):
        password = canary("redis")
        self.redis_pair_with_password(password)
        credentials = self.write_credentials("redis.auth", password + "\n")
        self.start_redis_daemon(credentials)

        # probes authenticate: the lag gate sees the replica in sync
        self.eventually(lambda: (s := self.svc())["lag"]["link"] == "up"
                        and s["lag"]["bytes"] == 0, 20, "probe with AUTH sees link up, lag 0B")
        with auth_client(self.port, password) as c:  # AUTH through the proxy, too
            self.assertEqual(c.command("GET", "whoami"), "old")
        self.read_everything()

        # a refused switch: the replication link is down
        auth_cli(self.new, password, "REPLICAOF", "NO", "ONE")
        self.eventually(lambda: self.svc()["lag"]["link"] != "up", 10,
                        "probe sees the link down")
        refused = self.ctl("switch", SERVICE)
        self.assertEqual(refused.returncode, 1, refused.stdout + refused.stderr)
        self.assertEqual(self.svc()["active"], "old")
        self.read_everything()

        # the link back (masterauth), then a successful default (pause) switch
        auth_cli(self.new, password, "REPLICAOF", tb.HOST, str(self.old.port))
        self.eventually(lambda: (s := self.svc())["lag"]["link"] == "up"
                        and s["lag"]["bytes"] == 0, 20, "replica back in sync")
        switched = self.ctl("switch", SERVICE)
        self.assertEqual(switched.returncode, 0, switched.stdout + switched.stderr)
        svc = self.svc()
        self.assertEqual((svc["active"], svc["fenced"]), ("new", True), svc)
        self.assertEqual(auth_cli(self.new, password, "ROLE")[0], "master")
        with auth_client(self.port, password) as c:
            self.assertEqual(c.command("SET", "after-switch", "1"), "OK")
            self.assertEqual(c.command("CONFIG", "GET", "port")[1], str(self.new.port))
        self.read_everything()

        # reloads: tunnelctl and SIGHUP (same config)
        self.assertEqual(self.ctl("reload").returncode, 0)
        reloads = self.daemon.log_text().count("config reloaded from")
        self.daemon.sighup()
        self.eventually(lambda: self.daemon.log_text().count("config reloaded from") > reloads,
                        10, "SIGHUP reload logged")
        self.read_everything()

        # rollback (undoes promotion and fence with the same credentials)
        rolled = self.ctl("rollback", SERVICE)
        self.assertEqual(rolled.returncode, 0, rolled.stdout + rolled.stderr)
        self.assertEqual(self.svc()["active"], "old")
        self.read_everything()

        code = self.daemon.sigterm(wait=True, timeout=30)
        self.assertEqual(code, 0)
        self.assert_never_seen(password)

    def test_redis_wrong_password_is_named_without_the_password(self):
        password = canary("real")
        wrong = canary("wrong")
        self.redis_pair_with_password(password)
        credentials = self.write_credentials("redis.auth", f"default {wrong}\n")
        self.start_redis_daemon(credentials)

        lag = self.eventually(lambda: (s := self.svc())["lag"].get("detail")
                              and "AUTH failed" in s["lag"]["detail"] and s["lag"], 15,
                              "status --json lag.detail reports the failed AUTH")
        self.keep("lag detail", str(lag))
        self.assertNotEqual(lag["link"], "up", lag)
        self.assertIsNone(lag["bytes"], lag)
        refused = self.ctl("switch", SERVICE)
        output = refused.stdout + refused.stderr
        self.assertEqual(refused.returncode, 1, output)
        self.assertRegex(output, r"AUTH failed[^\n]*(WRONGPASS|invalid|password)", output)
        self.read_everything()
        self.assertEqual(self.svc()["active"], "old")
        self.daemon.sigterm(wait=True, timeout=30)
        self.assert_never_seen(wrong, password)
        everywhere = "\n".join(text for _, text in self.collected) + self.daemon.log_text()
        self.assertRegex(everywhere, r"AUTH failed[^\n]*(WRONGPASS|invalid|password)",
                         "the error does not name the problem")

    # ---- postgres

    def postgres_pair_with_password(self, password: str) -> None:
        self.old = self.bed.postgres("primary")
        self.new = self.bed.postgres("standby", standby_of=self.old)
        self.old.query(f"alter user postgres password '{password}'")
        # TCP logins now need the password; local and replication stay trusted (bed helpers)
        for pg in (self.old, self.new):
            (pg.data / "pg_hba.conf").write_text(
                "local all all trust\n"
                "local replication all trust\n"
                "host replication all 127.0.0.1/32 trust\n"
                "host all all 127.0.0.1/32 scram-sha-256\n")
            os.kill(pg.pid, signal.SIGHUP)

        def refuses_without_password():
            try:
                self.old.query("select 1", timeout=5)
                return False
            except tb.BedError as e:
                return "password" in str(e)
        self.eventually(refuses_without_password, 15, "postgres requires the password")

    def start_postgres_daemon(self, credentials: Path) -> None:
        self.port = tb.free_port()
        self.daemon = self.bed.tunneld(daemon_config(
            {SERVICE: service_config(self.port, self.old.port, self.new.port, kind="postgres",
                                     pause_timeout="10s", probe_interval="250ms",
                                     credentials_file=str(credentials))},
            health_listen=f"{tb.HOST}:{self.health_port}"))

    def test_postgres_canary_and_wrong_password(self):
        password = canary("pg")
        wrong = canary("pgwrong")
        self.postgres_pair_with_password(password)

        good = self.write_credentials("pg.conninfo",
                                      f"user=postgres password={password} dbname=postgres\n")
        self.start_postgres_daemon(good)
        self.eventually(lambda: self.svc()["lag"]["link"] == "up", 20,
                        "the postgres probe logs in with the password")
        self.read_everything()
        self.assertEqual(self.ctl("reload").returncode, 0)
        self.read_everything()

        self.assertEqual(self.daemon.sigterm(wait=True, timeout=30), 0)

        # the wrong password: a fresh tunneld (probe connections are made anew)
        bad = self.write_credentials("pg-wrong.conninfo",
                                     f"user=postgres password={wrong} dbname=postgres\n")
        self.start_postgres_daemon(bad)
        lag = self.eventually(lambda: (s := self.svc())["lag"].get("detail")
                              and "authentication failed" in s["lag"]["detail"] and s["lag"],
                              15, "status --json lag.detail reports the failed authentication")
        self.keep("lag detail", str(lag))
        self.assertNotEqual(lag["link"], "up", lag)
        refused = self.ctl("switch", SERVICE)
        output = refused.stdout + refused.stderr
        self.assertEqual(refused.returncode, 1, output)
        self.assertIn("authentication failed", output)
        self.read_everything()
        self.assertEqual(self.daemon.sigterm(wait=True, timeout=30), 0)
        self.assert_never_seen(password, wrong)
        everywhere = "\n".join(text for _, text in self.collected) + self.daemon.log_text()
        self.assertIn("authentication failed", everywhere,
                      "the wrong password is not named as the problem")


if __name__ == "__main__":
    unittest.main()
