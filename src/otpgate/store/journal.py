"""Sends in flight, journaled where they outlive the process that charged them.

A send is charged in the store *before* its message goes out, and voided when the
message does not go out (``otpgate.domain.service``). That undo used to live only in
the process: a worker killed while its provider call was in flight, or a service
stopped while a store step it had given up on was still queued on a stalled backend,
left a code, a cooldown and every charge with no message sent.

So each process appends one line to a journal file of its own when a send's charge
is asked for, and another once its outcome is settled: delivered (the charge stays),
refused by a limit (nothing was charged), or voided. The file is locked (``flock``)
for the process's life; the kernel drops the lock when the process dies, however it
dies. Any process of the service that finds a journal nobody holds (at start-up, and
every few seconds after) takes its unsettled sends over, by writing them into its own
journal first, deletes the orphan, and voids them in the store (``PendingVoids``). A
void is idempotent and leaves a newer send's charges alone, and a void that comes
before a late step on a stalled backend marks the send so that the step charges
nothing (``OtpStore.void_issue``).

What this costs: two short appends per send, to the kernel's page cache (no fsync).
They survive the process, not the machine; one journal directory serves the processes
of one host that share a store. A journal grows until it holds
``ROTATE_BYTES``, when it is rewritten with just the sends still in flight.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import uuid
from dataclasses import fields
from pathlib import Path
from typing import Any

import orjson

from otpgate.domain.limits import ConversionGuard, DistinctQuota, Quota, SurgeGuard
from otpgate.domain.ports import SendRequest

SUFFIX = ".journal"
ROTATE_BYTES = 1 << 20


def encode(request: SendRequest, now: float) -> bytes:
    """One send as a journal line (the request as the store was given it, and when)."""
    values: dict[str, Any] = {f.name: getattr(request, f.name) for f in fields(request)}
    values["code_hash"] = request.code_hash.hex()
    return orjson.dumps({"open": values, "now": now}) + b"\n"


def decode(values: dict[str, Any]) -> SendRequest:
    """The request an ``encode``d line holds."""
    return SendRequest(
        **{
            **values,
            "code_hash": bytes.fromhex(values["code_hash"]),
            "quotas": tuple(Quota(**q) for q in values["quotas"]),
            "distinct": tuple(DistinctQuota(**d) for d in values["distinct"]),
            "surges": tuple(SurgeGuard(**s) for s in values["surges"]),
            "conversions": tuple(ConversionGuard(**c) for c in values["conversions"]),
            "ranges": tuple(values["ranges"]),
            "overrides": tuple(values["overrides"]),
        }
    )


def unsettled(text: bytes) -> dict[str, tuple[SendRequest, float]]:
    """The sends a journal's lines open and do not settle, by send id, in order. A line
    cut short by the process's death is passed over."""
    found: dict[str, tuple[SendRequest, float]] = {}
    for line in text.splitlines():
        try:
            entry = orjson.loads(line)
            if "open" in entry:
                request = decode(entry["open"])
                found[request.send_id] = (request, float(entry["now"]))
            else:
                found.pop(entry["settled"], None)
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            continue
    return found


class FileJournal:
    """This process's journal in ``directory``, and the orphans of processes gone."""

    def __init__(self, directory: Path) -> None:
        self._dir = directory
        self._path = self._dir / f"{os.getpid()}-{uuid.uuid4().hex[:8]}{SUFFIX}"
        self._fd = -1  # the file is made at the first send, or the first look for orphans
        self._open: dict[str, bytes] = {}  # the sends in flight: their lines
        self._size = 0

    @property
    def path(self) -> Path:
        return self._path

    def __len__(self) -> int:
        return len(self._open)

    def opened(self, request: SendRequest, now: float) -> None:
        line = encode(request, now)
        self._open[request.send_id] = line
        self._append(line)

    def settled(self, send_id: str) -> None:
        if self._open.pop(send_id, None) is None:
            return
        self._append(orjson.dumps({"settled": send_id}) + b"\n")
        if self._size >= ROTATE_BYTES:
            self._rotate()

    def orphans(self) -> list[tuple[SendRequest, float]]:
        """Take over the unsettled sends of every journal here whose process is gone:
        they are in this journal now, and the orphan files are deleted."""
        taken: list[tuple[SendRequest, float]] = []
        self._file()  # this process's own, locked first: never taken for an orphan
        for path in sorted(self._dir.glob(f"*{SUFFIX}")):
            if path == self._path:
                continue
            try:
                fd = os.open(path, os.O_RDWR)
            except FileNotFoundError:
                continue  # taken over by another process meanwhile
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # its process is alive
                if os.fstat(fd).st_nlink == 0:
                    continue  # taken over and deleted while this waited for the lock
                for request, now in unsettled(_read(fd)).values():
                    self.opened(request, now)
                    taken.append((request, now))
                path.unlink(missing_ok=True)
            finally:
                os.close(fd)
        return taken

    def close(self) -> None:
        """Release the journal: one with sends still in flight stays for the next
        process to take over; an empty one goes."""
        if self._fd < 0:
            return
        if not self._open:
            self._path.unlink(missing_ok=True)
        os.close(self._fd)
        self._fd = -1

    def _file(self) -> int:
        if self._fd < 0:
            self._dir.mkdir(parents=True, exist_ok=True)
            self._fd = self._locked(self._path)
        return self._fd

    def _append(self, line: bytes) -> None:
        os.write(self._file(), line)
        self._size += len(line)

    def _rotate(self) -> None:
        """Rewrite the journal with only the sends in flight. The new file is written
        and locked under a name no one takes over, then renamed over the old one, so a
        reader finds either the old file or the new, whole and locked."""
        lines = b"".join(self._open.values())
        staging = self._path.with_suffix(".rotating")
        fd = self._locked(staging)
        os.write(fd, lines)
        os.replace(staging, self._path)
        os.close(self._file())
        self._fd, self._size = fd, len(lines)

    @staticmethod
    def _locked(path: Path) -> int:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_TRUNC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise
        return fd


def _read(fd: int) -> bytes:
    chunks = []
    with contextlib.suppress(OSError):
        os.lseek(fd, 0, os.SEEK_SET)
        while chunk := os.read(fd, 1 << 16):
            chunks.append(chunk)
    return b"".join(chunks)
