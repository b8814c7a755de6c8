"""What is measured: one entry per scenario, the same for both services."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    summary: str
    expected_status: int
    lua: str | None  # wrk script in bench/lua; None = the flow driver
    sends_sms: bool  # each expected answer must match one Publish at the stub


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario("health", "GET /health: the framework ceiling", 200, "health.lua", False),
        Scenario(
            "verify-wrong",
            'POST verify-otp, "000000" for a random number with no code',
            400,
            "verify_wrong.lua",
            False,
        ),
        Scenario(
            "request-otp",
            "POST request-otp for a random number: store + SNS Publish",
            200,
            "request_otp.lua",
            True,
        ),
        Scenario(
            "flow",
            "request-otp, read the code from the stub, verify-otp (2 requests)",
            200,
            None,
            True,
        ),
    )
}
