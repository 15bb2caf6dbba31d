"""Scenarios 90-91: Redis clients survive a switch and a rollback (they are moved, not cut).

Goal: two real redis-servers that require a password (new a replica of old), a kind = "redis"
service, and applications using Debian's python3-redis through tunneld while `tunnelctl switch
svc` (pause) and then `tunnelctl rollback svc` run:
  - a writer with AUTH, SELECT 3 and CLIENT SETNAME, a pipelining writer (16 commands a round
    trip), a BRPOP consumer (2 s timeout) and one blocked across the whole switch (30 s timeout:
    tunneld unblocks it with an ordinary nil, and it blocks again on the other side, where
    CLIENT LIST shows it) see 0 errors and 0 reconnects; every write they
    had acknowledged is on the primary in db 3; CLIENT LIST on new shows the writer's name;
  - a MULTI/EXEC writer loses no acknowledged transaction;
  - a subscriber is cut once, and tunneld's log says why (pinned: subscribed);
  - `tunnelctl switch` and `rollback` report the clients moved (connected and replayed on the
    other side during the hold, while it is still a replica), and `history` records them.
90: new reached directly. 91: new reached through an SSH tunnel (the test bed's sshd).
"""

from __future__ import annotations

import os
import re
import threading
import time
import unittest
from pathlib import Path

import redis

from integration_support import SERVICE, IntegrationTest, daemon_config, service_config, tb, tunnel_table

PASSWORD = "move-test-password"


class CountingConnection(redis.Connection):
    """Counts how often redis-py (re)connects: a moved client connects exactly once."""

    connects = 0
    lock = threading.Lock()

    def on_connect(self):
        with CountingConnection.lock:
            CountingConnection.connects += 1
        super().on_connect()


class Workload:
    """One application connection in a thread, counting what it sees until stop()."""

    def __init__(self, name: str, port: int):
        self.name = name
        self.pool = redis.ConnectionPool(connection_class=CountingConnection, host=tb.HOST,
                                         port=port, password=PASSWORD, db=3, client_name=name,
                                         socket_timeout=15, max_connections=1)
        self.client = redis.Redis(connection_pool=self.pool)
        self.errors: list[str] = []
        self.acked: list[str] = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> "Workload":
        self.client.ping()  # connected (AUTH, SELECT 3, CLIENT SETNAME) before anything moves
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(30)

    def _run(self) -> None:
        n = 0
        while not self.stopping.is_set():
            try:
                self.round(n)
            except redis.RedisError as e:
                self.errors.append(f"{type(e).__name__}: {e}")
                time.sleep(0.05)
            n += 1

    def round(self, n: int) -> None:
        raise NotImplementedError


class Writer(Workload):
    def round(self, n: int) -> None:
        key = f"w:{n}"
        if self.client.set(key, "1"):
            self.acked.append(key)


class PipelinedWriter(Workload):
    def round(self, n: int) -> None:
        pipe = self.client.pipeline(transaction=False)
        keys = [f"p:{n}:{i}" for i in range(16)]
        for key in keys:
            pipe.set(key, "1")
        if all(pipe.execute()):
            self.acked += keys


class TransactionWriter(Workload):
    def round(self, n: int) -> None:
        pipe = self.client.pipeline(transaction=True)
        pipe.incr("tx:counter")
        pipe.set(f"tx:{n}", "1")
        counter, _ = pipe.execute()
        self.acked.append(f"tx:{n}")
        self.last_counter = counter


class Consumer(Workload):
    """BRPOP with a 2 s timeout, in a loop: blocked most of the time."""

    def round(self, n: int) -> None:
        popped = self.client.brpop("jobs", timeout=2)
        if popped:
            self.acked.append(popped[1].decode())


class LongConsumer(Workload):
    """BRPOP with a 30 s timeout, longer than the switch's hold: blocked across the switch.

    tunneld unblocks it (CLIENT UNBLOCK id TIMEOUT) before its server turns replica, so it sees
    an ordinary nil, and its next BRPOP runs on the other side."""

    def __init__(self, name: str, port: int):
        super().__init__(name, port)
        self.nils = 0
        # socket_timeout beyond the BRPOP timeout: only tunneld could make this connection fail.
        self.pool.connection_kwargs["socket_timeout"] = 45

    def round(self, n: int) -> None:
        popped = self.client.brpop("slow-jobs", timeout=30)
        if popped:
            self.acked.append(popped[1].decode())
        else:
            self.nils += 1


class SlowTransactionWriter(Workload):
    """MULTI, INCR, SET, then 4 s before EXEC: the transaction stays open longer than the
    switch's quiesce window (3/5 of the 5 s budget), so it cannot be held before old pauses."""

    def __init__(self, name: str, port: int):
        super().__init__(name, port)
        self.refused: list[str] = []

    def round(self, n: int) -> None:
        connection = self.pool.get_connection("MULTI")
        try:
            connection.send_command("MULTI")
            self.assertion(connection.read_response() == b"OK")
            connection.send_command("INCR", "slow-tx:counter")
            self.assertion(connection.read_response() == b"QUEUED")
            connection.send_command("SET", f"slow-tx:{n}", "1")
            self.assertion(connection.read_response() == b"QUEUED")
            self.stopping.wait(4)
            connection.send_command("EXEC")
            try:
                answer = connection.read_response()
            except redis.ResponseError as e:  # refused as a whole: nothing of it ran
                self.refused.append(str(e))
                return
            if answer is None:
                self.refused.append("EXEC answered nil")
                return
            self.acked.append(f"slow-tx:{n}")
        finally:
            self.pool.release(connection)

    def assertion(self, ok: bool) -> None:
        if not ok:
            raise redis.RedisError("unexpected answer inside MULTI")


class RedisMoveBase(IntegrationTest):
    """The bed and the run; the subclasses say how new is reached."""

    via_tunnel = False

    def setUp(self):
        super().setUp()
        CountingConnection.connects = 0
        self.old = self.bed.redis("old")
        self.new = self.bed.redis("new", replicaof=self.old)
        for server in (self.new, self.old):  # masterauth first: a fenced old replicates from new
            server.cli("CONFIG", "SET", "masterauth", PASSWORD)
        for server in (self.old, self.new):
            server.cli("CONFIG", "SET", "requirepass", PASSWORD)
        credentials = self.bed.dir / "redis.auth"
        credentials.write_text(PASSWORD + "\n")
        os.chmod(credentials, 0o600)
        self.port = tb.free_port()
        tunnels = None
        new_backend = self.new.port
        if self.via_tunnel:
            tunnels = {"gateway": tunnel_table(self.bed.sshd())}
            new_backend = {"address": f"{tb.HOST}:{self.new.port}", "via": "gateway"}
        settings = {"max_lag": "1MiB", "pause_timeout": "5s", "probe_interval": "200ms",
                    "probe_timeout": "1s", "fence": "replicaof",
                    "fence_replicaof": f"{tb.HOST}:{self.new.port}",
                    "credentials_file": str(credentials)}
        self.daemon = self.bed.tunneld(daemon_config(
            {SERVICE: service_config(self.port, self.old.port, new_backend, kind="redis",
                                     **settings)}, tunnels=tunnels))

    def server(self, which: tb.Redis) -> redis.Redis:
        return redis.Redis(host=tb.HOST, port=which.port, password=PASSWORD, db=3,
                           socket_timeout=5)

    def blocked_names(self, which: tb.Redis) -> list[str]:
        """Names of the clients blocked in BRPOP on `which` (CLIENT LIST)."""
        return [c["name"] for c in self.server(which).client_list()
                if c.get("cmd") == "brpop" and "b" in c.get("flags", "")]

    def wait_in_sync(self) -> None:
        self.eventually(lambda: (s := self.daemon.service(SERVICE))["lag"]["link"] == "up"
                        and s["lag"]["bytes"] == 0, 20, "probe reports link up and lag 0B")

    def ctl_progress(self, *args: str) -> str:
        """Runs tunnelctl, which must succeed; returns its output with the progress lines."""
        result = self.daemon.ctl(*args, timeout=60)
        output = result.stdout + result.stderr
        self.assertEqual(result.returncode, 0, output)
        return output

    def moved_count(self, output: str) -> int:
        match = re.search(r"moved (\d+) clients", output)
        self.assertIsNotNone(match, f"no 'moved N clients' line in:\n{output}")
        return int(match.group(1))

    def run_switch_and_rollback(self) -> None:
        self.wait_in_sync()
        producer = self.server(self.old)
        writer = Writer("app-writer", self.port).start()
        piped = PipelinedWriter("app-piped", self.port).start()
        transactions = TransactionWriter("app-tx", self.port).start()
        consumer = Consumer("app-worker", self.port).start()
        long_consumer = LongConsumer("app-long-worker", self.port).start()
        subscriber = redis.Redis(host=tb.HOST, port=self.port, password=PASSWORD,
                                 socket_timeout=15).pubsub()
        subscriber.subscribe("news")
        self.assertEqual(subscriber.get_message(timeout=5)["type"], "subscribe")
        workloads = [writer, piped, transactions, consumer, long_consumer]
        connects_before = CountingConnection.connects
        for n in range(3):
            producer.lpush("jobs", f"job-old-{n}")
        time.sleep(1.0)

        self.eventually(lambda: "app-long-worker" in self.blocked_names(self.old), 10,
                        "the long consumer is blocked in BRPOP on old")
        switched = self.ctl_progress("switch", SERVICE, "--mode", "pause")
        self.assertEqual(self.daemon.service(SERVICE)["active"], "new")
        self.assertRegex(switched, r"unblocked from a blocking command", switched)
        self.eventually(lambda: "app-long-worker" in self.blocked_names(self.new), 10,
                        "CLIENT LIST on new shows the long consumer blocked in BRPOP there")
        producer_new = self.server(self.new)
        producer_new.lpush("slow-jobs", "slow-new")
        self.assertGreaterEqual(self.moved_count(switched), 4, switched)
        self.assertRegex(switched, r"connected and replayed on new during the hold", switched)
        status = self.daemon.service(SERVICE)
        self.assertGreaterEqual(status["last_switch"]["moved"], 4, status["last_switch"])
        self.assertEqual(status["last_switch"]["cut"], 1, "the subscriber")
        self.assertGreaterEqual(status["clients_moved"], 4)
        producer = self.server(self.new)
        for n in range(3):
            producer.lpush("jobs", f"job-new-{n}")
        time.sleep(1.0)
        names = self.server(self.new).client_list()
        self.assertIn("app-writer", [c["name"] for c in names],
                      "CLIENT LIST on new shows the moved writer's name")
        self.assertTrue(all(not w.errors for w in workloads),
                        {w.name: w.errors[:3] for w in workloads})

        self.eventually(lambda: long_consumer.acked == ["slow-new"] and
                        "app-long-worker" in self.blocked_names(self.new), 10,
                        "the long consumer popped its job on new and blocks there again")
        rolled_back = self.ctl_progress("rollback", SERVICE)
        self.assertEqual(self.daemon.service(SERVICE)["active"], "old")
        self.assertGreaterEqual(self.moved_count(rolled_back), 4, rolled_back)
        self.assertRegex(rolled_back, r"connected and replayed on old during the hold", rolled_back)
        self.assertRegex(rolled_back, r"unblocked from a blocking command", rolled_back)
        self.eventually(lambda: "app-long-worker" in self.blocked_names(self.old), 10,
                        "the long consumer blocks on old again after the rollback")
        self.server(self.old).lpush("slow-jobs", "slow-old")
        time.sleep(1.0)
        long_consumer.stopping.set()
        self.server(self.old).lpush("slow-jobs", "stop")  # ends its last BRPOP
        for w in workloads:
            w.stop()

        # No error, no reconnect for the writer, the pipelining writer and the consumer.
        for w in (writer, piped, consumer, long_consumer):
            self.assertEqual(w.errors, [], f"{w.name} saw errors")
        self.assertEqual(long_consumer.acked, ["slow-new", "slow-old", "stop"],
                         "the long consumer got its jobs from new, then from old")
        self.assertGreaterEqual(long_consumer.nils, 2, "unblocked at the switch and at the rollback")
        self.assertEqual(CountingConnection.connects, connects_before,
                         "no application connection reconnected")
        # Every acknowledged write is on old (the primary again), in db 3.
        primary = self.server(self.old)
        for w in (writer, piped):
            self.assertGreater(len(w.acked), 0, f"{w.name} made progress")
            missing = [k for k, v in zip(w.acked, primary.mget(w.acked)) if v is None]
            self.assertEqual(missing, [], f"{w.name}: acknowledged writes missing on the primary")
        # The transaction writer loses nothing it had acknowledged.
        missing = [k for k, v in zip(transactions.acked, primary.mget(transactions.acked))
                   if v is None]
        self.assertEqual(missing, [], "acknowledged transactions missing on the primary")
        self.assertEqual(transactions.errors, [], "the transaction writer saw errors")
        self.assertGreaterEqual(int(primary.get("tx:counter")), len(transactions.acked))
        self.assertEqual(sorted(consumer.acked),
                         sorted([f"job-old-{n}" for n in range(3)] + [f"job-new-{n}" for n in range(3)]),
                         "the consumer got every job, from old and then from new")
        # The subscriber was cut once, with its reason in the log.
        with self.assertRaises(redis.ConnectionError):
            for _ in range(50):
                subscriber.get_message(timeout=0.1)
        log = Path(self.daemon.log).read_text()
        self.assertRegex(log, r'reason=cut_pinned .* error="pinned: subscribed"')
        self.assertEqual(len(re.findall(r"reason=cut_pinned", log)), 1, "cut once")
        # The history records the clients moved.
        history = self.daemon.ctl("history", SERVICE, "--json")
        self.assertEqual(history.returncode, 0, history.stderr)
        self.assertIn('"moved"', history.stdout)



class RedisMoveTest(RedisMoveBase):
    def test_90_clients_survive_switch_and_rollback(self):
        self.run_switch_and_rollback()

    def test_92_transaction_open_longer_than_the_quiesce_window_loses_nothing(self):
        """A MULTI open across the quiesce window is not held: its EXEC reaches old after the
        write pause. It either ran (and is on the primary) or was refused as a whole (old is
        fenced); the writer never reconnects, every acknowledged transaction is on the primary
        exactly once (the counter it increments equals the transactions acknowledged)."""
        self.wait_in_sync()
        writer = SlowTransactionWriter("app-slow-tx", self.port).start()
        connects_before = CountingConnection.connects
        self.eventually(lambda: "app-slow-tx" in [c["name"] for c in self.server(self.old).client_list()
                                                  if "x" in c.get("flags", "")], 10,
                        "the writer has a transaction open on old")
        time.sleep(0.5)  # well inside its 4 s: the transaction is open when the switch starts
        switched = self.ctl_progress("switch", SERVICE, "--mode", "pause")
        self.assertEqual(self.daemon.service(SERVICE)["active"], "new")
        self.eventually(lambda: "app-slow-tx" in [c["name"] for c in self.server(self.new).client_list()],
                        15, "the slow transaction writer is moved to new")
        self.eventually(lambda: len(writer.acked) >= 1 and len(writer.acked) + len(writer.refused) >= 2, 30,
                        "a transaction acknowledged on new after the one open across the switch")
        writer.stop()
        self.assertEqual(writer.errors, [], "no connection error, no unexpected answer")
        self.assertEqual(CountingConnection.connects, connects_before, "the writer never reconnected")
        primary = self.server(self.new)
        missing = [k for k, v in zip(writer.acked, primary.mget(writer.acked)) if v is None]
        self.assertEqual(missing, [], f"acknowledged transactions missing on the primary\n{switched}")
        self.assertEqual(int(primary.get("slow-tx:counter")), len(writer.acked),
                         f"the counter counts exactly the acknowledged transactions "
                         f"(refused: {writer.refused})")


class RedisMoveViaTunnelTest(RedisMoveBase):
    via_tunnel = True

    def test_91_clients_survive_switch_and_rollback_via_tunnel(self):
        self.run_switch_and_rollback()


if __name__ == "__main__":
    unittest.main()
