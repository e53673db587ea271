"""Loads what a refresh needs and applies its plan, in a bounded number of queries.

A whole refresh (one assessment or a chunk of them) costs at most five
statements, whatever the number of assessments and questions: lock the
assessments, read the slots that change, rank the replacement candidates
(only when a question is deleted), update the changed slots, stamp the
changed assessments. The set-work is PostgreSQL's; Python sees one row per
assessment and one per changed slot. The caller owns the transaction.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, Engine, event, text

from consumer.refresh_rules import RANK_MODULUS, ChangedSlot, RefreshPlan, plan_changes, slot_seed

BIGINT_MIN, BIGINT_MAX = -(2**63), 2**63 - 1


class AssessmentsNotOwned(Exception):
    """Some requested ids do not exist or belong to another company."""

    def __init__(self, ids: Sequence[int]) -> None:
        self.ids = sorted(set(ids))
        super().__init__(f"Assessment IDs do not belong to company or do not exist: {self.ids}")


class ConcurrentBankChange(Exception):
    """A question we meant to write was deleted or is being changed; the caller retries."""


# Locking the assessment rows, in oid order, serialises concurrent refreshes of
# the same assessment (REST and a deletion event on two consumers) without
# deadlocks: everyone takes the locks in the same order.
_LOCK_ASSESSMENTS = text(
    """
    SELECT oid, company_id, name FROM assessments
    WHERE oid = ANY(:oids) ORDER BY oid FOR UPDATE
    """
)
_LOCK_COMPANY_ASSESSMENTS = text(
    """
    SELECT oid, company_id, name FROM assessments
    WHERE company_id = :company_id ORDER BY oid FOR UPDATE
    """
)
# A run of requests locks everything it may touch up front, in one statement
# and in oid order, so that runs keep the no-deadlock ordering above.
_LOCK_FOR_RUN = text(
    """
    SELECT oid FROM assessments
    WHERE oid = ANY(:oids) OR company_id = ANY(:company_ids) ORDER BY oid FOR UPDATE
    """
)
# One row per assessment: its number of slots, and only the slots that
# change (deleted or stale question), as arrays in slot order. PostgreSQL
# reads every slot; Python sees only what changes.
_CHANGED_SLOTS = text(
    """
    SELECT s.oid, count(*) AS total,
           array_agg(s.section_idx ORDER BY s.section_idx, s.question_idx) FILTER (WHERE c.changes) AS sections,
           array_agg(s.question_idx ORDER BY s.section_idx, s.question_idx) FILTER (WHERE c.changes) AS positions,
           array_agg(s.qid ORDER BY s.section_idx, s.question_idx) FILTER (WHERE c.changes) AS qids,
           array_agg(q.deleted ORDER BY s.section_idx, s.question_idx) FILTER (WHERE c.changes) AS deleted,
           array_agg(q.type ORDER BY s.section_idx, s.question_idx) FILTER (WHERE q.deleted) AS types,
           array_agg(q.skill ORDER BY s.section_idx, s.question_idx) FILTER (WHERE q.deleted) AS skills,
           array_agg(q.difficulty ORDER BY s.section_idx, s.question_idx) FILTER (WHERE q.deleted) AS difficulties
    FROM assessment_slots s JOIN questions q ON q.qid = s.qid
    CROSS JOIN LATERAL (SELECT q.deleted OR q.version <> s.snapshot_version AS changes) c
    WHERE s.oid = ANY(:oids)
    GROUP BY s.oid
    """
)
# consumer.refresh_rules.candidate_rank in SQL: the slot's seed comes from
# Python (one hash per slot), the candidate's term and the square are computed
# here with the same numbers (every product under 2**63). The candidate's qid
# is taken modulo P as Python does (PostgreSQL's % keeps a negative's sign).
_P = RANK_MODULUS
_TERM = f"(((q.qid % {_P}) + {_P}) % {_P}) * 48271 % {_P}"
_RANK = f"((d.seed + {_TERM}) % {_P}) * ((d.seed + {_TERM}) % {_P}) % {_P}"
# For each deleted slot, its ``need`` best-ranked valid candidates (need = the
# assessment's deleted slots of that kind: enough for refresh_rules.plan_changes
# to choose as plan_refresh would). Valid: active, of the kind, visible to the
# assessment's company, not used anywhere in the assessment.
_RANKED_CANDIDATES = text(
    f"""
    WITH d AS (
        SELECT * FROM unnest(CAST(:oids AS bigint[]), CAST(:sections AS int[]), CAST(:positions AS int[]),
                             CAST(:old_qids AS bigint[]), CAST(:types AS text[]), CAST(:skills AS text[]),
                             CAST(:difficulties AS text[]), CAST(:companies AS bigint[]), CAST(:needs AS int[]),
                             CAST(:seeds AS bigint[]))
             AS d(oid, section_idx, question_idx, old_qid, type, skill, difficulty, company_id, need, seed)
    ), used AS (
        SELECT oid, array_agg(qid) AS qids FROM assessment_slots
        WHERE oid = ANY(CAST(:oids AS bigint[])) GROUP BY oid
    )
    -- Per slot a top-n (a window over every pair measured 1.5-2x slower) over
    -- two ranges of the kind-and-owner index: the public questions and the
    -- company's own (filtering every company's own out of the kind's rows
    -- grew with the number of companies).
    SELECT d.oid, d.section_idx, d.question_idx, c.qid
    FROM d JOIN used u ON u.oid = d.oid
    CROSS JOIN LATERAL (
        SELECT q.qid, {_RANK} AS rank FROM (
            SELECT qid FROM questions
            WHERE type = d.type AND skill = d.skill AND difficulty = d.difficulty AND NOT deleted
              AND company_id IS NULL
            UNION ALL
            SELECT qid FROM questions
            WHERE type = d.type AND skill = d.skill AND difficulty = d.difficulty AND NOT deleted
              AND company_id = d.company_id) q
        WHERE q.qid <> ALL(u.qids)
        ORDER BY 2, 1 LIMIT d.need) c
    ORDER BY d.oid, d.section_idx, d.question_idx, c.rank, c.qid
    """
)
# The new snapshot is copied inside PostgreSQL: question content never travels
# to Python and back.
#
# The questions written are share-locked, and only if still active: a deletion
# that commits after us then waits for us and finds our slots (so it replaces
# what we wrote). SKIP LOCKED, because a question locked right now is being
# deleted or edited: instead of waiting (the deleter may wait for our
# assessment locks, a deadlock) we come up short and the caller retries.
_APPLY_UPDATES = text(
    """
    WITH q AS MATERIALIZED (  -- locked once, not once per slot (measured: 500 index scans per chunk)
        SELECT qid, content, version FROM questions
        WHERE qid = ANY(CAST(:new_qids AS bigint[])) AND NOT deleted
        FOR SHARE SKIP LOCKED
    ), v AS MATERIALIZED (  -- joined to the questions before the slots: the planner guesses
        -- one row for the unnest-to-slot join, and then scanned q once per slot (measured:
        -- 1,538 slots x 349 questions, 100 ms of a chunk's 110)
        SELECT v.oid, v.section_idx, v.question_idx, v.new_qid, q.content, q.version
        FROM unnest(CAST(:oids AS bigint[]), CAST(:sections AS smallint[]),
                    CAST(:positions AS smallint[]), CAST(:new_qids AS bigint[]))
             AS v(oid, section_idx, question_idx, new_qid)
        JOIN q ON q.qid = v.new_qid
    )
    UPDATE assessment_slots s
    SET qid = v.new_qid, snapshot = v.content, snapshot_version = v.version
    FROM v
    WHERE s.oid = v.oid AND s.section_idx = v.section_idx AND s.question_idx = v.question_idx
    """
)
_STAMP = text("UPDATE assessments SET refreshed_at = now() WHERE oid = ANY(:oids)")


def serial_sessions(engine: Engine) -> None:
    """No parallel workers in the engine's sessions (set once per connection).
    A refresh's statements are bounded (one chunk) and run beside other
    consumers' chunks: workers only add their start-up and a hash table each
    (measured: a chunk's changed slots in 30 ms with two workers, 11 without)."""

    @event.listens_for(engine, "connect")
    def _serial(dbapi_connection: Any, _record: Any) -> None:
        with dbapi_connection.cursor() as cursor:
            cursor.execute("SET max_parallel_workers_per_gather = 0")


def lock_assessments(
    conn: Connection, company_id: int, assessment_ids: Sequence[int] | None
) -> list[tuple[int, int, str]]:
    """Lock the company's requested assessments (all when ids is None or empty).

    Raises AssessmentsNotOwned, naming only ids the caller sent, when any id is
    unknown or another company's.
    """
    if not assessment_ids:
        rows = conn.execute(_LOCK_COMPANY_ASSESSMENTS, {"company_id": company_id}).all()
        return [(r.oid, r.company_id, r.name) for r in rows]
    wanted = sorted(set(assessment_ids))
    # Ids outside bigint cannot exist; they are reported, never sent to SQL.
    locked = lock_by_oids(conn, [oid for oid in wanted if BIGINT_MIN <= oid <= BIGINT_MAX])
    owned = {oid for oid, owner, _ in locked if owner == company_id}
    if len(owned) != len(wanted):
        # Another company's rows may be locked too: the caller ends the transaction.
        raise AssessmentsNotOwned([oid for oid in wanted if oid not in owned])
    return locked


def company_sizes(conn: Connection, company_ids: Sequence[int]) -> dict[int, int]:
    """How many assessments each company has (no locks): which refreshes are jobs."""
    if not company_ids:
        return {}
    rows = conn.execute(
        text("SELECT company_id, count(*) AS n FROM assessments WHERE company_id = ANY(:ids) GROUP BY company_id"),
        {"ids": sorted(set(company_ids))},
    )
    return {row.company_id: row.n for row in rows}


def owned_oids(conn: Connection, company_id: int, assessment_ids: Sequence[int] | None) -> list[int]:
    """The company's assessments among ``assessment_ids`` (all of them when
    None or empty), in oid order, without locking: a job's scope. Raises
    AssessmentsNotOwned as lock_assessments does."""
    if not assessment_ids:
        return list(conn.execute(
            text("SELECT oid FROM assessments WHERE company_id = :c ORDER BY oid"), {"c": company_id}
        ).scalars())
    wanted = sorted(set(assessment_ids))
    owned = set(conn.execute(
        text("SELECT oid FROM assessments WHERE oid = ANY(:oids) AND company_id = :c"),
        {"oids": [oid for oid in wanted if BIGINT_MIN <= oid <= BIGINT_MAX], "c": company_id},
    ).scalars())
    if len(owned) != len(wanted):
        raise AssessmentsNotOwned([oid for oid in wanted if oid not in owned])
    return wanted


def lock_for_run(conn: Connection, whole_companies: Sequence[int], oids: Sequence[int]) -> None:
    """Lock, in oid order, every assessment of ``whole_companies`` and every one
    of ``oids`` (whoever owns it): what a run of requests may refresh. Each
    request then locks its own again, which no longer waits."""
    in_range = sorted({oid for oid in oids if BIGINT_MIN <= oid <= BIGINT_MAX})
    if whole_companies or in_range:
        conn.execute(_LOCK_FOR_RUN, {"oids": in_range, "company_ids": sorted(set(whole_companies))}).all()


def lock_by_oids(conn: Connection, oids: Sequence[int]) -> list[tuple[int, int, str]]:
    """Lock these assessments, whoever owns them (automatic refresh)."""
    if not oids:
        return []
    rows = conn.execute(_LOCK_ASSESSMENTS, {"oids": list(oids)}).all()
    return [(r.oid, r.company_id, r.name) for r in rows]


def refresh_locked(conn: Connection, locked: Sequence[tuple[int, int, str]]) -> list[RefreshPlan]:
    """Plan and apply the refresh of already locked assessments; plans in oid order.

    Set-based: PostgreSQL finds the slots that change and ranks the
    replacement candidates (the rule's stable hash, in SQL); the choice
    itself is refresh_rules.plan_changes, checked against the rule's plain
    statement (refresh_rules.plan_refresh) on randomized banks."""
    if not locked:
        return []
    rows = {r.oid: r for r in conn.execute(_CHANGED_SLOTS, {"oids": [oid for oid, _, _ in locked]})}
    ranked = _ranked_candidates(conn, locked, rows)
    plans = []
    for oid, _, name in locked:
        row = rows.get(oid)
        changed = [] if row is None else [
            ChangedSlot(*slot)
            for slot in zip(row.sections or (), row.positions or (), row.qids or (), row.deleted or (), strict=True)
        ]
        plans.append(plan_changes(oid, name, row.total if row is not None else 0, changed, ranked.get(oid, {})))
    _apply(conn, plans)
    return plans


def _ranked_candidates(
    conn: Connection, locked: Sequence[tuple[int, int, str]], rows: dict[int, Any]
) -> dict[int, dict[tuple[int, int], list[int]]]:
    """Per assessment, per deleted slot, its best candidates in rank order (one statement)."""
    deleted: list[tuple[Any, ...]] = []
    for oid, company, _ in locked:
        row = rows.get(oid)
        if row is None or not row.types:
            continue
        slots = [(sec, pos, qid) for sec, pos, qid, gone
                 in zip(row.sections, row.positions, row.qids, row.deleted, strict=True) if gone]
        kinds = list(zip(row.types, row.skills, row.difficulties, strict=True))
        need = Counter(kinds)
        deleted += [(oid, sec, pos, qid, *kind, company, need[kind], slot_seed(oid, qid))
                    for (sec, pos, qid), kind in zip(slots, kinds, strict=True)]
    ranked: dict[int, dict[tuple[int, int], list[int]]] = defaultdict(dict)
    if not deleted:
        return ranked
    names = ["oids", "sections", "positions", "old_qids", "types", "skills", "difficulties", "companies", "needs",
             "seeds"]
    columns = {name: list(values) for name, values in zip(names, zip(*deleted, strict=True), strict=True)}
    for r in conn.execute(_RANKED_CANDIDATES, columns):
        ranked[r.oid].setdefault((r.section_idx, r.question_idx), []).append(r.qid)
    return ranked


def _apply(conn: Connection, plans: Sequence[RefreshPlan]) -> None:
    updates = [(plan.oid, u) for plan in plans for u in plan.updates]
    if not updates:
        return
    result = conn.execute(
        _APPLY_UPDATES,
        {
            "oids": [oid for oid, _ in updates],
            "sections": [u.section_idx for _, u in updates],
            "positions": [u.question_idx for _, u in updates],
            "new_qids": [u.new_qid for _, u in updates],
        },
    )
    if result.rowcount != len(updates):
        raise ConcurrentBankChange(
            f"{len(updates) - result.rowcount} planned slot updates hit a question deleted meanwhile"
        )
    conn.execute(_STAMP, {"oids": [plan.oid for plan in plans if plan.changed]})
