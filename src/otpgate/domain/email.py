"""Email addresses: checked by syntax alone, and one canonical form per mailbox.

Nothing here looks anything up: a request never waits on DNS (``email-validator``
with ``check_deliverability=False``). A domain that does not exist is found when the
mail server refuses it.

The canonical form is the store's key for the address, so the cooldown, the send
limits and the attempt counts hold per mailbox however it is written: the domain in
its ASCII (IDNA) form, and the whole address lowercased. Mail servers treat local
parts without regard to case in practice, and one mailbox must not get a fresh
cooldown per spelling (``Bob@``, ``bOb@`` ...). The mail goes to that form too.

Refused besides what email-validator refuses: a non-ASCII local part (it would need
SMTPUTF8 end to end), and ``{`` or ``}``, which no real address has and which would
break the store's per-recipient key grouping (Redis hash tags). An address always
holds ``@`` and an E.164 number never does, so the two kinds of key cannot meet.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from email_validator import EmailNotValidError, validate_email

from otpgate.domain.errors import InvalidEmail

# RFC 5321's limit on a path (the address between the brackets).
MAX_EMAIL_LENGTH = 254


@dataclass(frozen=True, slots=True)
class Email:
    address: str  # canonical: lowercase, ASCII domain
    domain: str

    @property
    def key(self) -> str:
        """What the store keys the address by: the canonical address itself."""
        return self.address

    def masked(self) -> str:
        """Log-safe form: ``j***@example.com``."""
        return mask_email(self.address)


def mask_email(address: str) -> str:
    """``j***@example.com``: the domain and one letter, enough to recognise it."""
    local, _, domain = address.rpartition("@")
    return f"{local[:1]}***@{domain}" if len(local) > 3 else f"***@{domain}"


def parse_email(raw: str) -> Email:
    """The address in canonical form; InvalidEmail when it is not one we can send to.

    Cached (bounded), as phones are: a verify usually follows a request for the same
    address. Rejections raise and are never cached.
    """
    return Email(*_parsed(raw))


def email_of_key(key: str) -> Email:
    """The address a store key holds (already canonical)."""
    return Email(key, key.rpartition("@")[2])


@lru_cache(maxsize=4096)
def _parsed(raw: str) -> tuple[str, str]:
    if len(raw) > MAX_EMAIL_LENGTH or "{" in raw or "}" in raw:
        raise InvalidEmail()
    try:
        valid = validate_email(raw, check_deliverability=False, allow_smtputf8=False)
    except EmailNotValidError:
        raise InvalidEmail() from None
    address = (valid.ascii_email or valid.normalized).lower()
    if not address.isascii():
        raise InvalidEmail()
    return address, address.rpartition("@")[2]
