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
    # For a route the Node service does not have: what it runs instead, side by side.
    node_lua: str | None = None
    node_status: int | None = None

    def script_for(self, service: str) -> str | None:
        return self.node_lua if service == "node" and self.node_lua else self.lua

    def status_for(self, service: str) -> int:
        if service == "node" and self.node_status is not None:
            return self.node_status
        return self.expected_status


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
            "v2-check-wrong",
            "Verify v2 VerificationCheck, a wrong code for a random number with none pending"
            " (Node: its verify-otp, as verify-wrong)",
            404,
            "v2_check_wrong.lua",
            False,
            node_lua="verify_wrong.lua",
            node_status=400,
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
