"""A bank question as the contract writes it: in an import file
(docs/design.md#data-loading) and in a ``question.upserted`` event
(docs/design.md#topics-and-messages), checked by the same rules.

Both the loader and the consumer read questions; neither owns the format, so
it lives here with the rest of the wire contract.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class QuestionData:
    qid: int
    company_id: int | None
    type: str
    skill: str
    difficulty: str
    content: dict[str, Any]
    deleted: bool = False


class DocumentError(ValueError):
    """A JSON document breaks the data rules; the message names its source, the JSON path and why."""


def is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class Checker:
    """Reads one JSON document, failing with the path of the first bad value."""

    def __init__(self, source: str, error: type[DocumentError] = DocumentError) -> None:
        self.source = source
        self.error = error

    def fail(self, path: str, reason: str) -> DocumentError:
        return self.error(f"{self.source}: {path}: {reason}")

    def obj(self, value: Any, path: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(path, "must be an object")
        return value

    def list(self, value: Any, path: str) -> list[Any]:
        if not isinstance(value, list):
            raise self.fail(path, "must be a list")
        return value

    def int(self, value: Any, path: str) -> int:
        if not is_int(value):
            raise self.fail(path, "must be an integer")
        if not -(2**63) <= value < 2**63:
            raise self.fail(path, "is out of range")
        return int(value)

    def text(self, value: Any, path: str) -> str:
        if not isinstance(value, str) or not value.strip():
            raise self.fail(path, "must be a non-empty string")
        return value

    def storable(self, document: Any, path: str) -> None:
        found = unstorable_text(document, path)
        if found:
            raise self.fail(*found)


def unstorable_text(value: Any, path: str = "$") -> tuple[str, str] | None:
    """The JSON path and reason of the first string PostgreSQL cannot store.

    JSON allows ``\\u0000`` and lone surrogates (``\\ud800``); PostgreSQL text
    and jsonb refuse both, so they are refused here with their path instead of
    failing deep inside a transaction. Iterative: depth is the parser's concern.
    """
    stack: list[tuple[Any, str]] = [(value, path)]
    while stack:
        item, where = stack.pop()
        if isinstance(item, str):
            reason = _unstorable_reason(item)
            if reason:
                return where, reason
        elif isinstance(item, dict):
            for key, child in item.items():
                reason = _unstorable_reason(key)
                if reason:
                    return f"{where} (a key)", reason
                stack.append((child, f"{where}.{key}"))
        elif isinstance(item, list):
            stack.extend((child, f"{where}[{i}]") for i, child in enumerate(item))
    return None


def _unstorable_reason(text_value: str) -> str | None:
    if "\x00" in text_value:
        return "contains a NUL character (\\u0000), which PostgreSQL cannot store"
    try:
        text_value.encode("utf-8")
    except UnicodeEncodeError:
        return "contains a lone surrogate (\\ud800-\\udfff), which is not valid text"
    return None


def parse_question(raw: Any, source: str = "question") -> QuestionData:
    """Check one question object (the same rules as in an import file)."""
    c = Checker(source)
    c.storable(raw, "$")
    return question_at(c, raw, "$")


def question_at(c: Checker, raw: Any, p: str) -> QuestionData:
    """The question at JSON path ``p`` of the document ``c`` reads."""
    item = c.obj(raw, p)
    owner = item.get("company_id")
    deleted = item.get("deleted", False)
    if not isinstance(deleted, bool):
        raise c.fail(f"{p}.deleted", "must be true or false")
    return QuestionData(
        qid=c.int(item.get("qid"), f"{p}.qid"),
        company_id=None if owner is None else c.int(owner, f"{p}.company_id"),
        type=c.text(item.get("type"), f"{p}.type"),
        skill=c.text(item.get("skill"), f"{p}.skill"),
        difficulty=c.text(item.get("difficulty"), f"{p}.difficulty"),
        content=c.obj(item.get("content"), f"{p}.content"),
        deleted=deleted,
    )
