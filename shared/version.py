"""The service's version: pyproject.toml's ``version``, the one place it is written.

Read at run time from the installed distribution's metadata (which pip or uv
wrote from pyproject.toml), so ``assessment-refresh --version``, /healthz and
the OpenAPI and AsyncAPI documents' ``info.version`` cannot disagree with the
wheel. Code run from a source tree that was never installed reads
pyproject.toml itself; anything else says ``0+unknown`` (a valid PEP 440
version that sorts below every release) rather than failing to start.
"""

from __future__ import annotations

import tomllib
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

DISTRIBUTION = "assessment-refresh"
UNKNOWN = "0+unknown"
SOURCE_PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def source_tree_version(pyproject: Path) -> str | None:
    """The version in ``pyproject``, if it is this project's; None otherwise."""
    try:
        project = tomllib.loads(pyproject.read_text())["project"]
    except (OSError, tomllib.TOMLDecodeError, KeyError):
        return None
    found = project.get("version")
    return found if project.get("name") == DISTRIBUTION and isinstance(found, str) else None


def read_version(pyproject: Path = SOURCE_PYPROJECT) -> str:
    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:
        return source_tree_version(pyproject) or UNKNOWN


__version__ = read_version()

# The Server header of the HTTP servers the service runs itself (the API's
# separate metrics port, the consumer's health port): what answers, never
# which Python runs it. (/healthz names the version, for who asks.)
SERVER_NAME = DISTRIBUTION
