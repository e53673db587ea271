"""Fault injection for the crash tests, off unless ASSESSMENT_REFRESH_FAULT is set.

``ASSESSMENT_REFRESH_FAULT=after_db_commit:/tmp/marker`` kills the process
(as SIGKILL would: no cleanup, no offset commit) the first time it reaches
that point, and leaves the marker file so that a restarted process goes on.
"""

from __future__ import annotations

import os
from pathlib import Path

ENV = "ASSESSMENT_REFRESH_FAULT"


def crash_point(name: str) -> None:
    spec = os.environ.get(ENV)
    if not spec:
        return
    point, _, marker = spec.partition(":")
    if point != name or not marker or Path(marker).exists():
        return
    Path(marker).write_text(str(os.getpid()))
    os._exit(137)
