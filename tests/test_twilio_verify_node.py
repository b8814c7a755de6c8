"""The Verify v2 compatible routes, driven by the official Node `twilio` SDK against a
running `otpgate serve`: tests/node_twilio/verify_flow.mjs runs the flow and prints what
it saw as one JSON line. The server is the one tests/test_twilio_verify.py starts (its
module-scoped fixture, one process for this module).

`make test` installs the SDK from tests/node_twilio/package-lock.json (`make node-deps`);
when node_modules is missing the session installs it here with `npm ci`. Without `node`
the test fails, saying so.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests import test_twilio_verify as v2
from tests.service_process import ServiceProcess

NODE_PROJECT = Path(__file__).parent / "node_twilio"
SCRIPT = "verify_flow.mjs"
FLOW_TIMEOUT = 60
INSTALL_TIMEOUT = 300

server = v2.server


def _required(program: str) -> str:
    found = shutil.which(program)
    if found is None:
        pytest.fail(
            f"`{program}` is not on PATH: the Node SDK tests need Node.js 20+ and npm "
            "(install them, then `make node-deps`)",
            pytrace=False,
        )
    return found


@pytest.fixture(scope="session")
def node() -> str:
    """The `node` binary, with tests/node_twilio's packages installed from its lock."""
    node = _required("node")
    if not (NODE_PROJECT / "node_modules" / "twilio").is_dir():
        npm = _required("npm")
        done = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"],
            cwd=NODE_PROJECT,
            capture_output=True,
            text=True,
            timeout=INSTALL_TIMEOUT,
            check=False,
        )
        assert done.returncode == 0, f"npm ci failed:\n{done.stdout}\n{done.stderr}"
    return node


def test_node_sdk_flow(node: str, server: ServiceProcess) -> None:
    phone, second_phone = v2.PHONES[0], v2.PHONES[1]
    # No TWILIO_EDGE / TWILIO_REGION: the SDK would rewrite the host with them.
    env = {k: v for k, v in os.environ.items() if not k.startswith("TWILIO_")}
    env.update(
        OTPGATE_URL=server.base,
        TWILIO_ACCOUNT_SID=v2.ACCOUNT_SID,
        TWILIO_AUTH_TOKEN=v2.AUTH_TOKEN,
        VERIFY_SERVICE_SID=v2.SERVICE_SID,
        PHONE=phone,
        CODE=v2.CODE,
        WRONG_CODE=v2.WRONG,
        SECOND_PHONE=second_phone,
    )
    done = subprocess.run(
        [node, SCRIPT],
        cwd=NODE_PROJECT,
        env=env,
        capture_output=True,
        text=True,
        timeout=FLOW_TIMEOUT,
        check=False,
    )
    assert done.returncode == 0, f"{SCRIPT} failed:\n{done.stderr}"
    lines = done.stdout.splitlines()
    assert len(lines) == 1, done.stdout
    seen = json.loads(lines[0])

    created = seen["create"]
    assert created["httpStatus"] == 201
    assert created["status"] == "pending"
    assert created["valid"] is False
    assert created["sid"].startswith("VE") and len(created["sid"]) == 34
    assert (created["to"], created["channel"]) == (phone, "sms")
    assert created["serviceSid"] == v2.SERVICE_SID
    assert created["accountSid"] == v2.ACCOUNT_SID

    assert seen["wrongCheck"] == {"status": "pending", "valid": False, "sid": created["sid"]}
    assert seen["rightCheck"] == {"status": "approved", "valid": True, "sid": created["sid"]}
    assert seen["fetch"] == {"sid": created["sid"], "status": "approved", "to": phone}

    assert seen["cancel"]["sid"].startswith("VE")
    assert seen["cancel"]["sid"] != created["sid"]
    assert seen["cancel"]["status"] == "canceled"
    assert seen["checkAfterCancel"] == {"raised": True, "status": 404, "code": 20404}

    locked = json.loads((NODE_PROJECT / "package.json").read_text())["dependencies"]["twilio"]
    assert seen["sdkVersion"] == locked
