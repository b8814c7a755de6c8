"""Who a code goes to: a phone number (SMS, WhatsApp, a voice call) or an email address.

Both are keyed in the store by one string, which is all the store ever needs: a phone
by its E.164 form (``+12125550123``), an address by its canonical form
(``bob@example.com``). A phone key never holds ``@`` and an address key always does,
so the two cannot collide, and a stored key says which kind it is.
"""

from __future__ import annotations

from typing import Literal

from otpgate.domain.email import Email, email_of_key, mask_email
from otpgate.domain.phone import Phone, mask, parse_phone

Recipient = Phone | Email
RecipientKind = Literal["phone", "email"]


def is_email_key(key: str) -> bool:
    return "@" in key


def recipient_of_key(key: str) -> Recipient:
    """The recipient a store key holds (checked when its code was sent)."""
    if is_email_key(key):
        return email_of_key(key)
    return parse_phone(key, "possible")


def mask_key(key: str) -> str:
    """A stored key, log-safe: a phone as ``+1212***0123``, an address as ``j***@example.com``."""
    return mask_email(key) if is_email_key(key) else mask(key)
