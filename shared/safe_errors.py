"""What may be said about an exception: in a reply, a DLQ header or a log line.

An exception's text can hold what must not leave the process: SQLAlchemy puts
the whole SQL statement into its message, psycopg2 the offending values in its
DETAIL line, a JSON error the question content. So what is shown is the
exception's type and the first line of its own message (for a SQLAlchemy
statement error, its driver error's), and a traceback names code only: file,
line and function of each frame, for every exception of the chain.
"""

from __future__ import annotations

import traceback
from types import TracebackType

from sqlalchemy.exc import StatementError

ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None] | tuple[None, None, None]


def public_message(exc: BaseException) -> str:
    """The error's type and first line, never SQL text or bound values."""
    cause = exc.orig if isinstance(exc, StatementError) and exc.orig is not None else exc
    first_line = (str(cause).strip().splitlines() or [""])[0]
    return f"{type(cause).__name__}: {first_line[:300]}".rstrip(": ")


def safe_traceback(exc_info: ExcInfo) -> str:
    """A traceback of frames (file, line, function) and public messages only."""
    exc = exc_info[1]
    if exc is None:
        return ""
    chain: list[BaseException] = []
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:  # the cause (or context) first, as Python prints it
        seen.add(id(exc))
        chain.append(exc)
        exc = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
    parts = []
    for error in reversed(chain):
        frames = "".join(f'  File "{f.filename}", line {f.lineno}, in {f.name}\n'
                         for f in traceback.extract_tb(error.__traceback__))
        parts.append(f"Traceback (most recent call last):\n{frames}{public_message(error)}")
    return "\n\nThe above exception led to:\n\n".join(parts)
