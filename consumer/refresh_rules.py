"""The refresh rules (docs/design.md#the-job, #rest-contract, #replacement-rule), as pure functions over plain data.

No I/O here: the store loads an assessment and the bank facts it needs, this
module decides which slots change and how, and the store applies that plan.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

NO_ALTERNATIVE = "no active alternative with the same type, skill and difficulty"

Kind = tuple[str, str, str]  # (type, skill, difficulty)


@dataclass(frozen=True)
class BankQuestion:
    qid: int
    company_id: int | None  # None: public
    type: str
    skill: str
    difficulty: str
    version: int
    deleted: bool

    @property
    def kind(self) -> Kind:
        return (self.type, self.skill, self.difficulty)

    def visible_to(self, company_id: int) -> bool:
        return self.company_id is None or self.company_id == company_id


@dataclass(frozen=True)
class Slot:
    section_idx: int
    question_idx: int
    qid: int
    snapshot_version: int


@dataclass(frozen=True)
class Assessment:
    oid: int
    company_id: int
    name: str
    slots: tuple[Slot, ...]  # in section, then question order


@dataclass(frozen=True)
class SlotUpdate:
    """Give slot (section_idx, question_idx) the bank's current data of ``new_qid``."""

    section_idx: int
    question_idx: int
    old_qid: int
    new_qid: int


@dataclass
class RefreshPlan:
    oid: int
    name: str
    total_questions: int
    updates: list[SlotUpdate] = field(default_factory=list)
    refreshed_qids: list[int] = field(default_factory=list)
    replacements: list[dict[str, int]] = field(default_factory=list)
    failures: list[dict[str, Any]] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.updates)

    def report(self) -> dict[str, Any]:
        """The assessment's entry in the REST response's ``details``."""
        return {
            "oid": self.oid,
            "name": self.name,
            "total_questions": self.total_questions,
            "questions_refreshed": len(self.refreshed_qids),
            "refreshed_qids": self.refreshed_qids,
            "deleted_questions_replaced": len(self.replacements),
            "replacements": self.replacements,
            "deleted_questions_not_replaced": len(self.failures),
            "replacement_failures": self.failures,
            "status": "updated" if self.changed else "unchanged",
        }


def success_body(company_id: int, details: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The REST answer of a refresh (docs/design.md#rest-contract), from its report entries in oid order."""
    return {
        "message": f"Successfully refreshed {len(details)} assessment{'' if len(details) == 1 else 's'}",
        "company_id": company_id,
        "assessments_updated": len(details),
        "details": list(details),
    }


def preview_body(company_id: int, details: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The answer of a preview (``dry_run``): the refresh's report, said as what
    it would do (``would_update``), with ``dry_run: true``."""
    would = [{**d, "status": "would_update" if d["status"] == "updated" else d["status"]} for d in details]
    return {
        **success_body(company_id, would),
        "message": f"Dry run: would refresh {len(would)} assessment{'' if len(would) == 1 else 's'}; nothing changed",
        "dry_run": True,
    }


# The rank's modulus: a prime under 2**31, so that every product below fits
# PostgreSQL's bigint (the SQL path ranks with the same numbers, consumer/refresh_store.py).
RANK_MODULUS = 2_147_483_647


def slot_seed(oid: int, old_qid: int) -> int:
    """The part of a candidate's rank that is the slot's: a hash of the assessment
    and the deleted question (computed once per slot)."""
    digest = hashlib.blake2b(f"{oid}:{old_qid}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % RANK_MODULUS


def question_term(qid: int) -> int:
    """The part of a candidate's rank that is the candidate's (computed once per question)."""
    return (qid % RANK_MODULUS) * 48271 % RANK_MODULUS


def candidate_rank(oid: int, old_qid: int, qid: int) -> int:
    """A stable, well-spread order of candidates (ties broken by qid): the same
    inputs always give the same replacement (replays agree), and different
    assessments get different ones (the squares of a random shift spread the
    wins evenly: tests/integration/test_sql_rules_agree.py).

    Hashing each (slot, candidate) pair would cost a hash function per pair;
    here the hash is per slot, and each pair costs an addition and a square,
    which PostgreSQL computes with the very same numbers (0.63 us per pair
    measured in SQL, against 5.2 us for a per-pair integer hash and 1.9 us
    for Python's blake2b per pair)."""
    x = (slot_seed(oid, old_qid) + question_term(qid)) % RANK_MODULUS
    return x * x % RANK_MODULUS


def plan_refresh(
    assessment: Assessment,
    bank: Mapping[int, BankQuestion],
    candidates: Mapping[Kind, Iterable[BankQuestion]],
) -> RefreshPlan:
    """Decide the refresh of one assessment.

    ``bank`` holds every question the assessment's slots reference;
    ``candidates`` holds, per kind, the active bank questions that could replace
    a deleted question of that kind (visibility is checked here again).
    """
    plan = RefreshPlan(assessment.oid, assessment.name, len(assessment.slots))
    used = {slot.qid for slot in assessment.slots}
    for slot in assessment.slots:
        question = bank[slot.qid]
        if not question.deleted:
            if question.version != slot.snapshot_version:
                plan.updates.append(SlotUpdate(slot.section_idx, slot.question_idx, slot.qid, slot.qid))
                plan.refreshed_qids.append(slot.qid)
            continue
        replacement = _pick_replacement(assessment, slot.qid, question, candidates, used)
        if replacement is None:
            plan.failures.append(
                {
                    "qid": slot.qid,
                    "section_idx": slot.section_idx,
                    "question_idx": slot.question_idx,
                    "reason": NO_ALTERNATIVE,
                }
            )
            continue
        used.add(replacement)
        plan.updates.append(SlotUpdate(slot.section_idx, slot.question_idx, slot.qid, replacement))
        plan.replacements.append({"old_qid": slot.qid, "new_qid": replacement})
    return plan


def _pick_replacement(
    assessment: Assessment,
    old_qid: int,
    deleted: BankQuestion,
    candidates: Mapping[Kind, Iterable[BankQuestion]],
    used: set[int],
) -> int | None:
    valid = [
        c.qid
        for c in candidates.get(deleted.kind, ())
        if not c.deleted
        and c.kind == deleted.kind
        and c.visible_to(assessment.company_id)
        and c.qid not in used
    ]
    if not valid:
        return None
    return min(valid, key=lambda qid: (candidate_rank(assessment.oid, old_qid, qid), qid))


@dataclass(frozen=True)
class ChangedSlot:
    """A slot that a refresh changes: its question is deleted, or stale."""

    section_idx: int
    question_idx: int
    qid: int
    deleted: bool


def plan_changes(
    oid: int,
    name: str,
    total_questions: int,
    changed: Iterable[ChangedSlot],
    ranked: Mapping[tuple[int, int], Sequence[int]],
) -> RefreshPlan:
    """The decisions of ``plan_refresh``, from what the set-based path loads:
    only the slots that change (in slot order), and for each deleted slot
    (``(section_idx, question_idx)``) its best valid candidates in rank order:
    active, visible, of its kind, not used anywhere in the assessment, and at
    least as many as the assessment has deleted slots of that kind.

    That is enough to choose as ``plan_refresh`` does: replacements made
    earlier in this refresh are the only other exclusions, at most one per
    earlier deleted slot of the kind, so the first candidate in the list not
    taken yet is the best-ranked valid one (or the list is every valid one).
    tests/integration/test_sql_rules_agree.py checks the two agree."""
    plan = RefreshPlan(oid, name, total_questions)
    taken: set[int] = set()
    for slot in changed:
        if not slot.deleted:
            plan.updates.append(SlotUpdate(slot.section_idx, slot.question_idx, slot.qid, slot.qid))
            plan.refreshed_qids.append(slot.qid)
            continue
        replacement = next((q for q in ranked.get((slot.section_idx, slot.question_idx), ()) if q not in taken), None)
        if replacement is None:
            plan.failures.append({"qid": slot.qid, "section_idx": slot.section_idx,
                                  "question_idx": slot.question_idx, "reason": NO_ALTERNATIVE})
            continue
        taken.add(replacement)
        plan.updates.append(SlotUpdate(slot.section_idx, slot.question_idx, slot.qid, replacement))
        plan.replacements.append({"old_qid": slot.qid, "new_qid": replacement})
    return plan
