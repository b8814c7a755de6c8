"""A development key kept on disk: made once, and the same for every worker of the host.

Several workers may start at once: each writes a temp file and links it into place,
the link fails for all but one, and nobody ever reads a half-written key.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def make_once(path: Path, content: Callable[[], bytes]) -> None:
    """Write ``content()`` to ``path`` (mode 0600) unless a file is there already."""
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(content())
        os.chmod(tmp, 0o600)
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)
    finally:
        os.unlink(tmp)
