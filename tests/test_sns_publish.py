"""The lean Publish path, seen from the server: what it sends, how it signs, where its
credentials and proxy come from, and what each kind of answer or failure becomes.

The sender runs for real against the scriptable stub (``tests.http_stub``); the
request-level outcomes (HTTP answers, refunds) are covered in test_sns_delivery.py.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import datetime
import ipaddress
import logging
import re
import ssl
from collections.abc import AsyncIterator, Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any
from unittest import mock
from urllib.parse import parse_qsl

import orjson
import pytest
from botocore import auth as botocore_auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials as BotocoreCredentials
from botocore.serialize import create_serializer
from botocore.session import get_session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from otpgate.delivery.fast_sns_publish import PublishForm, parse_error
from otpgate.delivery.retry import RetryPolicy
from otpgate.delivery.sns import SnsConfig, SnsSender
from otpgate.domain.errors import SmsFailed, SmsOptedOut, SmsRejected, SmsUnavailable
from tests.http_stub import DROP, RESET, Received, Reply, StubServer, aws_error, publish_ok

PHONE = "+12125550142"
MESSAGE = "Código 123456 ✓ a&b=c+d%20 ?#\n@example.com #123456"
KEY_ID = "AKIDSTATIC"
SECRET = "static/secret+key=="
TOKEN = "FwoGZXIvYXdzEJr//////////wEaDOm+/="

Factory = Callable[..., SnsSender]


@pytest.fixture
async def make_sender(fast_path: bool) -> AsyncIterator[Factory]:
    """SnsSenders with tight timeouts and a quick retry budget, closed at teardown.

    Both ways to publish (conftest's ``fast_path``): sns_publish, or aiobotocore's own.
    """
    made: list[SnsSender] = []

    def factory(url: str | None, **overrides: Any) -> SnsSender:
        options: dict[str, Any] = {
            "region": "us-east-1",
            "endpoint_url": url,
            "connect_timeout": 0.5,
            "read_timeout": 0.5,
            "credentials": {"aws_access_key_id": KEY_ID, "aws_secret_access_key": SECRET},
            "retry": RetryPolicy(max_attempts=2, max_seconds=2.0, base_delay=0.01, max_delay=0.02),
            "fast_path": fast_path,
            **overrides,
        }
        sender = SnsSender(SnsConfig(**options))
        made.append(sender)
        return sender

    yield factory
    for sender in made:
        await sender.close()


@pytest.fixture
def no_aws_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """Nothing from this machine's AWS setup or proxies: each test sets what it needs."""
    for name in (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_CREDENTIAL_EXPIRATION",
        "AWS_PROFILE",
        "AWS_CA_BUNDLE",
    ):
        monkeypatch.delenv(name, raising=False)
    for name in ("http_proxy", "https_proxy", "no_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    return monkeypatch


def verify_signature(request: Received, url: str, secret: str, region: str = "us-east-1") -> None:
    """Recompute the signature of what the server received with botocore; it must match."""
    headers = request.headers
    key_id = headers["authorization"].split("Credential=")[1].split("/")[0]
    signed = AWSRequest(
        method=request.method,
        url=url,
        data=request.body,
        headers={"Content-Type": headers["content-type"], "Host": headers["host"]},
    )
    credentials = BotocoreCredentials(key_id, secret, headers.get("x-amz-security-token"))
    when = datetime.datetime.strptime(headers["x-amz-date"], "%Y%m%dT%H%M%SZ")
    with mock.patch.object(botocore_auth, "get_current_datetime", return_value=when):
        botocore_auth.SigV4Auth(credentials, "sns", region).add_auth(signed)
    assert headers["authorization"] == signed.headers["Authorization"]


# -- what goes over the wire ------------------------------------------------------------------


async def test_the_form_the_server_receives(make_sender: Factory, stub_server: StubServer) -> None:
    stub_server.respond = lambda _: publish_ok()
    sender = make_sender(
        stub_server.url,
        sender_id="Acme",
        origination_number="+18005550100",
        max_price=Decimal("0.50"),
    )
    assert await sender.send(PHONE, MESSAGE) == "stub-message-1"
    (request,) = stub_server.received
    assert request.method == "POST"
    assert request.path == "/"
    assert request.headers["content-type"] == "application/x-www-form-urlencoded; charset=utf-8"
    fields = parse_qsl(request.body.decode("ascii"), keep_blank_values=True, strict_parsing=True)
    assert fields == [
        ("Action", "Publish"),
        ("Version", "2010-03-31"),
        ("PhoneNumber", PHONE),
        ("Message", MESSAGE),
        ("MessageAttributes.entry.1.Name", "AWS.SNS.SMS.SMSType"),
        ("MessageAttributes.entry.1.Value.DataType", "String"),
        ("MessageAttributes.entry.1.Value.StringValue", "Transactional"),
        ("MessageAttributes.entry.2.Name", "AWS.SNS.SMS.SenderID"),
        ("MessageAttributes.entry.2.Value.DataType", "String"),
        ("MessageAttributes.entry.2.Value.StringValue", "Acme"),
        ("MessageAttributes.entry.3.Name", "AWS.MM.SMS.OriginationNumber"),
        ("MessageAttributes.entry.3.Value.DataType", "String"),
        ("MessageAttributes.entry.3.Value.StringValue", "+18005550100"),
        ("MessageAttributes.entry.4.Name", "AWS.SNS.SMS.MaxPrice"),
        ("MessageAttributes.entry.4.Value.DataType", "Number"),
        ("MessageAttributes.entry.4.Value.StringValue", "0.50"),
    ]


def test_the_form_is_encoded_as_botocore_encodes_it() -> None:
    """Byte for byte what botocore sends, so SNS parses the same fields it always did."""
    model = get_session().get_service_model("sns").operation_model("Publish")
    attributes = {"AWS.SNS.SMS.SMSType": {"DataType": "String", "StringValue": "Transactional"}}
    serialized = create_serializer("query").serialize_to_request(
        {"PhoneNumber": PHONE, "Message": MESSAGE, "MessageAttributes": attributes}, model
    )
    prepared = AWSRequest(method="POST", url="https://sns.test/", data=serialized["body"]).prepare()
    assert isinstance(prepared.body, str) and "+" in prepared.body  # spaces, as urlencode writes
    assert PublishForm(attributes).encode(PHONE, MESSAGE).decode() == prepared.body


@pytest.mark.parametrize("token", [None, TOKEN], ids=["long-term", "temporary"])
async def test_the_server_can_verify_the_signature(
    make_sender: Factory, stub_server: StubServer, token: str | None
) -> None:
    stub_server.respond = lambda _: publish_ok()
    credentials = {"aws_access_key_id": KEY_ID, "aws_secret_access_key": SECRET}
    if token:
        credentials["aws_session_token"] = token
    sender = make_sender(stub_server.url, credentials=credentials)
    await sender.send(PHONE, MESSAGE)
    await sender.send(PHONE, "second message, same connection")
    for request in stub_server.received:
        assert request.headers.get("x-amz-security-token") == token
        verify_signature(request, stub_server.url + "/", SECRET)


# -- credentials --------------------------------------------------------------------------------


async def test_credentials_from_the_environment(
    make_sender: Factory, stub_server: StubServer, no_aws_config: pytest.MonkeyPatch
) -> None:
    no_aws_config.setenv("AWS_ACCESS_KEY_ID", "AKIDFROMENV")
    no_aws_config.setenv("AWS_SECRET_ACCESS_KEY", "env-secret")
    no_aws_config.setenv("AWS_SESSION_TOKEN", "env-token")
    stub_server.respond = lambda _: publish_ok()
    sender = make_sender(stub_server.url, credentials={})
    await sender.send(PHONE, MESSAGE)
    (request,) = stub_server.received
    assert "Credential=AKIDFROMENV/" in request.headers["authorization"]
    assert request.headers["x-amz-security-token"] == "env-token"
    verify_signature(request, stub_server.url + "/", "env-secret")


async def test_refreshed_credentials_sign_the_next_send(
    make_sender: Factory, stub_server: StubServer, no_aws_config: pytest.MonkeyPatch
) -> None:
    """Credentials that expire are fetched again through the chain; no send keeps old ones."""
    soon = datetime.datetime.now(datetime.UTC) + datetime.timedelta(minutes=5)
    no_aws_config.setenv("AWS_CREDENTIAL_EXPIRATION", soon.isoformat())
    no_aws_config.setenv("AWS_ACCESS_KEY_ID", "AKIDFIRST")
    no_aws_config.setenv("AWS_SECRET_ACCESS_KEY", "first-secret")
    stub_server.respond = lambda _: publish_ok()
    sender = make_sender(stub_server.url, credentials={})
    await sender.send(PHONE, MESSAGE)
    no_aws_config.setenv("AWS_ACCESS_KEY_ID", "AKIDSECOND")
    no_aws_config.setenv("AWS_SECRET_ACCESS_KEY", "second-secret")
    await sender.send(PHONE, MESSAGE)
    first, second = stub_server.received
    assert "Credential=AKIDFIRST/" in first.headers["authorization"]
    assert "Credential=AKIDSECOND/" in second.headers["authorization"]
    verify_signature(second, stub_server.url + "/", "second-secret")


@pytest.mark.parametrize("partial", [False, True], ids=["none", "key-id-only"])
async def test_no_credentials_fails_and_reports_it(
    make_sender: Factory,
    stub_server: StubServer,
    no_aws_config: pytest.MonkeyPatch,
    partial: bool,
) -> None:
    if partial:
        no_aws_config.setenv("AWS_ACCESS_KEY_ID", "AKIDALONE")
    sender = make_sender(stub_server.url, credentials={})
    for _ in range(2):
        with pytest.raises(SmsFailed):
            await sender.send(PHONE, MESSAGE)
    assert sender.problem == "sns: no credentials"
    assert stub_server.count == 0


# -- answers --------------------------------------------------------------------------------------


def json_reply(status: int, data: object) -> Reply:
    return Reply(status, orjson.dumps(data), {"content-type": "application/x-amz-json-1.0"})


# Where aiobotocore's own publish (FAST_PATH=false) ends differently: it reads only the XML
# error documents SNS sends, and follows redirects (this one to a closed port). SNS sends
# neither JSON errors nor redirects; emulators and proxies might.
UNREADABLE = (SmsFailed, 1)
REDIRECT_FOLLOWED = (SmsUnavailable, 2)


@pytest.mark.parametrize(
    ("reply", "outcome", "attempts", "stock"),
    [
        (
            aws_error(400, "InvalidParameter", "Invalid parameter: PhoneNumber"),
            SmsRejected,
            1,
            None,
        ),
        (aws_error(400, "OptedOut", "Phone number is opted out"), SmsOptedOut, 1, None),
        (
            aws_error(400, "InvalidParameter", "Invalid parameter: Message &amp; more"),
            SmsFailed,
            1,
            None,
        ),
        (
            json_reply(400, {"Error": {"Code": "ParameterValueInvalid", "Message": "PhoneNumber"}}),
            SmsRejected,
            1,
            UNREADABLE,
        ),
        (
            json_reply(400, {"__type": "com.amazonaws.sns#Throttling", "message": "x"}),
            SmsUnavailable,
            2,
            UNREADABLE,
        ),
        (Reply(503, b""), SmsUnavailable, 2, None),
        (
            Reply(502, b"<html><body>Bad Gateway</body></html>", {"content-type": "text/html"}),
            SmsUnavailable,
            2,
            None,
        ),
        (Reply(400, b"not a document"), SmsFailed, 1, None),
        (Reply(301, b"", {"location": "http://127.0.0.1:9/"}), SmsFailed, 1, REDIRECT_FOLLOWED),
    ],
    ids=[
        "number-refused",
        "opted-out",
        "other-parameter",
        "json-number-refused",
        "json-throttled",
        "empty-503",
        "html-502",
        "garbage-400",
        "redirect-not-followed",
    ],
)
async def test_error_answers_map_like_the_client(
    make_sender: Factory,
    stub_server: StubServer,
    fast_path: bool,
    reply: Reply,
    outcome: type[Exception],
    attempts: int,
    stock: tuple[type[Exception], int] | None,
) -> None:
    if not fast_path and stock is not None:
        outcome, attempts = stock
    stub_server.respond = lambda _: reply
    sender = make_sender(stub_server.url)
    with pytest.raises(outcome):
        await sender.send(PHONE, MESSAGE)
    assert stub_server.count == attempts
    assert sender.problem is None


async def test_refused_credentials_set_the_problem(
    make_sender: Factory, stub_server: StubServer
) -> None:
    stub_server.respond = lambda _: aws_error(403, "InvalidClientTokenId", "The token is invalid")
    sender = make_sender(stub_server.url)
    with pytest.raises(SmsFailed):
        await sender.send(PHONE, MESSAGE)
    assert sender.problem == "sns: InvalidClientTokenId"
    stub_server.respond = lambda _: publish_ok()
    await sender.send(PHONE, MESSAGE)
    assert sender.problem is None


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (b"", ("", "")),
        (
            b"<ErrorResponse><Error><Type>Sender</Type><Code> Throttling </Code>"
            b"<Message>Rate &lt;exceeded&gt;</Message></Error></ErrorResponse>",
            ("Throttling", "Rate <exceeded>"),
        ),
        (
            b'{"code": "ThrottlingException:http://internal", "Message": "m"}',
            ("ThrottlingException", "m"),
        ),
        (b"[1, 2]", ("", "")),
        (b"{broken", ("", "")),
    ],
)
def test_error_documents(payload: bytes, expected: tuple[str, str]) -> None:
    assert parse_error(payload) == expected


# -- the connection -------------------------------------------------------------------------------


async def test_a_connection_dropped_mid_request_is_not_retried(
    make_sender: Factory, stub_server: StubServer
) -> None:
    """SNS may have taken it: a retry could deliver the code twice."""
    stub_server.respond = lambda _: DROP
    sender = make_sender(stub_server.url)
    with pytest.raises(SmsUnavailable):
        await sender.send(PHONE, MESSAGE)
    assert stub_server.count == 1
    stub_server.respond = lambda _: publish_ok()
    assert await sender.send(PHONE, MESSAGE) == "stub-message-1"


async def test_a_connection_reset_mid_request_is_not_retried(
    make_sender: Factory, stub_server: StubServer
) -> None:
    """aiobotocore calls a reset after the request went out a connection error, like a
    connection that never opened; Publish must still not be repeated."""
    stub_server.respond = lambda _: RESET
    sender = make_sender(stub_server.url)
    with pytest.raises(SmsUnavailable):
        await sender.send(PHONE, MESSAGE)
    assert stub_server.count == 1


async def test_a_connection_that_never_opens_is_retried(
    make_sender: Factory, refused_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    sender = make_sender(refused_url)
    with (
        caplog.at_level(logging.WARNING, logger="otpgate.sms.retry"),
        pytest.raises(SmsUnavailable),
    ):
        await sender.send(PHONE, MESSAGE)
    assert re.search(
        r"unavailable: sns publish: unreachable \(\w+\) \(2 attempt\(s\)\)", caplog.text
    )


async def test_a_proxy_that_cannot_be_reached_is_retried(
    make_sender: Factory,
    refused_url: str,
    no_aws_config: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    no_aws_config.setenv("HTTP_PROXY", refused_url)
    sender = make_sender("http://sns.proxied.invalid:8080")
    with (
        caplog.at_level(logging.WARNING, logger="otpgate.sms.retry"),
        pytest.raises(SmsUnavailable),
    ):
        await sender.send(PHONE, MESSAGE)
    assert re.search(
        r"unavailable: sns publish: unreachable \(\w+\) \(2 attempt\(s\)\)", caplog.text
    )
    assert sender.problem is None


async def test_a_connection_the_server_closed_while_idle_is_not_reused(
    make_sender: Factory, stub_server: StubServer
) -> None:
    """The server may close an idle kept-alive connection; the next send opens a new one."""
    stub_server.respond = lambda _: dataclasses.replace(publish_ok(), close=True)
    sender = make_sender(stub_server.url)
    for sent in range(1, 4):
        assert await sender.send(PHONE, MESSAGE) == "stub-message-1"
        await asyncio.to_thread(stub_server.wait_closed, sent)
    assert stub_server.count == 3
    assert stub_server.connections == 3


async def test_sends_share_one_connection(make_sender: Factory, stub_server: StubServer) -> None:
    stub_server.respond = lambda _: publish_ok()
    sender = make_sender(stub_server.url)
    for _ in range(3):
        await sender.send(PHONE, MESSAGE)
    assert stub_server.count == 3
    assert stub_server.connections == 1


# -- endpoint and proxy, as botocore resolves them ------------------------------------------------


async def test_an_http_proxy_is_used(
    make_sender: Factory, stub_server: StubServer, no_aws_config: pytest.MonkeyPatch
) -> None:
    no_aws_config.setenv("HTTP_PROXY", stub_server.url)
    stub_server.respond = lambda _: publish_ok()
    endpoint = "http://sns.proxied.invalid:8080"
    sender = make_sender(endpoint)
    assert await sender.send(PHONE, MESSAGE) == "stub-message-1"
    (request,) = stub_server.received
    assert request.path == f"{endpoint}/"
    assert request.headers["host"] == "sns.proxied.invalid:8080"
    assert dict(parse_qsl(request.body.decode()))["PhoneNumber"] == PHONE
    verify_signature(request, f"{endpoint}/", SECRET)


async def test_https_goes_through_the_proxy_to_the_partition_endpoint(
    make_sender: Factory, stub_server: StubServer, no_aws_config: pytest.MonkeyPatch
) -> None:
    """No endpoint set: the region's (cn-* is its own partition), through HTTPS_PROXY."""
    proxy = stub_server.url.replace("http://", "http://relay:pa%3Ass@")
    no_aws_config.setenv("HTTPS_PROXY", proxy)
    stub_server.respond = lambda _: Reply(403)
    sender = make_sender(None, region="cn-north-1")
    with pytest.raises(SmsFailed):
        await sender.send(PHONE, MESSAGE)
    (request,) = stub_server.received
    assert request.method == "CONNECT"
    assert request.path == "sns.cn-north-1.amazonaws.com.cn:443"
    expected = base64.b64encode(b"relay:pa:ss").decode()
    assert request.headers["proxy-authorization"] == f"Basic {expected}"


async def test_an_unreadable_ca_bundle_fails_and_reports_it(
    make_sender: Factory, no_aws_config: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    no_aws_config.setenv("AWS_CA_BUNDLE", str(tmp_path / "missing.pem"))
    sender = make_sender(None)
    with pytest.raises(SmsFailed):
        await sender.send(PHONE, MESSAGE)
    assert sender.problem == "sns: the CA bundle cannot be loaded"


# -- TLS -------------------------------------------------------------------------------------------


@pytest.fixture
def tls_stub(tmp_path: Path) -> Iterator[tuple[StubServer, Path]]:
    """An HTTPS stub on 127.0.0.1 with a self-signed certificate, and that certificate."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns stub")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "stub.pem", tmp_path / "stub.key"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_path, key_path)
    server = StubServer(tls=context)
    server.start()
    try:
        yield server, cert_path
    finally:
        server.stop()


async def test_an_untrusted_certificate_fails_without_retrying(
    make_sender: Factory, tls_stub: tuple[StubServer, Path], no_aws_config: pytest.MonkeyPatch
) -> None:
    server, _ = tls_stub
    server.respond = lambda _: publish_ok()
    sender = make_sender(server.url)
    with pytest.raises(SmsFailed):
        await sender.send(PHONE, MESSAGE)
    assert server.count == 0
    assert server.connections == 1


async def test_the_aws_ca_bundle_is_trusted(
    make_sender: Factory, tls_stub: tuple[StubServer, Path], no_aws_config: pytest.MonkeyPatch
) -> None:
    server, certificate = tls_stub
    no_aws_config.setenv("AWS_CA_BUNDLE", str(certificate))
    server.respond = lambda _: publish_ok()
    sender = make_sender(server.url)
    assert await sender.send(PHONE, MESSAGE) == "stub-message-1"
    (request,) = server.received
    verify_signature(request, server.url + "/", SECRET)


async def test_a_failed_tls_handshake_is_retried(
    make_sender: Factory, stub_server: StubServer, caplog: pytest.LogCaptureFixture
) -> None:
    """HTTPS to a server that speaks plain HTTP: the connection never opened."""
    sender = make_sender(stub_server.url.replace("http://", "https://"))
    with (
        caplog.at_level(logging.WARNING, logger="otpgate.sms.retry"),
        pytest.raises(SmsUnavailable),
    ):
        await sender.send(PHONE, MESSAGE)
    assert re.search(
        r"unavailable: sns publish: unreachable \(\w+\) \(2 attempt\(s\)\)", caplog.text
    )
    assert stub_server.count == 0
    assert sender.problem is None
