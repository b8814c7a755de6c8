"""A real SMTP server (aiosmtpd) on a free loopback port, for driving the email channel.

It runs in a thread of its own (aiosmtpd's ``Controller``), keeps every message it
accepts, parsed, and can be told to refuse a recipient with any reply, to take its
time over RCPT (a slow server: the client gives up first, and nothing is delivered),
or to want AUTH with a given user and password. Given a certificate (tests/tls_certs.py),
it offers STARTTLS (and requires it), or with ``implicit_tls`` speaks TLS from the first
byte. ``refused_smtp_port`` is a port where
nothing listens: a server that is down.

aiosmtpd is a development dependency (requirements-dev.lock): without it this module
does not import, and the tests that use it fail at collection; they never skip.
"""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

import pytest

from tests.tls_certs import Issued

try:
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult, LoginPassword
except ImportError as exc:  # pragma: no cover - the message is the point
    raise ImportError(
        "aiosmtpd is required by the email channel's tests; install the development lock"
        " (make, or pip install --require-hashes -r requirements-dev.lock)"
    ) from exc


# The server's own log writes every line it receives at DEBUG, the code included; it is
# not the service's, whose logs the tests hold to never carrying one.
logging.getLogger("mail.log").setLevel(logging.WARNING)


@dataclass(frozen=True)
class Delivered:
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage

    @property
    def text(self) -> str:
        part = self.message.get_body(("plain",))
        assert part is not None, "no text part"
        return str(part.get_content())  # type: ignore[attr-defined]

    @property
    def html(self) -> str:
        part = self.message.get_body(("html",))
        assert part is not None, "no HTML part"
        return str(part.get_content())  # type: ignore[attr-defined]

    @property
    def code(self) -> str:
        match = re.search(r"\b(\d{6})\b", self.text)
        assert match, f"no code in {self.text!r}"
        return match.group(1)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class SmtpServer:
    def __init__(
        self,
        *,
        user: str | None = None,
        password: str | None = None,
        certificate: Issued | None = None,
        implicit_tls: bool = False,
    ) -> None:
        """With ``user``, AUTH is required (over plain SMTP: this is loopback, and
        pyproject's filterwarnings quiets aiosmtpd's warning about it). With
        ``certificate``, STARTTLS is offered and required, or with ``implicit_tls`` the
        connection is TLS from the start."""
        self.received: list[Delivered] = []
        self.refuse: dict[str, str] = {}  # recipient (lowercase): the RCPT reply
        self.rcpt_delay = 0.0  # seconds before answering RCPT
        self.user = user
        self.password = password
        self.port = free_port()
        auth: dict[str, Any] = {}
        if user is not None:
            auth = {
                "auth_required": True,
                "auth_require_tls": False,
                "authenticator": self._authenticate,
            }
        self.tls: str | None = None  # "starttls" or "tls", with a certificate
        if certificate is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(certificate.cert, certificate.key)
            if implicit_tls:
                auth["ssl_context"] = context
                self.tls = "tls"
            else:
                auth.update(tls_context=context, require_starttls=True)
                self.tls = "starttls"
        self._controller = Controller(self, hostname="127.0.0.1", port=self.port, **auth)

    def settings(self, **overrides: Any) -> dict[str, Any]:
        """Settings that send email through this server (plain SMTP on loopback)."""
        values: dict[str, Any] = {
            "smtp_host": "127.0.0.1",
            "smtp_port": self.port,
            "smtp_starttls": self.tls == "starttls",
            "smtp_tls": self.tls == "tls",
            "email_from": "Acme <otp@example.com>",
            "smtp_timeout_seconds": 2.0,
        }
        return {**values, **overrides}

    def last(self, to: str) -> Delivered:
        for delivered in reversed(self.received):
            if to in delivered.rcpt_tos:
                return delivered
        raise AssertionError(f"no email was delivered to {to}")

    # -- aiosmtpd's handler hooks, on the server's own loop --------------------------------
    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: Any
    ) -> str:
        if self.rcpt_delay:
            await asyncio.sleep(self.rcpt_delay)
        reply = self.refuse.get(address.lower())
        if reply is not None:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = message_from_bytes(envelope.content, policy=policy.default)
        assert isinstance(message, EmailMessage)
        self.received.append(Delivered(envelope.mail_from, list(envelope.rcpt_tos), message))
        return "250 Message accepted for delivery"

    def _authenticate(
        self, server: Any, session: Any, envelope: Any, mechanism: str, data: Any
    ) -> AuthResult:
        ok = (
            isinstance(data, LoginPassword)
            and data.login.decode() == self.user
            and data.password.decode() == self.password
        )
        return AuthResult(success=ok, handled=False)

    def start(self) -> None:
        self._controller.start()

    def stop(self) -> None:
        self._controller.stop()


@pytest.fixture
def smtp_server() -> Iterator[SmtpServer]:
    server = SmtpServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def refused_smtp_port() -> Iterator[int]:
    """A loopback port where nothing listens: the socket is bound but never accepts."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    try:
        yield int(sock.getsockname()[1])
    finally:
        sock.close()
