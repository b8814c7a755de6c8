"""``TokenSigner`` with ES256: a JWT that says which phone (or email address, or an
app's identity) was verified, when, and how.

Everything that does not change per token (the key, the header, the algorithm
registry) is prepared once; a signature is the only real work per verify.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from joserfc import jwt
from joserfc.jws import JWSRegistry

from otpgate.tokens.keys import ALGORITHM, SigningKey

# RFC 8176: the user proved control of a phone by a code sent to it.
AMR = ("sms",)
# ``amr`` by the channel that delivered the code: RFC 8176's ``sms`` and ``tel`` (a
# telephone call); ``email`` and ``whatsapp``, which it does not register, by their
# names; ``otp`` (a one-time password, RFC 8176) when the channel is not known. A second
# factor that costs no message: ``otp`` for an authenticator app's code (RFC 8176), and
# ``rec`` for a recovery code, which RFC 8176 does not register.
AMR_BY_CHANNEL: dict[str | None, str] = {
    "sms": "sms",
    "call": "tel",
    "email": "email",
    "whatsapp": "whatsapp",
    "totp": "otp",
    "recovery": "rec",
}
UNKNOWN_CHANNEL_AMR = "otp"


@dataclass(frozen=True, slots=True)
class TokenConfig:
    issuer: str
    audience: str
    ttl_seconds: int


class JwtSigner:
    """Signs with one key, named by its ``kid`` in every token's header."""

    def __init__(self, key: SigningKey, config: TokenConfig) -> None:
        self._key = key.key
        self._header = {"alg": ALGORITHM, "kid": key.kid}  # jwt.encode adds typ JWT
        self._registry = JWSRegistry(algorithms=[ALGORITHM])
        self._config = config
        self.kid = key.kid

    def sign(
        self,
        subject: str,
        token_id: str,
        purpose: str | None,
        now: float,
        channel: str | None = "sms",
    ) -> str:
        config = self._config
        issued_at = int(now)
        claims: dict[str, Any] = {
            "iss": config.issuer,
            "aud": config.audience,
            "sub": subject,
            "iat": issued_at,
            "exp": issued_at + config.ttl_seconds,
            "jti": token_id,
            "amr": [AMR_BY_CHANNEL.get(channel, UNKNOWN_CHANNEL_AMR)],
        }
        if purpose is not None:
            claims["purpose"] = purpose
        return jwt.encode(self._header, claims, self._key, registry=self._registry)
