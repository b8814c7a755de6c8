"""The SNS signer produces exactly what botocore's general SigV4 signer does."""

from __future__ import annotations

import datetime
import time
from unittest import mock

import pytest
from botocore import auth as botocore_auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials as BotocoreCredentials

from otpgate.delivery.fast_sns_publish import PublishForm, request_url
from otpgate.delivery.sigv4 import CONTENT_TYPE, Credentials, FormSigner, host_header, signing_key

KEY_ID = "AKIDEXAMPLE"
SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
TOKEN = "IQoJb3JpZ2luX2VjEK7//////////wEaCXVzLWVhc3QtMSJHMEUCIQ+/=="

ATTRIBUTES = {
    "AWS.SNS.SMS.SMSType": {"DataType": "String", "StringValue": "Transactional"},
    "AWS.SNS.SMS.SenderID": {"DataType": "String", "StringValue": "Acme"},
    "AWS.SNS.SMS.MaxPrice": {"DataType": "Number", "StringValue": "0.25"},
}
MESSAGES = [
    "123456 is your code",
    "Código 123456, não partilhe. 认证码 ✓ 🎉 ’",  # noqa: RUF001
    "a&b=c+d%20e%zz ?#/\\ 'quoted' \"double\"\n@example.com #123456",
]


def botocore_headers(
    url: str, body: bytes, region: str, when: datetime.datetime, token: str | None
) -> dict[str, str]:
    """What botocore's SigV4Auth adds to the same request at the same instant."""
    request = AWSRequest(method="POST", url=url, data=body, headers={"Content-Type": CONTENT_TYPE})
    signer = botocore_auth.SigV4Auth(BotocoreCredentials(KEY_ID, SECRET, token), "sns", region)
    with mock.patch.object(botocore_auth, "get_current_datetime", return_value=when):
        signer.add_auth(request)
    return {k.lower(): v for k, v in request.headers.items()}


@pytest.mark.parametrize("token", [None, TOKEN], ids=["long-term", "temporary"])
@pytest.mark.parametrize("message", MESSAGES, ids=["ascii", "non-ascii", "reserved"])
@pytest.mark.parametrize(
    ("endpoint", "region", "when"),
    [
        ("https://sns.us-east-1.amazonaws.com", "us-east-1", "2026-11-25T22:30:05"),
        ("https://sns.cn-north-1.amazonaws.com.cn", "cn-north-1", "2024-02-29T00:00:00"),
        ("http://127.0.0.1:4566/", "eu-west-1", "2025-12-31T23:59:59"),
        ("https://sns.example.test:8443/sns", "ap-southeast-2", "2030-01-01T12:00:00"),
    ],
    ids=["us-east-1", "cn-north-1", "emulator-port", "path-and-port"],
)
def test_signature_matches_botocore(
    endpoint: str, region: str, when: str, message: str, token: str | None
) -> None:
    url = request_url(endpoint)
    instant = datetime.datetime.fromisoformat(when)
    body = PublishForm(ATTRIBUTES).encode("+12125550142", message)
    ours = FormSigner(url, region=region, service="sns").headers(
        body,
        Credentials(KEY_ID, SECRET, token),
        now=instant.replace(tzinfo=datetime.UTC).timestamp(),
    )
    theirs = botocore_headers(url, body, region, instant, token)
    assert ours["Authorization"] == theirs["authorization"]
    assert ours["X-Amz-Date"] == theirs["x-amz-date"]
    assert ours["Content-Type"] == theirs["content-type"]
    assert ours.get("X-Amz-Security-Token") == theirs.get("x-amz-security-token")
    assert ours["Host"] == botocore_auth._host_from_url(url)


def test_a_different_day_signs_differently() -> None:
    """The cached key is per day: a stale one would make every request after midnight fail."""
    url = request_url("https://sns.us-east-1.amazonaws.com")
    signer = FormSigner(url, region="us-east-1", service="sns")
    body = PublishForm(ATTRIBUTES).encode("+12125550142", MESSAGES[0])
    credentials = Credentials(KEY_ID, SECRET)
    for when in ("2026-11-25T23:59:59", "2026-11-26T00:00:00", "2026-11-26T00:00:01"):
        instant = datetime.datetime.fromisoformat(when)
        ours = signer.headers(
            body, credentials, now=instant.replace(tzinfo=datetime.UTC).timestamp()
        )
        theirs = botocore_headers(url, body, "us-east-1", instant, None)
        assert ours["Authorization"] == theirs["authorization"]


def test_the_signing_key_is_derived_once_a_day() -> None:
    signer = FormSigner(
        request_url("https://sns.us-east-1.amazonaws.com"), region="us-east-1", service="sns"
    )
    credentials = Credentials(KEY_ID, "a-secret-of-this-test-only")
    now = time.time()
    signer.headers(b"Action=Publish", credentials, now=now)
    before = signing_key.cache_info()
    signer.headers(b"Action=Publish&Message=other", credentials, now=now + 1)
    after = signing_key.cache_info()
    assert after.misses == before.misses
    assert after.hits == before.hits + 1


@pytest.mark.parametrize(
    ("url", "host"),
    [
        ("https://SNS.us-east-1.amazonaws.com/", "sns.us-east-1.amazonaws.com"),
        ("https://sns.us-east-1.amazonaws.com:443/", "sns.us-east-1.amazonaws.com"),
        ("http://localhost:80/", "localhost"),
        ("http://localhost:4566/", "localhost:4566"),
        ("http://[::1]:4566/", "[::1]:4566"),
    ],
)
def test_host_is_signed_as_botocore_signs_it(url: str, host: str) -> None:
    assert host_header(url) == host == botocore_auth._host_from_url(url)
