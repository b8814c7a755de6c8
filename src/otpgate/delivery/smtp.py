"""Email sender: each code as one message over SMTP, a text part and an HTML part.

One connection per message (``aiosmtplib``): connect, STARTTLS or implicit TLS as
configured, AUTH when a user is given, MAIL FROM, RCPT TO, DATA, QUIT. The whole
exchange must end within ``timeout``; nothing is retried within the request (a
temporary refusal, such as greylisting, wants minutes, not a second try).

SMTP's answers map onto the outcomes every provider has (``domain/errors.py``):

- the recipient refused for good (5xx on RCPT TO): ``DeliveryRejected``, 400;
- a temporary refusal (any 4xx), a server that cannot be reached, drops the
  connection or does not answer in time: ``DeliveryUnavailable``, 503;
- our side is wrong (authentication refused, EMAIL_FROM refused, STARTTLS or AUTH
  not offered): ``DeliveryFailed``, 502, and readiness reports it until a send
  succeeds; a message refused for good at DATA is also 502, without that.

Logs never carry the code, the message text, the password or the recipient's address;
a server's reply is logged with addresses and digit runs taken out.
"""

from __future__ import annotations

import asyncio
import logging
import re
import ssl
from dataclasses import dataclass, field
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import formatdate, make_msgid, parseaddr

import aiosmtplib

from otpgate import __version__
from otpgate.delivery.health import ProblemLatch, redact
from otpgate.domain.catalog import Rendered
from otpgate.domain.errors import DeliveryFailed, DeliveryRejected, DeliveryUnavailable

# The logger name log lines carry, as before the module moved.
log = logging.getLogger("otpgate.sms.smtp")

# What a client is told to wait: a server that is down or slow may be back soon; a
# temporary refusal (greylisting, a full queue) usually takes longer.
RETRY_AFTER_DOWN = 5
RETRY_AFTER_REFUSED = 60

_ADDRESS = re.compile(r"<?[^\s<>@]+@[^\s<>@]+>?")


def log_safe(text: object) -> str:
    """A server's reply for a log: no address (it may be the recipient's), no digit run."""
    return redact(_ADDRESS.sub("<address>", str(text)))


def _certificate_refused(exc: BaseException) -> str | None:
    """Why the server's certificate was refused, when that is what ``exc`` (or its
    cause) is: an unknown CA, a name it was not issued for, an expired one."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError):
            return f"certificate refused: {seen.verify_message}"
        seen = seen.__cause__ or seen.__context__
    return None


@dataclass(frozen=True, slots=True)
class SmtpConfig:
    """What the SMTP sender needs, built from settings in wiring."""

    host: str
    port: int
    sender: str  # EMAIL_FROM: an address, or "Name <address>"
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    starttls: bool = True
    tls: bool = False
    timeout: float = 10.0
    ca_file: str | None = None  # SMTP_TLS_CA_FILE: CA certificates trusted besides the system's


def tls_context(ca_file: str | None) -> ssl.SSLContext | None:
    """The system's CAs and ``ca_file``'s, the certificate and the host name checked;
    None without a file (aiosmtplib's own default, the same checks). OSError or
    ssl.SSLError for a file that cannot be used."""
    if ca_file is None:
        return None
    context = ssl.create_default_context()
    context.load_verify_locations(cafile=ca_file)
    return context


class SmtpSender:
    name = "smtp"

    def __init__(self, config: SmtpConfig) -> None:
        self._config = config
        display, address = parseaddr(config.sender)
        self._from_address = address
        local, _, domain = address.rpartition("@")
        self._from_header = str(Address(display, local, domain))
        self._domain = domain
        self._health = ProblemLatch(log)
        self._tls_context = tls_context(config.ca_file)  # checked by the settings

    @property
    def problem(self) -> str | None:
        return self._health.problem

    async def deliver(self, channel: str, to: str, message: Rendered) -> str:
        if channel != "email" or message.subject is None or message.html is None:
            raise DeliveryFailed()  # wiring hands this sender email only
        mail, message_id = self._compose(to, message)
        config = self._config
        try:
            async with asyncio.timeout(config.timeout):
                await aiosmtplib.send(
                    mail,
                    sender=self._from_address,
                    recipients=[to],
                    hostname=config.host,
                    port=config.port,
                    username=config.username,
                    password=config.password,
                    use_tls=config.tls,
                    start_tls=config.starttls,
                    tls_context=self._tls_context,
                    timeout=config.timeout,
                )
        except TimeoutError as exc:  # the whole exchange, or one reply (SMTPTimeoutError)
            raise self._down(f"no answer within {config.timeout:g}s", exc) from exc
        except aiosmtplib.SMTPRecipientsRefused as exc:
            raise self._refused(exc) from exc
        except aiosmtplib.SMTPAuthenticationError as exc:
            self._broken("authentication refused", f"AUTH: {exc.code} {log_safe(exc.message)}")
            raise DeliveryFailed("The email could not be sent.") from exc
        except aiosmtplib.SMTPSenderRefused as exc:
            if exc.code < 500:
                raise self._busy(exc) from exc
            # 530: the server wants AUTH first (RFC 4954); anything else refuses the sender.
            problem = (
                "the server requires authentication (SMTP_USERNAME, SMTP_PASSWORD)"
                if exc.code == 530
                else "EMAIL_FROM refused by the server"
            )
            self._broken(problem, f"MAIL FROM: {exc.code} {log_safe(exc.message)}")
            raise DeliveryFailed("The email could not be sent.") from exc
        except aiosmtplib.SMTPResponseException as exc:
            if exc.code < 500:
                raise self._busy(exc) from exc
            # Refused for good, but not the recipient: DATA (content, size) or HELO.
            log.error("the SMTP server refused the message: %d %s", exc.code, log_safe(exc.message))
            raise DeliveryFailed("The email could not be sent.") from exc
        except (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPConnectError, OSError) as exc:
            untrusted = _certificate_refused(exc)
            if untrusted is not None:
                # Our side: a retry meets the same certificate (SMTP_TLS_CA_FILE, the host).
                self._broken("the server's certificate is not trusted", untrusted)
                raise DeliveryFailed("The email could not be sent.") from exc
            raise self._down(f"unreachable ({type(exc).__name__})", exc) from exc
        except aiosmtplib.SMTPException as exc:
            # Not an answer and not the network: what the server offers does not fit the
            # settings (no STARTTLS, no AUTH).
            self._broken(f"the server does not fit the settings: {log_safe(exc)}", log_safe(exc))
            raise DeliveryFailed("The email could not be sent.") from exc
        self._health.ok()
        return message_id

    def _compose(self, to: str, message: Rendered) -> tuple[EmailMessage, str]:
        assert message.subject is not None and message.html is not None
        mail = EmailMessage()
        message_id = make_msgid(domain=self._domain or None)
        mail["From"] = self._from_header
        mail["To"] = to
        mail["Subject"] = message.subject
        mail["Date"] = formatdate(usegmt=True)
        mail["Message-ID"] = message_id
        # RFC 3834: an automatic message, so auto-responders stay quiet.
        mail["Auto-Submitted"] = "auto-generated"
        mail["Content-Language"] = message.language
        mail["X-Mailer"] = f"otpgate/{__version__}"
        mail.set_content(message.text)
        mail.add_alternative(message.html, subtype="html")
        return mail, message_id.strip("<>")

    def _refused(self, exc: aiosmtplib.SMTPRecipientsRefused) -> Exception:
        codes = [refused.code for refused in exc.recipients]
        if codes and all(code >= 500 for code in codes):
            log.info("the SMTP server refused the recipient (%s)", ", ".join(map(str, codes)))
            return DeliveryRejected("The mail server refused this email address.")
        reason = "; ".join(f"{r.code} {log_safe(r.message)}" for r in exc.recipients)
        log.warning("the SMTP server deferred the recipient: %s", reason)
        return DeliveryUnavailable(
            "The mail server is temporarily not accepting this address. Please try again later.",
            retry_after=RETRY_AFTER_REFUSED,
        )

    def _busy(self, exc: aiosmtplib.SMTPResponseException) -> Exception:
        log.warning("the SMTP server refused for now: %d %s", exc.code, log_safe(exc.message))
        return DeliveryUnavailable(
            "The mail server is temporarily unavailable. Please try again later.",
            retry_after=RETRY_AFTER_REFUSED,
        )

    def _down(self, reason: str, exc: BaseException) -> Exception:
        log.warning("the SMTP server at %s: %s", self._where(), reason)
        return DeliveryUnavailable(
            "The mail server is temporarily unavailable. Please try again later.",
            retry_after=RETRY_AFTER_DOWN,
        )

    def _broken(self, problem: str, cause: str) -> None:
        self._health.fail(f"smtp: {problem}", f"{self._where()}: {cause}")

    def _where(self) -> str:
        return f"{self._config.host}:{self._config.port}"

    async def close(self) -> None:
        return None  # a connection per message: nothing stays open
