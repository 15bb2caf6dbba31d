"""tunneld test bed: throwaway sshd, redis, postgres, haproxy, etcd and tunneld on loopback.

Python 3.11 standard library only. Every server runs on 127.0.0.1 on a free port, in a
temporary directory of its own bed, in its own process group, and is torn down when the bed
closes (context manager), at interpreter exit (atexit) and, for servers, when the Python
process dies (parent-death signal via `setpriv --pdeathsig`). Every wait has a deadline and
fails with the tail of the server's log.

    with TestBed() as bed:
        sshd = bed.sshd()
        old = bed.redis("old")
        new = bed.redis("new", replicaof=old)
        daemon = bed.tunneld({...})
        daemon.ctl("switch", "redis", "--mode", "kill")

Servers must be started from the thread that keeps running (normally the main thread):
the parent-death signal fires when the forking thread exits.
"""

from __future__ import annotations

import atexit
import base64
import json
import os
import re
import shutil
import signal
import socket
import select
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
import urllib.request
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

HOST = "127.0.0.1"
REPO_ROOT = Path(__file__).resolve().parent.parent
SSHD_BIN = "/usr/sbin/sshd"
PG_BIN = Path("/usr/lib/postgresql/15/bin")
DEFAULT_TIMEOUT = 15.0


class BedError(RuntimeError):
    """A piece of the test bed did not come up or misbehaved."""


# --------------------------------------------------------------------------------------------
# small helpers


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (bind to port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def log_tail(path: os.PathLike | str | None, lines: int = 40) -> str:
    if path is None:
        return ""
    try:
        text = Path(path).read_text(errors="replace")
    except OSError as e:
        return f"(no log at {path}: {e})"
    return "\n".join(text.splitlines()[-lines:])


def wait_until(predicate: Callable[[], Any], timeout: float, what: str,
               log: os.PathLike | str | None = None, interval: float = 0.05,
               proc: subprocess.Popen | None = None) -> Any:
    """Polls `predicate` until it returns a truthy value; raises BedError at the deadline.

    If `proc` exits meanwhile, fails at once. Exceptions from the predicate count as "not yet".
    """
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            value = predicate()
            if value:
                return value
        except Exception as e:  # noqa: BLE001 - "not yet" for any failure
            last_error = e
        if proc is not None and proc.poll() is not None:
            raise BedError(f"{what}: process exited with {proc.returncode}\n"
                           f"--- log tail ({log}):\n{log_tail(log)}")
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_error!r})" if last_error else ""
            raise BedError(f"timed out after {timeout:.1f}s waiting for {what}{detail}\n"
                           f"--- log tail ({log}):\n{log_tail(log)}")
        time.sleep(interval)


def port_open(port: int, host: str = HOST, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _proc_children(pid: int) -> list[int]:
    """Direct children of `pid`, read from /proc."""
    children = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # the command name is in parentheses and may contain spaces: split after the last ')'
        fields = stat[stat.rfind(")") + 2:].split()
        if len(fields) > 1 and int(fields[1]) == pid:
            children.append(int(entry))
    return children


def _proc_descendants(pid: int) -> list[int]:
    result: list[int] = []
    todo = [pid]
    while todo:
        for child in _proc_children(todo.pop()):
            result.append(child)
            todo.append(child)
    return result


def _signal_quietly(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _pdeathsig_prefix() -> list[str]:
    """Runs a server so the kernel kills it when this Python process dies."""
    return ["setpriv", "--pdeathsig", "KILL", "--"] if shutil.which("setpriv") else []


class Process:
    """A child process in its own process group with its output in a log file."""

    def __init__(self, argv: Sequence[str], log: Path, cwd: Path | None = None,
                 env: dict | None = None, user: str | None = None,
                 stdin=subprocess.DEVNULL, deathsig: bool = True):
        self.argv = list(argv)
        self.log = Path(log)
        prefix = _pdeathsig_prefix() if deathsig else []
        if user is not None:
            # setpriv changes uid first, then sets the death signal, so both hold.
            prefix = ["setpriv", "--reuid", user, "--regid", user, "--init-groups"] + (
                ["--pdeathsig", "KILL"] if deathsig else []) + ["--"]
        self._log_file = open(self.log, "ab")
        self.popen = subprocess.Popen(prefix + self.argv, stdout=self._log_file,
                                      stderr=subprocess.STDOUT, stdin=stdin, cwd=cwd,
                                      env=env, start_new_session=True)
        _LIVE_PROCESSES.add(self)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def poll(self) -> int | None:
        return self.popen.poll()

    def running(self) -> bool:
        return self.popen.poll() is None

    def send_signal(self, sig: int) -> None:
        if self.running():
            _signal_quietly(self.pid, sig)

    def wait(self, timeout: float) -> int:
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            raise BedError(f"{self.argv[0]} (pid {self.pid}) still running after {timeout:.1f}s\n"
                           f"--- log tail ({self.log}):\n{log_tail(self.log)}") from None

    def stop(self, timeout: float = 5.0, sig: int = signal.SIGTERM) -> int | None:
        """Signals the process group, waits up to `timeout`, then SIGKILLs it. Idempotent."""
        try:
            if self.popen.poll() is None:
                try:
                    os.killpg(self.pid, sig)
                except ProcessLookupError:
                    pass
                try:
                    self.popen.wait(timeout)
                except subprocess.TimeoutExpired:
                    pass
            # the group may outlive its leader (e.g. sshd session children): kill what is left
            try:
                os.killpg(self.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            if self.popen.poll() is None:
                try:
                    self.popen.wait(5)
                except subprocess.TimeoutExpired:
                    pass
            return self.popen.returncode
        finally:
            if not self._log_file.closed:
                self._log_file.close()
            _LIVE_PROCESSES.discard(self)


_LIVE_PROCESSES: set[Process] = set()
_LIVE_BEDS: set["TestBed"] = set()


def _cleanup_at_exit() -> None:
    for bed in list(_LIVE_BEDS):
        try:
            bed.close()
        except Exception:  # noqa: BLE001 - best effort at exit
            pass
    for proc in list(_LIVE_PROCESSES):
        try:
            proc.stop(timeout=2)
        except Exception:  # noqa: BLE001
            pass


atexit.register(_cleanup_at_exit)


def install_signal_teardown() -> None:
    """Turns SIGTERM/SIGHUP into KeyboardInterrupt so context managers and atexit tear the bed
    down (unittest stops on KeyboardInterrupt; it would record SystemExit and go on).

    Only from the main thread, and only where the handler is still the default.
    """
    if threading.current_thread() is not threading.main_thread():
        return

    def handler(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    for sig in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(sig) in (signal.SIG_DFL, None):
            signal.signal(sig, handler)


def set_parent_death_signal(sig: int = signal.SIGTERM) -> None:
    """Asks the kernel to send `sig` to this process when its parent dies (best effort)."""
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
    except Exception:  # noqa: BLE001
        pass


def _run(argv: Sequence[str], what: str, timeout: float = 60, **kw) -> subprocess.CompletedProcess:
    try:
        result = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, **kw)
    except subprocess.TimeoutExpired:
        raise BedError(f"{what}: {argv[0]} timed out after {timeout}s") from None
    if result.returncode != 0:
        raise BedError(f"{what}: {' '.join(map(str, argv))} exited {result.returncode}\n"
                       f"{result.stdout}{result.stderr}")
    return result


# --------------------------------------------------------------------------------------------
# RESP client (so tests do not depend on redis-py)


class RespError(Exception):
    """An error reply (`-ERR ...`) from a Redis server."""


class RespClient:
    """A minimal blocking RESP2 client over one TCP connection."""

    def __init__(self, port: int, host: str = HOST, timeout: float = 5.0,
                 sock: socket.socket | None = None):
        self.sock = sock if sock is not None else socket.create_connection((host, port),
                                                                           timeout=timeout)
        self.sock.settimeout(timeout)
        self._buffer = b""

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self) -> "RespClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @staticmethod
    def encode(*args: Any) -> bytes:
        parts = [b"*%d\r\n" % len(args)]
        for arg in args:
            data = arg if isinstance(arg, bytes) else str(arg).encode()
            parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
        return b"".join(parts)

    def send(self, *args: Any) -> None:
        self.sock.sendall(self.encode(*args))

    def command(self, *args: Any) -> Any:
        """Sends one command and returns its reply (str/int/None/list); raises RespError."""
        self.send(*args)
        return self.read_reply()

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("connection closed by peer")
        self._buffer += chunk

    def _line(self) -> bytes:
        while b"\r\n" not in self._buffer:
            self._fill()
        line, self._buffer = self._buffer.split(b"\r\n", 1)
        return line

    def _exact(self, n: int) -> bytes:
        while len(self._buffer) < n + 2:
            self._fill()
        data, self._buffer = self._buffer[:n], self._buffer[n + 2:]
        return data

    def read_reply(self) -> Any:
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RespError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            return None if n < 0 else self._exact(n).decode(errors="replace")
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self.read_reply() for _ in range(n)]
        raise RespError(f"unexpected reply line {line!r}")


class Workers:
    """`threads` threads running `self._run(index)` until stop(). Errors are counted by kind in
    `errors` and `error_samples`, as an application would see them; `attempts` and
    `max_latency` (the longest one unit of work waited) are the subclass's to update."""

    def __init__(self, threads: int):
        self.errors = 0
        self.error_samples: dict[str, int] = {}
        self.max_latency = 0.0
        self.attempts = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True)
                         for i in range(threads)]

    def _run(self, index: int) -> None:
        raise NotImplementedError

    def start(self):
        for t in self._threads:
            t.start()
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Stops every thread; raises BedError naming how many are still stuck after `timeout`
        seconds (a write that hangs is a finding, never waited for forever)."""
        self._stop.set()
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        stuck = sum(t.is_alive() for t in self._threads)
        if stuck:
            raise BedError(f"{stuck} {type(self).__name__} threads still stuck {timeout:.0f}s after stop")

    def _error(self, what: str) -> None:
        with self._lock:
            self.errors += 1
            key = what[:70]
            self.error_samples[key] = self.error_samples.get(key, 0) + 1


class RedisWriter(Workers):
    """`threads` application connections through `port` (reconnecting after an error), each
    writing unique keys `prefix:T:N` with a unique value (`value_of(key)`); every +OK is recorded
    in `acked` as it comes. `pace` seconds between a writer's writes (0: as fast as it can)."""

    def __init__(self, port: int, prefix: str, threads: int = 8, timeout: float = 15.0,
                 pace: float = 0.0):
        super().__init__(threads)
        self.port = port
        self.prefix = prefix
        self.timeout = timeout
        self.pace = pace
        self.token = os.urandom(4).hex()  # values differ between runs with the same prefix
        self.acked: list[str] = []
        self.max_gap = 0.0  # the longest a writer went without an acknowledged write

    def value_of(self, key: str) -> str:
        return f"{self.token}:{key}"

    def _run(self, index: int) -> None:
        conn = None
        n = 0
        last_ack = time.monotonic()
        while not self._stop.is_set():
            if conn is None:
                try:
                    conn = RespClient(self.port, timeout=self.timeout)
                except OSError as e:
                    self._error(f"connect: {type(e).__name__}")
                    time.sleep(0.05)
                    continue
            key = f"{self.prefix}:{index}:{n}"
            n += 1
            started = time.monotonic()
            try:
                reply = conn.command("SET", key, self.value_of(key))
            except RespError as e:
                self._error(f"reply: {e}")
                time.sleep(0.01)
                continue
            except (OSError, ConnectionError) as e:
                self._error(f"io: {type(e).__name__}")
                conn.close()
                conn = None
                continue
            finally:
                now = time.monotonic()
                with self._lock:
                    self.attempts += 1
                    self.max_latency = max(self.max_latency, now - started)
                    self.max_gap = max(self.max_gap, now - last_ack)
            if reply == "OK":
                last_ack = now
                with self._lock:
                    self.acked.append(key)
            else:
                self._error(f"unexpected reply {reply!r}")
            if self.pace:
                time.sleep(self.pace)
        if conn is not None:
            conn.close()

    def acknowledged(self) -> list[str]:
        """A copy of the keys acknowledged so far."""
        with self._lock:
            return list(self.acked)

    def count(self) -> int:
        with self._lock:
            return len(self.acked)

    def summary(self) -> str:
        return (f"acked={len(self.acked)} attempts={self.attempts} errors={self.errors} "
                f"max_latency={self.max_latency * 1000:.0f}ms samples={self.error_samples}")


def missing_keys(redis: "Redis", keys: list[str], value_of=None) -> list[str]:
    """The keys of `keys` that `redis` does not have (or, with `value_of`, does not hold with
    the value `value_of(key)`)."""
    missing = []
    with redis.client(timeout=30) as c:
        for i in range(0, len(keys), 500):
            chunk = keys[i:i + 500]
            if value_of is None:
                if c.command("EXISTS", *chunk) != len(chunk):
                    missing += [k for k in chunk if c.command("EXISTS", k) != 1]
                continue
            values = c.command("MGET", *chunk)
            missing += [k for k, v in zip(chunk, values) if v != value_of(k)]
    return missing


def parse_info(text: str) -> dict[str, str]:
    """`INFO` text to a dict (section headers and blank lines skipped)."""
    fields = {}
    for line in text.splitlines():
        if not line or line.startswith("#") or ":" not in line:
            continue
        key, value = line.split(":", 1)
        fields[key] = value.strip()
    return fields


# --------------------------------------------------------------------------------------------
# servers


class Sshd:
    """A root sshd on loopback with generated ed25519 host and user keys."""

    def __init__(self, directory: Path, port: int | None = None,
                 extra_config: Iterable[str] = (), hashed_known_hosts: bool = True,
                 timeout: float = DEFAULT_TIMEOUT):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.host = HOST
        self.user = "root"
        self.port = port or free_port()
        self.config_path = self.dir / "sshd_config"
        self.log = self.dir / "sshd.log"
        self.host_key = self.dir / "ssh_host_ed25519_key"
        self.user_key = self.dir / "id_ed25519"
        self.authorized_keys = self.dir / "authorized_keys"
        self.known_hosts = self.dir / "known_hosts"
        self.known_hosts_hashed = self.dir / "known_hosts.hashed" if hashed_known_hosts else None
        self.extra_config = list(extra_config)

        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        for key in (self.host_key, self.user_key):
            _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", key.name, "-f", str(key)],
                 "ssh-keygen")
            os.chmod(key, 0o600)
        pub = self.host_key.with_suffix(".pub").read_text().split()
        self.host_key_pub = f"{pub[0]} {pub[1]}"
        self.user_key_pub = self.user_key.with_suffix(".pub").read_text().strip()
        self.authorized_keys.write_text(self.user_key_pub + "\n")
        self.known_hosts.write_text(f"[{HOST}]:{self.port} {self.host_key_pub}\n")
        if self.known_hosts_hashed is not None:
            shutil.copy(self.known_hosts, self.known_hosts_hashed)
            _run(["ssh-keygen", "-q", "-H", "-f", str(self.known_hosts_hashed)], "ssh-keygen -H")
            Path(str(self.known_hosts_hashed) + ".old").unlink(missing_ok=True)

        lines = [
            f"ListenAddress {HOST}:{self.port}",
            f"HostKey {self.host_key}",
            f"AuthorizedKeysFile {self.authorized_keys}",
            "PidFile none",
            "PermitRootLogin prohibit-password",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "StrictModes no",
            "UsePAM no",
            "AllowTcpForwarding yes",
            "PermitOpen any",
            "X11Forwarding no",
            "PrintMotd no",
            "LogLevel VERBOSE",
            "MaxStartups 100:30:200",
            "MaxSessions 100",
            "Ciphers aes128-ctr,aes256-ctr,aes128-gcm@openssh.com,aes256-gcm@openssh.com,"
            "chacha20-poly1305@openssh.com",
            "MACs hmac-sha2-256,hmac-sha2-512,hmac-sha2-256-etm@openssh.com,"
            "hmac-sha2-512-etm@openssh.com",
            "KexAlgorithms curve25519-sha256,curve25519-sha256@libssh.org,ecdh-sha2-nistp256",
        ]
        # extra lines first: for most keywords sshd uses the first value it reads
        self.config_path.write_text("\n".join(self.extra_config + lines) + "\n")
        _run([SSHD_BIN, "-t", "-f", str(self.config_path)], "sshd -t (config check)")
        self.timeout = timeout
        self.start()

    def start(self) -> None:
        """Starts the listener (again) on the same port with the same keys."""
        self.process = Process([SSHD_BIN, "-D", "-f", str(self.config_path), "-E", str(self.log)],
                               self.dir / "sshd.stdout")
        wait_until(self._banner, self.timeout, f"sshd on port {self.port}", self.log,
                   proc=self.process.popen)

    def restart(self) -> None:
        """Stops the listener and every session, then starts again (same port, same keys)."""
        self.stop()
        self.start()

    def _banner(self) -> bool:
        with socket.create_connection((HOST, self.port), timeout=1) as s:
            return s.recv(64).startswith(b"SSH-")

    @property
    def pid(self) -> int:
        return self.process.pid

    def session_pids(self) -> list[int]:
        """The per-connection sshd processes (children of the listener)."""
        return _proc_children(self.pid)

    def kill_session_processes(self, sig: int = signal.SIGKILL) -> list[int]:
        """Kills every per-connection sshd (and its descendants), not the listener."""
        killed = []
        for child in self.session_pids():
            for pid in [child] + _proc_descendants(child):
                _signal_quietly(pid, sig)
                killed.append(pid)
        return killed

    def sigstop(self, sessions: bool = True) -> None:
        """Freezes the listener and (by default) every session: a silent, hung gateway."""
        pids = [self.pid] + (_proc_descendants(self.pid) if sessions else [])
        for pid in pids:
            _signal_quietly(pid, signal.SIGSTOP)

    def sigcont(self) -> None:
        for pid in [self.pid] + _proc_descendants(self.pid):
            _signal_quietly(pid, signal.SIGCONT)

    def accepted_count(self) -> int:
        """How many `Accepted publickey` lines the log has."""
        return log_tail(self.log, 100000).count("Accepted publickey")

    def ssh_argv(self, *args: str) -> list[str]:
        """An `ssh` command line for this server (strict host key checking on)."""
        return ["ssh", "-F", "none", "-p", str(self.port), "-i", str(self.user_key),
                "-o", f"UserKnownHostsFile={self.known_hosts}", "-o", "StrictHostKeyChecking=yes",
                "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes",
                f"{self.user}@{HOST}", *args]

    def stop(self) -> None:
        self.sigcont()  # a stopped process group cannot act on SIGTERM
        self.kill_session_processes()
        self.process.stop()

    def describe(self) -> dict:
        return {"host": HOST, "port": self.port, "user": self.user, "pid": self.pid,
                "user_key": str(self.user_key), "user_key_pub": self.user_key_pub,
                "host_key_pub": self.host_key_pub, "known_hosts": str(self.known_hosts),
                "known_hosts_hashed": str(self.known_hosts_hashed)
                if self.known_hosts_hashed else None,
                "config": str(self.config_path), "log": str(self.log), "dir": str(self.dir)}


class Redis:
    """A throwaway redis-server; `replicaof` another Redis makes it a replica.

    `durable` runs it with `appendonly yes` and `appendfsync always`: every acknowledged write
    is on disk before its reply, so `kill()` then `start()` (a crash and a restart) loses none.

    `config_file` runs it from a redis.conf in its directory (its settings, and `replicaof`
    when given) instead of command-line options, as a packaged redis runs: a CONFIG REWRITE
    (tunneld's after each fence and role change) then writes there, and `start()` without
    `replicaof` after `kill()` comes back as that file says.
    """

    def __init__(self, directory: Path, name: str, replicaof: "Redis | None" = None,
                 extra_args: Iterable[str] = (), port: int | None = None,
                 timeout: float = DEFAULT_TIMEOUT, durable: bool = False, config_file: bool = False):
        self.name = name
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.log = self.dir / "redis.log"
        self.replicaof = replicaof
        self.timeout = timeout
        self.argv = ["redis-server", "--port", str(self.port), "--bind", HOST, "--save", "",
                     "--dir", str(self.dir), "--logfile", str(self.log), "--daemonize", "no"]
        self.argv += ["--appendonly", "yes", "--appendfsync", "always"] if durable \
            else ["--appendonly", "no"]
        self.extra_args = list(extra_args)
        self.config_path: Path | None = None
        first_primary = f"{HOST}:{replicaof.port}" if replicaof is not None else None
        if config_file:
            self.config_path = self.dir / "redis.conf"
            self.config_path.write_text(self._config_text(first_primary))
            self.argv = ["redis-server", str(self.config_path)]
            self.extra_args = []
            first_primary = None  # in the file
        self.start(replicaof=first_primary)
        if replicaof is not None:
            self.wait_link_up(timeout)

    def _config_text(self, replicaof: str | None) -> str:
        """The redis.conf lines for this server's options ("--key value ..." becomes "key value ...")."""
        lines: list[str] = []
        for arg in self.argv[1:] + self.extra_args:
            if arg.startswith("--"):
                lines.append(arg[2:])
            else:
                lines[-1] += " " + ('""' if arg == "" else arg)
        if replicaof:
            lines.append("replicaof " + " ".join(replicaof.rsplit(":", 1)))
        return "\n".join(lines) + "\n"

    def start(self, replicaof: str | None = None) -> None:
        """Starts the server (again, after `kill`) on the same port and directory; `replicaof`
        ("host:port") starts it as a replica, as a config file naming its primary would. With
        `config_file` and no `replicaof`, the file alone says what it is."""
        follow = ["--replicaof", *replicaof.rsplit(":", 1)] if replicaof else []
        self.started_as = replicaof
        if self.config_path is not None and not replicaof:
            self.started_as = self.configured_primary()
        self.log_offset = self.log.stat().st_size if self.log.exists() else 0
        self.process = Process(self.argv + follow + self.extra_args, self.dir / "redis.stdout")
        wait_until(lambda: self.cli("PING") == "PONG", self.timeout,
                   f"redis {self.name} on port {self.port}", self.log, proc=self.process.popen)

    def configured_primary(self) -> str | None:
        """The primary ("host:port") its config file names, or None (a primary, or no file)."""
        if self.config_path is None:
            return None
        for line in self.config_path.read_text().splitlines():
            words = line.split()
            if len(words) == 3 and words[0] in ("replicaof", "slaveof"):
                return f"{words[1]}:{words[2]}"
        return None

    def kill(self) -> str | None:
        """SIGKILLs the server (a crash); returns the primary it followed at that moment
        ("host:port"), or None if it was a primary. Read from its own log after the kill (every
        REPLICAOF it obeyed is logged as it happens), so a role changed an instant before the
        kill is not missed."""
        self.process.stop(timeout=0, sig=signal.SIGKILL)
        with open(self.log, errors="replace") as log:
            log.seek(self.log_offset)
            lines = log.read().splitlines()
        primary = self.started_as
        for line in lines:
            if "MASTER MODE enabled" in line:
                primary = None
            elif match := re.search(r"REPLICAOF (\S+:\d+) enabled", line):
                primary = match.group(1)
        return primary

    @property
    def pid(self) -> int:
        return self.process.pid

    def client(self, timeout: float = 5.0) -> RespClient:
        return RespClient(self.port, timeout=timeout)

    def cli(self, *args: Any, timeout: float = 5.0) -> Any:
        """Runs one command on a fresh connection and returns the reply."""
        with RespClient(self.port, timeout=timeout) as c:
            return c.command(*args)

    def info(self, section: str = "") -> dict[str, str]:
        return parse_info(self.cli("INFO", section) if section else self.cli("INFO"))

    def info_replication(self) -> dict[str, str]:
        return self.info("replication")

    def link_up(self) -> bool:
        info = self.info_replication()
        return (info.get("master_link_status") == "up"
                and info.get("master_sync_in_progress") == "0")

    def wait_link_up(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        wait_until(self.link_up, timeout, f"redis {self.name} replication link up", self.log)

    def wait_caught_up(self, primary: "Redis", timeout: float = DEFAULT_TIMEOUT) -> None:
        """Waits until this replica's offset reaches the primary's."""
        def caught_up():
            target = int(primary.info_replication()["master_repl_offset"])
            return self.link_up() and int(self.info_replication()["slave_repl_offset"]) >= target
        wait_until(caught_up, timeout, f"redis {self.name} caught up with {primary.name}",
                   self.log)

    def stop(self) -> None:
        self.process.stop()

    def describe(self) -> dict:
        return {"host": HOST, "port": self.port, "pid": self.pid, "log": str(self.log),
                "dir": str(self.dir), "replicaof": self.replicaof.name if self.replicaof else None}


class Postgres:
    """A PostgreSQL 15 server run as the `postgres` user (it refuses root).

    The postmaster runs in the foreground under the bed's process control instead of being
    daemonized by pg_ctl, so teardown cannot miss it.
    """

    def __init__(self, directory: Path, name: str, standby_of: "Postgres | None" = None,
                 port: int | None = None, extra_conf: Iterable[str] = (),
                 timeout: float = 60.0):
        self.name = name
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.data = self.dir / "data"
        self.socket_dir = self.dir / "socket"
        self.socket_dir.mkdir(exist_ok=True)
        self.log = self.dir / "postgres.log"
        self.log.touch()
        self.port = port or free_port()
        self.primary = standby_of
        shutil.chown(self.dir, "postgres", "postgres")
        shutil.chown(self.socket_dir, "postgres", "postgres")
        shutil.chown(self.log, "postgres", "postgres")
        os.chmod(self.dir, 0o755)

        as_postgres = ["setpriv", "--reuid", "postgres", "--regid", "postgres", "--init-groups",
                       "--"]
        if standby_of is None:
            _run(as_postgres + [str(PG_BIN / "initdb"), "-D", str(self.data), "-U", "postgres",
                                "--auth=trust", "-E", "UTF8", "--no-sync", "--no-instructions"],
                 f"initdb {name}", timeout=120, cwd=self.dir)
            with open(self.data / "pg_hba.conf", "w") as hba:
                hba.write("local all all trust\n"
                          "local replication all trust\n"
                          "host all all 127.0.0.1/32 trust\n"
                          "host replication all 127.0.0.1/32 trust\n")
        else:
            _run(as_postgres + [str(PG_BIN / "pg_basebackup"), "-h", HOST, "-p",
                                str(standby_of.port), "-U", "postgres", "-D", str(self.data),
                                "-R", "-X", "stream", "-c", "fast", "--no-sync"],
                 f"pg_basebackup {name} from {standby_of.name}", timeout=120, cwd=self.dir)
        with open(self.data / "postgresql.auto.conf", "a") as conf:
            conf.write("\n".join([
                "listen_addresses = '127.0.0.1'",
                f"port = {self.port}",
                f"unix_socket_directories = '{self.socket_dir}'",
                "wal_level = replica",
                "max_wal_senders = 10",
                "max_replication_slots = 10",
                "hot_standby = on",
                "fsync = off",
                "synchronous_commit = off",
                "full_page_writes = off",
                "logging_collector = off",
                "shared_buffers = 16MB",
                "wal_receiver_status_interval = 1s",
                *extra_conf,
            ]) + "\n")
        self.process = Process([str(PG_BIN / "postgres"), "-D", str(self.data)], self.log,
                               cwd=self.dir, user="postgres")
        wait_until(lambda: self.query("select 1") == "1", timeout,
                   f"postgres {name} on port {self.port}", self.log, proc=self.process.popen)
        if standby_of is not None:
            wait_until(lambda: self.query(
                "select status from pg_stat_wal_receiver") == "streaming", timeout,
                f"postgres {name} streaming from {standby_of.name}", self.log)

    @property
    def pid(self) -> int:
        return self.process.pid

    def psql_argv(self, sql: str, dbname: str = "postgres") -> list[str]:
        return ["psql", "-X", "-h", HOST, "-p", str(self.port), "-U", "postgres", "-d", dbname,
                "-At", "-v", "ON_ERROR_STOP=1", "-c", sql]

    def query(self, sql: str, dbname: str = "postgres", timeout: float = 10) -> str:
        """Runs `sql` with psql; returns stdout stripped (rows on lines, columns by '|')."""
        result = subprocess.run(self.psql_argv(sql, dbname), capture_output=True, text=True,
                                timeout=timeout)
        if result.returncode != 0:
            raise BedError(f"psql on {self.name}: {result.stderr.strip()}")
        return result.stdout.strip()

    def in_recovery(self) -> bool:
        return self.query("select pg_is_in_recovery()") == "t"

    def stop(self) -> None:
        # SIGINT is postgres' "fast" shutdown
        self.process.stop(sig=signal.SIGINT, timeout=10)

    def describe(self) -> dict:
        return {"host": HOST, "port": self.port, "pid": self.pid, "log": str(self.log),
                "data": str(self.data), "socket_dir": str(self.socket_dir), "user": "postgres",
                "standby_of": self.primary.name if self.primary else None}


class Haproxy:
    """`haproxy -db` in mode tcp: one frontend on `listen_port` to one `backend` host:port."""

    def __init__(self, directory: Path, backend: str, listen_port: int | None = None,
                 timeout: float = DEFAULT_TIMEOUT):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = listen_port or free_port()
        self.backend = backend
        self.config_path = self.dir / "haproxy.cfg"
        self.log = self.dir / "haproxy.log"
        self.config_path.write_text(f"""global
    maxconn 4000
defaults
    mode tcp
    timeout connect 5s
    timeout client 1h
    timeout server 1h
frontend main
    bind {HOST}:{self.port}
    default_backend servers
backend servers
    server backend {backend}
""")
        self.process = Process(["haproxy", "-db", "-f", str(self.config_path)], self.log)
        wait_until(lambda: port_open(self.port), timeout, f"haproxy on port {self.port}",
                   self.log, proc=self.process.popen)

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self) -> None:
        self.process.stop()

    def describe(self) -> dict:
        return {"host": HOST, "port": self.port, "pid": self.pid, "backend": self.backend,
                "config": str(self.config_path), "log": str(self.log)}


class StallableRelay:
    """A TCP relay to `target_port` whose answers (target -> client) can be stalled: put between a
    replica and its primary, the replica stays responsive and its link stays "up" while its
    offset stops, which is real, measurable lag (as from a slow WAN link)."""

    def __init__(self, target_port: int):
        self.target_port = target_port
        self.listener = socket.create_server((HOST, 0))
        self.port = self.listener.getsockname()[1]
        self.flowing = threading.Event()
        self.flowing.set()
        self._closed = False
        self._cut = False
        self._socks: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self._cut:
                client.close()
                continue
            try:
                upstream = socket.create_connection((HOST, self.target_port), timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            self._socks += [client, upstream]
            if self._cut:  # cut() came while this one was being connected
                for s in (client, upstream):
                    s.close()
                continue
            threading.Thread(target=self._pump, args=(client, upstream, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, True), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, stallable: bool) -> None:
        try:
            while not self._closed:
                if stallable and not self.flowing.is_set():
                    self.flowing.wait(0.1)
                    continue
                ready, _, _ = select.select([src], [], [], 0.1)
                if not ready:
                    continue
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.close()
                except OSError:
                    pass

    def stall(self) -> None:
        self.flowing.clear()

    def flow(self) -> None:
        self.flowing.set()

    def cut(self) -> None:
        """A broken path rather than a slow one: every connection is closed, and new ones are
        closed as soon as they are accepted, until mend()."""
        self._cut = True
        socks, self._socks = self._socks, []
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def mend(self) -> None:
        self._cut = False

    def stop(self) -> None:
        self._closed = True
        self.flowing.set()
        for s in [self.listener] + self._socks:
            try:
                s.close()
            except OSError:
                pass

class DelayRelay:
    """tools/delay_relay (built with tunneld) in front of `target_port`: every byte held
    `delay_ms` each way, so a round trip through it takes 2 x delay_ms (no netem on these
    kernels). Bytes already read are still delivered after their sender dies."""

    def __init__(self, target_port: int, delay_ms: int):
        binary = tunneld_bin().parent.parent / "tools" / "delay_relay"
        if not binary.exists():
            raise BedError(f"delay_relay not found at {binary} (build the default preset)")
        self.popen = subprocess.Popen([str(binary), f"{HOST}:{target_port}", str(delay_ms)],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      stderr=subprocess.DEVNULL, text=True)
        line = self.popen.stdout.readline().strip()
        if not line.isdigit():
            self.stop()
            raise BedError(f"delay_relay printed {line!r}, not its port")
        self.port = int(line)

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.stdin.close()  # it exits when its stdin closes
            try:
                self.popen.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self.popen.stdout.close()

    def describe(self) -> dict:
        return {"port": self.port, "pid": self.popen.pid}


class EchoServer:
    """A threaded TCP backend for kind = "tcp" tests.

    mode "echo": echoes bytes as they arrive, then shuts down its write side at the client's EOF.
    mode "after_eof": reads until EOF, then sends `prefix` + everything read and closes: the
    reply only comes if the client's half-close (FIN) travelled through the proxy.
    `prefix` also tells clients which backend answered.
    """

    def __init__(self, prefix: bytes = b"", mode: str = "echo"):
        self.prefix = prefix
        self.mode = mode
        self.listener = socket.create_server((HOST, 0))
        self.port = self.listener.getsockname()[1]
        self.accepted = 0
        self._closed = False
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._closed:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            self.accepted += 1
            threading.Thread(target=self._handle, args=(sock,), daemon=True).start()

    def _handle(self, sock: socket.socket) -> None:
        with sock:
            try:
                sock.settimeout(60)
                if self.mode == "echo":
                    if self.prefix:
                        sock.sendall(self.prefix)
                    while chunk := sock.recv(65536):
                        sock.sendall(chunk)
                    sock.shutdown(socket.SHUT_WR)
                else:
                    received = bytearray()
                    while chunk := sock.recv(65536):
                        received += chunk
                    sock.sendall(self.prefix + bytes(received))
                    sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass

    def stop(self) -> None:
        self._closed = True
        try:
            self.listener.close()
        except OSError:
            pass

    def describe(self) -> dict:
        return {"host": HOST, "port": self.port, "mode": self.mode}


class Etcd:
    """A throwaway single-node etcd (Debian's etcd-server 3.4) on free loopback ports.

    Its data directory lives in the bed, so `stop()` then `start()` is a restart that keeps the
    data. `put`/`get_prefix` speak etcd's v3 JSON gateway (keys and values base64).
    """

    BIN = "/usr/bin/etcd"

    def __init__(self, directory: Path, timeout: float = DEFAULT_TIMEOUT, data_dir: Path | None = None):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        # `data_dir`: elsewhere than the bed (a tmpfs: etcd fsyncs its WAL at every write).
        self.data_dir = Path(data_dir) if data_dir is not None else self.dir / "data"
        self.port = free_port()
        self.peer_port = free_port()
        self.log = self.dir / "etcd.log"
        self.timeout = timeout
        self.process: Process | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self) -> None:
        if not Path(self.BIN).exists():
            raise BedError(f"{self.BIN} not found (tools/deps installs etcd-server)")
        peer = f"http://{HOST}:{self.peer_port}"
        argv = [self.BIN, "--name", "bed", "--data-dir", str(self.data_dir),
                "--listen-client-urls", self.url, "--advertise-client-urls", self.url,
                "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                "--initial-cluster", f"bed={peer}",
                "--experimental-watch-progress-notify-interval", "5s"]
        self.process = Process(argv, self.log)
        wait_until(lambda: self._call("/v3/kv/range", {"key": _b64("/")}) is not None,
                   self.timeout, f"etcd on port {self.port}", self.log, proc=self.process.popen)

    def running(self) -> bool:
        return self.process is not None and self.process.running()

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()

    def _call(self, path: str, body: dict, timeout: float = 2.0) -> dict | None:
        request = urllib.request.Request(self.url + path, data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as reply:
                return json.loads(reply.read())
        except (OSError, ValueError):
            return None

    def put(self, key: str, value: str) -> None:
        if self._call("/v3/kv/put", {"key": _b64(key), "value": _b64(value)}) is None:
            raise BedError(f"etcd put {key} failed\n{log_tail(self.log)}")

    def get_prefix(self, prefix: str) -> dict[str, str]:
        """Every key under `prefix` with its value, decoded."""
        end = prefix[:-1] + chr(ord(prefix[-1]) + 1)
        reply = self._call("/v3/kv/range", {"key": _b64(prefix), "range_end": _b64(end)})
        if reply is None:
            raise BedError(f"etcd range {prefix} failed\n{log_tail(self.log)}")
        return {base64.b64decode(kv["key"]).decode(): base64.b64decode(kv.get("value", "")).decode()
                for kv in reply.get("kvs", [])}

    def describe(self) -> dict:
        return {"url": self.url, "pid": self.pid if self.process else None, "log": str(self.log),
                "dir": str(self.dir)}


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


# --------------------------------------------------------------------------------------------
# tunneld


def find_binary(env_name: str, default_relative: str) -> Path:
    value = os.environ.get(env_name)
    path = Path(value) if value else REPO_ROOT / default_relative
    return path


def tunneld_bin() -> Path:
    return find_binary("TUNNELD_BIN", "build/default/daemon/tunneld")


def tunnelctl_bin() -> Path:
    return find_binary("TUNNELCTL_BIN", "build/default/tools/tunnelctl")


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items()) \
            + " }"
    if value is None:
        raise ValueError("TOML has no null")
    raise TypeError(f"cannot write {type(value).__name__} as TOML")


def _toml_key(key: str) -> str:
    if key and all(c.isalnum() or c in "-_" for c in key):
        return key
    return json.dumps(key)


def to_toml(config: dict) -> str:
    """Writes a tunneld config dict: top-level tables; `tunnels`/`services` as [x.name] tables;
    deeper dicts (backends) as inline tables. Keys whose value is None are left out."""
    out: list[str] = []
    for section, body in config.items():
        if not isinstance(body, dict):
            raise ValueError(f"top-level key {section!r} must be a table")
        nested = body and all(isinstance(v, dict) for v in body.values()) \
            and section in ("tunnels", "services")
        tables = body.items() if nested else [(None, body)]
        for name, table in tables:
            header = _toml_key(section) + (f".{_toml_key(name)}" if name is not None else "")
            out.append(f"[{header}]")
            for key, value in table.items():
                if value is not None:
                    out.append(f"{_toml_key(key)} = {_toml_value(value)}")
            out.append("")
    return "\n".join(out)


class Tunneld:
    """A tunneld process with its config, state file and control socket in `directory`.

    `config` is TOML text or a dict (see `to_toml`). Missing `[daemon] control_socket` and
    `state_file` are filled in with paths in `directory`; in text, `{dir}` is replaced by it.
    """

    def __init__(self, directory: Path, config: str | dict, start: bool = True,
                 timeout: float = DEFAULT_TIMEOUT):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.config_path = self.dir / "tunneld.toml"
        self.log = self.dir / "tunneld.log"
        self.control_socket = self.dir / "control.sock"
        self.state_file = self.dir / "state.json"
        self.process: Process | None = None
        self.timeout = timeout
        self.write_config(config)
        if start:
            self.start()

    def write_config(self, config: str | dict) -> None:
        """Writes the config file (does not reload; see sighup/reload)."""
        if isinstance(config, dict):
            config = json.loads(json.dumps(config))  # deep copy
            daemon = config.setdefault("daemon", {})
            daemon.setdefault("control_socket", str(self.control_socket))
            daemon.setdefault("state_file", str(self.state_file))
            config = {"daemon": daemon, **{k: v for k, v in config.items() if k != "daemon"}}
            text = to_toml(config)
        else:
            text = config.replace("{dir}", str(self.dir))
            if "[daemon]" not in text:
                text = (f"[daemon]\ncontrol_socket = {json.dumps(str(self.control_socket))}\n"
                        f"state_file = {json.dumps(str(self.state_file))}\n\n") + text
        self.config_text = text
        self.config_path.write_text(text)
        try:
            daemon = tomllib.loads(text).get("daemon", {})
            self.control_socket = Path(daemon.get("control_socket", self.control_socket))
            self.state_file = Path(daemon.get("state_file", self.state_file))
        except tomllib.TOMLDecodeError:
            pass  # deliberately invalid configs are for --check-config and SIGHUP tests

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def running(self) -> bool:
        return self.process is not None and self.process.running()

    def start(self, wait: bool = True) -> None:
        binary = tunneld_bin()
        if not binary.exists():
            raise BedError(f"tunneld binary not found at {binary} (set TUNNELD_BIN)")
        with open(self.log, "ab") as log:
            log.write(f"=== {time.strftime('%H:%M:%S')} starting tunneld\n".encode())
        self.process = Process([str(binary), "--config", str(self.config_path)], self.log)
        if wait:
            self.wait_ready()

    def wait_ready(self, timeout: float | None = None) -> None:
        assert self.process is not None
        wait_until(lambda: self.ctl("status", timeout=5).returncode == 0,
                   timeout or self.timeout, "tunneld control socket to answer `status`",
                   self.log, interval=0.1, proc=self.process.popen)

    def ctl_argv(self, *args: str) -> list[str]:
        return [str(tunnelctl_bin()), "--socket", str(self.control_socket), *map(str, args)]

    def ctl(self, *args: Any, timeout: float = 30, as_user: str | None = None,
            check: bool = False) -> subprocess.CompletedProcess:
        """Runs `tunnelctl --socket SOCK ARGS`; `as_user` runs it as that user (setpriv)."""
        argv = self.ctl_argv(*args)
        if as_user is not None:
            argv = ["setpriv", "--reuid", as_user, "--regid", as_user, "--clear-groups",
                    "--"] + argv
        result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise BedError(f"tunnelctl {' '.join(map(str, args))} exited {result.returncode}:\n"
                           f"{result.stdout}{result.stderr}\n--- tunneld log:\n"
                           f"{log_tail(self.log)}")
        return result

    def ctl_async(self, *args: Any) -> subprocess.Popen:
        """Starts tunnelctl without waiting (e.g. a switch that holds clients)."""
        return subprocess.Popen(self.ctl_argv(*args), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)

    def status_json(self, service: str | None = None) -> dict:
        args = ["status"] + ([service] if service else []) + ["--json"]
        result = self.ctl(*args, check=True)
        return json.loads(result.stdout)

    def service(self, name: str) -> dict:
        """The service object from `status --json`."""
        status = self.status_json()
        for svc in status.get("services", []):
            if svc.get("name") == name:
                return svc
        raise BedError(f"service {name!r} not in status: {status}")

    def send_signal(self, sig: int) -> None:
        assert self.process is not None
        self.process.send_signal(sig)

    def sighup(self) -> None:
        self.send_signal(signal.SIGHUP)

    def sigterm(self, wait: bool = True, timeout: float = 60) -> int | None:
        """Sends SIGTERM; with `wait`, returns the exit code (BedError if still running)."""
        self.send_signal(signal.SIGTERM)
        if not wait:
            return None
        assert self.process is not None
        code = self.process.wait(timeout)
        self.process.stop()
        return code

    def wait_exit(self, timeout: float) -> int:
        assert self.process is not None
        return self.process.wait(timeout)

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop(timeout=10)

    def restart(self) -> None:
        """SIGTERM (falls back to SIGKILL), then starts again with the same config and state."""
        if self.running():
            self.process.stop(timeout=30)
        self.start()

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def describe(self) -> dict:
        return {"pid": self.pid if self.process else None, "config": str(self.config_path),
                "control_socket": str(self.control_socket), "state_file": str(self.state_file),
                "log": str(self.log)}


def check_config(config_path: os.PathLike | str, timeout: float = 30) -> subprocess.CompletedProcess:
    """Runs `tunneld --check-config --config PATH`."""
    return subprocess.run([str(tunneld_bin()), "--check-config", "--config", str(config_path)],
                          capture_output=True, text=True, timeout=timeout)


# --------------------------------------------------------------------------------------------
# the bed


class TestBed:
    """A temporary directory plus everything started in it; closes in reverse start order."""

    __test__ = False  # not a unittest/pytest class

    def __init__(self, keep: bool | None = None, prefix: str = "tunneld-bed-"):
        self.dir = Path(tempfile.mkdtemp(prefix=prefix))
        # other users (postgres, nobody for the control-socket test) must reach their files
        os.chmod(self.dir, 0o755)
        self.keep = keep if keep is not None else os.environ.get("TESTBED_KEEP") == "1"
        self.pieces: list[Any] = []
        self.redises: dict[str, Redis] = {}
        self.postgreses: dict[str, Postgres] = {}
        self._sshd: Sshd | None = None
        self._counter = 0
        self._closed = False
        _LIVE_BEDS.add(self)
        install_signal_teardown()

    def __enter__(self) -> "TestBed":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def subdir(self, name: str) -> Path:
        self._counter += 1
        path = self.dir / f"{self._counter:02d}-{name}"
        path.mkdir(parents=True)
        os.chmod(path, 0o755)
        return path

    def _add(self, piece):
        self.pieces.append(piece)
        return piece

    def sshd(self, **kw) -> Sshd:
        sshd = self._add(Sshd(self.subdir("sshd"), **kw))
        self._sshd = self._sshd or sshd
        return sshd

    def redis(self, name: str, replicaof: Redis | str | None = None,
              extra_args: Iterable[str] = (), **kw) -> Redis:
        if isinstance(replicaof, str):
            replicaof = self.redises[replicaof]
        redis = self._add(Redis(self.subdir(f"redis-{name}"), name, replicaof, extra_args, **kw))
        self.redises[name] = redis
        return redis

    def postgres(self, name: str, standby_of: Postgres | str | None = None, **kw) -> Postgres:
        if isinstance(standby_of, str):
            standby_of = self.postgreses[standby_of]
        pg = self._add(Postgres(self.subdir(f"postgres-{name}"), name, standby_of, **kw))
        self.postgreses[name] = pg
        return pg

    def standby_of(self, primary: Postgres | str, name: str = "standby", **kw) -> Postgres:
        return self.postgres(name, standby_of=primary, **kw)

    def haproxy(self, backend: str, listen_port: int | None = None, **kw) -> Haproxy:
        return self._add(Haproxy(self.subdir("haproxy"), backend, listen_port, **kw))

    def delay_relay(self, target_port: int, delay_ms: int) -> DelayRelay:
        return self._add(DelayRelay(target_port, delay_ms))

    def echo_server(self, prefix: bytes = b"", mode: str = "echo") -> EchoServer:
        return self._add(EchoServer(prefix, mode))

    def etcd(self, **kw) -> Etcd:
        return self._add(Etcd(self.subdir("etcd"), **kw))

    def tunneld(self, config: str | dict, start: bool = True, **kw) -> Tunneld:
        return self._add(Tunneld(self.subdir("tunneld"), config, start=start, **kw))

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        errors = []
        for piece in reversed(self.pieces):
            try:
                piece.stop()
            except Exception as e:  # noqa: BLE001 - keep tearing down
                errors.append(f"{type(piece).__name__}: {e}")
        _LIVE_BEDS.discard(self)
        if not self.keep:
            shutil.rmtree(self.dir, ignore_errors=True)
        if errors:
            print("testbed teardown errors:\n  " + "\n  ".join(errors), file=sys.stderr)

    def describe(self) -> dict:
        result: dict[str, Any] = {"dir": str(self.dir)}
        for piece in self.pieces:
            if isinstance(piece, Sshd):
                result.setdefault("sshd", piece.describe())
                result.setdefault("sshds", []).append(piece.describe())
            elif isinstance(piece, Redis):
                result.setdefault("redis", {})[piece.name] = piece.describe()
            elif isinstance(piece, Postgres):
                result.setdefault("postgres", {})[piece.name] = piece.describe()
            elif isinstance(piece, Haproxy):
                result.setdefault("haproxy", []).append(piece.describe())
            elif isinstance(piece, Tunneld):
                result.setdefault("tunneld", []).append(piece.describe())
            elif isinstance(piece, EchoServer):
                result.setdefault("echo", []).append(piece.describe())
            elif isinstance(piece, Etcd):
                result.setdefault("etcd", []).append(piece.describe())
        return result


# --------------------------------------------------------------------------------------------
# client helpers for tests


def whoami(port: int, timeout: float = 5.0) -> str:
    """Connects to `port`, runs `GET whoami` and returns the answer (one connection)."""
    with RespClient(port, timeout=timeout) as client:
        return client.command("GET", "whoami")


def connection_closed(sock: socket.socket, timeout: float) -> bool:
    """True if the peer closes (EOF or reset) within `timeout`; data read meanwhile is dropped."""
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        sock.settimeout(remaining)
        try:
            if not sock.recv(65536):
                return True
        except socket.timeout:
            return False
        except OSError:
            return True
