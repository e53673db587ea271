"""The bench world: generated with a fixed seed, loaded through the product's loader.

All scenarios share one database, so each has its own id ranges and its own
question kinds (skills are prefixed by scenario): the candidate look-up of one
scenario never sees another scenario's bank.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, text

SEED = 20261128
TYPES = ("mcq", "coding", "essay", "multi")
SKILLS = ("python", "sql", "go", "java", "rust")
LEVELS = ("easy", "medium", "hard")

SMALL_COMPANY, SMALL_OID = 1, 1
SOAK_COMPANIES = range(11, 23)  # 12 keys: the soak spreads over the request partitions
COMPANY_100, COMPANY_1000 = 100, 101
FANOUT_COMPANY_BASE, FANOUT_OID_BASE, WARM_OID = 1000, 300_000, 399_999
FAN_QID_BASE, FAN_ALT_BASE, WARM_QID_BASE, WARM_ALT_BASE = 21_001, 21_101, 21_201, 21_301
REPLAY_QID_BASE = 30_001


def api_key(company_id: int) -> str:
    return f"bench-key-{company_id:06d}-0123456789"


@dataclass(frozen=True)
class Sizes:
    seq_requests: int = 300
    concurrent_requests: int = 3000
    in_flight: int = 50
    inproc_requests: int = 300
    company_small: int = 100
    company_large: int = 1000
    questions_per_assessment: int = 50
    company_reps: int = 5
    fanout_assessments: int = 10_000
    fanout_companies: int = 100
    fanout_reps: int = 3
    replay_events: int = 100_000

    @classmethod
    def quick(cls) -> Sizes:
        return cls(seq_requests=20, concurrent_requests=300, inproc_requests=50, company_small=50,
                   company_large=200, company_reps=1, fanout_assessments=1000, fanout_companies=10,
                   fanout_reps=1, replay_events=5_000)


def question(qid: int, kind: tuple[str, str, str], company_id: int | None = None,
             deleted: bool = False) -> dict[str, Any]:
    t, skill, level = kind
    # Roughly the size of a real bank question, so snapshot copies cost what they would.
    content = {"text": f"Question {qid}: which of these is right about {skill}?", "options": ["A", "B", "C", "D"],
               "answer": "B", "score": 5, "time_limit_s": 90, "explanation": f"Because {qid} says so."}
    return {"qid": qid, "company_id": company_id, "type": t, "skill": skill, "difficulty": level,
            "content": content, "deleted": deleted}


def _kinds(prefix: str) -> list[tuple[str, str, str]]:
    return [(t, f"{prefix}-{s}", lv) for t in TYPES for s in SKILLS for lv in LEVELS]


def _bank(first_qid: int, count: int, prefix: str) -> list[dict[str, Any]]:
    kinds = _kinds(prefix)
    return [question(first_qid + i, kinds[i % len(kinds)]) for i in range(count)]


def _assessment(oid: int, company_id: int, qids: list[int]) -> dict[str, Any]:
    sections = [{"name": f"Section {j + 1}", "qids": qids[i : i + 10]} for j, i in enumerate(range(0, len(qids), 10))]
    return {"oid": oid, "company_id": company_id, "name": f"Assessment {oid}", "sections": sections}


def build_world(sizes: Sizes) -> dict[str, Any]:
    rng = random.Random(SEED)
    companies = [SMALL_COMPANY, *SOAK_COMPANIES, COMPANY_100, COMPANY_1000]
    fan_companies = [FANOUT_COMPANY_BASE + i for i in range(sizes.fanout_companies)]
    doc: dict[str, Any] = {
        "companies": [{"id": c, "name": f"Company {c}", "api_keys": [api_key(c)]} for c in companies]
        + [{"id": c, "name": f"Company {c}", "api_keys": []} for c in fan_companies],
        "questions": [],
        "assessments": [],
    }
    # Scenario 1 and the soak: 20 questions, a bank nothing ever changes ("nothing stale").
    s1 = _bank(1, 200, "s1")
    doc["questions"] += s1
    for oid, company in [(SMALL_OID, SMALL_COMPANY), *((c, c) for c in SOAK_COMPANIES)]:
        doc["assessments"].append(_assessment(oid, company, rng.sample([q["qid"] for q in s1], 20)))
    # Scenario 2: 2,000 questions over 60 kinds (~33 alternatives per kind).
    bank2 = _bank(10_001, 2000, "s2")
    doc["questions"] += bank2
    s2 = [q["qid"] for q in bank2]
    per = sizes.questions_per_assessment
    for i in range(sizes.company_small):
        doc["assessments"].append(_assessment(100_000 + i, COMPANY_100, rng.sample(s2, per)))
    for i in range(sizes.company_large):
        doc["assessments"].append(_assessment(200_000 + i, COMPANY_1000, rng.sample(s2, per)))
    # Scenario 3: every fan-out assessment holds all fan-out questions (one is
    # deleted per repetition) and 17 others; alternatives of the fan-out kind
    # are never used, so every assessment gets a replacement.
    fan_kind, warm_kind = ("mcq", "s3-fan", "medium"), ("mcq", "s3-warm", "medium")
    fan = [FAN_QID_BASE + r for r in range(sizes.fanout_reps)]
    warm = [WARM_QID_BASE + r for r in range(sizes.fanout_reps)]
    bank3 = _bank(20_001, 500, "s3")
    doc["questions"] += bank3
    s3 = [q["qid"] for q in bank3]
    doc["questions"] += [question(q, fan_kind) for q in fan] + [question(FAN_ALT_BASE + i, fan_kind) for i in range(30)]
    doc["questions"] += [question(q, warm_kind) for q in warm]
    doc["questions"] += [question(WARM_ALT_BASE + i, warm_kind) for i in range(10)]
    for i in range(sizes.fanout_assessments):
        company = fan_companies[i % len(fan_companies)]
        doc["assessments"].append(_assessment(FANOUT_OID_BASE + i, company, fan + rng.sample(s3, 20 - len(fan))))
    # The warm-up assessment: deleting its own question shows the consumer is live.
    doc["assessments"].append(_assessment(WARM_OID, fan_companies[0], warm + rng.sample(s3, 5)))
    # Scenario 4: a bank replayed with unchanged content (upserts that change nothing).
    doc["questions"] += _bank(REPLAY_QID_BASE, 1000, "s4")
    return doc


def replay_bank() -> list[dict[str, Any]]:
    """The scenario-4 questions exactly as loaded, so replayed upserts are no-ops."""
    return _bank(REPLAY_QID_BASE, 1000, "s4")


def company_changes(conn: Connection, company_ids: list[int], rep: int,
                    stale: float = 0.05, deleted: float = 0.01) -> dict[str, Any]:
    """A bank update for one repetition: new content for `stale` of the questions
    these companies use, deletion of `deleted` of them. Drawn from what is used
    now (replacements move slots to other questions), with a seed per repetition."""
    rows = conn.execute(
        text(
            "SELECT q.qid, q.company_id, q.type, q.skill, q.difficulty, q.content FROM questions q "
            "WHERE NOT q.deleted AND q.qid IN (SELECT s.qid FROM assessment_slots s JOIN assessments a "
            "ON a.oid = s.oid WHERE a.company_id = ANY(:c)) ORDER BY q.qid"
        ),
        {"c": company_ids},
    ).all()
    rng = random.Random(SEED * 1000 + rep)
    n_deleted, n_stale = round(len(rows) * deleted), round(len(rows) * stale)
    picked = rng.sample(rows, n_deleted + n_stale)
    out = []
    for i, r in enumerate(picked):
        q = {"qid": r.qid, "company_id": r.company_id, "type": r.type, "skill": r.skill,
             "difficulty": r.difficulty, "content": {**r.content, "revision": rep + 1}, "deleted": False}
        if i < n_deleted:
            q["content"], q["deleted"] = r.content, True
        out.append(q)
    return {"questions": out}
