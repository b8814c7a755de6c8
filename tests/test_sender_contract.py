"""One contract for every SMS sender, checked through the real service.

Each provider has a driver: the settings that select it (the service builds the
sender from them through ``wiring``, as in production) and how to make the
provider succeed or fail in each way the "SMS delivery" table of docs/channels.md names.
The tests know nothing of providers. Each runs one outcome through the HTTP API,
on both stores (``make_service`` parametrises them), and checks what a user and
an operator see:

1. every failure ends in its one documented answer (status, machine code,
   Retry-After), and a success in the success body with a code that verifies;
2. a failed send refunds everything it charged: no code, cooldown, send counter
   or distinct-phone entry is left in the store, the phone can ask again at once,
   and the code that was not delivered does not verify;
3. credentials the provider refuses make ``/ready`` answer 503 naming the
   provider, without a secret, until a send succeeds; other failures leave it alone;
4. no log record, at DEBUG and from any logger, carries the code, the message
   text or a secret: every test ends by checking all it logged on the way.

The code is taken where it is made (``generate_code``), because an unreachable
provider never sees it; where the provider does see the SMS, the test checks it
got that code.
"""

from __future__ import annotations

import asyncio
import logging
import re
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, ClassVar
from unittest.mock import ANY

import httpx
import orjson
import pytest
import redis

from otpgate.domain import service as service_module
from otpgate.domain.errors import SmsFailed, SmsRejected, SmsUnavailable
from otpgate.http.api import REQUEST_OK, VERIFY_OK
from otpgate.observability.logs import NOISY_LIBRARIES, quiet_libraries
from tests.conftest import Service, ServiceFactory
from tests.http_stub import HANG, Received, Reply, StubServer, aws_error, publish_ok
from tests.test_webhook import signature_ok

PHONE = "+12125550163"
OTHER_PHONE = "+12125550164"  # same client, another number: the distinct-phone limit
TTL_SECONDS = 300

# A word only the SMS text contains: if it is in a log record, the text leaked.
TEXT_MARKER = "Quokkaroo"
TEMPLATE = "{code} is your {app} code. " + TEXT_MARKER + " says: keep it to yourself."
APP_NAME = "Contractly"

WEBHOOK_SECRET = "contract-webhook-secret-5e7a9c1b3d2f4e6a"
AWS_KEY_ID = "AKIACONTRACTSUITE001"
AWS_SECRET = "contract/AwsSecret+Key0123456789abcdefXYZ"
PROVIDER_MESSAGE_ID = "contract-message-1"

# Tight enough that the whole module runs in seconds, loose enough for a loaded
# machine (a stub on loopback answers in milliseconds). With these a throttled or
# unreachable provider is tried twice (the first backoff, at least 0.125 s, fits in
# the budget) and one that never answers once (a read timeout and a backoff do not).
CONNECT_TIMEOUT = 0.3
READ_TIMEOUT = 0.3
RETRY_ATTEMPTS = 2
RETRY_SECONDS = 0.4

SETTINGS: dict[str, Any] = {
    # One send per phone and one phone per client, with a cooldown: anything a
    # failed send failed to refund shows as a 429 on the next request.
    "otp_resend_cooldown_seconds": 60,
    "phone_send_limit": 1,
    "ip_max_phones": 1,
    "rate_limit_max_requests": 100,
    "otp_ttl_seconds": TTL_SECONDS,
    "sms_message_template": TEMPLATE,
    "sms_app_name": APP_NAME,
    "sms_connect_timeout_seconds": CONNECT_TIMEOUT,
    "sms_read_timeout_seconds": READ_TIMEOUT,
    "sms_retry_max_attempts": RETRY_ATTEMPTS,
    "sms_retry_max_seconds": RETRY_SECONDS,
}

# -- what can happen, and what the docs say the client gets ---------------------------

SUCCESS = "success"
REJECTED = "number-rejected"
THROTTLED = "throttled"
UNREACHABLE = "unreachable"
TIMEOUT = "timeout"
CREDENTIALS = "credentials-refused"

FAILURES = (REJECTED, THROTTLED, UNREACHABLE, TIMEOUT, CREDENTIALS)


@dataclass(frozen=True)
class Answer:
    status: int
    code: str | None = None  # the machine code of an error answer
    message: str | None = None  # its fixed, user-facing text
    retry_after: bool = False


# The "SMS delivery" table of docs/channels.md, row by row (statuses and codes as written there).
UNAVAILABLE = Answer(503, "sms_provider_unavailable", SmsUnavailable.message, retry_after=True)
ANSWERS: dict[str, Answer] = {
    SUCCESS: Answer(200),
    REJECTED: Answer(400, "sms_number_rejected", SmsRejected.message),
    THROTTLED: UNAVAILABLE,
    UNREACHABLE: UNAVAILABLE,
    TIMEOUT: UNAVAILABLE,
    CREDENTIALS: Answer(502, "sms_provider_error", SmsFailed.message),
}


# -- drivers: how to make each provider do each of those things ---------------------------


class Driver:
    """One provider under test: its settings, and a switch for how it behaves."""

    provider: ClassVar[str]
    # What this provider can be made to do besides succeed. A failure missing here is
    # left out of that failure's parameter list, on purpose (see each driver's reason).
    failures: ClassVar[frozenset[str]]
    # The message id the client gets back on success, when the provider gives one.
    message_id: ClassVar[str | None] = None

    def __init__(self, overrides: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
        self.overrides = overrides
        self._capsys = capsys
        self.printed = ""  # everything written to stdout and stderr so far

    def settings(self) -> dict[str, Any]:
        """Settings overrides that select and configure this provider."""
        return {**SETTINGS, **self.overrides}

    def arrange(self, outcome: str) -> None:
        """From now on, answer every send with ``outcome`` (SUCCESS or a failure)."""
        assert outcome == SUCCESS or outcome in self.failures, f"{self.provider}: {outcome}?"

    def messages(self) -> list[str]:
        """Every SMS text the provider has been handed so far."""
        raise NotImplementedError

    def secrets(self) -> list[str]:
        return []

    def output(self) -> str:
        captured = self._capsys.readouterr()
        self.printed += captured.out + captured.err
        return self.printed

    def close(self) -> None:
        return None


class ConsoleDriver(Driver):
    provider = "console"
    # None: the console sender writes the SMS to stderr and returns; nothing it talks
    # to can refuse, throttle, time out or reject credentials.
    failures = frozenset()

    def messages(self) -> list[str]:
        return re.findall(r"^\[console SMS to \+\d+\] (.*)$", self.output(), re.MULTILINE)


class StubDriver(Driver):
    """A provider played by the HTTP stub, which is down until the first arrange()
    that needs it up."""

    def __init__(self, overrides: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
        super().__init__(overrides, capsys)
        self.stub = StubServer()
        self.stub.respond = self._respond
        self._outcome = SUCCESS

    def arrange(self, outcome: str) -> None:
        super().arrange(outcome)
        if outcome == UNREACHABLE:
            # Connections are refused until the stub starts listening; it cannot stop again.
            assert not self.stub.started, "arrange UNREACHABLE before anything else"
        elif not self.stub.started:
            self.stub.start()
        self._outcome = outcome

    def _respond(self, request: Received) -> Any:
        return HANG if self._outcome == TIMEOUT else self.reply(self._outcome, request)

    def reply(self, outcome: str, request: Received) -> Reply:
        raise NotImplementedError

    def close(self) -> None:
        self.stub.stop()


class WebhookDriver(StubDriver):
    """A receiver that checks the signature as a team's receiver would."""

    provider = "webhook"
    failures = frozenset(FAILURES)
    message_id = PROVIDER_MESSAGE_ID

    def settings(self) -> dict[str, Any]:
        return {"sms_webhook_url": f"{self.stub.url}/sms", **super().settings()}

    def reply(self, outcome: str, request: Received) -> Reply:
        # Refused credentials: the receiver was given another secret, so every
        # signature is wrong.
        expected = "the-receiver-now-expects-another-secret" if outcome == CREDENTIALS else None
        if not signature_ok(request, expected or WEBHOOK_SECRET):
            return Reply(401)
        if outcome == REJECTED:
            return Reply(422, b'{"error":"invalid number"}', {"content-type": "application/json"})
        if outcome == THROTTLED:
            return Reply(429)
        body = orjson.dumps({"messageId": PROVIDER_MESSAGE_ID})
        return Reply(202, body, {"content-type": "application/json"})

    def messages(self) -> list[str]:
        return [orjson.loads(r.body)["message"] for r in self.stub.received]

    def secrets(self) -> list[str]:
        return [WEBHOOK_SECRET]


class SnsDriver(StubDriver):
    """SNS's Query API, as its endpoint answers it; credentials are the access key id."""

    provider = "sns"
    failures = frozenset(FAILURES)
    message_id = PROVIDER_MESSAGE_ID

    def settings(self) -> dict[str, Any]:
        return {"sns_endpoint_url": self.stub.url, **super().settings()}

    def reply(self, outcome: str, request: Received) -> Reply:
        key_id = request.headers.get("authorization", "").partition("Credential=")[2]
        accepted = "AKIAANOTHERKEY000001" if outcome == CREDENTIALS else AWS_KEY_ID
        if not key_id.startswith(accepted + "/"):
            return aws_error(
                403,
                "InvalidClientTokenId",
                "The security token included in the request is invalid.",
            )
        if outcome == REJECTED:
            reason = f"Invalid parameter: PhoneNumber Reason: {PHONE} is not valid to publish to"
            return aws_error(400, "InvalidParameter", reason)
        if outcome == THROTTLED:
            return aws_error(400, "Throttling", "Rate exceeded")
        return publish_ok(PROVIDER_MESSAGE_ID)

    def messages(self) -> list[str]:
        return [r.form["Message"] for r in self.stub.received]

    def secrets(self) -> list[str]:
        return [AWS_SECRET, AWS_KEY_ID]


# Each driver's settings (over SETTINGS), in one dict; the stub's address is added to
# them. A variant (say, SNS through aiobotocore's own Publish, once SnsConfig has a
# fast_path flag) is one of these dicts with one more key.
CONSOLE_SETTINGS: dict[str, Any] = {"sms_provider": "console"}
WEBHOOK_SETTINGS: dict[str, Any] = {
    "sms_provider": "webhook",
    "sms_webhook_secret": WEBHOOK_SECRET,
}
SNS_SETTINGS: dict[str, Any] = {
    "sms_provider": "sns",
    "aws_region": "us-east-1",
    "aws_access_key_id": AWS_KEY_ID,
    "aws_secret_access_key": AWS_SECRET,
}


@dataclass(frozen=True)
class DriverSpec:
    kind: type[Driver]
    overrides: dict[str, Any]


# Every driver the suite runs against, by test id. This is the one place to add a
# dimension: another entry (e.g. "sns-stock": DriverSpec(SnsDriver, {**SNS_SETTINGS,
# "fast_path": False})) runs every test below against it too.
DRIVERS: dict[str, DriverSpec] = {
    "console": DriverSpec(ConsoleDriver, CONSOLE_SETTINGS),
    "webhook": DriverSpec(WebhookDriver, WEBHOOK_SETTINGS),
    "sns": DriverSpec(SnsDriver, SNS_SETTINGS),
}


def cases(outcomes: tuple[str, ...]) -> list[Any]:
    """(driver, outcome) pairs for every driver that can produce the outcome.

    The rest are absent from the list, not skipped: each driver's ``failures`` says
    what it cannot do, and why.
    """
    pairs = [
        pytest.param(name, outcome, id=f"{name}-{outcome}")
        for outcome in outcomes
        for name, spec in DRIVERS.items()
        if outcome == SUCCESS or outcome in spec.kind.failures
    ]
    assert pairs
    return pairs


# Every outcome, success included: all drivers.
ALL_CASES = cases((SUCCESS, *FAILURES))
# Failures only: console is absent, it cannot fail.
FAILURE_CASES = cases(FAILURES)


@pytest.fixture
def driver(request: pytest.FixtureRequest, capsys: pytest.CaptureFixture[str]) -> Iterator[Driver]:
    spec = DRIVERS[request.param]
    made = spec.kind(dict(spec.overrides), capsys)
    try:
        yield made
    finally:
        made.close()


@pytest.fixture
def issued_codes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every code the service makes, in order, read where it is made."""
    made: list[str] = []
    generate: Callable[[int], str] = service_module.generate_code

    def recording(length: int) -> str:
        made.append(generate(length))
        return made[-1]

    monkeypatch.setattr(service_module, "generate_code", recording)
    return made


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """Every record at DEBUG, from the moment the service is built, with the client
    libraries held at WARNING as the service's own logging set-up holds them (at DEBUG
    botocore logs the Publish parameters, the SMS text included)."""
    caplog.set_level(logging.DEBUG)
    levels = {name: logging.getLogger(name).level for name in NOISY_LIBRARIES}
    quiet_libraries(logging.DEBUG)
    yield caplog
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


async def start(make_service: ServiceFactory, driver: Driver, outcome: str) -> Service:
    driver.arrange(outcome)
    return await make_service(real_sender=True, **driver.settings())


# -- what a client gets ----------------------------------------------------------------------


def assert_answer(response: httpx.Response, outcome: str, driver: Driver) -> None:
    """The one answer the docs give for ``outcome``, nothing else."""
    expected = ANSWERS[outcome]
    assert response.status_code == expected.status, f"{outcome}: {response.text}"
    body = response.json()
    if expected.code is None:
        assert set(body) == {"message", "messageId", "expiresIn", "verificationId"}, body
        assert body["message"] == REQUEST_OK
        assert body["expiresIn"] == TTL_SECONDS
        assert isinstance(body["messageId"], str)
        assert body["messageId"]
        if driver.message_id is not None:
            assert body["messageId"] == driver.message_id
    else:
        # A send that failed names the verification it opened (now "failed").
        assert re.fullmatch(r"VE[0-9a-f]{32}", body.pop("verificationId", "")), body
        assert body == {
            "statusCode": expected.status,
            "error": HTTPStatus(expected.status).phrase,
            "message": expected.message,
            "code": expected.code,
        }
    if expected.retry_after:
        assert int(response.headers["retry-after"]) >= 1
    else:
        assert "retry-after" not in response.headers


def assert_delivered(driver: Driver, code: str) -> None:
    """The provider was last handed ``code``, in the configured text."""
    messages = driver.messages()
    assert messages, "the provider received nothing"
    assert messages[-1] == TEMPLATE.format(code=code, app=APP_NAME)


# -- what the store holds ---------------------------------------------------------------------


async def charges_left(service: Service) -> list[str]:
    """Everything sends have left in the store: codes, cooldowns, send counters and
    distinct-phone sets, on either store. Request windows (the per-client request
    limit, which every request pays whatever happens), failed-verify counts (a
    verify's, not a send's) and verification records (what the app may look up) are
    left out.

    A void that timed out on a busy machine is retried in the background: counted
    once the service has none waiting (bounded)."""
    voids = service.components.service.pending_voids
    deadline = time.monotonic() + 10
    while len(voids) and time.monotonic() < deadline:
        await asyncio.sleep(0.02)  # polling a condition, bounded
    settings = service.settings
    if settings.redis_url:
        client = redis.Redis.from_url(settings.redis_url)
        prefix = settings.redis_key_prefix
        try:
            keys = [key.decode() for key in client.scan_iter(match=f"{prefix}*", count=1000)]
        finally:
            client.close()
        # P{phones}:... (phone records), P{country:US}:q:..., P{ip}:d:..., P{...}:w
        return sorted(
            key.removeprefix(prefix)
            for key in keys
            if not key.endswith((":w", ":fails", ":ver"))  # a verification is no charge
        )
    conn = sqlite3.connect(f"file:{settings.sqlite_path}?mode=ro", uri=True)
    try:
        codes = [f"codes: {phone}" for (phone,) in conn.execute("SELECT phone FROM codes")]
        counters = [
            f"counters: {key}"
            for (key,) in conn.execute("SELECT key FROM counters")
            if not key.startswith(("w:", "fails:"))
        ]
        members = [
            f"members: {key} {member}"
            for key, member in conn.execute("SELECT key, member FROM members")
        ]
    finally:
        conn.close()
    return sorted(codes + counters + members)


# -- what the logs hold -----------------------------------------------------------------------

_RECORD_FIELDS = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "taskName"}


def record_text(record: logging.LogRecord) -> str:
    """What a handler could write of ``record``: message, extra fields, exception."""
    extras = {k: v for k, v in record.__dict__.items() if k not in _RECORD_FIELDS}
    parts = [record.name, record.getMessage(), repr(extras)]
    if record.exc_info:
        parts.append(logging.Formatter().formatException(record.exc_info))
    if record.stack_info:
        parts.append(record.stack_info)
    return " ".join(parts)


def contains_code(text: str, code: str) -> bool:
    """The code as a number of its own, not digits inside a longer one (a timestamp)."""
    return re.search(rf"(?<![0-9]){code}(?![0-9])", text) is not None


def assert_nothing_leaked(
    logs: pytest.LogCaptureFixture, driver: Driver, issued_codes: list[str]
) -> None:
    """No log record carries a code, the message text or a secret; nor, but for the
    console sender, does anything printed.

    The console sender is the one exception by design: printing the SMS (code
    included) to the terminal is all it does, in development only. It writes to
    stderr directly, never through logging, so its log records are held to the
    same rule as everyone else's.
    """
    assert issued_codes, "no code was made"
    assert any(r.name == "otpgate.access" for r in logs.records), "the capture missed the logs"
    for message in driver.messages():  # the provider got the codes we look for
        assert any(contains_code(message, code) for code in issued_codes), message
    for record in logs.records:
        text = record_text(record)
        for code in issued_codes:
            assert not contains_code(text, code), f"the code is in: {text}"
        assert TEXT_MARKER not in text, f"the message text is in: {text}"
        for secret in driver.secrets():
            assert secret not in text, f"a secret is in: {text}"
        if record.name.startswith("otpgate"):
            assert PHONE not in text, f"an unmasked phone number is in: {text}"
    printed = driver.output()
    for code in issued_codes:
        if driver.provider == "console":
            assert contains_code(printed, code)  # its whole purpose, in development
        else:
            assert not contains_code(printed, code), "the code was printed"


# -- 1. one documented answer per outcome -------------------------------------------------------


@pytest.mark.parametrize(("driver", "outcome"), ALL_CASES, indirect=["driver"])
async def test_each_outcome_ends_in_its_documented_answer(
    make_service: ServiceFactory,
    driver: Driver,
    outcome: str,
    issued_codes: list[str],
    logs: pytest.LogCaptureFixture,
) -> None:
    service = await start(make_service, driver, outcome)
    response = await service.request(PHONE)
    assert_answer(response, outcome, driver)
    [code] = issued_codes
    assert not contains_code(response.text, code)
    if outcome != UNREACHABLE:
        assert_delivered(driver, code)  # it reached the provider, which answered as arranged
    if outcome == SUCCESS:
        verified = await service.verify(PHONE, code)
        assert verified.status_code == 200, verified.text
        assert verified.json() == {
            "success": True,
            "message": VERIFY_OK,
            "token": ANY,
            "verificationId": ANY,
        }
    assert_nothing_leaked(logs, driver, issued_codes)


# -- 2. a failed send refunds everything it charged ---------------------------------------------


@pytest.mark.parametrize(("driver", "outcome"), FAILURE_CASES, indirect=["driver"])
async def test_a_failed_send_refunds_everything_it_charged(
    make_service: ServiceFactory,
    driver: Driver,
    outcome: str,
    issued_codes: list[str],
    logs: pytest.LogCaptureFixture,
) -> None:
    service = await start(make_service, driver, outcome)
    assert_answer(await service.request(PHONE), outcome, driver)
    undelivered = issued_codes[-1]

    # Nothing stays in the store: no code, cooldown, counter or distinct-phone entry.
    assert await charges_left(service) == []

    # With one phone per client, another phone reaches the provider again (and fails
    # the same way): the first phone's place in the distinct-phone set was given back.
    assert_answer(await service.request(OTHER_PHONE), outcome, driver)
    assert await charges_left(service) == []

    # The code that was not delivered does not verify.
    wrong = await service.verify(PHONE, undelivered)
    assert wrong.status_code == 400
    assert wrong.json()["code"] == "invalid_code"

    # Only refused credentials take the instance out of rotation (see the readiness
    # test): throttling, a refused number or an outage would hit every instance alike.
    if outcome != CREDENTIALS:
        assert (await service.client.get("/ready")).status_code == 200

    # Once the provider works, the first phone asks again at once, inside its cooldown
    # and its one-send quota, and the new code verifies.
    driver.arrange(SUCCESS)
    again = await service.request(PHONE)
    assert_answer(again, SUCCESS, driver)
    code = issued_codes[-1]
    assert_delivered(driver, code)
    assert (await service.verify(PHONE, code)).status_code == 200
    assert_nothing_leaked(logs, driver, issued_codes)


# -- 3. refused credentials reach readiness ----------------------------------------------------

# Console is absent: it talks to nothing that has credentials to refuse.
READINESS_CASES = cases((CREDENTIALS,))


@pytest.mark.parametrize(("driver", "outcome"), READINESS_CASES, indirect=["driver"])
async def test_refused_credentials_make_it_unready_until_a_send_succeeds(
    make_service: ServiceFactory,
    driver: Driver,
    outcome: str,
    issued_codes: list[str],
    logs: pytest.LogCaptureFixture,
) -> None:
    service = await start(make_service, driver, outcome)
    assert (await service.client.get("/ready")).status_code == 200
    for _ in range(2):
        assert_answer(await service.request(PHONE), outcome, driver)

    ready = await service.client.get("/ready")
    assert ready.status_code == 503, ready.text
    body = ready.json()
    assert body["status"] == "not ready"
    [reason] = body["reasons"]
    assert reason.startswith(f"sms provider ({driver.provider}): ")
    for secret in driver.secrets():
        assert secret not in ready.text
    for code in issued_codes:
        assert not contains_code(ready.text, code)
    # The cause is logged once at error level, not on every failing request.
    errors = [r for r in logs.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, [r.getMessage() for r in errors]

    driver.arrange(SUCCESS)
    assert_answer(await service.request(PHONE), SUCCESS, driver)
    ready = await service.client.get("/ready")
    assert ready.status_code == 200, ready.text
    assert ready.json() == {"status": "ready"}
    assert_nothing_leaked(logs, driver, issued_codes)
