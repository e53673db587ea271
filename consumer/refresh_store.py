"""Loads what a refresh needs and applies its plan, in a bounded number of queries.

A whole refresh (one assessment or every assessment of a company) costs at most
five statements, whatever the number of assessments and questions:
lock the assessments, read their slots with the bank facts, read replacement
candidates (only when a question is deleted), update the changed slots, stamp
the changed assessments. The caller owns the transaction.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from sqlalchemy import Connection, text

from consumer.refresh_rules import Assessment, BankQuestion, Kind, RefreshPlan, Slot, plan_refresh

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
_SLOTS_WITH_BANK = text(
    """
    SELECT s.oid, s.section_idx, s.question_idx, s.qid, s.snapshot_version,
           q.company_id, q.type, q.skill, q.difficulty, q.version, q.deleted
    FROM assessment_slots s JOIN questions q ON q.qid = s.qid
    WHERE s.oid = ANY(:oids)
    ORDER BY s.oid, s.section_idx, s.question_idx
    """
)
_CANDIDATES = text(
    """
    SELECT q.qid, q.company_id, q.type, q.skill, q.difficulty, q.version, q.deleted
    FROM questions q
    JOIN unnest(CAST(:types AS text[]), CAST(:skills AS text[]), CAST(:difficulties AS text[]))
         AS k(type, skill, difficulty)
      ON q.type = k.type AND q.skill = k.skill AND q.difficulty = k.difficulty
    WHERE NOT q.deleted AND (q.company_id IS NULL OR q.company_id = ANY(:company_ids))
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
    UPDATE assessment_slots s
    SET qid = v.new_qid, snapshot = q.content, snapshot_version = q.version
    FROM unnest(CAST(:oids AS bigint[]), CAST(:sections AS smallint[]),
                CAST(:positions AS smallint[]), CAST(:new_qids AS bigint[]))
         AS v(oid, section_idx, question_idx, new_qid)
    JOIN (SELECT qid, content, version FROM questions
          WHERE qid = ANY(CAST(:new_qids AS bigint[])) AND NOT deleted
          FOR SHARE SKIP LOCKED) q ON q.qid = v.new_qid
    WHERE s.oid = v.oid AND s.section_idx = v.section_idx AND s.question_idx = v.question_idx
    """
)
_STAMP = text("UPDATE assessments SET refreshed_at = now() WHERE oid = ANY(:oids)")


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
    """Plan and apply the refresh of already locked assessments; plans in oid order."""
    if not locked:
        return []
    oids = [oid for oid, _, _ in locked]
    slots: dict[int, list[Slot]] = defaultdict(list)
    bank: dict[int, BankQuestion] = {}
    for r in conn.execute(_SLOTS_WITH_BANK, {"oids": oids}):
        slots[r.oid].append(Slot(r.section_idx, r.question_idx, r.qid, r.snapshot_version))
        bank[r.qid] = BankQuestion(r.qid, r.company_id, r.type, r.skill, r.difficulty, r.version, r.deleted)

    deleted_kinds = {q.kind for q in bank.values() if q.deleted}
    candidates = _load_candidates(conn, deleted_kinds, {company for _, company, _ in locked})

    plans = [
        plan_refresh(Assessment(oid, company, name, tuple(slots[oid])), bank, candidates)
        for oid, company, name in locked
    ]
    _apply(conn, plans)
    return plans


def _load_candidates(
    conn: Connection, kinds: set[Kind], company_ids: set[int]
) -> dict[Kind, list[BankQuestion]]:
    by_kind: dict[Kind, list[BankQuestion]] = defaultdict(list)
    if not kinds:
        return by_kind
    ordered = sorted(kinds)
    rows = conn.execute(
        _CANDIDATES,
        {
            "types": [k[0] for k in ordered],
            "skills": [k[1] for k in ordered],
            "difficulties": [k[2] for k in ordered],
            "company_ids": sorted(company_ids),
        },
    )
    for r in rows:
        q = BankQuestion(r.qid, r.company_id, r.type, r.skill, r.difficulty, r.version, r.deleted)
        by_kind[q.kind].append(q)
    return by_kind


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
