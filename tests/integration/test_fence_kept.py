"""Scenario 87: after a switch, the probes follow the roles and the fence is kept true.

Goal: once clients go to new, old (made a replica of new by fence = "replicaof") is what a
rollback needs warm: the lag probe measures old behind new (`lag.replica` "old", link up,
`rollback_ready` true) instead of reporting new's link down, and `tunnelctl health` is OK. The
fault: old is restarted (its CONFIG SET and REPLICAOF are not in its config file, so it comes back
a writable primary, here an empty one). Then `rollback_ready` turns false and health warns while
old is down; within a few probe intervals of its return the probe sees old writable, fences it
again (min-replicas-to-write, then REPLICAOF new), says so in the log and in `fence_reasserted`,
and old refuses writes and follows new again: rollback ready, health OK.

Scenarios 87p and 87q run the servers from a redis.conf: tunneld writes each fence and role
change there (CONFIG REWRITE), so a server restarted before the probe's next look (slowed to a
minute) comes back fenced and in its role from its first answer.

Scenario 87e is the mirror after a rollback: new was fenced and made a replica of old
(rollback_replicaof); restarted without those settings it comes back a writable primary while
clients go to old. The probe fences it again and makes it follow old, also after a tunneld
restart in between (the state file keeps `new_fenced`).
"""

import json
import unittest

from integration_support import SERVICE, IntegrationTest, daemon_config, service_config, tb


class FenceKeptTest(IntegrationTest):
    def start(self, fence: str = "replicaof", follows: tuple[str, ...] = ("new",),
              probe_interval: str = "250ms", config_file: bool = False):
        """old (primary), new (its replica) and a tunneld in front in pause mode; `follows` names
        the sides the one left behind follows (fence_replicaof = new, rollback_replicaof = old).
        `config_file`: both redis run from a redis.conf, durable (restarts keep their data)."""
        files = {"config_file": True, "durable": True} if config_file else {}
        old = self.bed.redis("old", **files)
        new = self.bed.redis("new", replicaof=old, **files)
        followed = {}
        if "new" in follows:
            followed["fence_replicaof"] = f"{tb.HOST}:{new.port}"
        if "old" in follows:
            followed["rollback_replicaof"] = f"{tb.HOST}:{old.port}"
        port = tb.free_port()
        daemon = self.bed.tunneld(daemon_config({SERVICE: service_config(
            port, old.port, new.port, kind="redis", max_lag="1MiB", mode="pause",
            pause_timeout="10s", probe_interval=probe_interval, fence=fence, **followed)}))
        return old, new, port, daemon

    def test_87_old_restarted_after_a_switch_is_fenced_again_and_rollback_readiness_follows(self):
        old, new, port, daemon = self.start()
        svc = lambda: daemon.service(SERVICE)  # noqa: E731
        self.eventually(lambda: svc()["lag"]["link"] == "up", 20, "the lag probe sees new follow old")
        self.assertEqual(svc()["lag"]["replica"], "new")
        self.assertIsNone(svc()["rollback_ready"], "on old, there is no rollback to be ready for")

        self.ctl_ok(daemon, "switch", SERVICE)
        with tb.RespClient(port, timeout=10) as client:
            self.assertEqual(client.command("SET", "acknowledged", "on-new"), "OK")

        def ready():
            s = svc()
            return s if s["lag"]["replica"] == "old" and s["lag"]["link"] == "up" and s["rollback_ready"] else None
        self.eventually(ready, 20, "the probe measures old behind new: rollback ready")
        self.assertEqual(daemon.ctl("health").returncode, 0, daemon.ctl("health").stdout)

        # The fault: old restarts without the settings tunneld gave it.
        old_port = old.port
        old.stop()
        self.eventually(lambda: svc()["rollback_ready"] is False, 20, "rollback not ready while old is down")
        health = daemon.ctl("health")
        self.assertEqual(health.returncode, 1, health.stdout)
        self.assertIn("rollback not ready", health.stdout)
        restarted = self.bed.redis("old-restarted", port=old_port)

        def fenced_again():
            return restarted.info_replication().get("role") == "slave" and svc()["fence_reasserted"] >= 1
        self.eventually(fenced_again, 20, "old fenced again and following new")
        with self.assertRaises(tb.RespError, msg="the restarted old refuses writes"):
            restarted.cli("SET", "split-brain", "1")
        self.assertIn("fencing old again", daemon.log_text())
        self.eventually(ready, 20, "rollback ready again once old caught up")
        self.eventually(lambda: restarted.cli("GET", "acknowledged") == "on-new", 20,
                        "old has new's writes again")
        self.eventually(lambda: daemon.ctl("health").returncode == 0, 20, "health OK again")
        s = svc()
        self.assertEqual(s["active"], "new", s)
        self.assertIs(s["fenced"], True, s)

    def test_87e_new_restarted_after_a_rollback_is_fenced_again_and_follows_old(self):
        old, new, port, daemon = self.start(follows=("new", "old"))
        svc = lambda: daemon.service(SERVICE)  # noqa: E731
        self.eventually(lambda: svc()["lag"]["link"] == "up", 20, "the lag probe sees new follow old")
        self.ctl_ok(daemon, "switch", SERVICE)
        self.eventually(lambda: svc()["rollback_ready"], 20, "old follows new: rollback ready")
        self.ctl_ok(daemon, "rollback", SERVICE)
        with tb.RespClient(port, timeout=10) as client:
            self.assertEqual(client.command("SET", "acknowledged", "on-old"), "OK")
        self.assertEqual(new.info_replication().get("role"), "slave", "the rollback made new follow old")
        state = json.loads(daemon.state_file.read_text())
        self.assertIs(state["services"][SERVICE].get("new_fenced"), True, state)

        # tunneld restarts (what it keeps comes from the state file), then new restarts without
        # its REPLICAOF: an empty writable primary.
        daemon.sigterm()
        daemon.start()
        self.eventually(lambda: svc()["state"] == "serving", 20, "tunneld back and serving")
        new_port = new.port
        new.stop()
        restarted = self.bed.redis("new-restarted", port=new_port)

        def fenced_again():
            return restarted.info_replication().get("role") == "slave" and svc()["fence_reasserted"] >= 1
        self.eventually(fenced_again, 20, "new fenced again and following old")
        with self.assertRaises(tb.RespError, msg="the restarted new refuses writes"):
            restarted.cli("SET", "split-brain", "1")
        self.assertIn("fencing new again", daemon.log_text())
        self.eventually(lambda: restarted.cli("GET", "acknowledged") == "on-old", 20, "new has old's writes again")
        s = svc()
        self.assertEqual((s["active"], s["state"]), ("old", "serving"), s)
        with tb.RespClient(port, timeout=10) as client:
            self.assertEqual(client.command("SET", "after", "1"), "OK", "clients still write to old")

    def test_87p_fences_and_roles_written_to_redis_conf_hold_from_a_restarted_servers_first_answer(self):
        """Servers run from a redis.conf, as packaged: tunneld writes each fence and role change
        there (CONFIG REWRITE), so a server restarted before the probe could fence it again comes
        back fenced and in its role. The probe is slowed to a minute: only the file can do it."""
        old, new, port, daemon = self.start(follows=("new", "old"), probe_interval="60s", config_file=True)
        svc = lambda: daemon.service(SERVICE)  # noqa: E731
        self.eventually(lambda: svc()["lag"]["link"] == "up", 20, "the lag probe sees new follow old")
        self.assertIn("PASS       old accepts CONFIG REWRITE", daemon.ctl("check", SERVICE, timeout=60).stdout)

        self.ctl_ok(daemon, "switch", SERVICE)
        conf = old.config_path.read_text()
        self.assertIn("min-replicas-to-write 100", conf, "old's fence is in its redis.conf")
        self.assertIn(f"replicaof {tb.HOST} {new.port}", conf, "old's role is in its redis.conf")
        self.assertIsNone(new.configured_primary(), "new's redis.conf says it is a primary")
        with tb.RespClient(port, timeout=10) as client:
            self.assertEqual(client.command("SET", "acknowledged", "on-new"), "OK")

        old.kill()
        old.start()  # from its redis.conf, as systemd would
        with self.assertRaisesRegex(tb.RespError, "READONLY", msg="old refuses writes from its first answer"):
            old.cli("SET", "split-brain", "1")
        self.assertEqual(old.info_replication().get("role"), "slave")
        new.kill()
        new.start()
        with tb.RespClient(port, timeout=10) as client:
            self.assertEqual(client.command("SET", "after-restarts", "on-new"), "OK",
                             "new came back a writable primary: clients write on")
        self.assertEqual(svc()["fence_reasserted"], 0, "the file did it, not the probe")

        old.wait_link_up()
        self.ctl_ok(daemon, "rollback", SERVICE)
        self.assertIn("min-replicas-to-write 100", new.config_path.read_text(), "new's fence is in its redis.conf")
        self.assertEqual(new.configured_primary(), f"{tb.HOST}:{old.port}")
        self.assertIsNone(old.configured_primary(), "old's redis.conf says it is a primary again")
        self.assertNotIn("min-replicas-to-write 100", old.config_path.read_text(),
                         "old's fence lifted in its redis.conf")
        new.kill()
        new.start()
        with self.assertRaisesRegex(tb.RespError, "READONLY", msg="new refuses writes from its first answer"):
            new.cli("SET", "split-brain", "1")
        old.kill()
        old.start()
        with tb.RespClient(port, timeout=10) as client:
            self.assertEqual(client.command("SET", "after-rollback", "on-old"), "OK")
            self.assertEqual(client.command("GET", "acknowledged"), "on-new")

    def test_87q_a_min_replicas_fence_holds_over_a_restart_from_redis_conf(self):
        """fence = "min-replicas": old stays a primary that refuses writes. What CI's campaign hit
        (old restarted after its fence, before it follows new) with the file as the only keeper."""
        old, new, port, daemon = self.start(fence="min-replicas", follows=(), probe_interval="60s",
                                            config_file=True)
        self.eventually(lambda: daemon.service(SERVICE)["lag"]["link"] == "up", 20, "new follows old")
        self.ctl_ok(daemon, "switch", SERVICE)
        self.assertIn("min-replicas-to-write 100", old.config_path.read_text())
        old.kill()
        old.start()
        with self.assertRaisesRegex(tb.RespError, "NOREPLICAS", msg="old refuses writes from its first answer"):
            old.cli("SET", "split-brain", "1")
        self.assertEqual(old.info_replication().get("role"), "master", "a fenced primary, as configured")
        with tb.RespClient(port, timeout=10) as client:
            self.assertEqual(client.command("SET", "on-new", "1"), "OK")


if __name__ == "__main__":
    unittest.main()
