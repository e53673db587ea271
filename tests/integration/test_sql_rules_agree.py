"""The set-based refresh (PostgreSQL ranks the candidates, refresh_rules.plan_changes
chooses) against the rule's plain statement (refresh_rules.plan_refresh), on
randomized banks: they must choose identical replacements, in every assessment."""

from __future__ import annotations

import random
from collections import defaultdict
from typing import Any

import pytest
from sqlalchemy import Engine, text

from consumer.refresh_rules import Assessment, BankQuestion, Slot, candidate_rank, plan_refresh, slot_seed
from consumer.refresh_store import _RANK, lock_by_oids, refresh_locked
from tests.worlds import load, question

KINDS = [("mcq", "python", "easy"), ("mcq", "python", "hard"), ("code", "sql", "easy")]
RARE = ("essay", "go", "hard")  # a few questions, mostly deleted: alternatives run out


def test_sql_rank_is_the_rules_rank(engine: Engine) -> None:
    rng = random.Random(7)
    triples = [(rng.randrange(-2**63, 2**63), rng.randrange(-2**40, 2**40), rng.randrange(1, 2**62)) for _ in range(300)]
    triples += [(0, 0, 0), (1, 2, 3), (2**63 - 1, 2**63 - 1, 2**63 - 1), (-1, -1, -1)]
    with engine.connect() as conn:
        for oid, old_qid, qid in triples:
            got = conn.execute(text(f"SELECT {_RANK} FROM (SELECT CAST(:seed AS bigint) AS seed) d, "
                                    "(SELECT CAST(:q AS bigint) AS qid) q"),
                               {"seed": slot_seed(oid, old_qid), "q": qid}).scalar()
            assert got == candidate_rank(oid, old_qid, qid), (oid, old_qid, qid)


def test_the_rank_spreads_replacements_over_the_candidates() -> None:
    # 10,000 assessments losing the same question, 50 equal candidates: each
    # candidate should get about 200 of them (a hash that is not spread would
    # hand most assessments the same few questions).
    picks = defaultdict(int)
    for oid in range(10_000):
        picks[min(range(1000, 1050), key=lambda qid: (candidate_rank(oid, 77, qid), qid))] += 1
    assert len(picks) == 50
    # Binomial: 200 +- 14; the bounds are 5 standard deviations out.
    assert min(picks.values()) >= 130 and max(picks.values()) <= 270, sorted(picks.values())


def random_world(rng: random.Random) -> dict[str, Any]:
    companies = [1, 2, 3]
    questions = []
    for qid in range(1, 61):
        owner = rng.choice([None, None, None, *companies])
        questions.append(question(qid, RARE if qid % 8 == 0 else rng.choice(KINDS), company_id=owner))
    assessments = []
    for oid in range(100, 160):
        company = rng.choice(companies)
        visible = [q["qid"] for q in questions if q["company_id"] in (None, company)]
        qids = rng.sample(visible, rng.randint(1, min(12, len(visible))))
        sections = [{"name": f"S{i}", "qids": qids[i::3]} for i in range(3) if qids[i::3]]
        assessments.append({"oid": oid, "company_id": company, "name": f"A{oid}", "sections": sections})
    return {"companies": [{"id": c, "name": f"C{c}", "api_keys": []} for c in companies],
            "questions": questions, "assessments": assessments}


def random_changes(rng: random.Random, world: dict[str, Any]) -> dict[str, Any]:
    """Delete many questions (several per assessment, often of one kind, some
    kinds run out of alternatives) and edit others."""
    out = []
    for q in world["questions"]:
        roll = rng.random()
        if roll < (0.7 if q["type"] == RARE[0] else 0.35):
            out.append({**q, "deleted": True})
        elif roll < 0.55:
            out.append({**q, "content": {**q["content"], "text": f"edited {q['qid']}"}})
    return {"questions": out}


def pure_plans(engine: Engine) -> dict[int, dict[str, Any]]:
    with engine.connect() as conn:
        bank = {r.qid: BankQuestion(r.qid, r.company_id, r.type, r.skill, r.difficulty, r.version, r.deleted)
                for r in conn.execute(text("SELECT * FROM questions"))}
        slots = defaultdict(list)
        for r in conn.execute(text("SELECT * FROM assessment_slots ORDER BY oid, section_idx, question_idx")):
            slots[r.oid].append(Slot(r.section_idx, r.question_idx, r.qid, r.snapshot_version))
        owners = conn.execute(text("SELECT oid, company_id, name FROM assessments ORDER BY oid")).all()
    candidates = defaultdict(list)
    for q in bank.values():
        candidates[q.kind].append(q)
    return {a.oid: plan_refresh(Assessment(a.oid, a.company_id, a.name, tuple(slots[a.oid])), bank, candidates).report()
            for a in owners}


@pytest.mark.parametrize("seed", range(8))
def test_sql_path_and_pure_rules_choose_identical_replacements(engine: Engine, seed: int) -> None:
    rng = random.Random(seed)
    world = random_world(rng)
    load(engine, world)
    load(engine, random_changes(rng, world))
    expected = pure_plans(engine)
    with engine.connect() as conn, conn.begin():
        locked = lock_by_oids(conn, sorted(expected))
        got = {plan.oid: plan.report() for plan in refresh_locked(conn, locked)}
        conn.rollback()
    assert got == expected
    # Not a vacuous comparison: replacements, failures and refreshes all happened,
    # and some assessment replaced two questions of one kind.
    reports = list(got.values())
    assert sum(r["deleted_questions_replaced"] for r in reports) > 10
    assert sum(r["deleted_questions_not_replaced"] for r in reports) > 0
    assert sum(r["questions_refreshed"] for r in reports) > 10
    assert any(len({(bank_kind(engine, x["old_qid"])) for x in r["replacements"]}) < len(r["replacements"])
               for r in reports)


def bank_kind(engine: Engine, qid: int) -> tuple[str, str, str]:
    with engine.connect() as conn:
        r = conn.execute(text("SELECT type, skill, difficulty FROM questions WHERE qid = :q"), {"q": qid}).one()
    return (r.type, r.skill, r.difficulty)
