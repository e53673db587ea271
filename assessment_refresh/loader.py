"""`assessment-refresh load FILE.json`: companies, API keys, questions and assessments.

The whole file is checked before anything is written, and written in one
transaction: a bad file imports nothing. Loading is an upsert by id
(docs/design.md#data-loading): a changed question content gets a new
version, ``"deleted": true`` deletes, a new assessment takes snapshots of the bank as it is now and an
existing assessment keeps its snapshots.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, text

from consumer.bank import upsert_questions
from shared.apikeys import add_key
from shared.questions import Checker, DocumentError, QuestionData, question_at

T = TypeVar("T")

# Positions are stored as smallint; real assessments are far smaller.
MAX_SECTIONS = 1000
MAX_QUESTIONS_PER_SECTION = 1000


class LoadError(DocumentError):
    """The file is not a valid import; nothing was written."""


@dataclass(frozen=True)
class CompanyData:
    id: int
    name: str
    api_keys: list[str]


@dataclass(frozen=True)
class AssessmentData:
    oid: int
    company_id: int
    name: str
    sections: list[tuple[str, list[int]]]


@dataclass
class World:
    companies: list[CompanyData] = field(default_factory=list)
    questions: list[QuestionData] = field(default_factory=list)
    assessments: list[AssessmentData] = field(default_factory=list)


@dataclass(frozen=True)
class LoadSummary:
    companies: int
    api_keys: int
    questions_changed: int
    assessments_created: int
    assessments_kept: int


def parse_world(document: Any, source: str = "<input>") -> World:
    """Check a whole import document and turn it into plain data."""
    c = Checker(source, LoadError)
    c.storable(document, "$")
    root = c.obj(document, "$")
    unknown = set(root) - {"companies", "questions", "assessments"}
    if unknown:
        raise c.fail("$", f"unknown keys {sorted(unknown)}")
    world = World()
    for i, raw in enumerate(c.list(root.get("companies", []), "$.companies")):
        p = f"$.companies[{i}]"
        item = c.obj(raw, p)
        keys = [c.text(k, f"{p}.api_keys[{j}]") for j, k in enumerate(c.list(item.get("api_keys", []), f"{p}.api_keys"))]
        world.companies.append(CompanyData(c.int(item.get("id"), f"{p}.id"), c.text(item.get("name"), f"{p}.name"), keys))
    for i, raw in enumerate(c.list(root.get("questions", []), "$.questions")):
        world.questions.append(question_at(c, raw, f"$.questions[{i}]"))
    for i, raw in enumerate(c.list(root.get("assessments", []), "$.assessments")):
        p = f"$.assessments[{i}]"
        item = c.obj(raw, p)
        sections = []
        raw_sections = c.list(item.get("sections"), f"{p}.sections")
        if len(raw_sections) > MAX_SECTIONS:
            raise c.fail(f"{p}.sections", f"at most {MAX_SECTIONS} sections")
        for j, raw_section in enumerate(raw_sections):
            sp = f"{p}.sections[{j}]"
            section = c.obj(raw_section, sp)
            raw_qids = c.list(section.get("qids"), f"{sp}.qids")
            if len(raw_qids) > MAX_QUESTIONS_PER_SECTION:
                raise c.fail(f"{sp}.qids", f"at most {MAX_QUESTIONS_PER_SECTION} questions per section")
            qids = [c.int(q, f"{sp}.qids[{k}]") for k, q in enumerate(raw_qids)]
            sections.append((c.text(section.get("name"), f"{sp}.name"), qids))
        world.assessments.append(
            AssessmentData(c.int(item.get("oid"), f"{p}.oid"), c.int(item.get("company_id"), f"{p}.company_id"), c.text(item.get("name"), f"{p}.name"), sections)
        )
    _check_unique(c, "$.companies", "id", [x.id for x in world.companies])
    _check_unique(c, "$.questions", "qid", [x.qid for x in world.questions])
    _check_unique(c, "$.assessments", "oid", [x.oid for x in world.assessments])
    for i, a in enumerate(world.assessments):
        qids = [q for _, section_qids in a.sections for q in section_qids]
        if len(qids) != len(set(qids)):
            dupes = sorted({q for q in qids if qids.count(q) > 1})
            raise c.fail(f"$.assessments[{i}].sections", f"question(s) {dupes} appear more than once")
    return world


def _check_unique(c: Checker, path: str, name: str, ids: list[int]) -> None:
    seen: set[int] = set()
    for i, value in enumerate(ids):
        if value in seen:
            raise c.fail(f"{path}[{i}].{name}", f"duplicate {name} {value}")
        seen.add(value)


def read_world(path: Path) -> World:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise LoadError(f"{path}: cannot read: {exc.strerror}") from exc
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise LoadError(f"{path}: not valid UTF-8 JSON: {exc}") from exc
    except RecursionError as exc:
        raise LoadError(f"{path}: not loadable: JSON nested too deeply") from exc
    except ValueError as exc:  # e.g. an integer of more than 4300 digits
        raise LoadError(f"{path}: not loadable: {exc}") from exc
    return parse_world(document, str(path))


# Rows per statement: big enough to stay set-based, small enough for a progress bar to move.
QUESTIONS_PER_CHUNK = 5000
ASSESSMENTS_PER_CHUNK = 1000


def load_world(
    engine: Engine, world: World, source: str = "<input>", progress: Callable[[int], object] | None = None
) -> LoadSummary:
    """Write a checked world in one transaction; ``progress(n)`` is told each
    time n more questions or assessments are written."""
    with engine.begin() as conn:
        return _write(conn, world, source, progress or (lambda _n: None))


def _chunks(items: list[T], size: int) -> Iterator[list[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _write(conn: Connection, world: World, source: str, progress: Callable[[int], object]) -> LoadSummary:
    if world.companies:
        conn.execute(
            text("INSERT INTO companies (id, name) VALUES (:id, :name) ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name"),
            [{"id": x.id, "name": x.name} for x in world.companies],
        )
    _check_references(conn, world, source)
    for company in world.companies:
        for key in company.api_keys:
            add_key(conn, company.id, key)
    changed = created = 0
    for questions in _chunks(world.questions, QUESTIONS_PER_CHUNK):
        changed += upsert_questions(conn, questions)
        progress(len(questions))
    for assessments in _chunks(world.assessments, ASSESSMENTS_PER_CHUNK):
        created += _create_assessments(conn, assessments)
        progress(len(assessments))
    return LoadSummary(
        companies=len(world.companies),
        api_keys=sum(len(x.api_keys) for x in world.companies),
        questions_changed=changed,
        assessments_created=created,
        assessments_kept=len(world.assessments) - created,
    )


def _check_references(conn: Connection, world: World, source: str) -> None:
    """Every company and question an item names must exist, in the file or the database."""
    company_ids = {r[0] for r in conn.execute(text("SELECT id FROM companies"))}
    for i, q in enumerate(world.questions):
        if q.company_id is not None and q.company_id not in company_ids:
            raise LoadError(f"{source}: $.questions[{i}].company_id: unknown company {q.company_id}")
    owners = {q.qid: q.company_id for q in world.questions}
    wanted = sorted({qid for a in world.assessments for _, qids in a.sections for qid in qids} - owners.keys())
    if wanted:
        for r in conn.execute(text("SELECT qid, company_id FROM questions WHERE qid = ANY(:q)"), {"q": wanted}):
            owners[r.qid] = r.company_id
    for i, a in enumerate(world.assessments):
        if a.company_id not in company_ids:
            raise LoadError(f"{source}: $.assessments[{i}].company_id: unknown company {a.company_id}")
        for j, (_, qids) in enumerate(a.sections):
            for k, qid in enumerate(qids):
                path = f"{source}: $.assessments[{i}].sections[{j}].qids[{k}]"
                if qid not in owners:
                    raise LoadError(f"{path}: unknown question {qid}")
                if owners[qid] not in (None, a.company_id):
                    raise LoadError(f"{path}: question {qid} is private to another company")


def _create_assessments(conn: Connection, assessments: list[AssessmentData]) -> int:
    if not assessments:
        return 0
    new_oids = set(
        conn.execute(
            text(
                "INSERT INTO assessments (oid, company_id, name) "
                "SELECT * FROM unnest(CAST(:oids AS bigint[]), CAST(:companies AS bigint[]), CAST(:names AS text[])) "
                "ON CONFLICT (oid) DO NOTHING RETURNING oid"
            ),
            {
                "oids": [a.oid for a in assessments],
                "companies": [a.company_id for a in assessments],
                "names": [a.name for a in assessments],
            },
        ).scalars()
    )
    fresh = [a for a in assessments if a.oid in new_oids]
    sections = [(a.oid, j, name) for a in fresh for j, (name, _) in enumerate(a.sections)]
    slots = [(a.oid, j, k, qid) for a in fresh for j, (_, qids) in enumerate(a.sections) for k, qid in enumerate(qids)]
    if sections:
        conn.execute(
            text(
                "INSERT INTO assessment_sections (oid, section_idx, name) "
                "SELECT * FROM unnest(CAST(:o AS bigint[]), CAST(:s AS smallint[]), CAST(:n AS text[]))"
            ),
            {"o": [x[0] for x in sections], "s": [x[1] for x in sections], "n": [x[2] for x in sections]},
        )
    if slots:
        # Snapshots are the bank as it is at load time, copied inside PostgreSQL.
        conn.execute(
            text(
                "INSERT INTO assessment_slots (oid, section_idx, question_idx, qid, snapshot, snapshot_version) "
                "SELECT v.oid, v.s, v.k, v.qid, q.content, q.version "
                "FROM unnest(CAST(:o AS bigint[]), CAST(:s AS smallint[]), CAST(:k AS smallint[]), CAST(:q AS bigint[])) "
                "AS v(oid, s, k, qid) JOIN questions q ON q.qid = v.qid"
            ),
            {"o": [x[0] for x in slots], "s": [x[1] for x in slots], "k": [x[2] for x in slots], "q": [x[3] for x in slots]},
        )
    return len(fresh)
