"""The processes under test and around them: Redis, the SNS stub, otpgate, Node.

Every one listens on 127.0.0.1 on a free port and starts from a minimal
environment, so nothing from the caller's shell (a REDIS_URL, a .env) leaks in.
"""

from __future__ import annotations

import base64
import os
import secrets
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import redis

from bench.procs import Managed, ProcessGroup, free_port

REPO = Path(__file__).resolve().parent.parent
UNLIMITED = "100000000"  # a limit no benchmark reaches within its window

# Shared by both services so that they sign and address the stub the same way.
_AWS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


# The API key the load sends with every API call ("Authorization: Bearer ...").
BENCH_API_KEY = "bench-" + "Kq4vN7sD" * 5
# The Verify v2 credentials and service the v2 scenario uses.
BENCH_V2_ACCOUNT = "AC" + "0b" * 16
BENCH_V2_TOKEN = "bench-v2-" + "Tz8rW2mQ" * 4
BENCH_V2_SERVICE = "VA" + "5e" * 16


def base_env() -> dict[str, str]:
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR")
    return {k: os.environ[k] for k in keep if k in os.environ}


def otpgate_env(
    port: int, redis_url: str, sns_url: str, log_level: str, fast_path: bool = True
) -> dict[str, str]:
    """otpgate's whole environment under benchmark: production defaults, limits raised.

    Every limit that would refuse benchmark traffic is raised *here*, and only
    here: when otpgate gains a limit (per-IP, per-country, global budget,
    pumping guard...), raising it for the benchmark is one more line below.
    """
    return {
        **base_env(),
        **_AWS,
        "APP_ENV": "production",
        "OTP_HASH_SECRET": secrets.token_urlsafe(48),
        # The authenticator apps' secrets: production refuses to start without a key,
        # and the credential database (a file in the workdir) gets its schema at start.
        "FACTOR_ENCRYPTION_KEYS": "bench:" + base64.b64encode(secrets.token_bytes(32)).decode(),
        "DATABASE_MIGRATE_ON_START": "true",
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "LOG_LEVEL": log_level,
        "FAST_PATH": "true" if fast_path else "false",
        "REDIS_URL": redis_url,
        "SMS_PROVIDER": "sns",
        "SNS_ENDPOINT_URL": sns_url,
        # --- limits raised so that the handler, not a 429, is measured ---
        "RATE_LIMIT_MAX_REQUESTS": UNLIMITED,
        "RATE_LIMIT_WINDOW_MS": "60000",
        "OTP_RESEND_COOLDOWN_SECONDS": "0",
        "PHONE_SEND_LIMIT": UNLIMITED,
        "PHONE_SEND_WINDOW_SECONDS": "600",
        "IP_MAX_PHONES": UNLIMITED,
        "COUNTRY_SMS_PER_HOUR": UNLIMITED,
        "GLOBAL_SMS_PER_HOUR": UNLIMITED,
        # The pumping guard stays on (its counters are part of every send), never trips.
        "PUMP_PREFIX_MIN_SENDS": UNLIMITED,
        "PUMP_COUNTRY_MIN_SENDS": UNLIMITED,
        # Production refuses to start without it; every benchmark number is in the US.
        "ALLOWED_COUNTRIES": "US",
        # Every API call carries a key (the load sends it to both services; the Node
        # service ignores it), so the key check is part of what is measured.
        "API_AUTH": "required",
        "API_KEYS": f"bench:{BENCH_API_KEY}",
        # The Verify v2 compatible routes, for the v2-check-wrong scenario.
        "VERIFY_V2_ACCOUNT_SID": BENCH_V2_ACCOUNT,
        "VERIFY_V2_AUTH_TOKEN": BENCH_V2_TOKEN,
        "VERIFY_V2_SERVICES": f"{BENCH_V2_SERVICE}:Bench",
    }


def node_env(port: int, redis_url: str, sns_url: str, log_level: str) -> dict[str, str]:
    """The Node service as its own harness runs it, pointed at our stub and Redis."""
    return {
        **base_env(),
        **_AWS,
        "NODE_ENV": "production",
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "LOG_LEVEL": log_level,
        "REDIS_URL": redis_url,
        "SNS_ENDPOINT": sns_url,
        "RATE_LIMIT_MAX_REQUESTS": UNLIMITED,
        "RATE_LIMIT_WINDOW_MS": "60000",
        "OTP_TTL_SECONDS": "300",
        "OTP_LENGTH": "6",
        "AWS_SDK_JS_SUPPRESS_NODE_DEPRECATION_WARNING": "1",
    }


@dataclass
class Service:
    """A running service under test."""

    name: str
    proc: Managed
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


class Redis:
    """A private redis-server without persistence: the store both services use."""

    def __init__(self, group: ProcessGroup, workdir: Path) -> None:
        if shutil.which("redis-server") is None:
            raise SystemExit("bench: redis-server missing: apt-get install -y redis-server")
        self.port = free_port()
        options = {
            "--bind": "127.0.0.1",
            "--port": str(self.port),
            "--save": "",
            "--appendonly": "no",
            "--daemonize": "no",
            "--dir": str(workdir),
        }
        argv = ["redis-server", *(part for item in options.items() for part in item)]
        self.proc = group.start("redis", argv, base_env(), workdir)
        self.client = redis.Redis(host="127.0.0.1", port=self.port)
        wait_redis(self.client, self.proc)

    def url(self, db: int) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def pids(self) -> set[int]:
        return {self.proc.pid}

    def flush(self) -> None:
        self.client.flushall()

    def used_memory(self) -> int:
        return int(self.client.info("memory")["used_memory"])

    def keys(self) -> int:
        info = self.client.info("keyspace")
        return sum(int(db["keys"]) for db in info.values())


def wait_redis(client: redis.Redis, proc: Managed, timeout: float = 10.0) -> None:
    """Until the redis-server ``proc`` answers PING; RuntimeError if it exits or times out."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            client.ping()
            return
        except redis.ConnectionError:
            if time.monotonic() > deadline or not proc.alive():
                raise RuntimeError(f"{proc.name} did not start:\n{proc.log_tail()}") from None
            time.sleep(0.05)


def start_stub(group: ProcessGroup, workdir: Path) -> tuple[Managed, int]:
    port = free_port()
    proc = group.start(
        "sns-stub",
        [sys.executable, "-m", "bench.sns_stub", "--port", str(port)],
        {**base_env(), "PYTHONPATH": str(REPO)},
        workdir,
    )
    group.wait_http(proc, port, "/stats")
    return proc, port


def start_otpgate(
    group: ProcessGroup,
    workdir: Path,
    redis_url: str,
    sns_url: str,
    log_level: str,
    workers: int | None,
    fast_path: bool = True,
    name: str = "otpgate",
    sqlite: bool = False,
) -> Service:
    port = free_port()
    env = otpgate_env(port, redis_url, sns_url, log_level, fast_path)
    # Production refuses to start without it: a verify signs a token with its first key.
    env["TOKEN_SIGNING_KEYS_FILE"] = str(_signing_keys(workdir))
    if sqlite:
        # A fresh file per start, so every run begins as empty as the flushed Redis.
        del env["REDIS_URL"]
        env["SQLITE_PATH"] = str(workdir / f"otpgate-{port}.sqlite3")
    exe = Path(sys.executable).parent / "otpgate"
    argv = [str(exe), "serve"]
    if workers:
        argv += ["--workers", str(workers)]
    # workdir, not the repo: a developer's .env must not change what is measured.
    proc = group.start(name, argv, env, workdir, chatty=True)
    try:
        group.wait_http(proc, port, "/health")
    except RuntimeError:
        check = subprocess.run(
            [str(exe), "check-config"],
            env=env,
            cwd=workdir,
            capture_output=True,
            text=True,
            check=False,
        )
        raise RuntimeError(
            f"otpgate did not start; check-config says:\n{check.stdout}{check.stderr}"
        ) from None
    return Service(name, proc, port)


def _signing_keys(workdir: Path) -> Path:
    """One P-256 key, made once per workdir, as an operator's key file would hold."""
    from otpgate.tokens.keys import generate_pem

    path = workdir / "token-signing-keys.pem"
    if not path.exists():
        path.write_bytes(generate_pem())
        path.chmod(0o600)
    return path


def start_node(
    group: ProcessGroup, node_dir: Path, redis_url: str, sns_url: str, log_level: str
) -> Service:
    port = free_port()
    proc = group.start(
        "node",
        ["node", "src/server.js"],
        node_env(port, redis_url, sns_url, log_level),
        node_dir,
        chatty=True,
    )
    group.wait_http(proc, port, "/health")
    return Service("node", proc, port)


def find_node_source() -> Path | None:
    """The Node service's sources, kept in shared/anchors beside (or above) the repo."""
    for parent in REPO.parents:
        candidate = parent / "shared" / "anchors" / "seed-fastify"
        if (candidate / "package.json").exists():
            return candidate
    return None


def prepare_node(source: Path | None, node_dir: Path) -> Path:
    """A writable copy of the Node service with its dependencies installed.

    The shared copy is read-only, so it is copied once to ``node_dir`` and
    ``npm ci`` is run there; later runs reuse it.
    """
    if (node_dir / "node_modules").is_dir():
        return node_dir
    if source is None:
        raise SystemExit(
            f"bench: no Node service at {node_dir} and its sources were not found; "
            "pass --node-src DIR (the seed-fastify folder) or --skip-node"
        )
    print(f"preparing the Node service: copy {source} -> {node_dir}, npm ci", file=sys.stderr)
    shutil.copytree(source, node_dir, dirs_exist_ok=True, ignore=shutil.ignore_patterns("results"))
    for path in [node_dir, *node_dir.rglob("*")]:
        path.chmod(path.stat().st_mode | 0o200)
    # npm's progress goes to stderr with ours: stdout carries only the table.
    subprocess.run(
        ["npm", "ci", "--no-audit", "--no-fund"], cwd=node_dir, check=True, stdout=sys.stderr
    )
    return node_dir
