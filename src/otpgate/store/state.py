"""The primitives the store rules (``otpgate.store.rules``) run over.

A backend implements ``State`` over its own storage, and every method is called inside
one atomic step of it (one ``BEGIN IMMEDIATE`` transaction on SQLite, one stretch
without an ``await`` in memory). The primitives only read and write; what a step
decides is in the rules. Keys are the rules' own strings; each kind of state is one
flat space of them.

An entry with a deadline is live while ``now < expires_at``; a read given ``now``
sees only live entries, and a lapsed entry is as good as absent (a backend may drop
it when it reads it, or later).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from otpgate.domain.ports import Block, Event, OverrideList, Verification


@dataclass(frozen=True, slots=True)
class Counter:
    """A count with a deadline, and when it was last set (a phone's last failure)."""

    count: int
    expires_at: float
    updated_at: float = 0.0


@dataclass(frozen=True, slots=True)
class Code:
    """A phone's code, or a code-less record counting guesses (``code_hash`` None)."""

    code_hash: bytes | None
    attempts: int
    expires_at: float
    send_id: str = ""  # the send that stored it ("" for a code-less record)
    new_members: tuple[bool, ...] = ()  # per distinct quota: did the send add its member
    verification_id: str = ""
    sent_at: float | None = None  # when the send was charged (its range buckets)


@dataclass(frozen=True, slots=True)
class Record:
    """A verification as stored, kept until ``expires_at`` (its code's end + retention)."""

    verification: Verification
    expires_at: float


class State(Protocol):
    @property
    def events(self) -> bool:
        """Whether the steps queue events."""

    # -- counters with deadlines (marks "until" are counters of 1) ---------------------
    def counter(self, key: str, now: float) -> Counter | None: ...

    def counts(self, keys: Sequence[str], now: float) -> list[int]:
        """The live counts of ``keys``, in their order (0 for none)."""

    def counters_under(self, prefix: str, now: float) -> list[tuple[str, int]]:
        """Every live counter whose key starts with ``prefix``."""

    def put_counter(
        self, key: str, count: int, expires_at: float, updated_at: float = 0.0
    ) -> None: ...

    def bump(self, key: str, expires_at: float, now: float, *, extend: bool) -> Counter:
        """One more on a live counter; a lapsed or absent one starts at 1, ending at
        ``expires_at``. ``extend``: a live one's deadline becomes ``expires_at`` too."""

    def decrement(self, key: str) -> None:
        """One less; a counter that comes to 0 goes."""

    def drop_counter(self, key: str) -> None: ...

    # -- sliding logs: (key, send id) entries at a time in ms --------------------------
    def log_times(self, key: str, after_ms: int) -> list[int]:
        """The times after ``after_ms``, oldest first; older entries leave the log."""

    def log_add(self, key: str, send_id: str, at_ms: int, expires_at: float) -> None:
        """Log a send (replacing an entry of the same id)."""

    def log_remove(self, key: str, send_id: str) -> None: ...

    # -- member sets ---------------------------------------------------------------------
    def membership(self, key: str, member: str, now: float) -> tuple[bool, int]:
        """Whether ``member`` is in the live set and, when it is not, how many the set
        holds (0 when it is: the count is only needed for a newcomer)."""

    def add_member(self, key: str, member: str, expires_at: float) -> bool:
        """True when the member was new to the set."""

    def remove_member(self, key: str, member: str) -> None: ...

    # -- codes and verification records --------------------------------------------------
    def code(self, phone: str, now: float | None = None) -> Code | None:
        """The phone's live code; with no ``now``, whatever is stored."""

    def put_code(self, phone: str, code: Code) -> None: ...

    def drop_code(self, phone: str) -> None: ...

    def record(self, verification_id: str) -> Record | None:
        """As stored, lapsed or not."""

    def put_record(self, record: Record) -> None: ...

    # -- operators' registry of blocks, and their lists ----------------------------------
    def block_records(self, now: float) -> list[Block]:
        """Every recorded block that has not ended, in no particular order."""

    def put_block(self, block: Block) -> None: ...

    def drop_blocks(self, scope: str, kind: str | None = None) -> None:
        """Forget the blocks on ``scope`` (of ``kind`` only, when given)."""

    def listed(self, entries: Sequence[str]) -> set[OverrideList]:
        """The lists holding any of ``entries``."""

    def set_listed(self, which: OverrideList, entry: str, present: bool) -> bool:
        """Add or remove ``entry``; True when that changed the list."""

    def list_entries(self) -> list[tuple[OverrideList, str]]: ...

    # -- the event queue, its one deliverer's lease, pending verifications' ends ---------
    def push_event(self, type: str, at: float, data: dict[str, Any]) -> None: ...

    def events_after(self, seq: int, limit: int) -> list[Event]:
        """The oldest events after ``seq`` (an event's id is its sequence number)."""

    def drop_events(self, through: int) -> None: ...

    def lease(self) -> tuple[str, float, int] | None:
        """The delivery lease: owner, until, last delivered sequence number."""

    def put_lease(self, owner: str, until: float, delivered: int) -> None: ...

    def await_end(self, verification_id: str, ends_at: float) -> None: ...

    def drop_awaiting(self, verification_id: str) -> None: ...

    def due(self, now: float, limit: int) -> list[str]:
        """The awaited ids whose end is at or before ``now``, soonest first (then by id)."""
