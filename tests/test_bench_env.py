"""The benchmark runs otpgate with production settings: they must pass check-config, or
every bench run stops at start-up (a production requirement added later, unseen)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from bench.services import _signing_keys, otpgate_env


def test_the_bench_environment_passes_check_config(tmp_path: Path) -> None:
    env = otpgate_env(3999, "redis://127.0.0.1:1/0", "http://127.0.0.1:1", "info")
    env["TOKEN_SIGNING_KEYS_FILE"] = str(_signing_keys(tmp_path))
    checked = subprocess.run(
        [sys.executable, "-m", "otpgate", "check-config"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
