"""Small worlds (companies, bank, assessments) built in code and loaded for real."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, text

from assessment_refresh.loader import load_world, parse_world


@contextmanager
def slot_updates_refused(engine: Engine, message: str = "slot table is read-only") -> Iterator[None]:
    """A real database failure inside a refresh: a trigger that refuses every
    update of assessment_slots with ``message``, dropped on the way out."""
    name = f"refuse_{uuid.uuid4().hex[:8]}"
    with engine.begin() as conn:
        conn.execute(text(f"CREATE FUNCTION {name}() RETURNS trigger AS $$ BEGIN RAISE EXCEPTION '{message}'; "
                          "END $$ LANGUAGE plpgsql"))
        conn.execute(text(f"CREATE TRIGGER {name} BEFORE UPDATE ON assessment_slots "
                          f"FOR EACH ROW EXECUTE FUNCTION {name}()"))
    try:
        yield
    finally:
        with engine.begin() as conn:
            conn.execute(text(f"DROP TRIGGER {name} ON assessment_slots"))
            conn.execute(text(f"DROP FUNCTION {name}()"))


def question(qid: int, kind: tuple[str, str, str] = ("mcq", "python", "medium"), company_id: int | None = None,
             text_: str | None = None, deleted: bool = False) -> dict[str, Any]:
    t, skill, difficulty = kind
    return {
        "qid": qid, "company_id": company_id, "type": t, "skill": skill, "difficulty": difficulty,
        "content": {"text": text_ or f"question {qid}", "options": ["A", "B"], "answer": "A", "score": 5},
        "deleted": deleted,
    }


def load(engine: Engine, document: dict[str, Any]) -> None:
    load_world(engine, parse_world(document, "test world"), "test world")


def slots(engine: Engine, oid: int) -> list[tuple[int, int, int, int, str]]:
    """(section_idx, question_idx, qid, snapshot_version, snapshot text) of one assessment."""
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT section_idx, question_idx, qid, snapshot_version, snapshot->>'text' AS t "
                "FROM assessment_slots WHERE oid = :oid ORDER BY section_idx, question_idx"
            ),
            {"oid": oid},
        ).all()
    return [tuple(r) for r in rows]  # type: ignore[misc]


def standard_world() -> dict[str, Any]:
    """Two companies. Company 7 owns assessments 11 and 12, company 8 owns 21.

    After ``standard_changes`` is loaded: in 11, question 101 has new content,
    102 is deleted (alternatives of its kind exist), 150 is deleted with no
    alternative; in 12, nothing changes.
    """
    py = ("mcq", "python", "medium")
    rare = ("coding", "rust", "hard")
    return {
        "companies": [
            {"id": 7, "name": "Acme", "api_keys": ["acme-key-0123456789"]},
            {"id": 8, "name": "Globex", "api_keys": ["globex-key-0123456789"]},
        ],
        "questions": [
            *(question(q, py) for q in range(101, 111)),
            question(150, rare),
            question(160, ("mcq", "sql", "easy")),
            question(161, ("mcq", "sql", "easy")),
            question(180, py, company_id=8),  # private to Globex: never offered to Acme
        ],
        "assessments": [
            {"oid": 11, "company_id": 7, "name": "Backend L2",
             "sections": [{"name": "Python", "qids": [101, 102, 103]}, {"name": "Rust", "qids": [160, 150]}]},
            {"oid": 12, "company_id": 7, "name": "Data L1", "sections": [{"name": "SQL", "qids": [161]}]},
            {"oid": 21, "company_id": 8, "name": "Globex Python", "sections": [{"name": "Python", "qids": [104, 180]}]},
        ],
    }


def standard_changes() -> dict[str, Any]:
    return {
        "questions": [
            question(101, text_="question 101, reworded"),
            question(102, deleted=True),
            question(150, ("coding", "rust", "hard"), deleted=True),
        ]
    }
