"""SNS ``Publish`` over one kept-alive HTTP session: the send path without botocore.

aiobotocore costs 1-2 ms of CPU per Publish (user agent rebuilt, parameters
validated, endpoint ruleset run, event hooks, signing through ``AWSRequest``),
which made it the limit of the request-otp endpoint. This module sends the same
Query-API request directly: the form body is built from a part encoded once plus
the number and the text, signed by ``otpgate.delivery.sigv4``, and posted over one
``aiohttp`` session. ``publisher_for`` configures it from the sender's aiobotocore
client (endpoint, region, proxy, CA bundle, as botocore resolves them); the sender
(``otpgate.delivery.sns``) signs with the client's credentials and maps the outcomes.

One attempt ends in one of:

- a 2xx answer: the ``MessageId`` (None if the answer has none);
- an error answer: ``PublishRefused`` with SNS's error code, message and HTTP status;
- the connection never opened (refused, DNS, connect timeout, TLS handshake, proxy
  unreachable): ``ProviderUnavailable``, safe to retry since nothing reached SNS;
- no answer after the request went out (read timeout, connection dropped):
  ``ProviderUnavailable(retry=False)``: Publish has no idempotency key, so SNS may
  have taken it and a retry could send a second SMS;
- an untrusted certificate or the proxy refusing us: ``PublishFailed``, our
  configuration is wrong and another try would fail the same way.

Idle connections are closed after ``KEEPALIVE_SECONDS``, well before servers and
load balancers drop theirs (commonly 60 s or more): a send that found its pooled
connection closed by the other side could not be retried, so it must not happen
in the normal course of things.
"""

from __future__ import annotations

import asyncio
import html
import inspect
import os
import re
import ssl
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote_plus, urlsplit, urlunsplit

import aiohttp
import orjson
from botocore.httpsession import ProxyConfiguration, get_cert_path
from botocore.utils import get_environ_proxies

from otpgate.delivery.retry import ProviderUnavailable
from otpgate.delivery.sigv4 import FormSigner, SigningCredentials

KEEPALIVE_SECONDS = 10.0
# Connections to SNS open at once; more sends wait for one to free up.
POOL_CONNECTIONS = 100

_HEAD = b"Action=Publish&Version=2010-03-31&PhoneNumber="
_ERROR_CODE = re.compile(r"<Code>(.*?)</Code>", re.DOTALL)
_ERROR_MESSAGE = re.compile(r"<Message>(.*?)</Message>", re.DOTALL)
_ID_OPEN, _ID_CLOSE = b"<MessageId>", b"</MessageId>"


# What publish() catches, by name: each must still exist in the installed aiohttp.
_AIOHTTP_ERRORS = (
    "ClientConnectorCertificateError",
    "ClientHttpProxyError",
    "ClientConnectorError",
    "ConnectionTimeoutError",
    "ClientError",
)
# The keyword arguments SnsPublisher passes, by the callable that takes them.
_AIOHTTP_OPTIONS = (
    ("ClientSession", ("connector", "timeout", "trust_env", "headers")),
    ("TCPConnector", ("limit", "keepalive_timeout", "ssl")),
    ("ClientTimeout", ("total", "sock_connect", "sock_read")),
)


def unavailable() -> str | None:
    """Why this Publish path cannot run on the installed libraries, or None when it can.

    Checks, without a session, a client or any I/O, what it uses beyond
    aiobotocore's client: botocore's proxy and CA bundle helpers (``publisher_for``),
    the frozen credentials the sender signs with, and the aiohttp options and errors
    named here. (Importing this module already checked that the helpers exist.)
    """
    from aiobotocore.credentials import AioCredentials
    from botocore.credentials import ReadOnlyCredentials

    for name, function, parameters in (
        ("ProxyConfiguration", ProxyConfiguration, ["proxies"]),
        ("get_cert_path", get_cert_path, ["verify"]),
        ("get_environ_proxies", get_environ_proxies, ["url"]),
    ):
        if list(inspect.signature(function).parameters)[: len(parameters)] != parameters:
            return f"botocore's {name} no longer takes ({', '.join(parameters)})"
    for method in ("proxy_url_for", "proxy_headers_for"):
        if not callable(getattr(ProxyConfiguration, method, None)):
            return f"botocore's ProxyConfiguration.{method} is gone"
    if not inspect.iscoroutinefunction(getattr(AioCredentials, "get_frozen_credentials", None)):
        return "aiobotocore's credentials have no async get_frozen_credentials"
    if not {"access_key", "secret_key", "token"} <= set(
        getattr(ReadOnlyCredentials, "_fields", ())
    ):
        return "botocore's frozen credentials lack access_key, secret_key or token"
    for name in _AIOHTTP_ERRORS:
        if not isinstance(getattr(aiohttp, name, None), type):
            return f"aiohttp.{name} is gone"
    for name, options in _AIOHTTP_OPTIONS:
        accepted = inspect.signature(getattr(aiohttp, name)).parameters
        missing = [option for option in options if option not in accepted]
        if missing:
            return f"aiohttp.{name} takes no {', '.join(missing)}"
    return None


class PublishRefused(Exception):
    """SNS answered with an error; the sender maps it like any SNS error."""

    def __init__(self, code: str, message: str, status: int) -> None:
        self.code = code
        self.message = message
        self.status = status
        super().__init__(f"{code or 'error'} (HTTP {status})")


class PublishFailed(Exception):
    """The request could not be made because of our configuration (CA bundle, proxy)."""


class PublishForm:
    """The Publish form body, byte for byte as botocore serialises it (``urlencode``:
    spaces as ``+``, every other reserved byte as ``%XX``), the fixed parts encoded once.

    An endpoint that re-encodes the form before it checks the signature (moto does)
    computes the same bytes only if they are botocore's.
    """

    def __init__(self, attributes: Mapping[str, Mapping[str, str]]) -> None:
        fields = []
        for n, (name, value) in enumerate(attributes.items(), start=1):
            prefix = f"MessageAttributes.entry.{n}"
            fields += [
                (f"{prefix}.Name", name),
                (f"{prefix}.Value.DataType", value["DataType"]),
                (f"{prefix}.Value.StringValue", value["StringValue"]),
            ]
        self._tail = "".join(f"&{key}={_encode(value)}" for key, value in fields).encode()

    def encode(self, phone: str, message: str) -> bytes:
        return b"%s%s&Message=%s%s" % (
            _HEAD,
            _encode(phone).encode(),
            _encode(message).encode(),
            self._tail,
        )


def _encode(value: str) -> str:
    """One form value as ``urllib.parse.urlencode`` (botocore's serialiser) writes it."""
    return quote_plus(value, safe="")


class SnsPublisher:
    def __init__(
        self,
        endpoint_url: str,
        *,
        region: str,
        attributes: Mapping[str, Mapping[str, str]],
        connect_timeout: float,
        read_timeout: float,
        user_agent: str,
        ssl_context: ssl.SSLContext | None = None,
        proxy: str | None = None,
        proxy_headers: Mapping[str, str] | None = None,
    ) -> None:
        """Must be called with the event loop running (the session binds to it)."""
        self.url = request_url(endpoint_url)
        self.form = PublishForm(attributes)
        self._signer = FormSigner(self.url, region=region, service="sns")
        self._proxy = proxy
        self._proxy_headers = dict(proxy_headers or {})
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(
                limit=POOL_CONNECTIONS,
                keepalive_timeout=KEEPALIVE_SECONDS,
                ssl=ssl_context if ssl_context is not None else True,
            ),
            timeout=aiohttp.ClientTimeout(
                total=None, sock_connect=connect_timeout, sock_read=read_timeout
            ),
            # The proxy comes from the sender, resolved once as botocore does. trust_env
            # would look proxies and ~/.netrc up again on every request (two thread hops,
            # ~0.7 ms of CPU), and a netrc entry for the host would clash with the signature.
            trust_env=False,
            headers={"User-Agent": user_agent, "Accept-Encoding": "identity"},
        )

    async def publish(
        self, phone: str, message: str, credentials: SigningCredentials
    ) -> str | None:
        """Send one SMS; see the module docstring for the outcomes."""
        body = self.form.encode(phone, message)
        headers = self._signer.headers(body, credentials)
        try:
            async with self._session.post(
                self.url,
                data=body,
                headers=headers,
                allow_redirects=False,
                proxy=self._proxy,
                proxy_headers=self._proxy_headers,
            ) as response:
                status = response.status
                payload = await response.read()
        except aiohttp.ClientConnectorCertificateError as exc:
            raise PublishFailed("the server's TLS certificate was not trusted") from exc
        except aiohttp.ClientHttpProxyError as exc:
            raise PublishFailed(f"the proxy refused the request (HTTP {exc.status})") from exc
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
            # Nothing reached SNS: another try is safe.
            raise ProviderUnavailable(f"unreachable ({type(exc).__name__})") from exc
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise ProviderUnavailable(f"no answer ({type(exc).__name__})", retry=False) from exc
        if 200 <= status < 300:
            return message_id(payload)
        code, text = parse_error(payload)
        raise PublishRefused(code, text, status)

    async def close(self) -> None:
        await self._session.close()


async def publisher_for(
    client: Any,
    session: Any,
    *,
    attributes: Mapping[str, Mapping[str, str]],
    connect_timeout: float,
    read_timeout: float,
    user_agent: str,
) -> SnsPublisher:
    """Publish to the aiobotocore ``client``'s endpoint and region, through the proxy and
    CA bundle botocore would use for it. OSError: the CA bundle cannot be loaded."""
    endpoint: str = client.meta.endpoint_url
    proxies = ProxyConfiguration(proxies=get_environ_proxies(endpoint))
    proxy = proxies.proxy_url_for(endpoint)
    ssl_context = None
    if endpoint.startswith("https:"):
        # Loading a CA bundle reads files: off the event loop.
        ssl_context = await asyncio.to_thread(_tls_context, session)
    return SnsPublisher(
        endpoint,
        region=client.meta.region_name,
        attributes=attributes,
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        user_agent=user_agent,
        ssl_context=ssl_context,
        proxy=proxy,
        proxy_headers=proxies.proxy_headers_for(proxy) if proxy else None,
    )


def _tls_context(session: Any) -> ssl.SSLContext:
    """Trust what botocore trusts: AWS_CA_BUNDLE (or the profile's ca_bundle),
    REQUESTS_CA_BUNDLE, else the CA bundle botocore ships with (certifi)."""
    verify = (
        session.get_config_variable("ca_bundle") or os.environ.get("REQUESTS_CA_BUNDLE") or True
    )
    return ssl.create_default_context(cafile=get_cert_path(verify))


def request_url(endpoint_url: str) -> str:
    """Where Publish goes: the endpoint with the operation's path "/" joined as botocore does."""
    parts = urlsplit(endpoint_url)
    path = parts.path if parts.path.endswith("/") else parts.path + "/"
    return urlunsplit((parts.scheme, parts.netloc, path, "", ""))


def message_id(payload: bytes) -> str | None:
    start = payload.find(_ID_OPEN)
    if start < 0:
        return None
    start += len(_ID_OPEN)
    end = payload.find(_ID_CLOSE, start)
    if end < 0:
        return None
    value = payload[start:end].decode("utf-8", "replace").strip()
    return value or None


def parse_error(payload: bytes) -> tuple[str, str]:
    """SNS's error code and message from an error answer: XML, JSON or nothing."""
    text = payload.decode("utf-8", "replace").strip()
    if text.startswith("{"):
        return _json_error(text)
    return _xml_field(_ERROR_CODE, text), _xml_field(_ERROR_MESSAGE, text)


def _xml_field(pattern: re.Pattern[str], text: str) -> str:
    match = pattern.search(text)
    return html.unescape(match.group(1).strip()) if match else ""


def _json_error(text: str) -> tuple[str, str]:
    try:
        data = orjson.loads(text)
    except orjson.JSONDecodeError:
        return "", ""
    if not isinstance(data, dict):
        return "", ""
    nested = data.get("Error")
    error = nested if isinstance(nested, dict) else data
    code = error.get("Code") or error.get("code") or error.get("__type") or ""
    message = error.get("Message") or error.get("message") or ""
    # "__type" may be qualified: "com.amazonaws.sns#Throttling" or "Throttling:http://...".
    code = str(code).rpartition("#")[2].partition(":")[0]
    return code, str(message)
