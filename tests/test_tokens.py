"""A verify's token: the key file, the signer, and the token as a backend checks it.

Tokens are checked with PyJWT, a JOSE library other than the one that signs them,
against the JWKS the app serves. tests/test_tokens_process.py does the same over
a real socket with PyJWKClient, rotation included.
"""

from __future__ import annotations

import base64
import json
import os
import re
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from otpgate.config.settings import ConfigError
from otpgate.domain.codes import CodeHasher
from otpgate.domain.errors import InvalidCode
from otpgate.domain.fixed_codes import TestNumbers
from otpgate.domain.limits import AbusePolicy
from otpgate.domain.policy import OtpPolicy
from otpgate.domain.service import OtpService
from otpgate.store.reference import MemoryStore
from otpgate.tokens.keys import KeyFileError, KeySet, dev_keys, load_keys, parse_keys
from otpgate.tokens.signer import JwtSigner, TokenConfig
from otpgate.wiring import build_components, load_token_keys
from tests.conftest import Service, ServiceFactory, make_settings
from tests.fakes import CapturingSender, RecordingSigner
from tests.signing_keys import SEC1, new_key, pem, thumbprint, write_keys


@pytest.fixture
def store_kind() -> str:
    """The tokens do not depend on the store: SQLite only (both FAST_PATH modes)."""
    return "sqlite"


PHONE = "+12125550100"
CODE = "123456"
# A known code, and no cooldown between the apps of one test (they share the store).
TEST_NUMBER: dict[str, Any] = {
    "test_phone_numbers": f"{PHONE}={CODE}",
    "otp_resend_cooldown_seconds": 0,
}
CONFIG = TokenConfig(issuer="otpgate", audience="otpgate", ttl_seconds=300)


# --- the key file ---------------------------------------------------------------------------


def test_a_pkcs8_key_is_read_and_named_by_its_thumbprint(tmp_path: Path) -> None:
    key = new_key()
    path = write_keys(tmp_path / "keys.pem", key)
    keys = load_keys(path)
    assert [k.kid for k in keys.keys] == [thumbprint(key)]


def test_a_sec1_key_is_read(tmp_path: Path) -> None:
    key = new_key()
    path = tmp_path / "keys.pem"
    path.write_bytes(pem(key, SEC1))
    assert b"BEGIN EC PRIVATE KEY" in path.read_bytes()
    assert load_keys(path).signing.kid == thumbprint(key)


def test_concatenated_keys_keep_their_order_and_the_first_signs(tmp_path: Path) -> None:
    first, second, third = new_key(), new_key(), new_key()
    # What people paste together: comments, openssl's EC PARAMETERS block, both formats.
    text = (
        b"# signing since 2026-01\n"
        + pem(first)
        + b"\n-----BEGIN EC PARAMETERS-----\nBggqhkjOPQMBBw==\n-----END EC PARAMETERS-----\n"
        + pem(second, SEC1)
        + b"\r\n"
        + pem(third).replace(b"\n", b"\r\n")
    )
    keys = parse_keys(text, tmp_path / "keys.pem")
    assert [k.kid for k in keys.keys] == [thumbprint(first), thumbprint(second), thumbprint(third)]
    assert keys.signing.kid == thumbprint(first)


def _refusal(tmp_path: Path, content: bytes) -> str:
    path = tmp_path / "keys.pem"
    path.write_bytes(content)
    with pytest.raises(KeyFileError) as caught:
        load_keys(path)
    message = str(caught.value)
    assert str(path) in message
    return message


def _body_lines(text: bytes) -> list[str]:
    return [line for line in text.decode().splitlines() if line and not line.startswith("-----")]


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "holds no PEM private key"),
        (b"\n  \n", "holds no PEM private key"),
        (b"not a key at all, just some text\n", "holds no PEM private key"),
        (
            b"-----BEGIN PRIVATE KEY-----\nZ2FyYmFnZSBnYXJiYWdl\n-----END PRIVATE KEY-----\n",
            "PEM block 1 cannot be read as a private key",
        ),
        (
            b"-----BEGIN EC PRIVATE KEY-----\n!!!!\n-----END EC PRIVATE KEY-----\n",
            "PEM block 1 cannot be read as a private key",
        ),
    ],
    ids=["empty", "blank", "text", "garbage-pkcs8", "garbage-sec1"],
)
def test_a_file_without_a_usable_key_is_refused(
    tmp_path: Path, content: bytes, reason: str
) -> None:
    assert reason in _refusal(tmp_path, content)


def test_other_curves_and_key_types_are_refused_by_position(tmp_path: Path) -> None:
    p384 = pem(new_key(ec.SECP384R1()))
    message = _refusal(tmp_path, pem(new_key()) + p384)
    assert "PEM block 2 is an EC key on P-384; ES256 needs P-256" in message
    rsa_key = pem(rsa.generate_private_key(public_exponent=65537, key_size=2048))
    assert "PEM block 1 is not an EC private key" in _refusal(tmp_path, rsa_key)
    for secret in (p384, rsa_key):
        assert not any(line in message for line in _body_lines(secret))


def test_public_keys_encrypted_keys_and_cut_blocks_are_refused(tmp_path: Path) -> None:
    key = new_key()
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert "PEM block 1 is labelled PUBLIC KEY" in _refusal(tmp_path, public)
    encrypted = (
        b"-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n"
    )
    assert "PEM block 1 is labelled ENCRYPTED PRIVATE KEY" in _refusal(tmp_path, encrypted)
    cut = pem(key)[:-30]  # no END line: the key would be silently skipped
    assert "a PEM block has no matching END line" in _refusal(tmp_path, pem(new_key()) + cut)
    assert "PEM block 2 repeats an earlier key" in _refusal(tmp_path, pem(key) + pem(key, SEC1))


def test_no_error_quotes_the_file(tmp_path: Path) -> None:
    """A damaged key file is still a secret: errors say where, never what."""
    good = pem(new_key())
    lines = good.splitlines()
    damaged = b"\n".join([*lines[:2], b"A" * 64, *lines[3:]]) + b"\n"
    message = _refusal(tmp_path, good + damaged)
    assert "PEM block 2" in message
    assert not any(line in message for line in _body_lines(good + damaged))


def test_a_missing_file_names_the_variable(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, token_signing_keys_file=tmp_path / "absent.pem")
    with pytest.raises(ConfigError) as caught:
        load_token_keys(settings)
    assert str(caught.value).startswith("TOKEN_SIGNING_KEYS_FILE: cannot read ")
    assert "No such file" in str(caught.value)


def test_building_the_service_refuses_a_bad_key_file(tmp_path: Path) -> None:
    path = tmp_path / "keys.pem"
    path.write_bytes(pem(new_key(ec.SECP384R1())))
    settings = make_settings(tmp_path, token_signing_keys_file=path)
    with pytest.raises(ConfigError, match=r"^TOKEN_SIGNING_KEYS_FILE: .*P-384"):
        build_components(settings, sender=CapturingSender())


def test_the_jwks_holds_every_public_key_and_nothing_private(tmp_path: Path) -> None:
    first, second = new_key(), new_key()
    keys = load_keys(write_keys(tmp_path / "keys.pem", first, second))
    document = keys.jwks()
    assert [k["kid"] for k in document["keys"]] == [thumbprint(first), thumbprint(second)]
    for jwk, key in zip(document["keys"], (first, second), strict=True):
        assert set(jwk) == {"kty", "crv", "x", "y", "kid", "alg", "use"}
        assert (jwk["kty"], jwk["crv"], jwk["alg"], jwk["use"]) == ("EC", "P-256", "ES256", "sig")
        numbers = key.public_key().public_numbers()
        assert _int(jwk["x"]) == numbers.x
        assert _int(jwk["y"]) == numbers.y


def test_a_coordinate_with_leading_zeros_keeps_its_full_length(tmp_path: Path) -> None:
    """RFC 7518 6.2.1.2: x and y are always 32 bytes for P-256, and the kid is hashed over
    them; a shortened one makes a JWK that PyJWT refuses and a kid nobody else computes."""
    key = new_key()
    while key.public_key().public_numbers().x >= 1 << 248:  # about one key in 256
        key = new_key()
    keys = load_keys(write_keys(tmp_path / "keys.pem", key))
    [jwk] = keys.jwks()["keys"]
    assert len(base64.urlsafe_b64decode(jwk["x"] + "=")) == 32
    assert jwk["kid"] == thumbprint(key)
    jwt.PyJWK.from_dict(jwk)  # PyJWT takes it


def _int(b64: str) -> int:
    return int.from_bytes(base64.urlsafe_b64decode(b64 + "=" * (-len(b64) % 4)), "big")


# --- the development key --------------------------------------------------------------------


def test_the_development_key_is_created_once_and_kept(tmp_path: Path) -> None:
    path = tmp_path / "state" / "token-signing-key.pem"
    first = dev_keys(path)
    assert path.stat().st_mode & 0o777 == 0o600
    content = path.read_bytes()
    assert content.startswith(b"-----BEGIN PRIVATE KEY-----")
    again = dev_keys(path)
    assert again.signing.kid == first.signing.kid
    assert path.read_bytes() == content
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp file left


def test_workers_starting_together_agree_on_one_development_key(tmp_path: Path) -> None:
    path = tmp_path / "token-signing-key.pem"
    kids: list[str] = []
    start = threading.Barrier(8)

    def worker() -> None:
        start.wait()
        kids.append(dev_keys(path).signing.kid)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(kids) == 8
    assert set(kids) == {load_keys(path).signing.kid}


def test_a_restart_in_development_signs_with_the_same_key(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    assert settings.token_signing_keys_file is None
    first = load_token_keys(settings)
    assert settings.token_dev_key_file.exists()
    assert load_token_keys(settings).signing.kid == first.signing.kid


def test_a_damaged_development_key_names_its_variable(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    settings.token_dev_key_file.write_text("oops\n")
    with pytest.raises(ConfigError, match=r"^TOKEN_DEV_KEY_FILE: .*holds no PEM private key"):
        load_token_keys(settings)


# --- the signer -----------------------------------------------------------------------------


def _public(key: ec.EllipticCurvePrivateKey) -> ec.EllipticCurvePublicKey:
    return key.public_key()


def test_the_token_carries_exactly_the_claims(tmp_path: Path) -> None:
    key = new_key()
    keys = load_keys(write_keys(tmp_path / "keys.pem", key))
    signer = JwtSigner(keys.signing, TokenConfig("https://otp.example", "shop-backend", 600))
    now = time.time()
    token = signer.sign(PHONE, "ab" * 16, None, now)
    header = jwt.get_unverified_header(token)
    assert header == {"alg": "ES256", "typ": "JWT", "kid": thumbprint(key)}
    claims = jwt.decode(
        token,
        _public(key),
        algorithms=["ES256"],
        audience="shop-backend",
        issuer="https://otp.example",
        options={"require": ["iss", "aud", "sub", "iat", "exp", "jti"]},
    )
    assert claims == {
        "iss": "https://otp.example",
        "aud": "shop-backend",
        "sub": PHONE,
        "iat": int(now),
        "exp": int(now) + 600,
        "jti": "ab" * 16,
        "amr": ["sms"],
    }


def test_a_purpose_is_a_claim_only_when_given(tmp_path: Path) -> None:
    key = new_key()
    signer = JwtSigner(load_keys(write_keys(tmp_path / "k.pem", key)).signing, CONFIG)
    token = signer.sign(PHONE, "id-1", "login", time.time())
    claims = jwt.decode(token, _public(key), algorithms=["ES256"], audience="otpgate")
    assert claims["purpose"] == "login"


def test_signing_is_cheap(tmp_path: Path) -> None:
    """On the verify path: the key is parsed once; one signature is well under a millisecond."""
    signer = JwtSigner(load_keys(write_keys(tmp_path / "k.pem", new_key())).signing, CONFIG)
    now = time.time()
    started = time.perf_counter()
    for n in range(200):
        signer.sign(PHONE, str(n), None, now)
    assert (time.perf_counter() - started) / 200 < 0.002


# --- the use case -----------------------------------------------------------------------------


async def test_a_verify_signs_for_the_phone_at_the_clocks_time() -> None:
    sender, signer = CapturingSender(), RecordingSigner()
    clock = [1_800_000_000.5]
    service = OtpService(
        MemoryStore(),
        sender,
        CodeHasher(b"k" * 32),
        OtpPolicy(test_numbers=TestNumbers.from_mapping({PHONE: CODE})),
        AbusePolicy(),
        signer,
        clock=lambda: clock[0],
    )
    sent = await service.request_code(PHONE, "198.51.100.7")
    verified = await service.verify_code(PHONE, CODE)
    assert verified.token == "token-1"
    [(subject, token_id, purpose, now)] = signer.signed
    assert (subject, purpose, now) == (PHONE, None, 1_800_000_000.5)
    # The token's id is the verification's, so an app can look the verify up.
    assert re.fullmatch(r"VE[0-9a-f]{32}", token_id)
    assert token_id == sent.verification_id == verified.verification_id
    # A failed verify signs nothing.
    clock[0] += 3600  # past the resend cooldown
    await service.request_code(PHONE, "198.51.100.7")
    with pytest.raises(InvalidCode):
        await service.verify_code(PHONE, "000000")
    assert len(signer.signed) == 1
    await service.verify_code(PHONE, CODE)
    assert signer.signed[1][1] != token_id  # an id of its own per token


# --- through the app, checked with PyJWT against the served JWKS ------------------------------


async def _jwks(svc: Service) -> jwt.PyJWKSet:
    response = await svc.client.get("/.well-known/jwks.json")
    assert response.status_code == 200
    assert response.headers["cache-control"] == "public, max-age=300"
    assert response.headers["content-type"] == "application/json"
    return jwt.PyJWKSet.from_dict(response.json())


async def _token(svc: Service) -> str:
    assert (await svc.request(PHONE)).status_code == 200
    response = await svc.verify(PHONE, CODE)
    assert response.status_code == 200, response.text
    token = response.json()["token"]
    assert isinstance(token, str)
    return token


def _check(
    token: str, jwks: jwt.PyJWKSet, audience: str = "otpgate", issuer: str = "otpgate"
) -> dict[str, Any]:
    key = jwks[jwt.get_unverified_header(token)["kid"]].key
    claims: dict[str, Any] = jwt.decode(
        token,
        key,
        algorithms=["ES256"],
        audience=audience,
        issuer=issuer,
        options={"require": ["iss", "aud", "sub", "iat", "exp", "jti"]},
    )
    return claims


async def test_a_verify_answers_a_token_the_jwks_checks(make_service: ServiceFactory) -> None:
    svc = await make_service(**TEST_NUMBER)
    started = int(time.time())
    token = await _token(svc)
    claims = _check(token, await _jwks(svc))
    assert claims["sub"] == PHONE
    assert claims["amr"] == ["sms"]
    assert "purpose" not in claims
    assert started <= claims["iat"] <= time.time()
    assert claims["exp"] == claims["iat"] + 300
    assert re.fullmatch(r"VE[0-9a-f]{32}", claims["jti"])  # the verification's id
    assert jwt.get_unverified_header(token)["kid"] == svc.components.token_keys.signing.kid


async def test_issuer_audience_and_lifetime_come_from_the_settings(
    make_service: ServiceFactory,
) -> None:
    svc = await make_service(
        **TEST_NUMBER,
        token_issuer="https://verify.example.com",
        token_audience="shop-api",
        token_ttl_seconds=60,
    )
    token = await _token(svc)
    jwks = await _jwks(svc)
    claims = _check(token, jwks, audience="shop-api", issuer="https://verify.example.com")
    assert claims["exp"] - claims["iat"] == 60
    with pytest.raises(jwt.InvalidIssuerError):
        _check(token, jwks, audience="shop-api", issuer="otpgate")


async def test_a_tampered_token_is_refused(make_service: ServiceFactory) -> None:
    svc = await make_service(**TEST_NUMBER)
    token = await _token(svc)
    jwks = await _jwks(svc)
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["sub"] = "+12125550199"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    with pytest.raises(jwt.InvalidSignatureError):
        _check(f"{header}.{forged}.{signature}", jwks)
    flipped = signature[:10] + ("A" if signature[10] != "A" else "B") + signature[11:]
    with pytest.raises(jwt.InvalidSignatureError):
        _check(f"{header}.{payload}.{flipped}", jwks)


async def test_a_token_for_another_audience_is_refused(make_service: ServiceFactory) -> None:
    svc = await make_service(**TEST_NUMBER, token_audience="payments")
    token = await _token(svc)
    with pytest.raises(jwt.InvalidAudienceError):
        _check(token, await _jwks(svc), audience="otpgate")


async def test_an_expired_token_is_refused(make_service: ServiceFactory) -> None:
    svc = await make_service(**TEST_NUMBER)
    signer = JwtSigner(svc.components.token_keys.signing, CONFIG)
    token = signer.sign(PHONE, uuid.uuid4().hex, None, now=time.time() - 301)
    with pytest.raises(jwt.ExpiredSignatureError):
        _check(token, await _jwks(svc))


async def test_rotation_keeps_old_tokens_valid_until_their_key_leaves(
    make_service: ServiceFactory, tmp_path: Path
) -> None:
    a, b = new_key(), new_key()
    path = tmp_path / "keys.pem"

    before = await make_service(**TEST_NUMBER, token_signing_keys_file=write_keys(path, a))
    old = await _token(before)
    assert jwt.get_unverified_header(old)["kid"] == thumbprint(a)

    # B is prepended and signs; A stays published until A's tokens have expired.
    during = await make_service(**TEST_NUMBER, token_signing_keys_file=write_keys(path, b, a))
    new = await _token(during)
    assert jwt.get_unverified_header(new)["kid"] == thumbprint(b)
    jwks = await _jwks(during)
    assert _check(old, jwks)["sub"] == PHONE
    assert _check(new, jwks)["sub"] == PHONE

    # A removed: its tokens no longer check out, B's still do.
    after = await make_service(**TEST_NUMBER, token_signing_keys_file=write_keys(path, b))
    jwks = await _jwks(after)
    with pytest.raises(KeyError):
        _check(old, jwks)
    assert _check(new, jwks)["sub"] == PHONE


async def test_the_jwks_is_the_key_files_public_half(
    make_service: ServiceFactory, tmp_path: Path
) -> None:
    a, b = new_key(), new_key()
    path = write_keys(tmp_path / "keys.pem", a, b)
    svc = await make_service(token_signing_keys_file=path)
    response = await svc.client.get("/.well-known/jwks.json")
    document = response.json()
    assert [k["kid"] for k in document["keys"]] == [thumbprint(a), thumbprint(b)]
    assert not any("d" in k for k in document["keys"])
    assert not any(line in response.text for line in _body_lines(path.read_bytes()))
    assert (await svc.client.post("/.well-known/jwks.json")).status_code == 405


def test_keyset_needs_a_key(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError):
        KeySet((), tmp_path / "keys.pem")


def test_the_process_umask_does_not_widen_the_development_key(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        dev_keys(tmp_path / "key.pem")
    finally:
        os.umask(old)
    assert (tmp_path / "key.pem").stat().st_mode & 0o077 == 0
