"""The ``otpgate`` command: ``serve``, ``check-config``, ``migrate`` and ``init``.

Settings come from the environment and ``.env`` (see .env.example); the few
options below override them for one run.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import os
import shutil
import socket
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from otpgate import __version__
from otpgate.config.settings import ConfigError, Settings, load_settings

if TYPE_CHECKING:
    from otpgate.runtime.connections import ConnectionLimits

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

log = logging.getLogger("otpgate")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="otpgate", description=__doc__)
    parser.add_argument("--version", action="version", version=f"otpgate {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser(
        "serve",
        help="run the HTTP service",
        description="Run the HTTP service. Every worker is a process of its own that shares"
        " the store (Redis, or the SQLite file), so limits and codes hold across workers.",
    )
    serve.add_argument("--host", help="listen address (default: HOST, or 127.0.0.1)")
    serve.add_argument("--port", type=int, help="listen port (default: PORT, or 3000)")
    serve.add_argument(
        "--workers",
        type=int,
        help="worker processes sharing the store (default: WORKERS, or the CPU count)",
    )

    sub.add_parser(
        "check-config",
        help="validate the environment and .env, print the result",
        description="Validate the environment and .env and print the effective settings,"
        " secrets redacted. Exits 2 when a setting is invalid, naming the variable; with"
        " REDIS_URL, also when the server can never work as configured.",
    )
    sub.add_parser(
        "migrate",
        help="create or upgrade the credential database's schema (DATABASE_URL)",
        description="Apply the schema migrations the credential database (DATABASE_URL) has"
        " not had yet; nothing when it is up to date. Safe to run from several hosts at"
        " once. Exits 1 when the database does not answer.",
    )
    init = sub.add_parser(
        "init",
        help="write production's secrets into DIR, print the settings to add",
        description="Write what production needs into files of mode 0600 in DIR (created"
        " 0700): the code-hashing key, an ES256 signing key, an API key and an admin key"
        " (and with --verify-v2 a Verify v2 token). Never overwrites a file: when one"
        " exists, nothing is written and it is named (exit 2). Prints the settings to add,"
        " which name the files or hold the keys' SHA-256, never a secret.",
    )
    init.add_argument("directory", metavar="DIR", type=Path, help="where the files go")
    init.add_argument(
        "--verify-v2",
        metavar="NAME",
        help="also an account, a token and a service of this friendly name for the"
        " Verify v2 compatible API",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "init":
        return _init(args.directory, args.verify_v2)
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"otpgate: {exc}", file=sys.stderr)
        return 2
    if args.command == "check-config":
        return _check_config(settings)
    if args.command == "migrate":
        return _migrate(settings)
    return _serve(settings, args)


def _migrate(settings: Settings) -> int:
    import asyncio

    from sqlalchemy.exc import SQLAlchemyError

    from otpgate.credentials.engine import redacted
    from otpgate.wiring import credential_schema

    where = redacted(settings.database_url)
    try:
        state = asyncio.run(credential_schema(settings, migrate=True))
    except (SQLAlchemyError, OSError, TimeoutError) as exc:
        print(f"otpgate: cannot migrate {where}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(f"credential database {where}: schema at {state.current}")
    return 0


def _init(directory: Path, verify_v2: str | None) -> int:
    from otpgate.cli.init import InitError, init

    try:
        print(init(directory, verify_v2=verify_v2))
    except InitError as exc:
        print(f"otpgate: {exc}", file=sys.stderr)
        return 2
    return 0


def _check_config(settings: Settings) -> int:
    from otpgate.cli.config_report import describe
    from otpgate.wiring import check_store

    try:
        report = describe(settings)
        # As `serve` would: a Redis that can never work as configured is refused here
        # too; one that does not answer now is an outage, warned about on stderr.
        check_store(settings)
    except ConfigError as exc:  # the signing key file, a template or Redis cannot be used
        print(f"otpgate: {exc}", file=sys.stderr)
        return 2
    print(report)
    return 0


def _serve(settings: Settings, args: argparse.Namespace) -> int:
    from otpgate.config.hash_key import load_hash_key
    from otpgate.observability.logs import configure_logging
    from otpgate.wiring import (
        START_UP_WARNED_ENV,
        check_credentials,
        check_store,
        load_templates,
        load_token_keys,
        log_start_up_warnings,
        recover_sends,
    )

    # This process's own lines (a fast path turned off, a worker replaced) look like
    # the workers'.
    configure_logging(settings.log_level, json_lines=settings.log_json)
    # Create the development keys once, here, before workers race for them; and refuse a
    # signing key file or templates that cannot be used before any worker starts (and
    # fails) on them.
    load_hash_key(settings)
    try:
        load_token_keys(settings)
        load_templates(settings)
        # A refused certificate, or one the server wants and was not given, stops here,
        # not in every worker.
        check_store(settings)
        # A credential schema that is behind stops here (or is migrated, when asked).
        check_credentials(settings)
    except ConfigError as exc:
        print(f"otpgate: {exc}", file=sys.stderr)
        return 2
    recover_sends(settings)  # before any worker serves a retry of one of them
    # Once for the service, here; every worker (and any that replaces one) inherits the
    # variable that tells it not to log them again.
    log_start_up_warnings(settings)
    os.environ[START_UP_WARNED_ENV] = "1"
    host = args.host or settings.host
    port = args.port or settings.port
    workers = args.workers or settings.workers or os.cpu_count() or 1
    for name, other in (
        ("METRICS_PORT", settings.metrics_port),
        ("ADMIN_PORT", settings.admin_port),
    ):
        if other is not None and other == port:
            print(f"otpgate: {name} must differ from the listen port {port}", file=sys.stderr)
            return 2
    admin = None
    if settings.admin_port is not None:
        admin = (settings.admin_host or host, settings.admin_port)
    config = uvicorn_config(settings, host, port)
    limits = connection_limits(settings)
    _announce(settings, host, port, workers)
    with _metrics_dir(settings, workers), _metrics_server(settings, host):
        if workers == 1:
            return _run_one(config, limits, (host, port), admin)
        return _run_workers(config, limits, (host, port), admin, workers, settings)


Address = tuple[str, int]


def _run_one(
    config: dict[str, Any], limits: ConnectionLimits, api: Address, admin: Address | None
) -> int:
    """One uvicorn server in this process; with ADMIN_PORT, on both sockets."""
    import uvicorn

    from otpgate.runtime.server import Server

    server = Server(uvicorn.Config(**config), limits=limits)
    if admin is None:
        server.run()
    else:
        # Bound here: uvicorn binds one address only, and serves any sockets it is given.
        with contextlib.ExitStack() as bound:
            sockets = []
            for host, port in (api, admin):
                try:
                    sockets.append(bound.enter_context(_bound(host, port)))
                except OSError as exc:
                    print(f"otpgate: cannot listen on {host}:{port}: {exc}", file=sys.stderr)
                    return 1
            server.run(sockets=sockets)
    return 0 if server.started else 3  # uvicorn's own exit code for a failed start


def _bound(host: str, port: int) -> socket.socket:
    """A listening socket on (host, port), without SO_REUSEPORT (as uvicorn binds one)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.create_server((host, port), family=family, backlog=2048)


def _run_workers(
    config: dict[str, Any],
    limits: ConnectionLimits,
    api: Address,
    admin: Address | None,
    workers: int,
    settings: Settings,
) -> int:
    """``workers`` processes, each on a socket of its own (and an admin one, with ADMIN_PORT)."""
    from otpgate.runtime.workers import Supervisor, listening_sockets

    sockets: list[socket.socket] = []
    admin_sockets: list[socket.socket] = []
    at = api
    try:
        sockets = listening_sockets(*api, workers)
        if admin is not None:
            at = admin
            admin_sockets = listening_sockets(*admin, workers)
    except OSError as exc:
        for sock in sockets:
            sock.close()
        print(f"otpgate: cannot listen on {at[0]}:{at[1]}: {exc}", file=sys.stderr)
        return 1
    grace = settings.effective_shutdown_timeout
    return Supervisor(config, sockets, grace, admin_sockets, limits).run()


def _announce(settings: Settings, host: str, port: int, workers: int) -> None:
    """Say where the service listens, so a newcomer knows where to point curl."""
    base = _base_url(host, port)
    store = "redis" if settings.redis_url else f"sqlite ({settings.sqlite_path})"
    log.info(
        "listening on %s with %d worker(s), %s store, %s SMS; API docs at %s/docs",
        base,
        workers,
        store,
        settings.effective_sms_provider,
        base,
    )
    if settings.admin_api_keys:
        admin = base
        if settings.admin_port is not None:
            admin = _base_url(settings.admin_host or host, settings.admin_port)
        log.info("admin dashboard at %s/admin", admin)


def _base_url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def uvicorn_config(settings: Settings, host: str, port: int) -> dict[str, Any]:
    """uvicorn's keyword arguments, for ``uvicorn.run`` and for each worker."""
    from otpgate.runtime import fast_path

    config: dict[str, Any] = {
        "app": "otpgate.asgi:app",
        "host": host,
        "port": port,
        "log_config": None,
        "access_log": False,
        "server_header": False,
        # TRUSTED_PROXIES alone decides whom X-Forwarded-For is believed from;
        # uvicorn would otherwise rewrite the client address for 127.0.0.1.
        "proxy_headers": False,
        "timeout_graceful_shutdown": math.ceil(settings.effective_shutdown_timeout),
        "loop": "auto",
        # No route speaks WebSocket, and an upgraded connection would leave the guard
        # that keeps its deadlines and its drain (otpgate.runtime.connections).
        "ws": "none",
    }
    # Decided here, once, before any worker starts: each worker is given the choice.
    if fast_path.enabled(fast_path.SERVER_PROTOCOL, settings.fast_path):
        config["http"] = "otpgate.http.fast_protocol:HttpProtocol"
    return config


def connection_limits(settings: Settings) -> ConnectionLimits:
    """What each worker holds its connections to (HTTP_HEADER_TIMEOUT_SECONDS...)."""
    from otpgate.runtime.connections import ConnectionLimits

    return ConnectionLimits(
        header_timeout=settings.http_header_timeout_seconds,
        body_timeout=settings.http_body_timeout_seconds,
        max_connections=settings.http_max_connections_per_worker,
    )


@contextlib.contextmanager
def _metrics_dir(settings: Settings, workers: int) -> Iterator[None]:
    """Give several workers one directory to count in, so a scrape adds them all up.

    PROMETHEUS_MULTIPROC_DIR, when set, is used (and its stale files from an earlier
    run removed); otherwise a fresh temporary directory is made and deleted at exit.
    The workers inherit the variable, and read it before creating any metric.
    """
    given = os.environ.get(MULTIPROC_ENV)
    if given:
        Path(given).mkdir(parents=True, exist_ok=True)
        for stale in Path(given).glob("*.db"):
            stale.unlink(missing_ok=True)
        yield
        return
    if not settings.metrics_enabled or workers < 2:
        yield
        return
    path = tempfile.mkdtemp(prefix="otpgate-metrics-")
    os.environ[MULTIPROC_ENV] = path
    try:
        yield
    finally:
        os.environ.pop(MULTIPROC_ENV, None)
        shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def _metrics_server(settings: Settings, host: str) -> Iterator[None]:
    """With METRICS_PORT, serve /metrics there, from this (the supervising) process."""
    if not settings.metrics_enabled or settings.metrics_port is None:
        yield
        return
    from prometheus_client import start_http_server

    from otpgate.observability.metrics import scrape_registry

    server, thread = start_http_server(
        settings.metrics_port,
        addr=settings.metrics_host or host,
        registry=scrape_registry(),
    )
    try:
        yield
    finally:
        server.shutdown()
        thread.join(timeout=5)
