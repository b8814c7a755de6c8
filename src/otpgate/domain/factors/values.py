"""The values the factor use cases trade in.

An identity is the app's own user id, opaque to otpgate: 1 to 128 characters of a set
that is safe in a URL path, a log line and a token's ``sub`` (letters, digits and
``_ . @ : + -``). A factor belongs to one identity; its secret never leaves the use
cases except once, in the answer to the enrolment.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from typing import Literal

from otpgate.domain.factors.errors import FactorNotFound, InvalidIdentity

IDENTITY_PATTERN = r"^[A-Za-z0-9_.@:+-]{1,128}$"
# ``YF`` and 128 random bits in hex, as Twilio names its factors.
FACTOR_ID_PATTERN = r"^YF[0-9a-f]{32}$"
_IDENTITY = re.compile(IDENTITY_PATTERN)
_FACTOR_ID = re.compile(FACTOR_ID_PATTERN)

# ``YE`` and ``YC`` likewise, for the Twilio Verify compatible entities and challenges.
ENTITY_ID_PATTERN = r"^YE[0-9a-f]{32}$"
CHALLENGE_ID_PATTERN = r"^YC[0-9a-f]{32}$"

FactorKind = Literal["totp"]
FactorStatus = Literal["unverified", "verified"]
TotpAlgorithm = Literal["SHA1", "SHA256", "SHA512"]


def parse_identity(raw: str) -> str:
    """The identity as given, when it is one; InvalidIdentity otherwise."""
    if not _IDENTITY.match(raw) or raw.endswith("\n"):
        raise InvalidIdentity()
    return raw


def check_factor_id(raw: str) -> str:
    """A factor id of the right shape; FactorNotFound otherwise (no such factor)."""
    if not _FACTOR_ID.match(raw) or raw.endswith("\n"):
        raise FactorNotFound()
    return raw


def new_factor_id() -> str:
    return f"YF{uuid.uuid4().hex}"


def new_entity_id() -> str:
    return f"YE{uuid.uuid4().hex}"


def new_challenge_id() -> str:
    return f"YC{uuid.uuid4().hex}"


@dataclass(frozen=True, slots=True)
class TotpConfig:
    """How a factor's codes are made, kept with the factor (RFC 6238's defaults, which
    every authenticator app reads from the URI): ``skew`` steps either side of now are
    accepted, for clocks that drift and users who type slowly."""

    digits: int = 6
    period: int = 30
    algorithm: TotpAlgorithm = "SHA1"
    skew: int = 1

    def __post_init__(self) -> None:
        if self.digits not in (6, 7, 8):
            raise ValueError("digits must be 6, 7 or 8")
        if not 15 <= self.period <= 120:
            raise ValueError("period must be 15 to 120 seconds")
        if not 0 <= self.skew <= 10:
            raise ValueError("skew must be 0 to 10 steps")


@dataclass(frozen=True, slots=True)
class Factor:
    """A factor as stored, without its secret. ``last_step`` is the last time step whose
    code was accepted (None: none yet); no code of that step or an earlier one is
    accepted again."""

    id: str
    identity: str
    kind: FactorKind
    status: FactorStatus
    config: TotpConfig
    created_at: float
    verified_at: float | None = None
    last_step: int | None = None
    name: str | None = None  # the caller's label, shown in lists ("Work phone")


@dataclass(frozen=True, slots=True)
class Entity:
    """An identity as a Twilio Verify service names it: ``identity`` is the factors'
    identity (the service's sid and the caller's identity, see ``http/twilio_factors``),
    ``name`` the caller's identity as given."""

    id: str
    service: str
    name: str
    identity: str
    created_at: float


ChallengeStatus = Literal["pending", "approved"]


@dataclass(frozen=True, slots=True)
class Challenge:
    """One code checked against a factor, kept so that it can be fetched and listed: a
    right code is ``approved`` at once, any other leaves it ``pending`` (until a right
    code or ``expires_at``)."""

    id: str
    identity: str
    factor_id: str
    status: ChallengeStatus
    created_at: float
    updated_at: float
    expires_at: float
    responded_at: float | None = None
