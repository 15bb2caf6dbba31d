#!/usr/bin/env python3
"""tunneld demo: a Redis primary moved to its replica behind an SSH tunnel, gated on lag, and back.

  tools/demo [--no-build] [--direct]      (tools/demo installs, builds, then runs this file)

The whole story on one machine (everything on 127.0.0.1, torn down at the end):

  1. tools/demo: the packages (tools/deps), then the build (cmake --preset default), unless
     --no-build
  2. a test bed: sshd (the gateway into the "new network"), redis "old" (the primary) and
     redis "new", a warm replica of old (its replication stream passes a small relay in this
     script, so the demo can hold the replica back on purpose)
  3. tunneld with one service `redis` (kind = "redis") whose new side is reached `via` the SSH
     tunnel (or directly with --direct); `tunnelctl status` shows the lag probe: link up, 0B
  4. legacy traffic: a background writer through tunneld's port writes unique keys and counts
     every acknowledged write (+OK) and every error
  5. the replica falls behind (relay stalled) and `tunnelctl switch redis` is refused by the lag
     gate (lag above max_lag); the replica catches up again
  6. the real `tunnelctl switch redis` (mode pause): the writer's connections held at a request
     boundary, old paused, replica caught up, old fenced, replica promoted, the writer's
     connections moved to new (not cut: the writer sees no error and does not reconnect); every
     acknowledged write is checked on the new primary
  7. `tunnelctl rollback redis` with the writer still running, moved back the same way; every
     acknowledged write is checked on old, the primary again, and new refuses writes
  8. teardown

Binaries: $TUNNELD_BIN and $TUNNELCTL_BIN if set, else build/default/{daemon/tunneld,
tools/tunnelctl}. Exit 0 when every step behaved; otherwise 1 with the step that did not.
"""

import argparse
import os
import re
import subprocess
import sys
import time

TOOLS = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, TOOLS)

import tunneld_testbed as tb  # noqa: E402

SERVICE = "redis"
MAX_LAG = "64KiB"
MAX_LAG_BYTES = 64 * 1024


class DemoError(RuntimeError):
    """A step of the demo did not behave as the story says."""


def banner(text: str) -> None:
    bold, plain = ("\033[1m", "\033[0m") if sys.stdout.isatty() else ("", "")
    print(f"\n{bold}== {text}{plain}", flush=True)


def say(text: str) -> None:
    print(f"  {text}", flush=True)


def expect(condition: bool, what: str) -> None:
    if not condition:
        raise DemoError(what)


# --------------------------------------------------------------------------------------------
# legacy traffic


def writer_summary(writer: tb.RedisWriter) -> str:
    errors = f"{writer.errors} errors" + (f" {writer.error_samples}" if writer.errors else "")
    return (f"{len(writer.acked)} acknowledged writes, {errors}, "
            f"slowest write {writer.max_latency * 1000:.0f}ms")


# --------------------------------------------------------------------------------------------
# tunnelctl and status


def tunnelctl(daemon: tb.Tunneld, *args: str, expect_code: int = 0,
              timeout: float = 60) -> str:
    """Runs tunnelctl, shows its output as an operator would see it, checks the exit code."""
    print(f"  $ tunnelctl {' '.join(args)}", flush=True)
    result = daemon.ctl(*args, timeout=timeout)
    output = result.stderr + result.stdout  # progress lines come before the result
    for line in output.rstrip("\n").splitlines():
        print(f"    {line}")
    print(f"    (exit {result.returncode})", flush=True)
    expect(result.returncode == expect_code,
           f"`tunnelctl {' '.join(args)}` exited {result.returncode}, expected {expect_code}")
    return output


def service(daemon: tb.Tunneld) -> dict:
    return daemon.service(SERVICE)


def lag_text(svc: dict) -> str:
    lag = svc["lag"]
    size = "unknown" if lag["bytes"] is None else f"{lag['bytes']}B"
    return f"link {lag['link']}, lag {size}"


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise DemoError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.1)


def role(redis: tb.Redis) -> str:
    info = redis.info_replication()
    if info.get("role") == "slave":
        return (f"replica of {info.get('master_host')}:{info.get('master_port')} "
                f"(link {info.get('master_link_status')})")
    return "primary" if info.get("role") == "master" else f"role {info.get('role')}"


def show_roles(old: tb.Redis, new: tb.Redis) -> None:
    say(f"redis old (:{old.port}): {role(old)}")
    say(f"redis new (:{new.port}): {role(new)}")


def try_write(redis: tb.Redis, name: str) -> str:
    """A write straight to `redis` (not through tunneld): OK, or the error it answers."""
    try:
        answer = redis.cli("SET", "demo:direct-write", "x")
    except tb.RespError as e:
        answer = f"-{e}"
    say(f"SET straight to redis {name} (:{redis.port}) -> {answer}")
    return answer


def moved_clients(text: str) -> str:
    match = re.search(r"moved (\d+) clients", text)
    return match.group(1) if match else "?"


def held_ms(text: str) -> str:
    match = re.search(r"clients held (\d+)ms", text) or \
        re.search(r"released held clients to \w+ after (\d+)ms", text)
    return f"{match.group(1)}ms" if match else "?"


# --------------------------------------------------------------------------------------------
# the story


def run(args: argparse.Namespace) -> None:
    with tb.TestBed() as bed:
        relay = None
        writers: list[tb.RedisWriter] = []
        daemon = None
        try:
            banner("1. test bed: sshd (the gateway), redis old (primary), redis new (replica)")
            sshd = None if args.direct else bed.sshd()
            old = bed.redis("old")
            relay = tb.StallableRelay(old.port)
            new = bed.redis("new")
            new.cli("REPLICAOF", tb.HOST, relay.port)
            new.wait_link_up()
            with old.client() as c:
                for i in range(1000):
                    c.send("SET", f"seed:{i}", "before the migration")
                for _ in range(1000):
                    c.read_reply()
            new.wait_caught_up(old)
            if sshd is not None:
                say(f"sshd 127.0.0.1:{sshd.port}: the gateway into the new network")
            say(f"redis old 127.0.0.1:{old.port}: the primary, 1000 keys")
            say(f"redis new 127.0.0.1:{new.port}: replicates old through a relay on "
                f":{relay.port} (stands in for the WAN link; the demo can stall it)")
            show_roles(old, new)

            banner("2. tunneld: service redis, old direct, new "
                   + ("direct (--direct)" if args.direct else "via the SSH tunnel"))
            port = tb.free_port()
            new_backend = f"{tb.HOST}:{new.port}" if args.direct else {
                "address": f"{tb.HOST}:{new.port}", "via": "gateway"}
            config = {
                "daemon": {"log_level": "info", "shutdown_timeout": "5s"},
                "services": {SERVICE: {
                    "kind": "redis", "listen": f"{tb.HOST}:{port}",
                    "old": f"{tb.HOST}:{old.port}", "new": new_backend,
                    "max_lag": MAX_LAG, "pause_timeout": "5s",
                    "probe_interval": "200ms", "probe_timeout": "1s",
                    "fence": "replicaof", "fence_replicaof": f"{tb.HOST}:{new.port}"}},
            }
            if sshd is not None:
                config["tunnels"] = {"gateway": {
                    "address": f"{tb.HOST}:{sshd.port}", "user": sshd.user,
                    "identity": str(sshd.user_key), "known_hosts": str(sshd.known_hosts),
                    "sessions": 2, "keepalive": "1s", "keepalive_max_missed": 3,
                    "connect_timeout": "5s", "reconnect_max": "2s"}}
            daemon = bed.tunneld(config)
            say(f"tunneld pid {daemon.pid}, applications connect to 127.0.0.1:{port}")
            say(f"config {daemon.config_path}:")
            for line in daemon.config_text.strip().splitlines():
                print(f"      {line}")
            svc = wait_for(lambda: (lambda s: s if s["lag"]["link"] == "up"
                                    and s["lag"]["bytes"] == 0 else None)(service(daemon)),
                           20, "the lag probe (through the tunnel) to report link up, 0B")
            tunnelctl(daemon, "status")
            if sshd is not None:
                tunnelctl(daemon, "tunnels")

            banner("3. legacy traffic: a writer through tunneld's port (4 connections)")
            writer = tb.RedisWriter(port, "legacy", threads=4).start()
            writers.append(writer)
            wait_for(lambda: writer.count() >= 200, 15, "the writer's first 200 writes")
            time.sleep(1.0)
            say(f"writer so far: {writer_summary(writer)}")
            svc = service(daemon)
            expect(svc["active"] == "old", f"service should be on old, status says {svc}")
            say(f"clients on old: {svc['connections']['old']}, on new: "
                f"{svc['connections']['new']}; {lag_text(svc)}")

            banner(f"4. the replica falls behind: the gate refuses (max_lag = {MAX_LAG})")
            relay.stall()
            say("relay stalled: old's replication stream no longer reaches new")
            old.cli("SET", "demo:blob", "x" * (256 * 1024))
            say("a 256KiB value written on old (plus the writer's traffic)")
            svc = wait_for(lambda: (lambda s: s if s["lag"]["bytes"] is not None
                                    and s["lag"]["bytes"] > MAX_LAG_BYTES else None)(
                service(daemon)), 15, f"the probe to report lag above {MAX_LAG}")
            tunnelctl(daemon, "status")
            output = tunnelctl(daemon, "switch", SERVICE, expect_code=1)
            expect(re.search(r"(?i)lag", output) is not None,
                   f"the refusal does not give lag as the reason: {output!r}")
            svc = service(daemon)
            expect(svc["active"] == "old" and not svc["fenced"],
                   f"after a refused switch the service must stay on old, unfenced: {svc}")
            expect(new.info_replication().get("role") == "slave",
                   "after a refused switch new must still be a replica")
            say(f"refused, nothing changed: active {svc['active']}, fenced {svc['fenced']}, "
                f"writer still running ({writer.count()} acknowledged)")

            banner("5. the replica catches up")
            relay.flow()
            say("relay flowing again")
            svc = wait_for(lambda: (lambda s: s if s["lag"]["link"] == "up"
                                    and s["lag"]["bytes"] is not None
                                    and s["lag"]["bytes"] <= MAX_LAG_BYTES else None)(
                service(daemon)), 20, f"lag back under {MAX_LAG}")
            tunnelctl(daemon, "status")

            banner("6. the switch: `tunnelctl switch redis` (mode pause, gated on lag)")
            before = writer.count()
            started = time.monotonic()
            output = tunnelctl(daemon, "switch", SERVICE)
            switch_seconds = time.monotonic() - started
            switch_held = held_ms(output)
            switch_moved = moved_clients(output)
            say(f"switch took {switch_seconds:.2f}s; clients were held {switch_held}")
            time.sleep(1.0)  # the writer keeps going, now on new
            tunnelctl(daemon, "status")
            say("(LAG/LINK measure new as a replica of old; new is the primary now, so the "
                "probe reports no link)")
            svc = service(daemon)
            expect(svc["active"] == "new" and svc["fenced"] is True and svc["state"] == "serving",
                   f"after the switch: active new, fenced, serving expected; status: {svc}")
            show_roles(old, new)
            expect(new.info_replication().get("role") == "master", "new was not promoted")
            answer = try_write(old, "old")
            expect(answer.startswith("-READONLY") or answer.startswith("-NOREPLICAS"),
                   f"old still accepts writes after the fence: {answer}")
            expect(writer.count() > before, "the writer made no progress after the switch")
            writer.stop()
            say(f"writer stopped: {writer_summary(writer)}")
            missing = tb.missing_keys(new, writer.acked)
            expect(not missing, f"{len(missing)} acknowledged writes missing on the new "
                                f"primary, e.g. {missing[:5]}")
            say(f"all {len(writer.acked)} acknowledged writes are on the new primary")

            banner("7. rollback: `tunnelctl rollback redis` with the writer running")
            writer2 = tb.RedisWriter(port, "after-switch", threads=4).start()
            writers.append(writer2)
            wait_for(lambda: writer2.count() >= 200, 15, "writes through tunneld to new")
            started = time.monotonic()
            output = tunnelctl(daemon, "rollback", SERVICE)
            rollback_held = held_ms(output)
            rollback_moved = moved_clients(output)
            say(f"rollback took {time.monotonic() - started:.2f}s; clients were held "
                f"{rollback_held}")
            before = writer2.count()
            time.sleep(1.0)
            tunnelctl(daemon, "status")
            svc = service(daemon)
            expect(svc["active"] == "old" and svc["fenced"] is False,
                   f"after the rollback: active old, not fenced expected; status: {svc}")
            show_roles(old, new)
            expect(old.info_replication().get("role") == "master", "old is not the primary again")
            answer = try_write(new, "new")
            expect(answer.startswith("-READONLY") or answer.startswith("-NOREPLICAS"),
                   f"new still accepts writes after the rollback: {answer}")
            expect(writer2.count() > before, "the writer made no progress after the rollback")
            writer2.stop()
            say(f"writer stopped: {writer_summary(writer2)}")
            everything = writer.acked + writer2.acked
            missing = tb.missing_keys(old, everything)
            expect(not missing, f"{len(missing)} acknowledged writes missing on old after the "
                                f"rollback, e.g. {missing[:5]}")
            say(f"all {len(everything)} acknowledged writes (both phases) are on old, "
                f"the primary again")

            banner("summary")
            say(f"switch:   clients held {switch_held}, {switch_moved} moved; writer: {writer_summary(writer)}")
            say(f"rollback: clients held {rollback_held}, {rollback_moved} moved; writer: "
                f"{writer_summary(writer2)}")
            expect(writer.errors == 0 and writer2.errors == 0,
                   "the writer's connections must be moved, not cut: "
                   f"{writer.error_samples} at the switch, {writer2.error_samples} at the rollback")
            say("no acknowledged write lost in either direction (errors are requests that were "
                "refused or cut, never acknowledged; the writer retries them)")

            banner("8. teardown")
            code = daemon.sigterm(timeout=30)
            say(f"tunneld exited {code}")
            expect(code == 0, f"tunneld exited {code} on SIGTERM")
        except BaseException:
            if daemon is not None:
                print(f"--- tunneld log tail ({daemon.log}):\n{tb.log_tail(daemon.log, 30)}",
                      file=sys.stderr)
            raise
        finally:
            for w in writers:
                w._stop.set()
            if relay is not None:
                relay.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--direct", action="store_true",
                        help="reach the new redis directly instead of through the SSH tunnel")
    args = parser.parse_args()
    for binary in (tb.tunneld_bin(), tb.tunnelctl_bin()):
        expect(binary.exists(), f"{binary} not found (build it, or set TUNNELD_BIN and "
                                f"TUNNELCTL_BIN)")
    print(f"using {tb.tunneld_bin()} and {tb.tunnelctl_bin()}")

    started = time.monotonic()
    run(args)
    print(f"\ndemo done in {time.monotonic() - started:.1f}s (after the build); "
          f"everything torn down")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (DemoError, tb.BedError, subprocess.CalledProcessError,
            subprocess.TimeoutExpired) as e:
        print(f"\ndemo FAILED: {e}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("\ndemo interrupted; everything torn down", file=sys.stderr)
        sys.exit(130)
