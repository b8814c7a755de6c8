"""TLS for ``rediss://``: which files to trust and present, the same for both links.

The pipelined link is handed ``context()``; redis-py's client is handed
``redis_py_options()``, from which it builds the same context (the system's
certificate authorities plus REDIS_TLS_CA_FILE, the certificate verified and its
host name checked). Verification cannot be turned off: a server that cannot
prove who it is gets no codes.
"""

from __future__ import annotations

import ssl
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
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            return None
        if isinstance(seen, ssl.SSLCertVerificationError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def refusal_text(exc: ssl.SSLCertVerificationError) -> str:
    """What OpenSSL found wrong, without the library's framing."""
    return str(exc.verify_message or exc.reason or exc)
