"""Which hand-written fast paths run in this process: decided once, at start-up.

Each part below reaches into another library's internals for speed, and has a
stock equivalent that uses only that library's ordinary API. ``FAST_PATH=false``
runs every part on its stock path. With ``FAST_PATH=true`` (the default) a part
still runs on its stock path when its module's ``unavailable()`` finds that the
installed library no longer has what the part uses (an upgrade renamed or
removed it): one warning names the module and the reason, instead of an error at
request time.

- ``SERVER_PROTOCOL`` (``http/fast_protocol.py``): a subclass of uvicorn's
  httptools protocol, one write per answer and the one-call ``RESPOND``.
  Stock: uvicorn's own protocol.
- ``ROUTES`` (``http/fast_routes.py``): the API routes and /health by exact
  method and path, answered through ``RESPOND`` when offered.
  Stock: Starlette's routing, answers sent as ASGI messages.
- ``ACCESS_LINE`` (``observability/fast_log_line.py``): the JSON line written
  straight to the sole handler's stream. Stock: ``logger.log(..., extra=...)``.
- ``METRIC_TALLIES`` (``observability/fast_tally.py``): per-process tallies, flushed once a
  second into the Histogram children's private fields.
  Stock: ``inc()`` and ``observe()`` on the metrics, per request.
- ``SNS_PUBLISH`` (``delivery/fast_sns_publish.py``): Publish signed and sent over aiohttp,
  with botocore's proxy and CA helpers. Stock: aiobotocore's ``client.publish``.
- ``REDIS_CONNECTION`` (``store/redis/fast_connection.py``): one auto-pipelined
  connection on hiredis's reader and packer.
  Stock: redis-py's asyncio client (``store/redis/client.py``).

Who asks: ``cli`` (the server protocol, before uvicorn starts), ``http.app``
(routes, access line, tallies) and ``wiring`` (tallies, SNS Publish, Redis). Modules are
imported by name, and only for the part asked about: wiring asks about SNS
without loading the HTTP layer, and a module that no longer imports (a name gone
from its library) is itself a reason. Nothing here imports a fast path's library.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass

log = logging.getLogger("otpgate.fast_path")


@dataclass(frozen=True)
class Part:
    name: str
    module: str  # its ``unavailable() -> str | None`` checks the library it reaches into
    stock: str  # what runs instead


SERVER_PROTOCOL = Part(
    "server protocol", "otpgate.http.fast_protocol", "uvicorn's own HTTP protocol"
)
ROUTES = Part("hot routes", "otpgate.http.fast_routes", "Starlette's routing")
ACCESS_LINE = Part("access line", "otpgate.observability.fast_log_line", "an ordinary log record")
METRIC_TALLIES = Part(
    "metric tallies", "otpgate.observability.fast_tally", "inc() and observe() on the metrics"
)
SNS_PUBLISH = Part("SNS Publish", "otpgate.delivery.fast_sns_publish", "aiobotocore's publish")
REDIS_CONNECTION = Part(
    "Redis connection", "otpgate.store.redis.fast_connection", "redis-py's asyncio client"
)

PARTS = (SERVER_PROTOCOL, ROUTES, ACCESS_LINE, METRIC_TALLIES, SNS_PUBLISH, REDIS_CONNECTION)

# Each part's reason to stay off (None: none), checked once per process.
_reasons: dict[Part, str | None] = {}
_warned: set[Part] = set()


def enabled(part: Part, wanted: bool) -> bool:
    """Whether ``part`` runs on its fast path: ``wanted`` (FAST_PATH) and still possible.

    The first call for a part runs its check, and logs one warning if it fails.
    """
    if not wanted:
        return False
    why = reason(part)
    if why is not None and part not in _warned:
        _warned.add(part)
        log.warning("fast path %s off, using %s: %s: %s", part.name, part.stock, part.module, why)
    return why is None


def reason(part: Part) -> str | None:
    """Why ``part`` cannot run on its fast path here, or None: checked once per process."""
    if part not in _reasons:
        _reasons[part] = _check(part)
    return _reasons[part]


def _check(part: Part) -> str | None:
    try:
        module = importlib.import_module(part.module)
        reason = module.unavailable()
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None if reason is None else str(reason)


def unmentioned(function: object, names: Iterable[str]) -> list[str]:
    """Those of ``names`` that ``function``'s code does not mention, sorted.

    How a check sees a library's instance attributes without making an instance:
    ``self.cycle = ...`` in ``__init__`` puts ``cycle`` among its code's names, as
    reading ``self._sum`` does in ``observe``. A function without Python code
    mentions nothing.
    """
    code = getattr(function, "__code__", None)
    known = set(code.co_names) if code is not None else set()
    return sorted(set(names) - known)
