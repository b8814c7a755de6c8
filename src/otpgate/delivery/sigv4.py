"""AWS Signature Version 4 for the one request shape the SNS sender makes.

botocore's general signer (``SigV4Auth`` over an ``AWSRequest``) re-parses the URL,
collects and canonicalises every header, and derives the signing key with four
HMACs on every call: about three times the CPU of this module per SMS, on the
request path. All we sign is a form-encoded POST to one host and path, with the
headers ``content-type``, ``host``, ``x-amz-date`` and, with temporary credentials,
``x-amz-security-token``, over the SHA-256 of the body. Everything fixed is
formatted once; the derived key is cached per (secret, day, region, service).
``tests/test_sigv4.py`` pins the result to botocore's signer.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from functools import lru_cache
from typing import NamedTuple, Protocol
from urllib.parse import quote, urlsplit

CONTENT_TYPE = "application/x-www-form-urlencoded; charset=utf-8"

_ALGORITHM = "AWS4-HMAC-SHA256"
_SIGNED_HEADERS = "content-type;host;x-amz-date"
_SIGNED_HEADERS_TEMPORARY = "content-type;host;x-amz-date;x-amz-security-token"
_DEFAULT_PORTS = {"http": 80, "https": 443}


class SigningCredentials(Protocol):
    """What signing needs; botocore's frozen credentials have the same shape."""

    @property
    def access_key(self) -> str: ...

    @property
    def secret_key(self) -> str: ...

    @property
    def token(self) -> str | None: ...


class Credentials(NamedTuple):
    access_key: str
    secret_key: str
    token: str | None = None


@lru_cache(maxsize=16)
def signing_key(secret_key: str, day: str, region: str, service: str) -> bytes:
    """The derived key: it changes once a day, so four HMACs per day, not per request."""
    key = hmac.digest(f"AWS4{secret_key}".encode(), day.encode(), "sha256")
    key = hmac.digest(key, region.encode(), "sha256")
    key = hmac.digest(key, service.encode(), "sha256")
    return hmac.digest(key, b"aws4_request", "sha256")


def host_header(url: str) -> str:
    """The Host value for ``url`` as botocore signs it: the port only when not the default."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    if parts.port is not None and parts.port != _DEFAULT_PORTS.get(parts.scheme):
        host = f"{host}:{parts.port}"
    return host


class FormSigner:
    """Signs form POSTs to one URL for one region and service."""

    def __init__(self, url: str, *, region: str, service: str) -> None:
        self.host = host_header(url)
        self._region = region
        self._service = service
        self._scope_tail = f"/{region}/{service}/aws4_request"
        path = quote(urlsplit(url).path or "/", safe="/~")
        # Method, path, the empty query and the headers before x-amz-date never change.
        self._head = f"POST\n{path}\n\ncontent-type:{CONTENT_TYPE}\nhost:{self.host}\nx-amz-date:"
        self._second = -1
        self._amz_date = ""

    def headers(
        self, body: bytes, credentials: SigningCredentials, now: float | None = None
    ) -> dict[str, str]:
        """The headers that make ``body`` a signed request at ``now`` (default: the clock)."""
        amz_date = self._timestamp(time.time() if now is None else now)
        day = amz_date[:8]
        token = credentials.token
        payload_hash = hashlib.sha256(body).hexdigest()
        if token:
            signed = _SIGNED_HEADERS_TEMPORARY
            canonical = (
                f"{self._head}{amz_date}\nx-amz-security-token:{token}\n\n{signed}\n{payload_hash}"
            )
        else:
            signed = _SIGNED_HEADERS
            canonical = f"{self._head}{amz_date}\n\n{signed}\n{payload_hash}"
        scope = f"{day}{self._scope_tail}"
        string_to_sign = (
            f"{_ALGORITHM}\n{amz_date}\n{scope}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
        )
        key = signing_key(credentials.secret_key, day, self._region, self._service)
        signature = hmac.digest(key, string_to_sign.encode(), "sha256").hex()
        headers = {
            "Content-Type": CONTENT_TYPE,
            "Host": self.host,
            "X-Amz-Date": amz_date,
            "Authorization": (
                f"{_ALGORITHM} Credential={credentials.access_key}/{scope}, "
                f"SignedHeaders={signed}, Signature={signature}"
            ),
        }
        if token:
            headers["X-Amz-Security-Token"] = token
        return headers

    def _timestamp(self, now: float) -> str:
        """``YYYYMMDDTHHMMSSZ``, formatted once per second."""
        second = int(now)
        if second != self._second:
            self._amz_date = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(second))
            self._second = second
        return self._amz_date
