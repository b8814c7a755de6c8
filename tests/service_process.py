"""Run ``otpgate serve`` as a real process, as an operator would."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

OTPGATE = [sys.executable, "-m", "otpgate"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def service_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """This machine's environment minus any otpgate setting, plus test defaults."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("OTP", "SMS_", "SNS_", "TOKEN_"))
    }
    env.pop("REDIS_URL", None)
    env.update(
        APP_ENV="development",
        SQLITE_PATH=str(tmp_path / "db.sqlite3"),
        DATABASE_URL=f"sqlite:///{tmp_path / 'credentials.sqlite3'}",
        DATABASE_MIGRATE_ON_START="true",
        FACTOR_ENCRYPTION_KEY_FILE=str(tmp_path / "factor-encryption-key"),
        OTP_HASH_SECRET="p" * 40,
        LOG_LEVEL="info",
        HOST="127.0.0.1",
    )
    env.update(extra)
    return env


class ServiceProcess:
    """The service, its port, and its output as it comes (read by a thread)."""

    def __init__(self, tmp_path: Path, *, workers: int = 1, **env: str) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [*OTPGATE, "serve", "--workers", str(workers), "--port", str(self.port)],
            env=service_env(tmp_path, **env),
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own group, so stop() reaches every worker
        )
        self._lines: list[str] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            with self._changed:
                self._lines.append(raw.decode(errors="replace"))
                self._changed.notify_all()

    @property
    def output(self) -> str:
        with self._changed:
            return "".join(self._lines)

    def wait_for_line(self, matches: Callable[[str], bool], timeout: float = 20) -> str:
        """The first output line (from the start) that ``matches``; fails after ``timeout``."""
        deadline = time.monotonic() + timeout
        seen = 0
        with self._changed:
            while True:
                for line in self._lines[seen:]:
                    if matches(line):
                        return line
                seen = len(self._lines)
                left = deadline - time.monotonic()
                if left <= 0:
                    pytest.fail(f"no such line within {timeout}s; output:\n{''.join(self._lines)}")
                self._changed.wait(left)

    def ready_workers(self) -> list[int]:
        """Pids the supervisor has announced as serving, in order."""
        return [int(m) for m in re.findall(r'worker ready.*?pid"?[=:](\d+)', self.output)]

    def wait_ready(self) -> None:
        # Bounded readiness poll; a process that died reports its output.
        for _ in range(300):
            if self.proc.poll() is not None:
                self._reader.join(timeout=5)
                pytest.fail(f"otpgate exited during start-up:\n{self.output}")
            try:
                if httpx.get(f"{self.base}/health", timeout=0.2).status_code == 200:
                    return
            except httpx.TransportError:
                self._wait(0.05)
        pytest.fail("otpgate did not answer /health")

    def _wait(self, seconds: float) -> None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=seconds)

    def post(self, path: str, body: dict[str, str]) -> httpx.Response:
        return httpx.post(f"{self.base}{path}", json=body, timeout=10)

    def stop(self) -> str:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)
        self._reader.join(timeout=10)
        return self.output


def children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            # The parent pid is the 2nd field after the parenthesised command name.
            if int(stat.rpartition(")")[2].split()[1]) == pid:
                found.append(int(entry))
    return found


def workers_of(server: ServiceProcess) -> list[int]:
    # The spawn context's resource tracker is a child too; workers hold sockets.
    return [pid for pid in children(server.proc.pid) if socket_count(pid) > 0]


def socket_count(pid: int) -> int:
    count = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            count += os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:")
        except OSError:
            continue
    return count


@contextlib.contextmanager
def serving(
    tmp_path: Path, *, never_logged: tuple[str, ...] = (), **env: str
) -> Iterator[ServiceProcess]:
    """A ready ``otpgate serve``, stopped after; its output must hold no traceback and
    none of ``never_logged`` (secrets the test gave it)."""
    process = ServiceProcess(tmp_path, **env)
    try:
        process.wait_ready()
        yield process
    finally:
        out = process.stop()
        assert "Traceback" not in out, out
        for secret in never_logged:
            assert secret not in out
