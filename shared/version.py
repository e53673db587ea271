"""The service's version: the installed distribution's, one number for every document that states one."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("assessment-refresh")
except PackageNotFoundError:  # a source tree run without installing it
    __version__ = "0+unknown"
