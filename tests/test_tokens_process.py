"""A backend's view of the token: `otpgate serve` running, PyJWT's PyJWKClient fetching
its JWKS over HTTP, as the README's example does. Rotation takes restarts, as in
production: the keys are read once at start-up."""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from otpgate.tokens.keys import load_keys
from otpgate.tokens.signer import JwtSigner, TokenConfig
from tests.service_process import OTPGATE, ServiceProcess, service_env
from tests.signing_keys import new_key, pem, thumbprint, write_keys

pytestmark = pytest.mark.integration  # every test here starts `otpgate serve`

PHONE = "+12125550100"
CODE = "123456"
AUDIENCE = "shop-api"
ISSUER = "https://verify.example.com"


@contextmanager
def serving(tmp_path: Path, keys_file: Path, **env: str) -> Iterator[ServiceProcess]:
    server = ServiceProcess(
        tmp_path,
        TEST_PHONE_NUMBERS=f"{PHONE}={CODE}",
        OTP_RESEND_COOLDOWN_SECONDS="0",
        TOKEN_SIGNING_KEYS_FILE=str(keys_file),
        TOKEN_ISSUER=ISSUER,
        TOKEN_AUDIENCE=AUDIENCE,
        **env,
    )
    try:
        server.wait_ready()
        yield server
    finally:
        out = server.stop()
        assert "Traceback" not in out, out
        assert "BEGIN" not in out  # no key material in the logs


def verified_token(server: ServiceProcess) -> str:
    assert server.post("/api/v1/request-otp", {"phoneNumber": PHONE}).status_code == 200
    response = server.post("/api/v1/verify-otp", {"phoneNumber": PHONE, "otp": CODE})
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"success", "message", "token"}
    return str(body["token"])


def check(token: str, client: jwt.PyJWKClient, audience: str = AUDIENCE) -> dict[str, Any]:
    """What a backend does: the key named by the token's kid, then every claim checked."""
    key = client.get_signing_key_from_jwt(token).key
    claims: dict[str, Any] = jwt.decode(
        token,
        key,
        algorithms=["ES256"],
        audience=audience,
        issuer=ISSUER,
        options={"require": ["iss", "aud", "sub", "iat", "exp", "jti"]},
    )
    return claims


def jwks_client(server: ServiceProcess) -> jwt.PyJWKClient:
    # A fresh client per server: its cache must not answer for another one.
    return jwt.PyJWKClient(f"{server.base}/.well-known/jwks.json", cache_keys=False)


def test_a_token_checks_out_against_the_served_jwks(tmp_path: Path) -> None:
    key = new_key()
    keys_file = write_keys(tmp_path / "keys.pem", key)
    with serving(tmp_path, keys_file) as server:
        jwks = httpx.get(f"{server.base}/.well-known/jwks.json", timeout=10)
        assert jwks.headers["cache-control"] == "public, max-age=300"
        assert [k["kid"] for k in jwks.json()["keys"]] == [thumbprint(key)]

        token = verified_token(server)
        client = jwks_client(server)
        claims = check(token, client)
        assert jwt.get_unverified_header(token) == {
            "alg": "ES256",
            "typ": "JWT",
            "kid": thumbprint(key),
        }
        assert claims["sub"] == PHONE
        assert claims["amr"] == ["sms"]
        assert claims["exp"] - claims["iat"] == 300
        assert abs(claims["iat"] - time.time()) < 60
        assert len(claims["jti"]) == 32
        assert "purpose" not in claims

        # Refused: a changed claim, another audience, an expired token.
        header, _, signature = token.split(".")
        other = verified_token(server)
        assert other != token
        spliced = f"{header}.{other.split('.')[1]}.{signature}"  # B's claims, A's signature
        with pytest.raises(jwt.InvalidSignatureError):
            check(spliced, client)
        with pytest.raises(jwt.InvalidAudienceError):
            check(token, client, audience="otpgate")
        signer = JwtSigner(load_keys(keys_file).signing, TokenConfig(ISSUER, AUDIENCE, 300))
        expired = signer.sign(PHONE, uuid.uuid4().hex, None, now=time.time() - 3600)
        with pytest.raises(jwt.ExpiredSignatureError):
            check(expired, client)


def test_rotation_over_restarts(tmp_path: Path) -> None:
    a, b = new_key(), new_key()
    keys_file = tmp_path / "keys.pem"

    with serving(tmp_path, write_keys(keys_file, a)) as server:
        old = verified_token(server)
        assert check(old, jwks_client(server))["sub"] == PHONE

    # B prepended: B signs from now on, A is still published for the tokens it signed.
    with serving(tmp_path, write_keys(keys_file, b, a)) as server:
        new = verified_token(server)
        assert jwt.get_unverified_header(new)["kid"] == thumbprint(b)
        client = jwks_client(server)
        assert check(old, client)["sub"] == PHONE
        assert check(new, client)["sub"] == PHONE

    # A removed once its tokens have expired: anything it signed is refused.
    with serving(tmp_path, write_keys(keys_file, b)) as server:
        client = jwks_client(server)
        with pytest.raises(jwt.PyJWKClientError, match="Unable to find a signing key"):
            check(old, client)
        assert check(new, client)["sub"] == PHONE


def _serve_once(tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*OTPGATE, "serve", "--workers", "2"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_production_refuses_to_start_without_signing_keys(tmp_path: Path) -> None:
    env = service_env(tmp_path, APP_ENV="production", SMS_PROVIDER="sns", ALLOWED_COUNTRIES="US")
    proc = _serve_once(tmp_path, env)
    assert proc.returncode == 2
    assert "TOKEN_SIGNING_KEYS_FILE: required when APP_ENV=production" in proc.stderr
    assert not (tmp_path / ".otpgate" / "token-signing-key.pem").exists()


def test_an_unusable_key_file_stops_start_up_before_any_worker(tmp_path: Path) -> None:
    keys_file = tmp_path / "keys.pem"
    keys_file.write_bytes(pem(new_key()) + pem(new_key(ec.SECP521R1())))
    proc = _serve_once(tmp_path, service_env(tmp_path, TOKEN_SIGNING_KEYS_FILE=str(keys_file)))
    assert proc.returncode == 2
    assert proc.stderr.startswith("otpgate: TOKEN_SIGNING_KEYS_FILE: ")
    assert "PEM block 2 is an EC key on P-521" in proc.stderr
    assert "worker" not in proc.stderr + proc.stdout
    for line in keys_file.read_text().splitlines():
        assert line.startswith("-----") or line not in proc.stderr + proc.stdout
