"""Moved: the file loader is assessment_refresh.loader, and question parsing is
shared.questions. The consumer imports neither from here; this name stays
only for callers not moved yet (assessment_refresh/dev.py, bench/)."""

from __future__ import annotations

from assessment_refresh.loader import LoadError, LoadSummary, World, load_world, parse_world, read_world

__all__ = ["LoadError", "LoadSummary", "World", "load_world", "parse_world", "read_world"]
