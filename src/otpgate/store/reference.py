"""In-process store: the store rules (``otpgate.store.rules``) over dicts.

Read ``rules.py`` for what every store does. This one is not for production: its
state lives in one process (workers would not share limits), it is lost on restart,
and nothing is purged except an entry a step reads after it lapsed. It serves fast
unit tests. A step runs from start to end without an ``await``, so on one event loop
it is one indivisible step, as one Lua script is on Redis and one ``BEGIN IMMEDIATE``
transaction on SQLite.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Concatenate, ParamSpec, Protocol, TypeVar

from otpgate.domain.limits import Lockout
from otpgate.domain.ports import Block, Event, OverrideList
from otpgate.store.rules import RANGE_PREFIX, fails_key
from otpgate.store.state import Code, Counter, Record, State
from otpgate.store.steps import RuleSteps


class _Expiring(Protocol):
    @property
    def expires_at(self) -> float: ...


E = TypeVar("E", bound=_Expiring)
P = ParamSpec("P")
T = TypeVar("T")


@dataclass(slots=True)
class _Members:
    members: set[str]
    expires_at: float


def _live(entries: dict[str, E], key: str, now: float) -> E | None:
    """The entry if it is live at ``now``; a lapsed one is dropped."""
    entry = entries.get(key)
    if entry is not None and entry.expires_at <= now:
        del entries[key]
        return None
    return entry


class _Dicts:
    """The rules' primitives (``otpgate.store.state.State``) over dicts."""

    def __init__(self, events: bool) -> None:
        self.events = events
        self.counters: dict[str, Counter] = {}
        self.logs: dict[str, dict[str, tuple[int, float]]] = {}  # send id: (at ms, expiry)
        self.sets: dict[str, _Members] = {}
        self.codes: dict[str, Code] = {}  # by phone
        self.records: dict[str, Record] = {}  # by verification id
        self.registry: dict[tuple[str, str], Block] = {}  # (kind, scope): what set it
        self.lists: dict[OverrideList, set[str]] = {"exempt": set(), "deny": set()}
        self.queue: dict[int, Event] = {}  # by sequence number
        self.seq = 0
        self.held: tuple[str, float, int] | None = None  # the delivery lease
        self.awaiting: dict[str, float] = {}  # pending verification id: its code's end

    def counter(self, key: str, now: float) -> Counter | None:
        return _live(self.counters, key, now)

    def counts(self, keys: Sequence[str], now: float) -> list[int]:
        found = [_live(self.counters, key, now) for key in keys]
        return [c.count if c is not None else 0 for c in found]

    def counters_under(self, prefix: str, now: float) -> list[tuple[str, int]]:
        items = self.counters.items()
        return [(k, c.count) for k, c in items if k.startswith(prefix) and c.expires_at > now]

    def put_counter(self, key: str, count: int, expires_at: float, updated_at: float = 0.0) -> None:
        self.counters[key] = Counter(count, expires_at, updated_at)

    def bump(self, key: str, expires_at: float, now: float, *, extend: bool) -> Counter:
        c = _live(self.counters, key, now)
        if c is None:
            c = Counter(1, expires_at)
        else:
            c = Counter(c.count + 1, expires_at if extend else c.expires_at, c.updated_at)
        self.counters[key] = c
        return c

    def decrement(self, key: str) -> None:
        c = self.counters.get(key)
        if c is not None:
            if c.count <= 1:
                del self.counters[key]
            else:
                self.counters[key] = Counter(c.count - 1, c.expires_at, c.updated_at)

    def drop_counter(self, key: str) -> None:
        self.counters.pop(key, None)

    def log_times(self, key: str, after_ms: int) -> list[int]:
        log = {i: e for i, e in self.logs.pop(key, {}).items() if e[0] > after_ms}
        if log:
            self.logs[key] = log
        return sorted(at for at, _ in log.values())

    def log_add(self, key: str, send_id: str, at_ms: int, expires_at: float) -> None:
        self.logs.setdefault(key, {})[send_id] = (at_ms, expires_at)

    def log_remove(self, key: str, send_id: str) -> None:
        log = self.logs.get(key, {})
        log.pop(send_id, None)
        if not log:
            self.logs.pop(key, None)

    def membership(self, key: str, member: str, now: float) -> tuple[bool, int]:
        found = _live(self.sets, key, now)
        held = found.members if found is not None else set()
        return (True, 0) if member in held else (False, len(held))

    def add_member(self, key: str, member: str, expires_at: float) -> bool:
        found = self.sets.setdefault(key, _Members(set(), expires_at))
        new = member not in found.members
        found.members.add(member)
        return new

    def remove_member(self, key: str, member: str) -> None:
        found = self.sets.get(key)
        if found is not None:
            found.members.discard(member)

    def code(self, phone: str, now: float | None = None) -> Code | None:
        return self.codes.get(phone) if now is None else _live(self.codes, phone, now)

    def put_code(self, phone: str, code: Code) -> None:
        self.codes[phone] = code

    def drop_code(self, phone: str) -> None:
        self.codes.pop(phone, None)

    def record(self, verification_id: str) -> Record | None:
        return self.records.get(verification_id)

    def put_record(self, record: Record) -> None:
        self.records[record.verification.id] = record

    def block_records(self, now: float) -> list[Block]:
        return [b for b in self.registry.values() if b.ends_at > now]

    def put_block(self, block: Block) -> None:
        self.registry[(block.kind, block.scope)] = block

    def drop_blocks(self, scope: str, kind: str | None = None) -> None:
        for k, s in list(self.registry):
            if s == scope and kind in (None, k):
                del self.registry[(k, s)]

    def listed(self, entries: Sequence[str]) -> set[OverrideList]:
        return {which for which, held in self.lists.items() if any(e in held for e in entries)}

    def set_listed(self, which: OverrideList, entry: str, present: bool) -> bool:
        entries = self.lists[which]
        if (entry in entries) == present:
            return False
        if present:
            entries.add(entry)
        else:
            entries.discard(entry)
        return True

    def list_entries(self) -> list[tuple[OverrideList, str]]:
        return [(which, entry) for which, held in self.lists.items() for entry in held]

    def push_event(self, type: str, at: float, data: dict[str, Any]) -> None:
        self.seq += 1
        self.queue[self.seq] = Event(str(self.seq), type, at, data)

    def events_after(self, seq: int, limit: int) -> list[Event]:
        return [event for n, event in self.queue.items() if n > seq][:limit]

    def drop_events(self, through: int) -> None:
        for n in [n for n in self.queue if n <= through]:
            del self.queue[n]

    def lease(self) -> tuple[str, float, int] | None:
        return self.held

    def put_lease(self, owner: str, until: float, delivered: int) -> None:
        self.held = (owner, until, delivered)

    def await_end(self, verification_id: str, ends_at: float) -> None:
        self.awaiting[verification_id] = ends_at

    def drop_awaiting(self, verification_id: str) -> None:
        self.awaiting.pop(verification_id, None)

    def due(self, now: float, limit: int) -> list[str]:
        ended = sorted((end, vid) for vid, end in self.awaiting.items() if end <= now)
        return [vid for _, vid in ended[:limit]]


class MemoryStore(RuleSteps):
    def __init__(self, *, events: bool = False) -> None:
        self._state = _Dicts(events)
        # What tests that drive the clock look at.
        self._codes = self._state.codes
        self._records = self._state.records

    async def _step(
        self, fn: Callable[Concatenate[State, P], T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        return fn(self._state, *args, **kwargs)

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        return None

    # -- for tests that drive the clock ------------------------------------------------
    def deadlines(self, lockout: Lockout | None = None) -> list[float]:
        """Every instant at which something held here lapses, sorted; with ``lockout``,
        also when each phone's lockout wait ends. The boundaries where an answer can
        change, for a test that moves the clock to land on them."""
        state = self._state
        counters = {k: c for k, c in state.counters.items() if not k.startswith(RANGE_PREFIX)}
        held: list[dict[str, Any]] = [counters, state.codes, state.sets, state.records]
        instants = {entry.expires_at for entries in held for entry in entries.values()}
        # A pending verification turns expired with its code, even a replaced one.
        instants |= {r.verification.expires_at for r in state.records.values()}
        # Each logged send leaves its log on its own.
        instants |= {ends for log in state.logs.values() for _, ends in log.values()}
        if lockout is not None:
            for phone_fails in (c for k, c in counters.items() if k.startswith(fails_key(""))):
                wait = lockout.wait_seconds(phone_fails.count)
                if wait:
                    instants.add(phone_fails.updated_at + wait)
        return sorted(instants)
