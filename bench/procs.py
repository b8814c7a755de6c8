"""Starting and stopping the processes the benchmark owns, by PID only.

Each process gets its own session, so Ctrl-C reaches only the harness, which
then stops everything in order: SIGTERM to the process, a bounded wait, then
SIGKILL to whatever is left of the tree it had (checked by PID *and* start time,
so a reused PID is never touched).
"""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO

from bench import procfs


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def http_status(port: int, path: str, timeout: float = 2.0) -> int | None:
    """Status of GET http://127.0.0.1:port/path, or None when nothing answers."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        return conn.getresponse().status
    except OSError:
        return None
    finally:
        conn.close()


class Managed:
    """One started process and what is needed to stop it and its children."""

    def __init__(self, name: str, popen: subprocess.Popen[bytes], log: Path | None) -> None:
        self.name = name
        self.popen = popen
        self.log = log

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tree(self) -> set[int]:
        return procfs.descendants(self.pid) if self.alive() else set()

    def log_tail(self, lines: int = 30) -> str:
        if self.log is None or not self.log.exists():
            return "(output not kept: rerun with --keep-logs)"
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


class ProcessGroup:
    """Owns every long-running process of a benchmark; stops them all on exit."""

    def __init__(self, log_dir: Path, keep_logs: bool) -> None:
        self._log_dir = log_dir
        self._keep_logs = keep_logs
        self._procs: list[Managed] = []

    def start(
        self,
        name: str,
        argv: Sequence[str],
        env: Mapping[str, str],
        cwd: Path,
        *,
        chatty: bool = False,
    ) -> Managed:
        """Start ``argv``; a ``chatty`` process (request logs) writes to /dev/null
        unless --keep-logs, so that log files neither fill the disk nor cost more
        than the pipe a real deployment would give it."""
        out: IO[bytes] | int
        log: Path | None = None
        if chatty and not self._keep_logs:
            out = subprocess.DEVNULL
        else:
            log = self._log_dir / f"{name}.log"
            out = log.open("ab")
        popen = subprocess.Popen(
            list(argv),
            env=dict(env),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        if not isinstance(out, int):
            out.close()
        proc = Managed(name, popen, log)
        self._procs.append(proc)
        return proc

    def wait_http(self, proc: Managed, port: int, path: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not proc.alive():
                raise RuntimeError(f"{proc.name} exited during start-up:\n{proc.log_tail()}")
            if http_status(port, path, timeout=1.0) == 200:
                return
            time.sleep(0.1)
        raise RuntimeError(f"{proc.name} did not answer GET {path} within {timeout:.0f}s")

    def stop(self, proc: Managed, timeout: float = 10.0) -> None:
        if proc in self._procs:
            self._procs.remove(proc)
        if not proc.alive():
            return
        stats = procfs.all_stats()
        tree = {(pid, stats[pid].start) for pid in procfs.descendants(proc.pid, stats)}
        proc.popen.send_signal(signal.SIGTERM)
        try:
            proc.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            print(f"  {proc.name} (pid {proc.pid}) ignored SIGTERM; killing", file=sys.stderr)
        for pid, start in tree:
            stat = procfs.read_stat(pid)
            if stat is not None and stat.start == start:
                os.kill(pid, signal.SIGKILL)
        if proc.alive():
            proc.popen.wait(5)

    def stop_all(self) -> None:
        """Stop in reverse start order: services before the stub and Redis they use."""
        for proc in reversed(list(self._procs)):
            try:
                self.stop(proc)
            except Exception as exc:  # keep stopping the others
                print(f"  could not stop {proc.name} (pid {proc.pid}): {exc}", file=sys.stderr)

    def __enter__(self) -> ProcessGroup:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()
