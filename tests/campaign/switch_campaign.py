#!/usr/bin/env python3
"""Switch campaign: redis switch/rollback cycles under write load while faults hit at random.

    tests/campaign/switch_campaign.py --cycles 100 --seed 7

Goal (issue 10): no acknowledged write is lost and there are never two writable primaries,
whatever moment tunneld is SIGKILLed (and restarted at once, as systemd would), a redis server
crashes and restarts, or the tunnel's sshd stops and starts.

The bed (tools/tunneld_testbed.py, everything on loopback in a temporary directory):
  - two redis pairs, each `old` (primary) and `new` (its replica), run from a redis.conf with
    `appendonly yes` and `appendfsync always`, so a redis crash itself loses no acknowledged write;
  - one tunneld with two kind = "redis" services in pause mode: `direct` (new reached directly)
    and `tunnelled` (new reached through an SSH tunnel to the bed's sshd); fence = "replicaof"
    (old follows new after a switch), rollback_replicaof (new follows old after a rollback);
  - per service two writers through tunneld's port, each write a unique key with a unique value,
    every +OK counted as acknowledged (tests/integration/integration_support.py: Writer);
  - per pair an observer that tries a real write on both servers every 20 ms.

A cycle picks a service (seeded), switches it to new (`tunnelctl switch --mode pause`) and rolls it
back (`tunnelctl rollback`); either step is retried while refused (a fault can leave the replica
resyncing or the tunnel reconnecting) until a deadline. Meanwhile 0 to 2 faults fire at random
moments of the cycle's first seconds:
  - kill_tunneld: SIGKILL tunneld, start it again at once (same config and state file);
  - restart_old / restart_new: SIGKILL that redis-server of the cycle's pair, start it again after
    0-1 s from its redis.conf, as systemd would. It comes back as that file says: tunneld writes
    its fence and each role change there (CONFIG REWRITE, as Sentinel does), so a change it made
    but had not written yet when the kill came is gone, and so is what Redis keeps only in
    memory (a CLIENT PAUSE);
  - restart_sshd: stop the tunnel's sshd (every session cut), start it again after 0.5-3 s (only
    in cycles of the tunnelled service).

Writable, precisely: the observer runs
    EVAL "redis.call('SET', KEYS[1], ARGV[1]); return redis.call('TIME')" 1 campaign:canary N
on each server with a 250 ms timeout. A server is writable at the instant its own clock returns
in that reply (both servers run on this host, so their TIME is one clock): the write executed.
A replica answers READONLY, a fenced primary NOREPLICAS (min-replicas-to-write), a primary whose
writes are paused does not answer in time: not writable. Consecutive successes with no failure
between them make a writable interval. A split-brain moment is an instant covered by a writable
interval (or a single success) of both servers of one pair: two primaries that each executed a
write, with no sign that either stopped in between.

After each cycle the script waits (with a deadline) for a consistent state: both services
`serving` with no journal in the state file, the side tunneld routes to a primary that takes the
canary write, the other side refusing it and a replica of the routed one; then every write acknowledged so far must be on the
routed primary with its value. A service left `unresolved` is resolved as the operations runbook
tells an operator (docs/operations.md, "Recovery at start"): look at both servers and run
`tunnelctl resolve SERVICE --to SIDE` for the one side that answers as a primary (of two
primaries, the one that takes writes: the other is fenced). Each such
resolve is counted and printed; with no single primary the script cannot act as an operator
would and the cycle counts as inconsistent.

At the end it prints cycles, faults by kind, acknowledged writes, lost writes, the longest hold
(the longest a write waited for its reply) and the longest a writer went without an
acknowledged write, operations refused or failed, resolves, and every split-brain moment. Exit
status 1 on any lost write, any split-brain moment or any inconsistent cycle (it stops at the first
unless --keep-going; Ctrl-C prints the summary so far); 2 on a broken bed. --faults picks kinds.
"""

from __future__ import annotations

import argparse
import json
import queue
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))

from integration_support import (Writer, daemon_config, missing_keys,  # noqa: E402
                                 service_config, tb, tunnel_table)

CANARY = "redis.call('SET', KEYS[1], ARGV[1]); return redis.call('TIME')"
SERVICES = ("direct", "tunnelled")
FAULT_KINDS = ("kill_tunneld", "restart_old", "restart_new", "restart_sshd")
STEP_DEADLINE = 45.0       # one switch or rollback, retries included
SETTLE_DEADLINE = 30.0     # from the end of a cycle's steps to a consistent state


def log(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {message}", flush=True)


# --------------------------------------------------------------------------------------------
# the observer


class Observer:
    """Tries a canary write on both servers of a pair every `interval`; keeps the writable
    intervals of each, on the servers' shared clock (microseconds)."""

    def __init__(self, pair: str, servers: dict[str, tb.Redis], interval: float = 0.02):
        self.pair = pair
        self.servers = servers
        self.interval = interval
        self.intervals: dict[str, list[list[int]]] = {name: [] for name in servers}
        self._open: dict[str, bool] = {name: False for name in servers}
        self._clients: dict[str, tb.RespClient | None] = {name: None for name in servers}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._n = 0

    def start(self) -> "Observer":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        for client in self._clients.values():
            if client is not None:
                client.close()

    def _try(self, name: str) -> int | None:
        """The server time (µs) at which the canary write executed, or None."""
        client = self._clients[name]
        try:
            if client is None:
                client = self._clients[name] = tb.RespClient(self.servers[name].port, timeout=0.25)
            self._n += 1
            reply = client.command("EVAL", CANARY, 1, "campaign:canary", self._n)
            return int(reply[0]) * 1_000_000 + int(reply[1])
        except tb.RespError:
            return None
        except (OSError, ConnectionError, ValueError, TypeError, IndexError):
            # a timeout leaves a reply in flight: drop the connection
            if client is not None:
                client.close()
            self._clients[name] = None
            return None

    def _run(self) -> None:
        while not self._stop.is_set():
            for name in self.servers:
                at = self._try(name)
                if at is None:
                    self._open[name] = False
                elif self._open[name]:
                    self.intervals[name][-1][1] = at
                else:
                    self.intervals[name].append([at, at])
                    self._open[name] = True
            self._stop.wait(self.interval)

    def split_brain(self) -> list[tuple[int, int]]:
        """Every (start µs, length µs) where both servers were seen writable."""
        a, b = (self.intervals[name] for name in self.servers)
        moments = []
        i = j = 0
        while i < len(a) and j < len(b):
            start, end = max(a[i][0], b[j][0]), min(a[i][1], b[j][1])
            if start <= end:
                moments.append((start, end - start))
            if a[i][1] < b[j][1]:
                i += 1
            else:
                j += 1
        return moments


# --------------------------------------------------------------------------------------------
# the bed


@dataclass
class Service:
    name: str
    port: int
    servers: dict[str, tb.Redis]  # "old", "new"
    writer: Writer
    observer: Observer
    checked: int = 0  # acknowledged writes verified so far
    lost: list[str] = field(default_factory=list)


class Campaign:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.rng = random.Random(args.seed)
        self.bed = tb.TestBed(keep=args.keep)
        self.faults: Counter[str] = Counter()
        self.refusals: Counter[str] = Counter()
        self.resolves: list[str] = []
        self.inconsistent: list[str] = []
        self.daemon_lock = threading.Lock()  # one fault at a time restarts a process
        self.bed_error: str | None = None
        self.fault_jobs: queue.Queue = queue.Queue()
        self.faulter = threading.Thread(target=self.fault_worker, daemon=True)

    # ---- setup

    def start(self) -> None:
        self.faulter.start()
        self.sshd = self.bed.sshd()
        services = {}
        self.services: dict[str, Service] = {}
        pairs = {}
        for name in SERVICES:
            old = self.bed.redis(f"{name}-old", durable=True, config_file=True)
            new = self.bed.redis(f"{name}-new", replicaof=old, durable=True, config_file=True)
            pairs[name] = {"old": old, "new": new}
            port = tb.free_port()
            new_backend = f"{tb.HOST}:{new.port}"
            if name == "tunnelled":
                new_backend = {"address": new_backend, "via": "vpc"}
            services[name] = service_config(
                port, old.port, new_backend, kind="redis", mode="pause", max_lag="1MiB",
                pause_timeout="5s", probe_interval="250ms", probe_timeout="1s",
                fence="replicaof", fence_replicaof=f"{tb.HOST}:{new.port}",
                rollback_replicaof=f"{tb.HOST}:{old.port}")
            self.services[name] = Service(name, port, pairs[name], None, None)  # type: ignore
        self.daemon = self.bed.tunneld(daemon_config(
            services, tunnels={"vpc": tunnel_table(self.sshd)}, log_level="info"))
        for svc in self.services.values():
            svc.writer = Writer(svc.port, f"{svc.name}", threads=2, timeout=30,
                                pace=self.args.pace).start()
            svc.observer = Observer(svc.name, svc.servers).start()
        for name in SERVICES:
            tb.wait_until(lambda n=name: self.status(n)["lag"]["link"] == "up", 30,
                      f"{name}: the replica link up")

    def close(self) -> None:
        self.fault_jobs.put(None)
        for svc in getattr(self, "services", {}).values():
            if svc.writer is not None:
                svc.writer.stop()
            if svc.observer is not None:
                svc.observer.stop()
        self.bed.close()

    # ---- helpers

    def status(self, name: str) -> dict:
        return self.daemon.service(name)

    def journal(self, name: str) -> dict | None:
        try:
            record = json.loads(self.daemon.state_file.read_text())["services"][name]
        except (OSError, ValueError, KeyError):
            return None
        return record.get("journal")

    def ctl(self, *args, timeout: float = 30) -> subprocess.CompletedProcess:
        try:
            return self.daemon.ctl(*args, timeout=timeout)
        except subprocess.TimeoutExpired:
            return subprocess.CompletedProcess(args, 124, "", f"tunnelctl timed out after {timeout}s")

    @staticmethod
    def role(redis: tb.Redis) -> str | None:
        return Campaign.replication(redis).get("role")

    @staticmethod
    def replication(redis: tb.Redis) -> dict:
        try:
            return redis.info_replication()
        except (OSError, ConnectionError, tb.RespError, tb.BedError):
            return {}

    @staticmethod
    def takes_writes(redis: tb.Redis) -> bool:
        try:
            with tb.RespClient(redis.port, timeout=1) as c:
                c.command("EVAL", CANARY, 1, "campaign:canary", "check")
            return True
        except tb.RespError:
            return False
        except (OSError, ConnectionError):
            return False

    # ---- faults

    def fault(self, kind: str, downtime: float, svc: Service) -> None:
        with self.daemon_lock:
            self.faults[kind] += 1
            log(f"  fault {kind} ({svc.name})")
            if kind == "kill_tunneld":
                self.daemon.process.send_signal(signal.SIGKILL)
                self.daemon.process.wait(10)
                self.daemon.process.stop()
                self.daemon.start()
            elif kind in ("restart_old", "restart_new"):
                redis = svc.servers[kind.split("_")[1]]
                redis.kill()
                time.sleep(downtime)
                redis.start()  # as its redis.conf says
            elif kind == "restart_sshd":
                self.sshd.stop()
                time.sleep(downtime)
                self.sshd.start()

    def plan_faults(self, svc: Service) -> list[tuple[float, str, float, float | None]]:
        """(seconds from the cycle's start, kind, downtime, mid-step delay) for 0 to 2 faults.

        A fault with a mid-step delay waits from its moment on for the journal to name a step
        (a switch or rollback under way, on any service), then fires that many seconds later:
        the steps take tens of milliseconds, which a fault at a uniformly random moment seldom
        hits."""
        kinds = ["kill_tunneld", "kill_tunneld", "restart_old", "restart_new"]
        if svc.name == "tunnelled":
            kinds.append("restart_sshd")
        kinds = [kind for kind in kinds if kind in self.args.faults]
        if not kinds:
            return []
        plan = []
        for _ in range(self.rng.choice([0, 1, 1, 2])):
            kind = self.rng.choice(kinds)
            downtime = self.rng.uniform(0.5, 3) if kind == "restart_sshd" else \
                self.rng.uniform(0, 1)
            mid_step = self.rng.uniform(0, 0.05) if self.rng.random() < 0.5 else None
            plan.append((self.rng.uniform(0, self.args.fault_window), kind, downtime, mid_step))
        return sorted(plan, key=lambda fault: fault[0])

    def wait_for_a_step(self, name: str, timeout: float) -> str | None:
        """The journal's step once the service's record has one (None at the deadline)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            journal = self.journal(name)
            if journal is not None:
                return journal.get("step")
            time.sleep(0.002)
        return None

    def run_faults(self, svc: Service, plan: list[tuple[float, str, float, float | None]],
                   started: float) -> None:
        for at, kind, downtime, mid_step in plan:
            delay = started + at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            if mid_step is not None:
                step = self.wait_for_a_step(svc.name, 5)
                if step is not None:
                    time.sleep(mid_step)
                    kind_seen = f"{kind} at step {step}"
                    self.faults[kind_seen] += 1
            try:
                self.fault(kind, downtime, svc)
            except Exception as e:  # noqa: BLE001 - a broken bed ends the campaign
                self.bed_error = f"fault {kind}: {e}"
                return

    def fault_worker(self) -> None:
        """One thread for the whole campaign runs every cycle's faults: a process the bed starts
        gets a parent-death signal when the thread that started it ends."""
        while (job := self.fault_jobs.get()) is not None:
            svc, plan, started, done = job
            try:
                self.run_faults(svc, plan, started)
            finally:
                done.set()

    # ---- a cycle

    def settle(self, name: str) -> dict:
        """Waits until the service is serving (resolving an unresolved switch as an operator
        would); returns its status."""
        def serving():
            svc = self.status(name)
            if svc["state"] == "unresolved":
                self.resolve(name, svc)
                return None
            return svc if svc["state"] == "serving" else None
        return tb.wait_until(serving, SETTLE_DEADLINE, f"{name} serving")

    def resolve(self, name: str, status: dict) -> None:
        servers = self.services[name].servers
        primaries = [side for side, redis in servers.items() if self.role(redis) == "master"]
        if len(primaries) == 2:
            # A switch that lost new's answer after promoting it leaves old fenced: of two
            # primaries the operator picks the one that takes writes (resolve fences the other).
            primaries = [side for side in primaries if self.takes_writes(servers[side])]
        problem = status.get("problem")
        if len(primaries) != 1:
            raise TimeoutError(f"{name} unresolved ({problem}) and primaries are {primaries}: "
                               "an operator would have to look at the data")
        result = self.ctl("resolve", name, "--to", primaries[0])
        if result.returncode == 0:
            self.resolves.append(f"{name} --to {primaries[0]} (problem: {problem})")
        else:
            self.refusals[f"resolve: {summarize((result.stdout + result.stderr).strip())}"] += 1
            time.sleep(0.5)
        log(f"  resolve {name} --to {primaries[0]}: exit {result.returncode} "
            f"{(result.stdout + result.stderr).strip()[-200:]}")

    def step(self, name: str, to: str) -> None:
        """Switches (to new) or rolls back (to old), retrying while refused."""
        deadline = time.monotonic() + STEP_DEADLINE
        while time.monotonic() < deadline:
            try:
                status = self.settle(name)
            except (TimeoutError, tb.BedError):
                time.sleep(0.5)
                continue
            if status["active"] == to:
                return
            args = ("switch", name, "--mode", "pause") if to == "new" else ("rollback", name)
            result = self.ctl(*args)
            if result.returncode == 0:
                continue  # settle and check the side again
            reason = (result.stdout + result.stderr).strip().splitlines()
            reason = reason[-1] if reason else f"exit {result.returncode}"
            self.refusals[f"{args[0]}: {summarize(reason)}"] += 1
            time.sleep(0.5)
        self.refusals[f"gave up: {name} not on {to} within {STEP_DEADLINE:.0f}s"] += 1

    def consistent(self, name: str) -> str | None:
        """None when consistent, else what is wrong."""
        svc = self.services[name]
        status = self.status(name)
        if status["state"] != "serving":
            return f"state {status['state']} ({status.get('problem')})"
        if self.journal(name) is not None:
            return f"journal still in the state file: {self.journal(name)}"
        active = status["active"]
        other = "old" if active == "new" else "new"
        if self.role(svc.servers[active]) != "master":
            return f"routed side {active} is not a primary"
        if not self.takes_writes(svc.servers[active]):
            return f"routed side {active} refuses writes"
        if self.takes_writes(svc.servers[other]):
            return f"the other side {other} takes writes"
        # fence_replicaof and rollback_replicaof are both set: the side left behind is not only
        # fenced but a replica of the routed one (a warm copy for the next step), as tunneld's
        # probe keeps it. A fenced primary here refuses writes today and the next switch.
        info = self.replication(svc.servers[other])
        if info.get("role") != "slave" or info.get("master_port") != str(svc.servers[active].port):
            return f"the other side {other} is not a replica of {active} (role {info.get('role')})"
        return None

    def check_writes(self, svc: Service) -> None:
        """Every write acknowledged so far is on the primary tunneld routes to."""
        active = self.status(svc.name)["active"]
        keys = svc.writer.acknowledged()
        missing = missing_keys(svc.servers[active], keys[svc.checked:], svc.writer.value_of)
        # keys verified earlier are checked again at the end on the final primary
        svc.checked = len(keys)
        if missing:
            svc.lost += missing
            log(f"  LOST {len(missing)} acknowledged writes of {svc.name} on {active}, "
                f"e.g. {missing[:3]}")

    def cycle(self, index: int) -> None:
        name = "tunnelled" if self.rng.random() < self.args.tunnel_share else "direct"
        svc = self.services[name]
        plan = self.plan_faults(svc)
        log(f"cycle {index + 1}: {name}, faults {[(round(at, 2), kind, mid is not None) for at, kind, _, mid in plan]}")
        started = time.monotonic()
        faults_done = threading.Event()
        self.fault_jobs.put((svc, plan, started, faults_done))
        self.step(name, "new")
        self.step(name, "old")
        if not faults_done.wait(self.args.fault_window + 30):
            raise RuntimeError("a fault did not end within its deadline")
        problems = {}
        deadline = time.monotonic() + SETTLE_DEADLINE
        for other in SERVICES:
            while True:
                try:
                    self.settle(other)
                    problem = self.consistent(other)
                except (TimeoutError, tb.BedError) as e:
                    problem = str(e)
                if problem is None or time.monotonic() >= deadline:
                    break
                time.sleep(0.2)
            if problem is not None:
                problems[other] = problem
        for other, problem in problems.items():
            self.inconsistent.append(f"cycle {index + 1} {other}: {problem}")
            log(f"  INCONSISTENT {other}: {problem}")
        for other in SERVICES:
            if other not in problems:
                self.check_writes(self.services[other])

    # ---- the end

    def report(self, cycles: int, elapsed: float) -> int:
        for svc in self.services.values():
            svc.writer.stop()
            svc.observer.stop()
        lost = 0
        for svc in self.services.values():
            active = self.status(svc.name)["active"]
            missing = missing_keys(svc.servers[active], svc.writer.acknowledged(),
                                   svc.writer.value_of)
            svc.lost = missing
            lost += len(missing)
        acked = sum(len(svc.writer.acked) for svc in self.services.values())
        hold = max(svc.writer.max_latency for svc in self.services.values())
        gap = max(svc.writer.max_gap for svc in self.services.values())
        moments = [(svc.name, start, length) for svc in self.services.values()
                   for start, length in svc.observer.split_brain()]
        print()
        print(f"seed {self.args.seed}")
        print(f"cycles {cycles} in {elapsed:.0f}s")
        kinds = {k: v for k, v in self.faults.items() if " at step " not in k}
        print(f"faults {sum(kinds.values())}: " + ", ".join(f"{k} {v}" for k, v in sorted(kinds.items())))
        print("  of which while a step was journaled: "
              + (", ".join(f"{k} {v}" for k, v in sorted(self.faults.items()) if " at step " in k)
                 or "none"))
        print(f"acknowledged writes {acked} "
              f"({', '.join(f'{s.name} {len(s.writer.acked)}' for s in self.services.values())}); "
              f"write errors {sum(s.writer.errors for s in self.services.values())}")
        print(f"lost writes {lost}"
              + "".join(f"\n  {s.name}: {len(s.lost)}, e.g. {s.lost[:5]}"
                        for s in self.services.values() if s.lost))
        print(f"longest hold {hold * 1000:.0f}ms (a write waiting for its reply); "
              f"longest without an acknowledged write {gap * 1000:.0f}ms")
        print(f"refused or failed steps {sum(self.refusals.values())}"
              + "".join(f"\n  {v} x {k}" for k, v in self.refusals.most_common()))
        print(f"resolved by the script {len(self.resolves)}"
              + "".join(f"\n  {r}" for r in self.resolves))
        print(f"inconsistent cycles {len(self.inconsistent)}"
              + "".join(f"\n  {c}" for c in self.inconsistent))
        print(f"split-brain moments {len(moments)}"
              + "".join(f"\n  {name}: at {time.strftime('%H:%M:%S', time.localtime(start / 1e6))}"
                        f".{start % 1_000_000:06d} for {length / 1000:.1f}ms"
                        for name, start, length in moments))
        return 1 if lost or moments or self.inconsistent else 0


def summarize(reason: str) -> str:
    """A refusal's text without the numbers that differ each time (for counting)."""
    import re
    return re.sub(r"\d+(\.\d+)?", "N", reason)[:140]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cycles", type=int, default=10)
    parser.add_argument("--seed", type=int, default=None, help="default: a random one (printed)")
    parser.add_argument("--tunnel-share", type=float, default=0.5,
                        help="share of cycles run on the tunnelled service")
    parser.add_argument("--fault-window", type=float, default=1.5,
                        help="faults fire in this many seconds from a cycle's start")
    parser.add_argument("--pace", type=float, default=0.005,
                        help="seconds each writer waits between writes")
    parser.add_argument("--faults", default=",".join(FAULT_KINDS),
                        help=f"the kinds of fault to inject (default: all of {','.join(FAULT_KINDS)})")
    parser.add_argument("--keep-going", action="store_true",
                        help="go on after a cycle that did not end consistent (default: stop)")
    parser.add_argument("--keep", action="store_true", help="keep the bed's directory")
    args = parser.parse_args()
    args.faults = args.faults.split(",")
    unknown = set(args.faults) - set(FAULT_KINDS)
    if unknown:
        parser.error(f"unknown fault kinds {sorted(unknown)}")
    if args.seed is None:
        args.seed = random.SystemRandom().randrange(1, 1_000_000)
    print(f"switch campaign: --cycles {args.cycles} --seed {args.seed} --faults {','.join(args.faults)}",
          flush=True)
    for binary in (tb.tunneld_bin(), tb.tunnelctl_bin()):
        if not binary.exists():
            print(f"{binary} not built (set TUNNELD_BIN/TUNNELCTL_BIN)", file=sys.stderr)
            return 2
    tb.set_parent_death_signal()
    campaign = Campaign(args)
    started = time.monotonic()
    cycles = 0
    try:
        campaign.start()
        try:
            for index in range(args.cycles):
                campaign.cycle(index)
                cycles += 1
                if campaign.bed_error:
                    print(f"bed broke: {campaign.bed_error}", file=sys.stderr)
                    break
                if campaign.inconsistent and not args.keep_going:
                    print(f"stopped after cycle {cycles}: it did not end consistent "
                          "(--keep-going goes on)", flush=True)
                    break
        except KeyboardInterrupt:
            print(f"interrupted in cycle {cycles + 1}", flush=True)
        code = campaign.report(cycles, time.monotonic() - started)
        if campaign.bed_error:
            code = 2
        if code:
            print(f"tunneld log: {campaign.daemon.log}" if args.keep else
                  "tunneld log tail:\n" + tb.log_tail(campaign.daemon.log, 40))
        return code
    except (tb.BedError, TimeoutError, RuntimeError, socket.error) as e:
        print(f"campaign broke after {cycles} cycles: {e}", file=sys.stderr)
        try:
            print(tb.log_tail(campaign.daemon.log, 60), file=sys.stderr)
        except AttributeError:
            pass
        return 2
    finally:
        campaign.close()


if __name__ == "__main__":
    sys.exit(main())
