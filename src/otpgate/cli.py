"""The ``otpgate`` command: ``serve`` and ``check-config``."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from otpgate import __version__
from otpgate.settings import ConfigError, Settings, load_settings


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="otpgate", description=__doc__)
    parser.add_argument("--version", action="version", version=f"otpgate {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the HTTP service")
    serve.add_argument("--host", help="listen address (default: HOST, or 127.0.0.1)")
    serve.add_argument("--port", type=int, help="listen port (default: PORT, or 3000)")
    serve.add_argument(
        "--workers",
        type=int,
        help="worker processes sharing the store (default: WORKERS, or the CPU count)",
    )

    sub.add_parser("check-config", help="validate the environment and .env, print the result")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"otpgate: {exc}", file=sys.stderr)
        return 2
    if args.command == "check-config":
        return _check_config(settings)
    return _serve(settings, args)


def _check_config(settings: Settings) -> int:
    from otpgate.config_report import describe

    print(describe(settings))
    return 0


def _serve(settings: Settings, args: argparse.Namespace) -> int:
    import uvicorn

    from otpgate.hash_key import load_hash_key

    # Create the development key once, here, before workers race for it.
    load_hash_key(settings)
    host = args.host or settings.host
    port = args.port or settings.port
    workers = args.workers or settings.workers or os.cpu_count() or 1
    uvicorn.run(
        "otpgate.asgi:app",
        host=host,
        port=port,
        workers=workers,
        log_config=None,
        access_log=False,
        server_header=False,
        timeout_graceful_shutdown=int(settings.shutdown_timeout_seconds),
        loop="auto",
        http="auto",
    )
    return 0
