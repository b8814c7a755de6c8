"""ASGI entry point for uvicorn workers (and any other ASGI server).

Each worker process imports this module, so each builds its own store
connection and client from the same environment.
"""

from __future__ import annotations

import gc
import sys

from otpgate.http.app import create_app
from otpgate.logs import configure_logging
from otpgate.settings import ConfigError, load_settings
from otpgate.wiring import build_components


def _build() -> object:
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"otpgate: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    configure_logging(settings.log_level, json_lines=settings.log_json)
    app = create_app(build_components(settings))
    # Start-up leaves ~40k long-lived objects (libphonenumber metadata, AWS service
    # models); frozen, the collector stops rescanning them during requests, which
    # is what made the slowest requests slow.
    gc.collect()
    gc.freeze()
    return app


app = _build()
