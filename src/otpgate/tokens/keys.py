"""The signing keys: read once at start-up, published as a JWKS.

The key file holds one or more EC P-256 private keys in PEM, PKCS#8
(``BEGIN PRIVATE KEY``) or SEC1 (``BEGIN EC PRIVATE KEY``), concatenated. The
first signs; every one is published, so a token signed by a key that is no
longer first still checks out until that key leaves the file (rotation).

Errors name the file and the key's position in it, never anything read from it:
the file is a secret.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from joserfc.errors import InvalidKeyTypeError
from joserfc.jwk import ECKey

ALGORITHM = "ES256"
CURVE = "P-256"

# One PEM block: its label and body. Text between blocks (comments, openssl's "Bag
# Attributes") is allowed, as PEM allows it.
_BLOCK = re.compile(
    rb"-----BEGIN (?P<label>[A-Z0-9 ]+)-----(?P<body>.*?)-----END (?P=label)-----", re.DOTALL
)
_BEGIN = re.compile(rb"-----BEGIN ")
_KEY_LABELS = frozenset({b"PRIVATE KEY", b"EC PRIVATE KEY"})
# `openssl ecparam -genkey` writes the curve's name before the key unless told -noout.
_SKIPPED_LABELS = frozenset({b"EC PARAMETERS"})


class KeyFileError(ValueError):
    """The key file cannot be used; the message says why and holds no key material."""


@dataclass(frozen=True, slots=True)
class SigningKey:
    """One private key and its id: the RFC 7638 thumbprint of its public key."""

    kid: str
    key: ECKey

    def public_jwk(self) -> dict[str, Any]:
        public = self.key.as_dict(private=False)
        return {
            "kty": public["kty"],
            "crv": public["crv"],
            "x": public["x"],
            "y": public["y"],
            "kid": self.kid,
            "alg": ALGORITHM,
            "use": "sig",
        }


@dataclass(frozen=True, slots=True)
class KeySet:
    """Every key of the file, in its order: the first signs, all are published."""

    keys: tuple[SigningKey, ...]
    source: Path

    def __post_init__(self) -> None:
        if not self.keys:
            raise KeyFileError(f"{self.source} holds no key")

    @property
    def signing(self) -> SigningKey:
        return self.keys[0]

    def jwks(self) -> dict[str, list[dict[str, Any]]]:
        """The public JWK Set (RFC 7517 section 5): what a token's reader checks against."""
        return {"keys": [key.public_jwk() for key in self.keys]}


def parse_keys(pem: bytes, source: Path) -> KeySet:
    """Every EC P-256 private key in ``pem``, in order; KeyFileError for anything else."""
    blocks = list(_BLOCK.finditer(pem))
    if len(_BEGIN.findall(pem)) != len(blocks):
        raise KeyFileError(f"{source}: a PEM block has no matching END line")
    keys: list[SigningKey] = []
    seen: set[str] = set()
    for number, block in enumerate(blocks, start=1):
        label = block["label"]
        if label in _SKIPPED_LABELS:
            continue
        if label not in _KEY_LABELS:
            raise KeyFileError(
                f"{source}: PEM block {number} is labelled {label.decode()}; only unencrypted EC"
                " P-256 private keys are accepted (BEGIN PRIVATE KEY or BEGIN EC PRIVATE KEY)"
            )
        key = _import(block[0], source, number)
        kid = key.thumbprint()
        if kid in seen:
            raise KeyFileError(f"{source}: PEM block {number} repeats an earlier key")
        seen.add(kid)
        keys.append(SigningKey(kid, key))
    if not keys:
        raise KeyFileError(
            f"{source} holds no PEM private key (BEGIN PRIVATE KEY or BEGIN EC PRIVATE KEY)"
        )
    return KeySet(tuple(keys), source)


def _import(block: bytes, source: Path, number: int) -> ECKey:
    try:
        key = ECKey.import_key(block)
    except InvalidKeyTypeError:
        raise KeyFileError(_not_ec(source, number)) from None
    except Exception:
        # The library's message may quote what it read; say only where it was.
        raise KeyFileError(
            f"{source}: PEM block {number} cannot be read as a private key"
            " (damaged, encrypted or not a key)"
        ) from None
    if not key.is_private:  # what joserfc made of another key type, in some versions
        raise KeyFileError(_not_ec(source, number))
    if key.curve_name != CURVE:
        raise KeyFileError(
            f"{source}: PEM block {number} is an EC key on {key.curve_name}; ES256 needs {CURVE}"
        )
    return key


def _not_ec(source: Path, number: int) -> str:
    return f"{source}: PEM block {number} is not an EC private key; ES256 needs an EC {CURVE} key"


def load_keys(path: Path) -> KeySet:
    try:
        pem = path.read_bytes()
    except OSError as exc:
        raise KeyFileError(f"cannot read {path}: {exc.strerror}") from None
    return parse_keys(pem, path)


def generate_pem() -> bytes:
    """A new P-256 private key, PKCS#8 PEM (what the openssl line in the README writes)."""
    return ECKey.generate_key(CURVE).as_pem(private=True)


def dev_keys(path: Path) -> KeySet:
    """The development key at ``path``, created once and kept, mode 0600.

    Several workers may start at once: each writes a temp file and links it into
    place, link fails for all but one, and everybody then reads the winner's key.
    """
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".token-signing-key-")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(generate_pem())
            os.chmod(tmp, 0o600)
            with contextlib.suppress(FileExistsError):
                os.link(tmp, path)
        finally:
            os.unlink(tmp)
    return load_keys(path)
