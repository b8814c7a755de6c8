"""Asking several servers the same question at once (the sentinels where the master is,
the cluster's nodes where a slot is), taking each outcome as it comes, until a deadline.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Iterable
from types import TracebackType
from typing import Generic, TypeVar

T = TypeVar("T")


class Asking(Generic[T]):
    """``async with Asking(questions, timeout) as asking: async for task in asking``: each
    question's task as it completes (its ``result()`` is the caller's to take), until
    every one has or ``timeout`` has passed (then ``timed_out``). The caller may stop
    early, or ``shorten`` the wait; on leaving, the questions still open are cancelled
    and every outcome is retrieved."""

    def __init__(self, questions: Iterable[Awaitable[T]], timeout: float) -> None:
        self._tasks = [asyncio.ensure_future(q) for q in questions]
        self._open = set(self._tasks)
        self._done: list[asyncio.Future[T]] = []
        self._deadline = time.monotonic() + timeout
        self.timed_out = False

    def shorten(self, seconds: float) -> None:
        """Wait at most ``seconds`` more for the others."""
        self._deadline = min(self._deadline, time.monotonic() + seconds)

    async def __aenter__(self) -> Asking[T]:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        for task in self._open:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def __aiter__(self) -> Asking[T]:
        return self

    async def __anext__(self) -> asyncio.Future[T]:
        while not self._done:
            left = self._deadline - time.monotonic()
            if not self._open:
                raise StopAsyncIteration
            if left <= 0:
                self.timed_out = True
                raise StopAsyncIteration
            done, self._open = await asyncio.wait(
                self._open, timeout=left, return_when=asyncio.FIRST_COMPLETED
            )
            self._done.extend(done)
        return self._done.pop()
