"""TLS for ``rediss://``: which files to trust and present, the same for both links.

The pipelined link is handed ``context()``; redis-py's client is handed
``redis_py_options()``, from which it builds the same context (the system's
certificate authorities plus REDIS_TLS_CA_FILE, the certificate verified and its
host name checked). Verification cannot be turned off: a server that cannot
prove who it is gets no codes.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal


class TlsFileError(Exception):
    """A file that cannot be used: ``which`` is the CA file or the client certificate."""

    def __init__(self, which: Literal["ca", "client"], message: str) -> None:
        super().__init__(message)
        self.which = which


@dataclass(frozen=True, slots=True)
class RedisTls:
    ca_file: Path | None = None
    cert_file: Path | None = None  # a client certificate, for servers that ask for one
    key_file: Path | None = None

    def context(self) -> ssl.SSLContext:
        """Verifying, as redis-py's client builds it; TlsFileError for an unusable file."""
        context = ssl.create_default_context()
        context.check_hostname = True
        context.verify_mode = ssl.CERT_REQUIRED
        if self.cert_file is not None:
            try:
                context.load_cert_chain(self.cert_file, self.key_file)
            except (OSError, ssl.SSLError) as exc:
                raise TlsFileError(
                    "client", f"cannot load the certificate and its key ({_reason(exc)})"
                ) from None
        if self.ca_file is not None:
            try:
                context.load_verify_locations(cafile=self.ca_file)
            except (OSError, ssl.SSLError) as exc:
                raise TlsFileError(
                    "ca", f"cannot load CA certificates from it ({_reason(exc)})"
                ) from None
        return context

    def redis_py_options(self) -> dict[str, Any]:
        return {
            "ssl": True,
            "ssl_cert_reqs": "required",
            "ssl_check_hostname": True,
            "ssl_ca_certs": None if self.ca_file is None else str(self.ca_file),
            "ssl_certfile": None if self.cert_file is None else str(self.cert_file),
            "ssl_keyfile": None if self.key_file is None else str(self.key_file),
        }


def _reason(exc: OSError | ssl.SSLError) -> str:
    return getattr(exc, "reason", None) or exc.strerror or type(exc).__name__


def certificate_refused(exc: BaseException) -> ssl.SSLCertVerificationError | None:
    """The verification error somewhere in ``exc``'s chain (redis-py wraps it), if any."""
    for seen in _chain(exc):
        if isinstance(seen, ssl.SSLCertVerificationError):
            return seen
    return None


def wants_client_certificate(exc: BaseException | None, tls: RedisTls | None) -> bool:
    """Whether ``exc`` (or an error in its chain) is the server refusing the connection
    for want of a client certificate while none is configured: the TLS 1.3
    "certificate required" alert. A TLS 1.3 server sends it after the handshake, so it
    surfaces at the first read, where an outage would be a bare reset or end of stream;
    only the alert itself counts, so an outage is never taken for it."""
    if tls is not None and tls.cert_file is not None:
        return False
    return any(
        isinstance(seen, ssl.SSLError)
        and (
            "CERTIFICATE_REQUIRED" in (seen.reason or "")
            or "alert certificate required" in str(seen)
        )
        for seen in _chain(exc)
    )


async def demands_client_certificate(
    host: str, port: int, tls: RedisTls | None, within: float, *, patient: bool = True
) -> bool:
    """Whether the server, reached over TLS and sent nothing, ends the connection with
    the "certificate required" alert; False when a client certificate is configured.

    For a connection lost without a reason right after the handshake: a command sent at
    once makes a server that refuses the client reset the connection instead of closing
    it, and a reset can discard the alert unread. Sent nothing, it closes cleanly after
    the alert. A server that accepts the client says nothing: this waits ``within``
    seconds out, or unless ``patient``, a few times as long as the handshake took (a
    refusing server sends its alert one round trip after it), at least 0.1 s.
    """
    tls = tls or RedisTls()
    if tls.cert_file is not None or within <= 0:
        return False
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(within) as limit:
            started = time.monotonic()
            reader, writer = await asyncio.open_connection(host, port, ssl=tls.context())
            if not patient:
                took = time.monotonic() - started
                limit.reschedule(min(limit.when() or 0.0, _loop_now() + max(0.1, 4 * took)))
            await reader.read(1)
    except (OSError, TimeoutError) as exc:  # ssl.SSLError is an OSError
        return wants_client_certificate(exc, tls)
    finally:
        if writer is not None:
            writer.transport.abort()
    return False


def _loop_now() -> float:
    return asyncio.get_running_loop().time()


def _chain(exc: BaseException | None) -> Iterator[BaseException]:
    """``exc`` and the errors it was raised from or during (redis-py wraps OpenSSL's)."""
    for _ in range(8):
        if exc is None:
            return
        yield exc
        exc = exc.__cause__ or exc.__context__


def refusal_text(exc: ssl.SSLCertVerificationError) -> str:
    """What OpenSSL found wrong, without the library's framing."""
    return str(exc.verify_message or exc.reason or exc)
