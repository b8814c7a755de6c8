"""What each event says: one shape per kind, the same from every store.

Events tell an app's backend what happened (a verification approved, a range
blocked) without polling. The stores queue them in the same step as the change;
``otpgate.delivery.event_relay`` delivers them.
"""

from __future__ import annotations

from typing import Any

from otpgate.domain.ports import Block, Verification, VerificationStatus

# A final status and the event that tells of it (``verification.<name>``).
EVENT_NAMES: dict[VerificationStatus, str] = {
    "approved": "approved",
    "canceled": "canceled",
    "failed": "failed",
    "expired": "expired",
    "max_attempts_reached": "max_attempts",
    "pending": "pending",
}


def verification_data(record: Verification) -> dict[str, Any]:
    return {
        "verificationId": record.id,
        "phoneNumber": record.phone,
        "channel": record.channel,
        "purpose": record.purpose,
        "status": record.status,
    }


def block_data(block: Block) -> dict[str, Any]:
    return {
        "kind": block.kind,
        "scope": block.scope,
        "reason": block.reason,
        "endsAt": block.ends_at,
        "counts": dict(block.counts),
    }
