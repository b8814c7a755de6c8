"""/metrics: counters and histograms that move with the requests made.

Metrics are process-wide, so every assertion compares a scrape taken before the
requests with one taken after.
"""

from __future__ import annotations

import contextlib
import re
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from otpgate.domain.errors import SmsFailed, SmsRejected, SmsUnavailable, StoreUnavailable
from otpgate.observability.metrics import MeteredSender, MeteredStore
from tests.fakes import CapturingSender, FailingSender

Sample = tuple[str, tuple[tuple[str, str], ...]]


class Scrape:
    def __init__(self, text: str) -> None:
        self.text = text
        self.values: dict[Sample, float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                key = (sample.name, tuple(sorted(sample.labels.items())))
                self.values[key] = sample.value

    def get(self, name: str, **labels: str) -> float:
        return self.values.get((name, tuple(sorted(labels.items()))), 0.0)

    def label_values(self) -> set[str]:
        return {value for _, labels in self.values for _, value in labels}


async def scrape(svc: Any) -> Scrape:
    response = await svc.client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return Scrape(response.text)


def delta(before: Scrape, after: Scrape, name: str, **labels: str) -> float:
    return after.get(name, **labels) - before.get(name, **labels)


async def test_counters_move_with_requests(make_service: Any) -> None:
    sender = CapturingSender()
    svc = await make_service(sender=sender, rate_limit_max_requests=50, otp_max_attempts=2)
    strict = await make_service(rate_limit_max_requests=1)
    a, b = "+12125550160", "+12125550161"
    before = await scrape(svc)

    # Both apps share the store, so the per-IP count too: the strict one goes first.
    assert (await strict.verify(a, "000000")).status_code == 400
    assert (await strict.verify(a, "000000")).json()["code"] == "rate_limited"
    assert (await svc.request(a)).status_code == 200
    assert (await svc.request(a)).json()["code"] == "resend_cooldown"
    code = sender.last_code(a)
    wrong = f"{(int(code) + 1) % 10**6:06d}"
    assert (await svc.verify(a, wrong)).status_code == 400
    assert (await svc.verify(a, code)).status_code == 200
    assert (await svc.verify(a, code)).json()["code"] == "invalid_code"  # used: no code
    assert (await svc.verify("+12125550162", "123456")).status_code == 400  # never sent

    assert (await svc.request(b)).status_code == 200
    wrong_b = f"{(int(sender.last_code(b)) + 1) % 10**6:06d}"
    for _ in range(2):
        assert (await svc.verify(b, wrong_b)).json()["code"] == "invalid_code"
    assert (await svc.verify(b, wrong_b)).json()["code"] == "too_many_attempts"

    assert (await svc.client.get("/nope")).status_code == 404
    assert (await svc.verify(a, "12")).json()["code"] == "invalid_body"

    after = await scrape(svc)
    d = lambda name, **labels: delta(before, after, name, **labels)  # noqa: E731
    requests = "otpgate_http_requests_total"
    assert d(requests, route="/api/v1/request-otp", status="200") == 2
    assert d(requests, route="/api/v1/request-otp", status="429") == 1
    assert d(requests, route="/api/v1/verify-otp", status="200") == 1
    assert d(requests, route="/api/v1/verify-otp", status="400") == 7
    assert d(requests, route="/api/v1/verify-otp", status="429") == 2
    assert d(requests, route="other", status="404") == 1
    assert d(requests, route="/metrics", status="200") == 1  # the first scrape
    duration = "otpgate_http_request_duration_seconds_count"
    assert d(duration, route="/api/v1/verify-otp") == 10

    verifications = "otpgate_verifications_total"
    assert d(verifications, outcome="approved") == 1
    assert d(verifications, outcome="wrong") == 3
    assert d(verifications, outcome="no_code") == 3  # none sent (twice), already used
    assert d(verifications, outcome="max_attempts") == 1

    refusals = "otpgate_limit_refusals_total"
    assert d(refusals, kind="resend_cooldown") == 1
    assert d(refusals, kind="too_many_attempts") == 1
    assert d(refusals, kind="rate_limited") == 1

    sends = "otpgate_otp_sends_total"
    assert d(sends, provider="capture", outcome="sent", country="US") == 2
    assert d("otpgate_sms_send_duration_seconds_count", provider="capture") == 2
    assert d("otpgate_sms_send_duration_seconds_sum", provider="capture") > 0

    store = "otpgate_store_operation_duration_seconds_count"
    assert d(store, operation="issue") == 3
    assert d(store, operation="consume") == 1
    # Every well-formed verify, the rate-limited one too: its window is counted in that step.
    assert d(store, operation="begin_verify") == 9
    assert d(store, operation="hit_window") == 1  # the malformed body, counted on its own
    assert d("otpgate_store_operation_duration_seconds_sum", operation="issue") > 0


@pytest.mark.parametrize(
    ("error", "outcome"),
    [
        (SmsRejected(), "rejected"),
        (SmsUnavailable(), "unavailable"),
        (SmsFailed(), "failed"),
        (RuntimeError("bug"), "error"),
    ],
)
async def test_failed_sends_counted_by_outcome(
    make_service: Any, error: Exception, outcome: str
) -> None:
    svc = await make_service(sender=FailingSender(error))
    before = await scrape(svc)
    # The in-process client re-raises a bug after its 500 is sent.
    with contextlib.suppress(RuntimeError):
        await svc.request("+447400183750")
    after = await scrape(svc)
    labels = {"provider": "failing", "outcome": outcome, "country": "GB"}
    assert delta(before, after, "otpgate_otp_sends_total", **labels) == 1
    assert delta(before, after, "otpgate_sms_send_duration_seconds_count", provider="failing") == 1


async def test_labels_never_carry_phones_codes_or_paths(make_service: Any) -> None:
    sender = CapturingSender()
    svc = await make_service(sender=sender, rate_limit_max_requests=50)
    phone = "+12125550163"
    await svc.request(phone)
    code = sender.last_code(phone)
    await svc.verify(phone, code)
    await svc.client.get("/admin/.env")
    await svc.client.get(f"/api/v1/verify-otp/{phone}/{code}")
    after = await scrape(svc)
    values = after.label_values()
    assert not [v for v in values if phone.lstrip("+") in v or "555016" in v]
    assert not [v for v in values if re.search(rf"(?<![0-9]){code}(?![0-9])", v)]
    # Unmatched paths are never labels (the admin routes' templates may be, from other
    # apps in this process: the registry is the process's).
    assert not [v for v in values if ".env" in v or v.startswith("/api/v1/verify-otp/")]
    assert phone.lstrip("+") not in after.text


async def test_metrics_can_be_turned_off(make_service: Any) -> None:
    svc = await make_service(metrics_enabled=False)
    assert (await svc.client.get("/metrics")).status_code == 404
    assert "/metrics" not in (await svc.client.get("/openapi.json")).json()["paths"]
    service = svc.components.service
    assert not isinstance(service._store, MeteredStore)
    assert not isinstance(service._sender, MeteredSender)
    # The rest works as before.
    assert (await svc.request("+12125550164")).status_code == 200


async def test_metrics_on_a_separate_port_leave_the_api_port(make_service: Any) -> None:
    svc = await make_service(metrics_port=9464)
    assert (await svc.client.get("/metrics")).status_code == 404
    assert "/metrics" not in (await svc.client.get("/openapi.json")).json()["paths"]
    # Still counted, for the separate server to expose.
    assert isinstance(svc.components.service._store, MeteredStore)


async def test_limit_refusals_counted_whatever_their_status(make_service: Any) -> None:
    """The global SMS budget answers 503, not 429, and is still a limit refusal."""
    svc = await make_service(global_sms_per_hour=1)
    before = await scrape(svc)
    assert (await svc.request("+12125550165")).status_code == 200
    refused = await svc.request("+12125550166")
    after = await scrape(svc)
    assert refused.status_code == 503
    assert refused.json()["code"] == "global_budget"
    assert delta(before, after, "otpgate_limit_refusals_total", kind="global_budget") == 1
    # A refusal that is not a limit is not counted as one.
    await svc.request("+1212")
    assert delta(after, await scrape(svc), "otpgate_limit_refusals_total", kind="invalid_body") == 0


async def test_store_unavailable_answers_counted(
    make_service: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The series the store alert reads (deploy/prometheus/otpgate.rules.yml); there at 0
    before any such answer, so a rate over it starts from the first one."""
    svc = await make_service()
    before = await scrape(svc)
    assert ("otpgate_store_unavailable_answers_total", ()) in before.values

    async def unavailable(*_: Any, **__: Any) -> None:
        raise StoreUnavailable()

    monkeypatch.setattr(svc.components.store, "begin_verify", unavailable)
    refused = await svc.verify("+12125550167", "123456")
    assert refused.json()["code"] == "store_unavailable"
    after = await scrape(svc)
    assert delta(before, after, "otpgate_store_unavailable_answers_total") == 1
